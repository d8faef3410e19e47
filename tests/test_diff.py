"""``ckpt-formats diff A B``: two checkpoints of any formats compared tensor by tensor, each option shown to
change the outcome, exit 0 (equal) / 1 (different) / 2 (error), one tensor of each side at a time."""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path

import pytest
import torch
from conftest import tiny_state_dict, write_pth, write_safetensors
from plugin_testing import declaring

from ckpt_formats import CheckpointFormat
from ckpt_formats.cli import main
from ckpt_formats.diff import CHUNK, compare_values, diff_checkpoints
from ckpt_formats.tensors import TensorInfo, TensorReader
from ckpt_formats.testing import isolated_registry, write_sharded_safetensors


def run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A: a compiled model's .pth (``_orig_mod.`` names, in a ``model`` wrapper); B: safetensors with one
    tensor of each kind of difference."""
    a = tiny_state_dict()
    a["old"] = torch.zeros(2)
    b = {k: v.clone() for k, v in a.items() if k != "old"}
    b["encoder.bias"][1] += 0.5  # values: one element, 0.5 off
    b["head.weight"] = b["head.weight"].float()  # dtype: float16 -> float32, same values
    b["head.steps"] = b["head.steps"].reshape(5, 1)  # shape
    b["new"] = torch.ones(3)
    write_pth(tmp_path / "a.pth", {"model": {f"_orig_mod.{k}": v for k, v in a.items()}})
    return tmp_path / "a.pth", write_safetensors(tmp_path / "b.safetensors", b)


def test_every_kind_of_difference_across_formats(tmp_path: Path, capsys) -> None:
    a, b = pair(tmp_path)
    bias = tiny_state_dict()["encoder.bias"]

    status, out, err = run(capsys, "diff", a, b, "--strip-prefix", "_orig_mod.")

    assert status == 1 and err == ""
    rel = 0.5 / abs(float(bias[1]) + 0.5)
    assert out.splitlines() == [
        "A: " + str(a) + " (pickle, 5 tensors)",
        "B: " + str(b) + " (safetensors, 5 tensors)",
        "               TENSOR        A               B               DIFFERING  MAX ABS   MAX REL",
        f"values differ  encoder.bias  float32 [4]     float32 [4]        1 of 4      0.5  {rel:8.6g}",
        "shape differs  head.steps    int64 [5]       int64 [5, 1]",
        "dtype differs  head.weight   float16 [2, 4]  float32 [2, 4]     0 of 8        0         0",
        "only in B      new           -               float32 [3]",
        "only in A      old           float32 [2]     -",
        "different: 1 only in A, 1 only in B, 1 shape differs, 1 dtype differs, 1 values differ "
        "(1 equal tensors, bit for bit)",
    ]


def test_json_has_every_difference_and_the_exit_status_stays(tmp_path: Path, capsys) -> None:
    a, b = pair(tmp_path)
    status, out, _ = run(capsys, "diff", a, b, "--strip-prefix", "_orig_mod.", "--json")
    data = json.loads(out)
    assert status == 1 and data["equal"] is False and data["equal_tensors"] == 1
    assert data["counts"] == {"only_in_a": 1, "only_in_b": 1, "shape": 1, "dtype": 1, "values": 1}
    values = next(d for d in data["differences"] if d["kind"] == "values")
    found = (values["name"], values["count"], values["numel"], values["max_abs"])
    assert found == ("encoder.bias", 1, 4, 0.5)
    assert values["a"]["name"] == "_orig_mod.encoder.bias"  # the original name on each side
    only = next(d for d in data["differences"] if d["kind"] == "only_in_a")
    assert (only["name"], only["b"], only["count"], only["numel"]) == ("old", None, None, None)
    bias = {"name": "encoder.bias", "dtype": "float32", "shape": [4], "bytes": 16, "file": None}
    assert values["b"] == bias
    assert (data["a"]["format"], data["b"]["format"]) == ("pickle", "safetensors")
    assert (data["atol"], data["rtol"]) == (0.0, 0.0)


def test_strip_prefix_makes_the_names_meet(tmp_path: Path, capsys) -> None:
    write_pth(tmp_path / "a.pth", {f"_orig_mod.module.{k}": v for k, v in tiny_state_dict().items()})
    b = write_safetensors(tmp_path / "b.safetensors", tiny_state_dict())
    status, out, _ = run(capsys, "diff", tmp_path / "a.pth", b)
    assert status == 1 and out.splitlines()[-1].startswith("different: 4 only in A, 4 only in B")
    status, out, _ = run(capsys, "diff", tmp_path / "a.pth", b, "--strip-prefix", "_orig_mod.")
    assert status == 1  # module. is still there
    both = ["--strip-prefix", "_orig_mod.", "--strip-prefix", "module."]
    status, out, _ = run(capsys, "diff", tmp_path / "a.pth", b, *both)
    assert status == 0 and out.splitlines()[-1] == "equal (4 equal tensors, bit for bit)"
    status, _, _ = run(capsys, "diff", b, tmp_path / "a.pth", *both)  # stripped on either side
    assert status == 0


def test_bit_for_bit_unless_a_tolerance_is_given(tmp_path: Path, capsys) -> None:
    base = {"w": torch.linspace(1, 2, 10), "z": torch.zeros(3)}
    near = {"w": base["w"] + 1e-6, "z": -base["z"]}  # -0.0 is not the same bytes as 0.0
    a = write_safetensors(tmp_path / "a.safetensors", base)
    b = write_safetensors(tmp_path / "b.safetensors", near)

    status, out, _ = run(capsys, "diff", a, b, "--json")
    data = json.loads(out)
    assert status == 1 and data["counts"]["values"] == 2
    z = next(d for d in data["differences"] if d["name"] == "z")
    assert (z["count"], z["max_abs"]) == (3, 0.0)  # every element differs in its bits, by nothing in value
    for option, value, expected in [("--atol", "1e-5", 0), ("--atol", "1e-8", 1), ("--rtol", "1e-5", 0),
                                    ("--rtol", "1e-8", 1)]:  # fmt: skip
        status, out, _ = run(capsys, "diff", a, b, option, value)
        assert status == expected, (option, value, out)
    assert out.splitlines()[-1].endswith("(1 equal tensors, atol=0, rtol=1e-08)")


def test_ignore_leaves_tensors_out(tmp_path: Path, capsys) -> None:
    a, b = pair(tmp_path)
    args = ["diff", a, b, "--strip-prefix", "_orig_mod."]
    status, out, _ = run(capsys, *args, "--ignore", "head.*", "--ignore", "encoder.bias", "--ignore", "new")
    assert status == 1 and out.splitlines()[-1] == (
        "different: 1 only in A (1 equal tensors, bit for bit; 4 ignored)"
    )  # left: encoder.weight (equal) and old (only in A)
    status, out, _ = run(capsys, *args, "--ignore", "[!e]*", "--ignore", "encoder.bias", "--json")
    data = json.loads(out)
    assert status == 0 and data["equal_tensors"] == 1
    assert data["ignored"] == ["encoder.bias", "head.steps", "head.weight", "new", "old"]


def test_folders_and_sharded_sets_are_compared_as_their_checkpoint(tmp_path: Path, capsys) -> None:
    write_sharded_safetensors(tmp_path / "sharded" / "model.safetensors", tiny_state_dict())
    single = write_pth(tmp_path / "single" / "model.pth", tiny_state_dict())
    status, out, _ = run(capsys, "diff", tmp_path / "sharded", single)
    assert status == 0, out
    index = tmp_path / "sharded" / "model.safetensors.index.json"
    assert out.splitlines()[0] == f"A: {index} (safetensors-sharded, 4 tensors)"
    status, out, _ = run(capsys, "diff", tmp_path / "sharded", single, "--json")
    side = json.loads(out)["a"]
    assert side == {"path": str(tmp_path / "sharded"), "file": str(index), "format": "safetensors-sharded",
                    "tensors": 4}  # fmt: skip


def test_nan_and_infinity(tmp_path: Path) -> None:
    values = [math.nan, 1.0, 0.0, math.inf]
    a = write_safetensors(tmp_path / "a.safetensors", {"w": torch.tensor(values)})
    same = write_safetensors(tmp_path / "same.safetensors", {"w": torch.tensor(values)})
    b = write_safetensors(tmp_path / "b.safetensors", {"w": torch.tensor([2.0, 1.0, 0.0, math.inf])})
    assert diff_checkpoints(a, same).equal  # the same NaN in the same place is equal
    assert diff_checkpoints(a, same, atol=1e-3).equal
    (found,) = diff_checkpoints(a, b, atol=1e-3).differences
    assert (found.count, found.max_abs, found.max_rel) == (1, math.inf, math.inf)
    assert found.to_dict()["max_abs"] == "inf"  # JSON has no infinity


def test_errors_exit_2_on_one_line(tmp_path: Path, capsys) -> None:
    a, b = pair(tmp_path)
    status, out, err = run(capsys, "diff", a, tmp_path / "nope.safetensors")
    missing = tmp_path / "nope.safetensors"
    assert (status, out, err) == (2, "", f"ckpt-formats: error: {missing}: no such file\n")
    status, _, err = run(capsys, "diff", a, b, "--safe-only")
    assert status == 2 and "disabled by the safety policy" in err and len(err.splitlines()) == 1
    write_pth(tmp_path / "clash.pth", {"module.w": torch.ones(1), "w": torch.ones(1)})
    status, _, err = run(capsys, "diff", tmp_path / "clash.pth", b, "--strip-prefix", "module.")
    assert status == 2 and "'module.w' and 'w' are both 'w' once the prefixes module. are stripped" in err
    write_safetensors(tmp_path / "two" / "x.safetensors", tiny_state_dict())
    write_safetensors(tmp_path / "two" / "y.safetensors", tiny_state_dict())
    status, _, err = run(capsys, "diff", tmp_path / "two", b)
    assert status == 2 and "naming the file instead of the folder" in err
    for bad in ({"atol": -1.0}, {"rtol": math.nan}, {"rtol": math.inf}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a finite number >= 0"):
            diff_checkpoints(a, b, **bad)
    with pytest.raises(SystemExit) as usage:
        main(["diff", str(a), str(b), "--atol", "-1"])
    assert usage.value.code == 2


def test_values_are_compared_across_chunks() -> None:
    a = torch.zeros(CHUNK + 10)
    b = a.clone()
    b[3] = 0.25
    b[CHUNK + 5] = -2.0  # in the second slice
    assert compare_values(a, b) == (2, 2.0, 1.0)  # relative to |b|
    assert compare_values(b, a) == (2, 2.0, math.inf)  # |b| is 0 where they differ
    assert compare_values(a, b, atol=1.0, exact=False) == (1, 2.0, 1.0)
    assert compare_values(b, b.clone()) == (0, 0.0, 0.0)


class _Alive:
    """The tensors the readers below handed out that are still alive, and the most at any time."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.most = 0

    def add(self, tensor: torch.Tensor) -> None:
        self.refs = [r for r in self.refs if r() is not None] + [weakref.ref(tensor)]
        self.most = max(self.most, len(self.refs))


