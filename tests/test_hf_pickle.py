"""Hugging Face's pickle conventions: ``pytorch_model.bin`` (content-sniffed), sharded ``.bin`` sets, and the
order in which a Hub repository's files are asked for."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch
from conftest import assert_same_tensors, tiny_state_dict, write_pth, write_safetensors
from hub_testing import leftovers
from shards_testing import RunsShell, WritesMarker, shard_name, write_shard_set

from ckpt_formats import CheckpointLoadError, CheckpointNotFoundError, HubSource


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ckpt_formats.cli", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_pytorch_model_bin_resolves_as_pickle(tmp_path, registry, container):
    sd = tiny_state_dict(1)
    torch.save(sd, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=container == "zip")
    got = registry.resolve(tmp_path)
    assert got.format.name == "pickle" and got.path.name == "pytorch_model.bin"
    assert_same_tensors(got.state_dict, sd)


def test_a_bin_file_that_is_not_a_pickle_is_not_a_candidate(tmp_path, registry):
    (tmp_path / "tokenizer.bin").write_bytes(bytes(range(256)) * 4)  # some other program's .bin
    write_pth(tmp_path / "model.pth")
    found = registry.discover(tmp_path)
    assert [c.path.name for c in found.candidates["pickle"]] == ["model.pth"]  # no ambiguity
    assert registry.resolve(tmp_path).path.name == "model.pth"

    (tmp_path / "model.pth").unlink()
    with pytest.raises(CheckpointNotFoundError, match="present but matching no format: tokenizer.bin"):
        registry.resolve(tmp_path)


def test_a_bin_file_named_explicitly_is_checked_before_loading(tmp_path, registry):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00\x01" * 100)
    with pytest.raises(CheckpointLoadError, match="named like a pickle file but its content is"):
        registry.load(*registry.candidate_for_file(path))


def test_training_args_bin_is_never_a_candidate(tmp_path, registry):
    torch.save({"not": "weights"}, tmp_path / "training_args.bin")
    write_pth(tmp_path / "pytorch_model.bin")
    assert registry.resolve(tmp_path).path.name == "pytorch_model.bin"


def test_sharded_pickle_set_loads_as_one_state_dict(tmp_path, registry):
    sd = tiny_state_dict(2)
    write_shard_set(tmp_path, "pickle-sharded", sd, shards=3)
    got = registry.resolve(tmp_path)
    assert got.format.name == "pickle-sharded" and got.format.executes_code
    assert got.paths[0].name == "pytorch_model.bin.index.json"
    assert [p.name for p in got.paths[1:]] == [shard_name("pickle-sharded", i, 3) for i in (1, 2, 3)]
    assert got.shadowed == []  # the shards are not checkpoints of their own
    assert_same_tensors(got.state_dict, sd)
    assert got.metadata == {"total_size": "1234"}


def test_sharded_pickle_ranks_below_every_safe_format(tmp_path, registry):
    safe = [f for f in registry.all_formats() if not f.executes_code]
    assert safe and min(f.priority for f in safe) > registry.get_format("pickle-sharded").priority
    assert registry.get_format("pickle-sharded").priority > registry.get_format("pickle").priority
    write_shard_set(tmp_path, "pickle-sharded", tiny_state_dict(2))
    write_safetensors(tmp_path / "model.safetensors")
    got = registry.resolve(tmp_path)
    assert got.format.name == "safetensors"
    assert sorted(c.format for c in got.shadowed) == ["pickle-sharded"]


def test_safe_only_removes_the_sharded_pickle_format_and_names_the_index(tmp_path, registry):
    write_shard_set(tmp_path, "pickle-sharded", tiny_state_dict(2))
    assert "pickle-sharded" not in [f.name for f in registry.formats(safe_only=True)]
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path, safe_only=True)
    assert "pytorch_model.bin.index.json (pickle-sharded)" in str(err.value)


@pytest.mark.parametrize("payload", [WritesMarker, RunsShell])
def test_malicious_bin_and_malicious_shard_never_run(tmp_path, registry, payload):
    marker = tmp_path / "pwned"
    single = tmp_path / "single"
    single.mkdir()
    torch.save({"w": torch.ones(2), "evil": payload(marker)}, single / "pytorch_model.bin")
    with pytest.raises(CheckpointLoadError, match="refused to unpickle"):
        registry.resolve(single)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    write_shard_set(sharded, "pickle-sharded", {"a": torch.ones(1), "b": torch.zeros(1)})
    torch.save({"b": torch.zeros(1), "evil": payload(marker)}, sharded / shard_name("pickle-sharded", 2, 2))
    with pytest.raises(CheckpointLoadError, match="refused to unpickle") as err:
        registry.resolve(sharded)
    assert shard_name("pickle-sharded", 2, 2) in str(err.value)
    assert not marker.exists()


@pytest.mark.slow
def test_inspect_and_convert_a_pytorch_model_bin(tmp_path):
    sd = tiny_state_dict(3)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    out = cli("inspect", tmp_path / "pytorch_model.bin", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["format"] == "pickle" and json.loads(out.stdout)["tensors"] == len(sd)
    out = cli("convert", tmp_path / "pytorch_model.bin", tmp_path / "model.safetensors")
    assert out.returncode == 0, out.stderr
    from safetensors.torch import load_file

    assert_same_tensors(load_file(tmp_path / "model.safetensors"), sd)


# -- the Hub: which names, in which order ----------------------------------------------------------------


def test_default_hub_names_follow_a_hugging_face_repository(registry):
    names = [(f.name, n) for f in registry.formats() for n in f.hub_filenames]
    order = [n for _, n in names]
    expected = [
        "model.safetensors.index.json",
        "model.safetensors",
        "pytorch_model.bin.index.json",
        "pytorch_model.bin",
    ]
    assert [n for n in order if n in expected] == expected
    pickle_names = [n for f, n in names if registry.get_format(f).executes_code]
    assert order[-len(pickle_names) :] == pickle_names  # every pickle name after every safe one
    safe_order = [n for f in registry.formats(safe_only=True) for n in f.hub_filenames]
    assert "pytorch_model.bin" not in safe_order and "pytorch_model.bin.index.json" not in safe_order


def _bytes_of(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _hf_source(hub, cache):
    return HubSource("someone/bert-tiny", endpoint=hub.url, cache_dir=cache, token=False, progress=False)


def test_fetch_asks_in_hugging_face_order_and_gets_pytorch_model_bin(hub, cache, tmp_path, registry):
    sd = tiny_state_dict(5)
    hub.add_repo("someone/bert-tiny", {"pytorch_model.bin": _bytes_of(sd), "config.json": b"{}"})
    target = tmp_path / "ckpt"
    got = registry.resolve(target, hub=_hf_source(hub, cache))
    assert got.downloaded and got.format.name == "pickle" and got.path.name == "pytorch_model.bin"
    assert_same_tensors(got.state_dict, sd)
    asked = [name for server, method, name in hub.seen() if server == "hub" and method == "HEAD"]
    assert asked[: asked.index("pytorch_model.bin")] == [
        "model.safetensors.index.json",
        "model.safetensors",
        "model.npz",  # the example third-party plugin installed beside the builtins (priority 50)
        "pytorch_model.bin.index.json",
    ]


def test_fetch_places_a_sharded_pickle_set(hub, cache, tmp_path, registry):
    sd = tiny_state_dict(6)
    local = tmp_path / "local"
    local.mkdir()
    write_shard_set(local, "pickle-sharded", sd)
    hub.add_repo("someone/bert-tiny", {p.name: p.read_bytes() for p in local.iterdir()})
    target = tmp_path / "ckpt"
    got = registry.resolve(target, hub=_hf_source(hub, cache))
    assert got.format.name == "pickle-sharded"
    assert_same_tensors(got.state_dict, sd)
    assert leftovers(target) == sorted(p.name for p in local.iterdir())
