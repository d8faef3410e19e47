"""The CUDA-only parts of the speed and memory work (skipped without an NVIDIA GPU): the spatial GroupNorm in
half precision, the low-memory mode's output and memory, pinned asynchronous downloads, event-timed stages
and the half-precision numerics against float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import frame, tiny_model
from torch import nn

from corridorkey_engine import CorridorKeyEngine, save_checkpoint
from corridorkey_engine.demo.clip import bundled_checkpoint_dir
from corridorkey_engine.keying.transfer import StageClock
from corridorkey_engine.model.norm import SpatialGroupNorm
from corridorkey_engine.model.refiner import CNNRefiner

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_spatial_group_norm_on_cuda_is_within_half_precision_rounding(dtype) -> None:
    torch.manual_seed(0)
    stock = nn.GroupNorm(8, 64).cuda()
    nn.init.normal_(stock.weight, 1.0, 0.5)
    nn.init.normal_(stock.bias, 0.0, 0.5)
    spatial = SpatialGroupNorm(8, 64).cuda()
    spatial.load_state_dict(stock.state_dict())
    x = (torch.randn(1, 64, 512, 512, device="cuda") * 3 + 2).to(dtype)
    assert spatial.uses_spatial(x)  # auto on CUDA
    with torch.inference_mode():
        expected = stock(x.float())
        out = spatial.to(dtype)(x)
    ulp = 2**-10 if dtype == torch.float16 else 2**-7
    assert bool(((out.float() - expected).abs() <= expected.abs() * ulp + 1e-3).all())


def test_cuda_low_memory_mode_same_output_less_memory(tmp_path: Path) -> None:
    torch.manual_seed(1)
    refiner = CNNRefiner(7, 64, 4).cuda().eval()
    rgb = torch.randn(1, 3, 1024, 1024, device="cuda")
    coarse = torch.rand(1, 4, 1024, 1024, device="cuda")
    peaks, outs = [], []
    for tile in (None, 256):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.inference_mode():
            outs.append(refiner(rgb, coarse, tile=tile))
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert float((outs[0] - outs[1]).abs().max()) <= 1e-5 * float(outs[0].abs().max()) * 10
    assert peaks[1] < 0.6 * peaks[0]


def test_cuda_downloads_are_pinned_asynchronous_and_equal(tmp_path: Path) -> None:
    save_checkpoint(tiny_model(seed=6), tmp_path / "tiny.safetensors")
    engine = CorridorKeyEngine(tmp_path, device="cuda", precision="float32")
    image, hint = frame(96, 128)
    tensors, _ = engine.process_tensors(image, hint)
    clock = StageClock(engine.device)
    pending = engine.submit(image, hint, clock=clock)
    got = pending.result()
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(got[name], tensor[0].permute(1, 2, 0).cpu().numpy())
    assert set(clock.durations()) == {"upload", "model", "post", "download"}


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_precision_alpha_is_within_1e_3_of_float32(precision: str) -> None:
    reference = CorridorKeyEngine(bundled_checkpoint_dir(), device="cuda", precision="float32")
    half = CorridorKeyEngine(bundled_checkpoint_dir(), device="cuda", precision=precision)
    image, hint = frame(540, 960, seed=3)
    a = reference.process_frame(image, hint, outputs=("alpha",))["alpha"]
    b = half.process_frame(image, hint, outputs=("alpha",))["alpha"]
    assert float(np.mean(np.abs(a - b))) <= 1e-3


def test_channels_last_is_the_default_in_half_precision_on_cuda() -> None:
    half = CorridorKeyEngine(bundled_checkpoint_dir(), device="cuda")
    full = CorridorKeyEngine(bundled_checkpoint_dir(), device="cuda", precision="float32")
    off = CorridorKeyEngine(bundled_checkpoint_dir(), device="cuda", channels_last=False)
    assert half.channels_last and not full.channels_last and not off.channels_last
    weight = half.model.refiner.res1.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    image, hint = frame(256, 320, seed=5)
    a = half.process_frame(image, hint, outputs=("alpha",))["alpha"]
    b = off.process_frame(image, hint, outputs=("alpha",))["alpha"]
    assert float(np.mean(np.abs(a - b))) <= 1e-3


def test_staged_upload_on_cuda_arrives_on_the_compute_stream() -> None:
    from corridorkey_engine.keying.transfer import start_upload

    image = torch.from_numpy(frame(64, 64)[0]).pin_memory()
    staged = start_upload((image,), torch.device("cuda"))
    assert staged.ready is not None
    (moved,) = staged.take()
    assert moved.device.type == "cuda" and torch.equal(moved.cpu(), image)