class _Counting(TensorReader):
    """A reader that makes each tensor when it is asked for, and tells ``alive``."""

    def __init__(self, count: int, alive: _Alive) -> None:
        self.count, self.alive = count, alive

    def infos(self) -> list[TensorInfo]:
        return [TensorInfo(f"t{i}", "float32", (1000,), 4000) for i in range(self.count)]

    def get(self, name: str) -> torch.Tensor:
        tensor = torch.full((1000,), float(int(name[1:])))
        self.alive.add(tensor)
        return tensor


def test_one_tensor_of_each_side_at_a_time(tmp_path: Path) -> None:
    """Through a format's reader, no earlier tensor of either side is still alive when the next is read."""
    alive = _Alive()
    for name in ("a.counted", "b.counted"):
        (tmp_path / name).write_bytes(b"x")
    fmt = CheckpointFormat(
        name="counted",
        priority=1,
        globs=("*.counted",),
        load=lambda candidate, device: {},
        open_tensors=lambda candidate: _Counting(50, alive),
    )
    registry = isolated_registry(declaring(fmt))

    report = diff_checkpoints(tmp_path / "a.counted", tmp_path / "b.counted", registry=registry)

    assert report.equal and report.equal_tensors == 50
    assert alive.most == 2  # the pair being compared, never more
