"""``ckpt-formats inspect`` lists every tensor: name, dtype, shape, bytes (and the shard file), sorted by
name, aligned; ``--tensors GLOB`` filters, ``--summary`` keeps the short form, ``--json`` includes the list. A
safetensors checkpoint is listed from its headers alone."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from conftest import tiny_state_dict, write_pth, write_safetensors

from ckpt_formats import CheckpointFormat, CheckpointLoadError, PluginError, PluginLoadError, hookimpl
from ckpt_formats._inspection import inspect_checkpoint
from ckpt_formats.cli import main
from ckpt_formats.testing import isolated_registry, write_sharded_safetensors


def run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def numbered() -> dict[str, torch.Tensor]:
    return {
        "blocks.10.w": torch.zeros(2, 3),
        "blocks.2.w": torch.zeros(1, dtype=torch.bfloat16),
        "blocks.2.scale": torch.tensor(1.5, dtype=torch.float64),
        "a": torch.zeros(1000, dtype=torch.int8),
    }


def test_every_tensor_sorted_by_name_and_aligned(tmp_path: Path, capsys) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", numbered(), {"k": "v"})
    status, out, _ = run(capsys, "inspect", path)
    assert status == 0
    lines = out.splitlines()
    assert lines[lines.index("") + 1 :] == [
        "TENSOR          DTYPE     SHAPE   BYTES",
        "a               int8      [1000]  1,000",
        "blocks.2.scale  float64   []          8",
        "blocks.2.w      bfloat16  [1]         2",
        "blocks.10.w     float32   [2, 3]     24",
    ]  # numbered parts in numeric order: blocks.2 before blocks.10; a scalar's shape is []
    assert lines[:3] == [f"file:        {path}", "format:      safetensors", "tensors:     4"]


def test_summary_is_the_short_form(tmp_path: Path, capsys) -> None:
    write_pth(tmp_path / "m.pth", {**tiny_state_dict(), "epoch": 3})
    status, out, _ = run(capsys, "inspect", tmp_path / "m.pth", "--summary")
    assert status == 0
    assert out.splitlines() == [
        f"file:        {tmp_path / 'm.pth'}",
        "format:      pickle (can execute code)",
        "tensors:     4",
        "parameters:  29",
        "bytes:       120",
        "dtypes:      float16 x1, float32 x2, int64 x1",
        "non-tensor:  1 entries",
    ]
    status, full, _ = run(capsys, "inspect", tmp_path / "m.pth")  # without it: the same, then the list
    assert full.splitlines()[:7] == out.splitlines()
    assert full.splitlines()[7:] == [
        "",
        "TENSOR          DTYPE    SHAPE   BYTES",
        "encoder.bias    float32  [4]        16",
        "encoder.weight  float32  [4, 3]     48",
        "head.steps      int64    [5]        40",
        "head.weight     float16  [2, 4]     16",
    ]


def test_a_sharded_set_names_the_file_of_each_tensor(tmp_path: Path, capsys) -> None:
    written = write_sharded_safetensors(tmp_path / "model.safetensors", tiny_state_dict())
    index = tmp_path / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    assert len(set(weight_map.values())) == 2 and index in written

    status, out, _ = run(capsys, "inspect", index, "--json")

    assert status == 0
    listed = {t["name"]: t["file"] for t in json.loads(out)["tensor_list"]}
    assert listed == weight_map
    status, out, _ = run(capsys, "inspect", index)
    table = out.splitlines()[out.splitlines().index("") + 1 :]
    assert table[0].split() == ["TENSOR", "DTYPE", "SHAPE", "BYTES", "FILE"]
    assert [(row.split()[0], row.split()[-1]) for row in table[1:]] == sorted(weight_map.items())


def test_tensors_glob_filters_the_list_and_the_counts(tmp_path: Path, capsys) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", tiny_state_dict())
    status, out, _ = run(capsys, "inspect", path, "--tensors", "encoder.*", "--tensors", "*.steps")
    assert status == 0
    lines = out.splitlines()
    assert lines[2:6] == [
        "tensors:     3 of 4, matching encoder.* or *.steps",
        "parameters:  21",
        "bytes:       104",
        "dtypes:      float32 x2, int64 x1",
    ]
    listed = [row.split()[0] for row in lines[lines.index("") + 2 :]]
    assert listed == ["encoder.bias", "encoder.weight", "head.steps"]

    write_pth(tmp_path / "m.pth", {**tiny_state_dict(), "epoch": 3})
    status, out, _ = run(capsys, "inspect", tmp_path / "m.pth", "--tensors", "head.*", "--summary")
    lines = out.splitlines()
    assert lines[1:3] == ["format:      pickle (can execute code)", "tensors:     2 of 4, matching head.*"]
    assert out.splitlines()[-1] == "non-tensor:  1 entries"  # the checkpoint's, kept

    status, out, _ = run(capsys, "inspect", path, "--tensors", "head.*", "--json")
    data = json.loads(out)
    assert [t["name"] for t in data["tensor_list"]] == ["head.steps", "head.weight"]
    assert (data["tensors"], data["selected_from"], data["tensor_globs"]) == (2, 4, ["head.*"])
    assert data["parameters"] == 5 + 8 and data["dtypes"] == {"float16": 1, "int64": 1}


def test_json_includes_the_list_unless_summary(tmp_path: Path, capsys) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", tiny_state_dict())
    status, out, _ = run(capsys, "inspect", path, "--json")
    data = json.loads(out)
    steps = {"name": "head.steps", "dtype": "int64", "shape": [5], "bytes": 40, "file": None}
    assert status == 0 and data["tensor_list"][2] == steps
    assert "selected_from" not in data
    status, out, _ = run(capsys, "inspect", path, "--json", "--summary")
    assert "tensor_list" not in json.loads(out) and json.loads(out)["tensors"] == 4


def test_a_thousand_tensors_are_listed_from_the_header_alone(tmp_path: Path, capsys) -> None:
    """The data region of this file is cut off: listing it can only come from the header, while loading it
    (which reads the data) fails on the same file."""
    tensors = {f"layers.{i}.weight": torch.full((16, 16), float(i)) for i in range(1000)}
    path = write_safetensors(tmp_path / "big.safetensors", tensors)
    (header_length,) = struct.unpack("<Q", path.read_bytes()[:8])
    with open(path, "r+b") as f:
        f.truncate(8 + header_length)  # the header stays; all 1,024,000 bytes of data are gone

    info = inspect_checkpoint(path)

    assert info.tensors == 1000 and info.bytes == 1000 * 16 * 16 * 4
    assert [t.name for t in info.tensor_list[:3]] == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    assert info.tensor_list[-1].name == "layers.999.weight" and info.tensor_list[-1].shape == (16, 16)
    status, out, _ = run(capsys, "inspect", path)
    assert status == 0 and len(out.splitlines()) == 6 + 1 + 1 + 1000
    status, _, err = run(capsys, "resolve", tmp_path, "--load")
    assert status == 1 and "big.safetensors" in err  # the data really is not there


def _plugin_with_open_tensors(open_tensors):
    class Plugin:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            register(
                CheckpointFormat(
                    name="lazy",
                    priority=5,
                    globs=("*.lazy",),
                    load=lambda candidate, device: {"w": torch.ones(2)},
                    open_tensors=open_tensors,
                )
            )

    return Plugin()


def test_a_failing_open_tensors_names_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "m.lazy").write_bytes(b"x")

    def broken(candidate):
        raise ZeroDivisionError("boom")

    registry = isolated_registry(_plugin_with_open_tensors(broken))
    with pytest.raises(PluginLoadError, match=r"m.lazy: plugin .* \(format 'lazy'\) failed in open_tensors"):
        inspect_checkpoint(tmp_path / "m.lazy", registry=registry)

    def not_a_reader(candidate):
        return {"w": torch.ones(2)}

    registry = isolated_registry(_plugin_with_open_tensors(not_a_reader))
    with pytest.raises(PluginLoadError, match="not a TensorReader"):
        inspect_checkpoint(tmp_path / "m.lazy", registry=registry)
    with pytest.raises(PluginError, match="open_tensors must be callable"):
        isolated_registry(_plugin_with_open_tensors("not callable"))


def test_a_format_without_open_tensors_is_loaded_and_listed(tmp_path: Path) -> None:
    write_pth(tmp_path / "m.pth", {"state_dict": {**tiny_state_dict(), "epoch": 1}})
    info = inspect_checkpoint(tmp_path / "m.pth")
    assert [t.name for t in info.tensor_list] == sorted(tiny_state_dict())
    assert info.non_tensor_entries == 1 and all(t.file is None for t in info.tensor_list)


def test_hostile_tensor_names_are_escaped_in_the_table(tmp_path: Path, capsys) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", {"evil\x1b[2J\nname": torch.zeros(1)})
    status, out, _ = run(capsys, "inspect", path)
    assert status == 0 and "evil\\x1b[2J\\nname  float32" in out and "\x1b" not in out


def test_a_truncated_tensor_read_is_a_load_error(tmp_path: Path) -> None:
    from ckpt_formats import get_registry

    path = write_safetensors(tmp_path / "m.safetensors", tiny_state_dict())
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 4)
    registry = get_registry()
    fmt, candidate = registry.candidate_for_file(path)
    reader, _ = registry.open_tensors(fmt, candidate)
    with reader, pytest.raises(CheckpointLoadError, match="cannot read tensor"):
        for info in reader.infos():
            reader.get(info.name)
