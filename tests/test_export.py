"""``corridorkey export``: each target, run by its own runtime (ONNX Runtime's CPU provider,
``torch.jit.load``, ``torch.export.load``), keys like :meth:`CorridorKeyEngine.process_frame`; the bundled
demo model (img_size 128) keeps every export small."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from corridorkey_engine.demo.clip import bundled_checkpoint_dir
from corridorkey_engine.export import resample
from corridorkey_engine.export.targets import ExportOptions, export_keyer
from corridorkey_engine.export.verify import (
    MAX_ABS_FLOAT32,
    MEAN_ABS_FLOAT16,
    compare,
    generated_frame,
    load_runtime,
    reference,
)
from corridorkey_engine.keying.frames import resize, resize_lanczos

ODD = (97, 131)  # odd and not square: the engine resizes in and back


@pytest.fixture(scope="module")
def demo_engine():
    from corridorkey_engine.engine import CorridorKeyEngine

    return CorridorKeyEngine(bundled_checkpoint_dir(), device="cpu", match_screen=False)


@pytest.mark.parametrize("size", [(97, 131), (200, 120), (128, 128), (300, 301)])
def test_in_graph_resizes_are_the_engines_kernels(size):
    generator = torch.Generator().manual_seed(1)
    frame = torch.rand(1, 4, *size, generator=generator)
    small = torch.rand(1, 4, 128, 128, generator=generator)
    down = resample.resize_to_model(frame, 128)
    up = resample.resize_to_frame(small, frame)
    assert (down - resize(frame, 128, 128)).abs().max() < 1e-6
    assert (up - resize_lanczos(small, *size, tensor_path=False)).abs().max() < 1e-6  # OpenCV's own
    if size == (128, 128):
        assert torch.equal(down, frame) and torch.equal(up, small)


def _check(engine, path, target, *, precision="float32", despill=0.0, nuke=False):
    run = load_runtime(path, target)
    differences = compare(run, engine, [(128, 128), ODD], despill_strength=despill, nuke=nuke)
    for d in differences:
        if precision == "float32":
            assert max(d.fg_max, d.alpha_max) <= MAX_ABS_FLOAT32, d.line()
        else:
            assert max(d.fg_mean, d.alpha_mean) <= MEAN_ABS_FLOAT16, d.line()
    return differences


@pytest.mark.slow
def test_onnx_run_by_onnxruntime_keys_like_the_engine(demo_engine, tmp_path):
    result = export_keyer(demo_engine, tmp_path / "k.onnx", ExportOptions("onnx"))
    _check(demo_engine, result.path, "onnx")
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert meta["corridorkey.img_size"] == "128" and meta["corridorkey.precision"] == "float32"
    assert meta["corridorkey.checkpoint"] == "corridorkey_demo.safetensors"
    import hashlib

    digest = hashlib.sha256((bundled_checkpoint_dir() / "corridorkey_demo.safetensors").read_bytes())
    assert meta["corridorkey.checkpoint_sha256"] == digest.hexdigest()


@pytest.mark.slow
def test_float16_onnx_stays_within_the_half_precision_tolerance(demo_engine, tmp_path):
    half = export_keyer(demo_engine, tmp_path / "h.onnx", ExportOptions("onnx", "float16")).path
    full = export_keyer(demo_engine, tmp_path / "f.onnx", ExportOptions("onnx")).path
    differences = _check(demo_engine, half, "onnx", precision="float16")
    assert max(d.fg_max for d in differences) > MAX_ABS_FLOAT32  # it really runs in half precision
    assert half.stat().st_size < 0.6 * full.stat().st_size


@pytest.mark.slow
def test_torchscript_run_by_jit_load_keys_like_the_engine_and_despills(demo_engine, tmp_path):
    plain = export_keyer(demo_engine, tmp_path / "k.pt", ExportOptions("torchscript")).path
    _check(demo_engine, plain, "torchscript")
    spilled = export_keyer(demo_engine, tmp_path / "d.pt", ExportOptions("torchscript", despill_strength=0.8))
    _check(demo_engine, spilled.path, "torchscript", despill=0.8)
    frame = np.random.default_rng(0).random((1, 4, 64, 80), dtype=np.float32)
    without, with_despill = (
        load_runtime(plain, "torchscript")(frame),
        load_runtime(spilled.path, "torchscript")(frame),
    )
    assert np.abs(without[:, :3] - with_despill[:, :3]).max() > 1e-3  # the option reaches the graph
    np.testing.assert_array_equal(without[:, 3], with_despill[:, 3])
    extra = {"corridorkey.json": ""}
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(spilled.path), _extra_files=extra)
    assert json.loads(extra["corridorkey.json"])["corridorkey.despill_strength"] == "0.8"


@pytest.mark.slow
def test_exported_program_run_by_torch_export_load_keys_like_the_engine(demo_engine, tmp_path):
    result = export_keyer(demo_engine, tmp_path / "k.pt2", ExportOptions("exported-program"))
    _check(demo_engine, result.path, "exported-program")
    extra = {"corridorkey.json": ""}
    torch.export.load(str(result.path), extra_files=extra)
    assert json.loads(extra["corridorkey.json"])["corridorkey.export.target"] == "exported-program"


NUKE_CHILD = """
import sys
import numpy as np
for name in ("corridorkey_engine", "ckpt_formats"):
    sys.modules[name] = None  # as in Nuke: no such package to import
