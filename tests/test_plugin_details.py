"""The builtin plugins to the detail: safetensors headers and sharded indexes, pickle refusals and mmap
(written to kill the mutants scripts/mutation found surviving in plugins/)."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from conftest import tiny_state_dict, write_pth, write_safetensors

from ckpt_formats import Candidate, CheckpointError, CheckpointLoadError, Registry


def header_file(path: Path, length: int, body: bytes) -> Path:
    path.write_bytes(struct.pack("<Q", length) + body)
    return path


def test_safetensors_header_errors_are_exact(tmp_path: Path) -> None:
    from ckpt_formats_safetensors import read_header

    short = tmp_path / "short.safetensors"
    short.write_bytes(b"abc")
    with pytest.raises(CheckpointLoadError) as err:
        read_header(short)
    assert str(err.value) == f"{short}: truncated safetensors file (3 bytes, no header)"

    for claimed in (11, 2**63 + 5):  # one byte past the end; a length with the top bit set
        path = header_file(tmp_path / f"claims{claimed}.safetensors", claimed, b'{"a": 1}  ')
        with pytest.raises(CheckpointLoadError) as err:
            read_header(path)
        assert str(err.value) == (
            f"{path}: safetensors header claims {claimed} bytes but the file has 10 after the length field; "
            "the file is truncated or corrupt: re-download it"
        )

    listed = header_file(tmp_path / "list.safetensors", 6, b"[1, 2]")
    with pytest.raises(CheckpointLoadError) as err:
        read_header(listed)
    assert str(err.value) == f"{listed}: safetensors header is not a JSON object"

    exact = header_file(tmp_path / "exact.safetensors", 8, b'{"a": 1}')  # the header fills the file
    assert read_header(exact) == {"a": 1}


def test_an_empty_safetensors_file_loads(tmp_path: Path, registry: Registry) -> None:
    write_safetensors(tmp_path / "empty.safetensors", {})
    assert dict(registry.resolve(tmp_path).state_dict) == {}


def test_the_device_reaches_the_loaders(tmp_path: Path, registry: Registry) -> None:
    """meta is a device torch.load maps to and safetensors refuses: either way it got there."""
    pth = write_pth(tmp_path / "m.pth")
    state, _ = registry.load(registry.get_format("pickle"), Candidate("pickle", pth), "meta")
    assert {t.device.type for t in state.values()} == {"meta"}

    (tmp_path / "st").mkdir()
    write_safetensors(tmp_path / "st" / "m.safetensors")
    single = Candidate("safetensors", tmp_path / "st" / "m.safetensors")
    with pytest.raises(CheckpointError, match="device meta is invalid"):
        registry.load(registry.get_format("safetensors"), single, "meta")
    sharded = write_sharded(tmp_path / "sharded")
    (candidate,) = registry.discover(sharded).candidates["safetensors-sharded"]
    with pytest.raises(CheckpointError, match="device meta is invalid"):
        registry.load(registry.get_format("safetensors-sharded"), candidate, "meta")


def test_pickle_loads_zip_checkpoints_memory_mapped(tmp_path: Path, registry: Registry) -> None:
    pth = write_pth(tmp_path / "m.pth")
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps to see the mapping")
    state, _ = registry.load(registry.get_format("pickle"), Candidate("pickle", pth), "cpu")
    assert str(pth) in maps.read_text()  # the file is mapped while its tensors live
    del state


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_refused_pickle_gives_the_first_line_of_the_reason(tmp_path: Path, registry: Registry) -> None:
    path = write_pth(tmp_path / "evil.pth", {"w": torch.ones(1), "x": Evil()})
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    with pytest.raises(pickle.UnpicklingError) as torch_err:  # torch's own words: long, and advice to
        torch.load(path, weights_only=True)  # turn the protection off
    assert "weights_only" in str(torch_err.value) and "\n" in str(torch_err.value).strip()
    # one line: what was refused (the global), never torch's advice to load it unsafely
    assert str(err.value) == (
        f"{path}: refused to unpickle (refused global print): only tensors and plain containers are "
        "accepted, anything else could run code. Only load it if you trust its source, and convert it to "
        "safetensors in an isolated environment"
    )


# -- sharded -----------------------------------------------------------------------------------------


def write_sharded(folder: Path, index_text: str | None = None, shard_meta: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = tiny_state_dict()
    names = list(state)
    save_file({k: state[k] for k in names[:2]}, str(folder / "m-1.safetensors"), metadata=shard_meta)
    save_file({k: state[k] for k in names[2:]}, str(folder / "m-2.safetensors"))
    index = {
        "metadata": {"total_size": 120},
        "weight_map": {k: f"m-{1 + i // 2}.safetensors" for i, k in enumerate(names)},
    }
    (folder / "m.safetensors.index.json").write_text(index_text or "\n  " + json.dumps(index))
    return folder


def test_a_sharded_set_is_discovered_as_one_candidate_and_keeps_its_metadata(
    tmp_path: Path, registry
) -> None:
    folder = write_sharded(tmp_path, shard_meta={"corridorkey.config": "{}"})
    (candidate,) = registry.discover(folder).candidates["safetensors-sharded"]
    assert candidate.format == "safetensors-sharded"
    assert candidate.paths == (
        folder / "m.safetensors.index.json",
        folder / "m-1.safetensors",
        folder / "m-2.safetensors",
    )

    resolved = registry.resolve(folder)  # the index starts with white space: still an index

    assert resolved.format.name == "safetensors-sharded"
    assert resolved.metadata == {"corridorkey.config": "{}", "total_size": "120"}


NOT_BESIDE = "which is not a file beside the index"


@pytest.mark.parametrize(
    ("shard", "problem"),
    [
        ("../m-1.safetensors", f"tensor 'a' maps to '../m-1.safetensors', {NOT_BESIDE}"),
        ("sub/m-1.safetensors", f"tensor 'a' maps to 'sub/m-1.safetensors', {NOT_BESIDE}"),
        (7, "tensor 'a' maps to a JSON number, not a file name"),
    ],
)
def test_an_index_naming_files_outside_its_folder_is_refused(
    tmp_path: Path, registry, shard, problem
) -> None:
    index = tmp_path / "m.safetensors.index.json"
    write_sharded(tmp_path, index_text=json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    assert str(err.value) == (
        f"{index}: not a valid sharded checkpoint index: {problem} (expected JSON "
        '{"weight_map": {TENSOR_NAME: SHARD_FILE_NAME, ...}}, every shard a file beside the index). '
        "Re-download or re-export the set"
    )


def test_a_shard_that_is_not_safetensors_is_named(tmp_path: Path, registry) -> None:
    folder = write_sharded(tmp_path)
    (folder / "m-2.safetensors").write_bytes(b"\x80\x04 not a safetensors file")
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(folder)
    message = str(err.value)  # the shard itself is named, with what is wrong and what to do
    assert message.startswith(f"{folder / 'm-2.safetensors'}: safetensors header claims "), message
    assert message.endswith("the file is truncated or corrupt: re-download it") and "\n" not in message


def test_sharded_metadata_with_one_shard_and_with_none(tmp_path: Path, registry) -> None:
    from safetensors.torch import save_file

    one = tmp_path / "one"
    one.mkdir()
    save_file({"w": torch.ones(2)}, str(one / "only.safetensors"), metadata={"from": "shard"})
    index = {"metadata": {"format": "pt"}, "weight_map": {"w": "only.safetensors"}}
    (one / "m.safetensors.index.json").write_text(json.dumps(index))
    assert registry.resolve(one).metadata == {"from": "shard", "format": "pt"}

    none = tmp_path / "none"
    none.mkdir()
    (none / "m.safetensors.index.json").write_text(json.dumps({"metadata": {"a": 1}, "weight_map": {}}))
    with pytest.raises(CheckpointLoadError) as err:  # an index of no tensors is refused, not an empty model
        registry.resolve(none)
    assert str(err.value).startswith(
        f"{none / 'm.safetensors.index.json'}: not a valid sharded checkpoint index: 'weight_map' lists no "
        "tensors"
    )
