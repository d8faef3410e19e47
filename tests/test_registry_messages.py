"""The registry's messages word for word: what was searched, refused, excluded, left out or unreadable,
and the hints a content error gives. Every part of these texts reaches a user through ``resolve()`` or the
CLI."""

from __future__ import annotations

import logging
import sys

import pytest
from conftest import project_only, tiny_state_dict, write_pth, write_safetensors
from plugin_testing import declaring, fake_distribution

from ckpt_formats import (
    CheckpointContentError,
    CheckpointError,
    CheckpointFormat,
    CheckpointLoadError,
    CheckpointNotFoundError,
    PluginError,
    Registry,
    hookimpl,
)


def _failing_discover(directory, matched):
    raise RuntimeError("cannot group")


def test_not_found_lists_every_reason_in_order(tmp_path, registry, caplog):
    registry.register(
        declaring(
            CheckpointFormat("grouped", 1, ("*.grp",), lambda c, d: {}, discover=_failing_discover),
            CheckpointFormat("bundled", 2, ("*.bnd",), lambda c, d: {}, discover=_failing_discover),
        ),
        name="grouping",
    )
    shards = ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors")
    for name in ("notes.txt", "readme.md", "b.grp", "c.bnd", "skip.safetensors", "skip.pth", *shards):
        (tmp_path / name).write_bytes(b"x")
    write_pth(tmp_path / "old.pth", tiny_state_dict())
    write_pth(tmp_path / "older.pt", tiny_state_dict())

    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path, safe_only=True, exclude=["skip*"], select=["*model*", "*.safetensors"])

    searched = "; ".join(
        f"{f.name} ({', '.join(f.globs)})"
        for f in registry.formats(safe_only=True)
        if f.name not in ("grouped", "bundled")
    )
    assert str(err.value) == (
        f"no checkpoint found in {tmp_path} (searched: {searched}); only names matching '*model*' and "
        "'*.safetensors' were considered; refused by policy (safe-only or CKPT_FORMATS_DISABLE): "
        "old.pth (pickle), older.pt (pickle); convert it with `ckpt-formats convert SRC DST.safetensors` in "
        "a trusted environment; left out because their plugin failed: bundled, grouped (see the warnings); "
        "shards without their index (an interrupted set): model-00001-of-00003.safetensors, "
        "model-00002-of-00003.safetensors; fetch or copy the whole set again, index included; excluded by "
        "pattern: skip.pth, skip.safetensors; present but matching no format: notes.txt, readme.md; place a "
        "checkpoint there or configure a hub source"
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
        declaring(CheckpointFormat("odd", 1, ("*.odd",), lambda c, d: {}, matches=matches)), name="o"
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
        declaring(
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
    assert registry.register(declaring(fmt)) == "Plugin"
    assert registry.get_format("named").plugin == "Plugin"


def test_the_distribution_given_at_registration_is_the_formats(registry):
    registry.register(
        declaring(CheckpointFormat("shipped", 1, ("*.shp",), lambda c, d: {})), name="p", distribution="d"
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


def test_get_format_of_an_unknown_name_lists_the_registered_ones(registry):
    with pytest.raises(CheckpointError) as err:
        registry.get_format("nope")
    names = ", ".join(f.name for f in registry.all_formats())
    assert str(err.value) == f"unknown checkpoint format 'nope' (registered: {names})"
    with pytest.raises(CheckpointError) as err:
        Registry(load_entry_points=False).get_format("nope")
    assert str(err.value) == "unknown checkpoint format 'nope' (registered: none)"


def test_a_file_name_no_format_matches(tmp_path, registry):
    globs = "; ".join(f"{f.name}: {', '.join(f.globs)}" for f in registry.all_formats())
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.format_for_file(tmp_path / "weights.tflite")
    expected = f"{tmp_path / 'weights.tflite'}: no registered format matches this file name ({globs})"
    assert str(err.value) == expected
    assert "safetensors: *.safetensors; " in globs


def test_candidate_for_a_single_file_is_of_its_format(tmp_path, registry):
    path = write_safetensors(tmp_path / "one.safetensors", tiny_state_dict())
    fmt, candidate = registry.candidate_for_file(path)
    assert (fmt.name, candidate.format, candidate.paths) == ("safetensors", "safetensors", (path,))


# -- installed plugins: disabled, installed twice, names taken ---------------------------------------------

PLUGIN = """
from ckpt_formats import CheckpointFormat, hookimpl

@hookimpl
def ckpt_formats_register_formats(register):
    register(CheckpointFormat(name={name!r}, priority=1, globs=("*.{name}",), load=lambda c, d: {{}}))
"""


def _install(site, dist, entry, module, fmt=None, source=None):
    site.mkdir(parents=True, exist_ok=True)
    fake_distribution(site, dist, entry, module, source or PLUGIN.format(name=fmt or entry))


def test_a_disabled_plugin_is_skipped_and_logged_and_the_others_load(monkeypatch, caplog):
    monkeypatch.setenv("CKPT_FORMATS_DISABLE", project_only("pickle, npz"))
    with caplog.at_level(logging.INFO, logger="ckpt_formats"):
        names = [f.name for f in Registry().all_formats()]  # entry points load on first use
    assert names == ["safetensors-sharded", "safetensors", "onnx", "dcp"]
    logged = [r.getMessage() for r in caplog.records]
    assert "plugin 'pickle' is disabled by CKPT_FORMATS_DISABLE" in logged
    assert "plugin 'npz' is disabled by CKPT_FORMATS_DISABLE" in logged


def test_one_distribution_twice_on_sys_path_is_loaded_once(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _install(site, "twice-formats", "twice", "ckf_twice")
    _install(tmp_path / "after", "after-formats", "after", "ckf_after")
    monkeypatch.setattr(sys, "path", [*sys.path, str(site), str(site), str(tmp_path / "after")])
    registry = Registry()
    assert registry.broken_plugins == []
    names = [f.name for f in registry.all_formats()]
    assert names.count("twice") == 1 and "after" in names


def test_an_entry_point_name_taken_twice_breaks_the_later_one_only(tmp_path, monkeypatch):
    _install(tmp_path / "a", "first-formats", "same", "ckf_first", fmt="first")
    _install(tmp_path / "b", "second-formats", "same", "ckf_second", fmt="second")
    _install(tmp_path / "c", "third-formats", "same", "ckf_third", fmt="third")
    _install(tmp_path / "d", "other-formats", "other", "ckf_other")
    monkeypatch.setattr(sys, "path", [*sys.path, *(str(tmp_path / s) for s in "abcd")])
    registry = Registry()
    names = [f.name for f in registry.all_formats()]
    assert "first" in names and "second" not in names and "third" not in names and "other" in names
    assert [(b.name, b.distribution, b.error) for b in registry.broken_plugins] == [
        (
            "same",
            dist,
            "the plugin name 'same' is already taken by distribution first-formats; rename the entry point",
        )
        for dist in ("second-formats", "third-formats")
    ]


def test_a_name_taken_by_a_plugin_that_failed_to_import(tmp_path, monkeypatch):
    _install(tmp_path / "a", "failing-formats", "same", "ckf_failing", source="raise ImportError('no numpy')")
    _install(tmp_path / "b", "second-formats", "same", "ckf_second_b", fmt="second")
    monkeypatch.setattr(sys, "path", [*sys.path, *(str(tmp_path / s) for s in "ab")])
    broken = {b.distribution: b.error for b in Registry().broken_plugins}
    assert broken == {
        "failing-formats": "import failed: ImportError: no numpy",
        "second-formats": "the plugin name 'same' is already taken by distribution ?; rename the entry point",
    }


def test_unregistering_a_name_that_is_not_registered_is_an_error(registry):
    with pytest.raises(PluginError) as err:
        registry.unregister("safetensor")
    head, _, listed = str(err.value).partition(" (registered: ")
    assert head == "no plugin 'safetensor' is registered"
    assert sorted(listed.rstrip(")").split(", ")) == sorted({f.plugin for f in registry.all_formats()})
    assert registry.get_format("safetensors").plugin == "safetensors"  # nothing was removed
    with pytest.raises(PluginError) as err:
        Registry(load_entry_points=False).unregister("safetensor")
    assert str(err.value) == "no plugin 'safetensor' is registered (registered: none)"


def test_register_refuses_what_is_not_a_format_and_a_name_taken(registry):
    class Declares:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            register({"name": "dict"})

    with pytest.raises(PluginError) as err:
        registry.register(Declares(), name="declares-a-dict")
    assert str(err.value) == "plugin 'declares-a-dict': register() takes a CheckpointFormat, got dict"
    registry.register(declaring(), name="first")
    with pytest.raises(PluginError) as err:
        registry.register(declaring(), name="first")  # another object, the same name
    assert str(err.value) == "plugin 'first' is already registered"


def test_a_format_declared_loosely_is_normalised(tmp_path, registry):
    loose = CheckpointFormat(
        "loose", 1, "*.loose", lambda c, d: {}, exclude_globs="skip*", hub_filenames="model.loose",
        executes_code=1,
    )  # fmt: skip
    registry.register(declaring(loose), name="loose-plugin")
    fmt = registry.get_format("loose")
    assert (fmt.globs, fmt.exclude_globs, fmt.hub_filenames) == (("*.loose",), ("skip*",), ("model.loose",))
    assert fmt.executes_code is True
    for name in ("a.loose", "skip.loose", "s.loose"):
        (tmp_path / name).write_bytes(b"")
    assert [c.path.name for c in registry.discover(tmp_path).candidates["loose"]] == ["a.loose", "s.loose"]


def test_several_exclude_globs_each_exclude(tmp_path, registry):
    fmt = CheckpointFormat("multi", 1, ("*.multi",), lambda c, d: {}, exclude_globs=("a*", "b*"))
    registry.register(declaring(fmt), name="multi-plugin")
    for name in ("a.multi", "b.multi", "c.multi"):
        (tmp_path / name).write_bytes(b"")
    assert [c.path.name for c in registry.discover(tmp_path).candidates["multi"]] == ["c.multi"]


@pytest.mark.parametrize("name", ["", "  ", None])
def test_a_format_without_a_name_is_refused(registry, name):
    with pytest.raises(PluginError) as err:
        registry.register(declaring(CheckpointFormat(name, 1, ("*.x",), lambda c, d: {})), name="nameless")
    assert str(err.value) == "plugin 'nameless': a format needs a non-empty string name"


# -- a format used without the registrar (no guard): load_checked still contains it -------------------------


def _raw(load) -> CheckpointFormat:
    return CheckpointFormat("raw", 1, ("*.raw",), load)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad\nmore"), "plugin '' (format 'raw') failed in load: raised ValueError: bad."),
        (SystemExit(3), "plugin '' (format 'raw') failed in load: called sys.exit(3)."),
        (PermissionError(13, "Permission denied"), "cannot read it (Permission denied; errno 13)"),
    ],
)
def test_an_unguarded_loader_failing(tmp_path, registry, error, expected):
    from ckpt_formats import Candidate

    def load(candidate, device):
        raise error

    path = tmp_path / "m.raw"
    path.write_bytes(b"")
    with pytest.raises(CheckpointLoadError) as err:
        registry.load(_raw(load), Candidate("raw", path), "cpu")
    assert str(err.value).startswith(f"{path}: {expected}")


def test_loader_warnings_are_logged_with_their_category(tmp_path, registry, caplog):
    import warnings

    from ckpt_formats import Candidate

    def load(candidate, device):
        warnings.warn("old layout", DeprecationWarning, stacklevel=1)
        return {}

    path = tmp_path / "m.raw"
    path.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="ckpt_formats"):
        registry.load(_raw(load), Candidate("raw", path), "cpu")
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [f"{path}: DeprecationWarning from the raw loader: old layout"]


def test_a_loader_returning_no_mapping(tmp_path, registry):
    from ckpt_formats import Candidate

    path = tmp_path / "m.raw"
    path.write_bytes(b"")
    with pytest.raises(CheckpointLoadError) as err:
        registry.load(_raw(lambda c, d: [1, 2]), Candidate("raw", path), "cpu")
    assert str(err.value) == f"{path}: the raw loader returned list, not a mapping of tensors (plugin '')"


def test_a_git_lfs_pointer_and_content_matching_no_format(tmp_path, registry):
    lfs = tmp_path / "lfs"
    lfs.mkdir()
    (lfs / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 12345\n"
    )
    with pytest.raises(CheckpointContentError) as err:
        registry.resolve(lfs)
    assert str(err.value) == (
        f"{lfs / 'model.safetensors'} is a Git LFS pointer file, not the weights: run `git lfs pull` in its "
        "repository or download the real file"
    )
    (tmp_path / "x.safetensors").write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointContentError) as err:
        registry.resolve(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'x.safetensors'} is named like a safetensors file but its content is not a recognised "
        "checkpoint format. It was not loaded: rename it to the right extension, or re-download/re-export it"
    )


def test_a_backend_torch_has_but_this_machine_lacks(tmp_path, registry):
    import torch

    if not hasattr(torch, "xpu") or torch.xpu.is_available():
        pytest.skip("needs a torch with an xpu module and no XPU")
    write_safetensors(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path, device="xpu")
    assert str(err.value) == (
        f"{tmp_path / 'model.safetensors'}: not loaded onto xpu: xpu is not available in this torch build or "
        "on this machine. Choose another device (device='cpu'; command line: --device cpu)"
    )