import torch

module = torch.jit.load(sys.argv[1], map_location="cpu")
frame = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    np.save(sys.argv[3], module(frame).numpy())
"""


@pytest.mark.slow
def test_nuke_flavour_loads_without_this_package_and_keys_linear_premultiplied(demo_engine, tmp_path):
    path = export_keyer(
        demo_engine,
        tmp_path / "CorridorKey.pt",
        ExportOptions("torchscript", despill_strength=0.5, nuke=True),
    ).path
    image, hint = generated_frame(*ODD)
    linear = np.ascontiguousarray(np.power(image, 2.2, dtype=np.float32))
    frame = np.ascontiguousarray(np.concatenate([linear, hint[..., None]], -1).transpose(2, 0, 1)[None])
    np.save(tmp_path / "in.npy", frame)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-c", NUKE_CHILD, path, tmp_path / "in.npy", tmp_path / "out.npy"],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        graph = str(torch.jit.load(str(path)).inlined_graph)
    assert "aten::matmul" in graph and "scaled_dot_product_attention" not in graph  # PyTorch 1.x operators
    assert demo_engine.model.encoder.model.blocks[0].attn.fused_attn  # the engine's own model is untouched
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (1, 4, *ODD)  # rgba in, rgba out, at the frame's size
    expected = reference(demo_engine, linear, hint, despill_strength=0.5, nuke=True)
    assert np.abs(out - expected).max() <= MAX_ABS_FLOAT32
    processed = demo_engine.process_frame(linear, hint, input_is_linear=True, auto_despeckle=False)[
        "processed"
    ]
    np.testing.assert_allclose(out[0].transpose(1, 2, 0), processed, atol=MAX_ABS_FLOAT32)


@pytest.mark.slow
def test_compare_reports_a_file_that_keys_differently(demo_engine, tmp_path):
    spilled = export_keyer(demo_engine, tmp_path / "d.pt", ExportOptions("torchscript", despill_strength=1.0))
    run = load_runtime(spilled.path, "torchscript")
    (difference,) = compare(run, demo_engine, [ODD], despill_strength=0.0)
    assert not difference.within("float32") and not difference.within("float16")
    assert difference.fg_max > 1e-2 and difference.alpha_max <= MAX_ABS_FLOAT32


def test_options_are_checked():
    from corridorkey_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="use it with --to torchscript"):
        ExportOptions("onnx", nuke=True)
    with pytest.raises(ConfigError, match="unknown export target"):
        ExportOptions("tflite")
    with pytest.raises(ConfigError, match="float32 or float16"):
        ExportOptions("onnx", "bfloat16")


@pytest.mark.slow
def test_a_write_failing_midway_leaves_no_file(demo_engine, tmp_path):
    from test_write_paths import file_size_limit

    from ckpt_formats.atomic import is_temp_file

    target = tmp_path / "k.pt"
    with file_size_limit(1 << 20), pytest.raises(OSError, match="File too large"):
        export_keyer(demo_engine, target, ExportOptions("torchscript"))
    assert list(tmp_path.iterdir()) == []
    assert not any(is_temp_file(p) for p in tmp_path.iterdir())
