"""The registry's messages word for word: what was searched, refused, excluded, left out or unreadable,
and the hints a content error gives. Every part of these texts reaches a user through ``resolve()`` or the
CLI."""

from __future__ import annotations

import logging

import pytest
from conftest import tiny_state_dict, write_pth, write_safetensors

from ckpt_formats import (
    CheckpointContentError,
    CheckpointFormat,
    CheckpointLoadError,
    CheckpointNotFoundError,
    hookimpl,
)


def _plugin(*formats: CheckpointFormat) -> object:
    class Plugin:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            for fmt in formats:
                register(fmt)

    return Plugin()


def _failing_discover(directory, matched):
    raise RuntimeError("cannot group")


def test_not_found_lists_every_reason_in_order(tmp_path, registry, caplog):
    registry.register(
        _plugin(CheckpointFormat("grouped", 1, ("*.grp",), lambda c, d: {}, discover=_failing_discover)),
        name="grouping",
    )
    for name in ("notes.txt", "b.grp", "skip.safetensors", "model-00001-of-00002.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    write_pth(tmp_path / "old.pth", tiny_state_dict())
    write_pth(tmp_path / "older.pt", tiny_state_dict())

    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path, safe_only=True, exclude=["skip*"], select=["*model*", "*.safetensors"])

    searched = "; ".join(
        f"{f.name} ({', '.join(f.globs)})" for f in registry.formats(safe_only=True) if f.name != "grouped"
    )
    assert str(err.value) == (
        f"no checkpoint found in {tmp_path} (searched: {searched}); only names matching '*model*' and "
        "'*.safetensors' were considered; refused by policy (safe-only or CKPT_FORMATS_DISABLE): "
        "old.pth (pickle), older.pt (pickle); convert it with `ckpt-formats convert SRC DST.safetensors` in "
        "a trusted environment; left out because their plugin failed: grouped (see the warnings); shards "
        "without their index (an interrupted set): model-00001-of-00002.safetensors; fetch or copy the whole "
        "set again, index included; excluded by pattern: skip.safetensors; present but matching no format: "
        "notes.txt; place a checkpoint there or configure a hub source"
    )


def test_not_found_with_no_format_allowed_and_nothing_else(tmp_path, registry):
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path, formats=["pickle"], safe_only=True)
    assert str(err.value) == (
        f"no checkpoint found in {tmp_path} (searched: no format allowed); present but matching no format: "
        "none; place a checkpoint there or configure a hub source"
    )


@pytest.mark.parametrize(
    ("error", "named", "why"),
    [
        (OSError("odd"), None, "OSError; errno None"),
        (PermissionError(13, "Permission denied"), None, "Permission denied; errno 13"),
        (
            OSError(5, "Input/output error", "/elsewhere/part.bin"),
            "/elsewhere/part.bin",
            "Input/output error; errno 5",
        ),
    ],
)
def test_an_unreadable_file_in_a_content_check(tmp_path, registry, error, named, why):
    def matches(path):
        raise error

    registry.register(
        _plugin(CheckpointFormat("odd", 1, ("*.odd",), lambda c, d: {}, matches=matches)), name="o"
    )
    path = tmp_path / "m.odd"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    assert str(err.value) == (
        f"{named or path}: cannot read it ({why}); it was not loaded as odd. Check the file's permissions "
        "and the disk, then retry"
    )


def test_the_content_hint_names_only_formats_whose_check_accepts_the_file(tmp_path, registry, caplog):
    def broken(path):
        raise RuntimeError("check failed")

    registry.register(
        _plugin(
            CheckpointFormat(
                "unchecked", 1, ("*.unchecked",), lambda c, d: {}
            ),  # no content check: never named
            CheckpointFormat("brittle", 2, ("*.brittle",), lambda c, d: {}, matches=broken),
            CheckpointFormat("anything", 3, ("*.anything",), lambda c, d: {}, matches=lambda p: True),
        ),
        name="others",
    )
    path = tmp_path / "x.safetensors"
    write_pth(path, tiny_state_dict())
    with (
        caplog.at_level(logging.WARNING, logger="ckpt_formats"),
        pytest.raises(CheckpointContentError) as err,
    ):
        registry.resolve(tmp_path)
    assert str(err.value) == (
        f"{path} is named like a safetensors file but its content is a zip archive (a PyTorch .pth pickle "
        "checkpoint or a NumPy .npz archive); its content matches the anything, pickle format. It was not "
        "loaded: rename it to the right extension, or re-download/re-export it"
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: plugin 'others' (format 'brittle') failed in matches: raised RuntimeError: check failed. "
        "Report it to the plugin's author, or disable it with CKPT_FORMATS_DISABLE"
    ]


def test_a_plugin_registered_without_a_name_takes_its_class_name(registry):
    fmt = CheckpointFormat("named", 1, ("*.named",), lambda c, d: {})
    assert registry.register(_plugin(fmt)) == "Plugin"
    assert registry.get_format("named").plugin == "Plugin"


def test_the_distribution_given_at_registration_is_the_formats(registry):
    registry.register(
        _plugin(CheckpointFormat("shipped", 1, ("*.shp",), lambda c, d: {})), name="p", distribution="d"
    )
    assert registry.get_format("shipped").distribution == "d"


def test_candidate_for_a_missing_file(tmp_path, registry):
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.candidate_for_file(tmp_path / "gone.safetensors")
    assert str(err.value) == f"{tmp_path / 'gone.safetensors'}: no such file"


def test_candidate_for_an_index_holds_its_shards(tmp_path, registry):
    from shards_testing import write_shard_set

    index = write_shard_set(tmp_path, "safetensors-sharded", tiny_state_dict())
    fmt, candidate = registry.candidate_for_file(index)
    assert fmt.name == "safetensors-sharded"
    assert candidate.paths == (
        index,
        tmp_path / "model-00001-of-00002.safetensors",
        tmp_path / "model-00002-of-00002.safetensors",
    )
    single = write_safetensors(tmp_path / "one.safetensors", tiny_state_dict())
    assert registry.candidate_for_file(single)[1].paths == (single,)
