"""``corridorkey export`` from the command line: each target at the model's size and at 512, ``--verify``
and every option's effect on the written file."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from helpers_ckpt import run_cli as corridorkey

from corridorkey_engine.demo.clip import bundled_checkpoint_dir

ASSETS = str(bundled_checkpoint_dir())


def _metadata(path, target):
    if target == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    import warnings

    import torch

    extra = {"corridorkey.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if target == "torchscript":
            torch.jit.load(str(path), _extra_files=extra)
        else:
            torch.export.load(str(path), extra_files=extra)
    return json.loads(extra["corridorkey.json"])


@pytest.mark.slow
@pytest.mark.parametrize("img_size", [128, 512])
@pytest.mark.parametrize(
    ("target", "suffix"), [("onnx", "onnx"), ("torchscript", "pt"), ("exported-program", "pt2")]
)
def test_each_target_exports_and_verifies_from_the_cli(tmp_path, target, suffix, img_size):
    out = tmp_path / f"keyer.{suffix}"
    argv = [
        "export",
        out,
        "--to",
        target,
        "--checkpoint-dir",
        ASSETS,
        "--img-size",
        str(img_size),
        "--verify",
    ]
    proc = corridorkey(*argv)
    assert proc.returncode == 0, proc.stderr
    assert f"verified: {out} keys like the engine ({target} runtime, max abs <= 1e-4)" in proc.stdout
    assert f"verify {img_size}x{img_size}: " in proc.stdout
    meta = _metadata(out, target)
    assert meta["corridorkey.img_size"] == str(img_size)
    assert meta["corridorkey.export.target"] == target


@pytest.mark.slow
def test_precision_despill_nuke_and_screen_colour_reach_the_file(tmp_path):
    blue = tmp_path / "blue"
    blue.mkdir()  # the bundled model keys both screens; a file name with "blue" makes it the blue model
    shutil.copy(bundled_checkpoint_dir() / "corridorkey_demo.safetensors", blue / "demo_blue.safetensors")
    out = tmp_path / "nuke.pt"
    argv = ["export", out, "--to", "torchscript", "--nuke", "--despill", "0.7", "--precision", "float16"]
    proc = corridorkey(*argv, "--screen-color", "blue", "--checkpoint-dir", blue, "--no-hub", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "(torchscript for Nuke, float16" in proc.stdout and "mean abs <= 2e-3" in proc.stdout
    meta = _metadata(out, "torchscript")
    assert meta["corridorkey.precision"] == "float16"
    assert meta["corridorkey.despill_strength"] == "0.7"
    assert meta["corridorkey.export.target"] == "torchscript-nuke"
    assert meta["corridorkey.screen_color"] == "blue"
    assert meta["corridorkey.checkpoint"] == "demo_blue.safetensors"
    assert meta["corridorkey.input"].startswith("[1, 4, H, W] float32: linear RGB")
    channels = "rgba.red, rgba.green, rgba.blue, rgba.alpha"
    assert meta["corridorkey.nuke.channels_in"] == meta["corridorkey.nuke.channels_out"] == channels


def test_nuke_is_refused_for_other_targets_before_loading_anything(tmp_path):
    proc = corridorkey("export", tmp_path / "k.onnx", "--to", "onnx", "--nuke", "--checkpoint-dir", tmp_path)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == "corridorkey: error: --nuke is a TorchScript flavour: use it with --to torchscript"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_target_is_required_and_checked(tmp_path):
    assert corridorkey("export", tmp_path / "k").returncode == 2
    proc = corridorkey("export", tmp_path / "k", "--to", "tflite")
    assert proc.returncode == 2 and "invalid choice: 'tflite'" in proc.stderr


def test_a_missing_export_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed: import fails
    proc = corridorkey("export", tmp_path / "k.onnx", "--to", "onnx", "--checkpoint-dir", ASSETS)
    assert proc.returncode == 1
    expected = "the ONNX target needs the 'export' extra: pip install 'ckpt-formats[export]'"
    assert proc.stderr.strip() == f"corridorkey: error: {expected}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_select_chooses_the_checkpoint_the_file_is_made_from(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        shutil.copy(bundled_checkpoint_dir() / "corridorkey_demo.safetensors", folder / name)
    out = tmp_path / "k.pt"
    base = ["export", out, "--to", "torchscript", "--checkpoint-dir", folder, "--no-hub"]
    ambiguous = corridorkey(*base)
    assert ambiguous.returncode == 1 and "--select NAME or --exclude GLOB" in ambiguous.stderr
    assert not out.exists()
    proc = corridorkey(*base, "--select", "b.safetensors")
    assert proc.returncode == 0, proc.stderr
    assert _metadata(out, "torchscript")["corridorkey.checkpoint"] == "b.safetensors"
    assert "from b.safetensors" in proc.stdout
