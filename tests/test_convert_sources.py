"""convert takes a folder as resolve does, refuses a destination discovery would never see, and writes a
sharded source's conversion with the sizes of the tensors it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_same_tensors, run_main
from shards_testing import write_shard_set

from ckpt_formats.cli import main
from ckpt_formats.convert import ConversionError, convert


def state_dict() -> dict[str, torch.Tensor]:
    return {f"layer{i}.weight": torch.arange(1000, dtype=torch.float32) + i for i in range(4)}


def test_convert_of_a_folder_converts_what_resolve_picks_there(tmp_path: Path, registry) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    write_shard_set(folder, "safetensors-sharded", state_dict(), shards=2)
    out = tmp_path / "joined.safetensors"

    proc = run_main(main, "ckpt-formats", ["convert", str(folder), str(out)])

    assert proc.returncode == 0, proc.stderr
    assert_same_tensors(registry.resolve(tmp_path, select="joined.safetensors").state_dict, state_dict())


@pytest.mark.parametrize("name", [".safetensors", ".hidden.safetensors"])
def test_a_destination_discovery_never_sees_is_refused(tmp_path: Path, name: str) -> None:
    src = tmp_path / "m.safetensors"
    from safetensors.torch import save_file

    save_file(state_dict(), str(src))
    proc = run_main(main, "ckpt-formats", ["convert", str(src), str(tmp_path / name)])
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"ckpt-formats: error: {tmp_path / name}: a hidden name (starting with '.'), which discovery never "
        "looks at, so resolve() would not find the result; name the file like model.safetensors"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_cast_sharded_set_carries_the_new_sizes(tmp_path: Path, registry) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    write_shard_set(folder, "safetensors-sharded", state_dict(), shards=2)
    half = 4 * 1000 * 2  # bytes of the float16 tensors

    single = convert(folder, tmp_path / "one" / "model.safetensors", dtype="float16")
    assert "total_size" not in registry.resolve(single.output.parent).metadata  # not the source's 16000

    two = tmp_path / "two" / "model.safetensors"
    resharded = convert(folder, two, dtype="float16", max_shard_size=half // 2)
    index = json.loads((resharded.output.parent / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == half
    loaded = registry.resolve(resharded.output.parent).state_dict
    assert {t.dtype for t in loaded.values()} == {torch.float16}


def test_convert_of_an_empty_folder_says_what_resolve_says(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no checkpoint found in"):
        convert(tmp_path, tmp_path / "out.safetensors")
    with pytest.raises(ConversionError):
        convert(tmp_path / "m.safetensors", tmp_path / ".safetensors")
