"""Shard sets are exactly what their index says, for sharded safetensors and sharded pickle alike."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import assert_same_tensors, tiny_state_dict
from hub_testing import leftovers
from shards_testing import KINDS, save_shard, shard_name, write_shard_set

from ckpt_formats import CheckpointLoadError, CheckpointNotFoundError, HubSource
from ckpt_formats.hub import fetch

KIND_NAMES = list(KINDS)

BAD_WEIGHT_MAPS = {
    "list": ["model-00001-of-00002.safetensors"],
    "string": "model-00001-of-00002.safetensors",
    "null": None,
    "number": 3,
    "empty": {},
    "shard is a number": {"a": 1},
    "shard is null": {"a": None},
    "shard in a folder": {"a": "sub/shard.safetensors"},
    "shard outside the folder": {"a": "../shard.safetensors"},
    "shard is the parent": {"a": ".."},
    "shard is nameless": {"a": ""},
    "shard is the folder": {"a": "."},
    "shard with a backslash": {"a": "..\\shard.safetensors"},
}


def _write_index(directory, kind, document) -> object:
    _, index_suffix, stem = KINDS[kind]
    index = directory / f"{stem}{index_suffix}"
    index.write_text(json.dumps(document))
    return index


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("case", list(BAD_WEIGHT_MAPS))
def test_a_bad_weight_map_is_one_load_error_naming_the_index(tmp_path, registry, kind, case):
    index = _write_index(tmp_path, kind, {"weight_map": BAD_WEIGHT_MAPS[case]})
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    text = str(err.value)
    assert type(err.value) is CheckpointLoadError
    assert text.startswith(f"{index}: not a valid sharded checkpoint index") and "\n" not in text


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("document", [[], "text", None, {"no_weight_map": {}}])
def test_an_index_that_is_not_an_object_with_a_weight_map(tmp_path, registry, kind, document):
    index = _write_index(tmp_path, kind, document)
    with pytest.raises(CheckpointLoadError) as err:  # the content check or the index rules refuse it
        registry.resolve(tmp_path)
    text = str(err.value)
    assert text.startswith(str(index)) and "\n" not in text
    assert "not a valid sharded checkpoint index" in text or "content is a JSON file" in text


@pytest.mark.slow
@pytest.mark.parametrize("weight_map", ["list", "null"])
def test_the_cli_prints_one_line_not_a_traceback(tmp_path, weight_map):
    index = _write_index(tmp_path, "safetensors-sharded", {"weight_map": BAD_WEIGHT_MAPS[weight_map]})
    for args in (["resolve", tmp_path, "--load"], ["inspect", index]):
        out = subprocess.run(
            [sys.executable, "-m", "ckpt_formats.cli", *map(str, args)], capture_output=True, text=True
        )
        assert out.returncode == 1
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        assert out.stderr.startswith(f"ckpt-formats: error: {index}: not a valid sharded checkpoint index")


def test_corridorkey_infer_reports_a_bad_index_in_one_line(tmp_path):
    from helpers_ckpt import make_clip, run_cli

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    index = _write_index(ckpt, "safetensors-sharded", {"weight_map": ["a", "b"]})
    clip = make_clip(tmp_path / "clip", ["f1"])
    proc = run_cli("infer", clip, "--checkpoint-dir", ckpt, "--no-hub")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(index) in lines[0] and "not a valid sharded checkpoint index" in lines[0]


def test_fetch_refuses_a_bad_index_naming_it_and_places_nothing(hub, cache, tmp_path):
    name = "model.safetensors.index.json"
    hub.add_repo("someone/sharded", {name: json.dumps({"weight_map": "oops"}).encode()})
    source = HubSource("someone/sharded", endpoint=hub.url, cache_dir=cache, token=False, progress=False)
    target = tmp_path / "ckpt"
    with pytest.raises(CheckpointLoadError, match="not a valid sharded checkpoint index") as err:
        fetch(source, target, [_registry_format(name)])
    assert name in str(err.value) and "\n" not in str(err.value)
    assert leftovers(target) == []


def _registry_format(index_name):
    from ckpt_formats import get_registry

    return next(f for f in get_registry().all_formats() if index_name in f.hub_filenames)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_tensor_in_a_shard_the_index_does_not_assign_it_to(tmp_path, registry, kind):
    sd = {"a": torch.ones(3), "b": torch.zeros(3)}
    write_shard_set(tmp_path, kind, sd)  # a -> shard 1, b -> shard 2
    first, second = shard_name(kind, 1, 2), shard_name(kind, 2, 2)
    save_shard(tmp_path / second, {"b": torch.zeros(3), "a": torch.full((3,), 7.0)})  # a stale copy of a
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    index = tmp_path / f"{KINDS[kind][2]}{KINDS[kind][1]}"
    assert str(err.value) == (
        f"tensor 'a' is in shard {tmp_path / second} but the index {index} assigns it to {first}; the shards "
        "do not match the index: re-download the set"
    )
    assert _listing_error(index, registry) == str(err.value)  # inspect and diff hold the same rules


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_tensor_in_no_index_entry(tmp_path, registry, kind):
    index = write_shard_set(tmp_path, kind, {"a": torch.ones(3), "b": torch.zeros(3)})
    second = shard_name(kind, 2, 2)
    save_shard(tmp_path / second, {"b": torch.zeros(3), "extra": torch.ones(1)})
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    assert str(err.value) == (
        f"tensor 'extra' is in shard {tmp_path / second} but in no entry of the index {index}; the shard "
        "does not belong to this index: re-download the set"
    )
    assert _listing_error(index, registry) == str(err.value)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_listed_tensor_missing_from_its_shard(tmp_path, registry, kind):
    index = write_shard_set(tmp_path, kind, {"a": torch.ones(3), "b": torch.zeros(3)})
    save_shard(tmp_path / shard_name(kind, 2, 2), {})  # b is listed for this shard, which holds nothing
    with pytest.raises(CheckpointLoadError, match="in none of its shards") as err:
        registry.resolve(tmp_path)
    assert str(index) in str(err.value) and "'b'" in str(err.value)
    assert _listing_error(index, registry) == str(err.value)


def _listing_error(index, registry) -> str:
    """The error of listing the set's tensors (``inspect``, ``diff``: the format's ``open_tensors``)."""
    from ckpt_formats._inspection import inspect_checkpoint

    with pytest.raises(CheckpointLoadError) as err:
        inspect_checkpoint(index, registry=registry)
    return str(err.value)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_each_tensor_comes_from_the_shard_the_index_names(tmp_path, registry, kind):
    sd = tiny_state_dict(8)
    write_shard_set(tmp_path, kind, sd, shards=3)
    got = registry.resolve(tmp_path)
    assert got.format.name == kind
    assert_same_tensors(got.state_dict, sd)


def test_both_sharded_formats_share_one_implementation(registry):
    from ckpt_formats import shards

    for kind in KIND_NAMES:
        fmt = registry.get_format(kind)
        assert fmt.companions.__wrapped__ is shards.shard_names
        assert fmt.matches.__wrapped__ is shards.looks_like_index


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_shard_whose_index_is_missing_is_not_a_checkpoint(tmp_path, registry, kind, caplog):
    index = write_shard_set(tmp_path, kind, tiny_state_dict())
    index.unlink()  # what an interrupted copy leaves: shards, no index
    (tmp_path / shard_name(kind, 2, 2)).unlink()
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path)
    text = str(err.value)
    assert f"shards without their index (an interrupted set): {shard_name(kind, 1, 2)}; fetch" in text
    assert "present but matching no format: none" in text
    assert f"{shard_name(kind, 1, 2)} named like part of a sharded set" in caplog.text


def test_a_set_of_one_shard_is_a_whole_model(tmp_path, registry):
    from safetensors.torch import save_file

    save_file(tiny_state_dict(), str(tmp_path / "model-00001-of-00001.safetensors"))
    assert_same_tensors(registry.resolve(tmp_path).state_dict, tiny_state_dict())


def test_resolve_fetches_the_set_over_a_lone_shard(hub, cache, tmp_path, registry):
    from hub_testing import REPO

    source_dir = tmp_path / "repo"
    source_dir.mkdir()
    write_shard_set(source_dir, "safetensors-sharded", tiny_state_dict())
    hub.add_repo(REPO, {p.name: p.read_bytes() for p in source_dir.iterdir()})
    target = tmp_path / "ckpt"
    target.mkdir()
    lone = shard_name("safetensors-sharded", 1, 2)
    (target / lone).write_bytes((source_dir / lone).read_bytes())  # a crash left the first shard only
    source = HubSource(REPO, endpoint=hub.url, cache_dir=cache, token=False, progress=False, timeout=5.0)

    result = registry.resolve(target, hub=source)

    assert result.format.name == "safetensors-sharded" and result.downloaded
    assert_same_tensors(result.state_dict, tiny_state_dict())
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in source_dir.iterdir())


@pytest.mark.parametrize(
    ("document", "kind"),
    [([], "list"), ("text", "string"), (None, "null"), (3, "number"), (True, "boolean")],
)
def test_an_index_document_of_another_json_type_is_named(tmp_path, document, kind):
    from ckpt_formats.shards import read_index

    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps(document))
    with pytest.raises(CheckpointLoadError) as err:
        read_index(index)
    assert str(err.value).startswith(
        f"{index}: not a valid sharded checkpoint index: the document is a JSON {kind}, not an object"
    )


@pytest.mark.parametrize("extra", [0, 1])
def test_an_index_of_64_mib_is_read_and_a_larger_one_refused(tmp_path, extra):
    from ckpt_formats.shards import MAX_INDEX_BYTES, read_index

    index = tmp_path / "model.safetensors.index.json"
    body = b'{"weight_map": {"a": "model-00001-of-00001.safetensors"}}'
    index.write_bytes(body + b" " * (MAX_INDEX_BYTES - len(body) + extra))
    if extra:
        with pytest.raises(CheckpointLoadError) as err:
            read_index(index)
        expected = f"{index}: not a valid sharded checkpoint index: larger than 64 MiB ("
        assert str(err.value).startswith(expected)
    else:
        assert read_index(index) == {"weight_map": {"a": "model-00001-of-00001.safetensors"}}
