"""The refiner's GroupNorm computed by spatial reductions, the in-place refiner, its exact tiled (low-memory)
path and the activation meter that measures what each holds."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_helpers import TINY, tiny_model
from torch import nn

from corridorkey_engine.model.config import CORRIDORKEY_V1
from corridorkey_engine.model.memory import ActivationMeter, activation_peak
from corridorkey_engine.model.norm import SpatialGroupNorm, channel_moments, group_statistics
from corridorkey_engine.model.refiner import CNNRefiner

GB = 1e9


def _norms(channels: int = 64, groups: int = 8, seed: int = 0) -> tuple[nn.GroupNorm, SpatialGroupNorm]:
    torch.manual_seed(seed)
    stock = nn.GroupNorm(groups, channels)
    nn.init.normal_(stock.weight, 1.0, 0.5)
    nn.init.normal_(stock.bias, 0.0, 0.5)
    spatial = SpatialGroupNorm(groups, channels)
    spatial.load_state_dict(stock.state_dict())
    spatial.kernel = "spatial"  # the CUDA path, here on the CPU
    return stock, spatial


@pytest.mark.parametrize("shape", [(1, 64, 96, 80), (3, 64, 17, 33), (2, 32, 40, 40)])
def test_spatial_group_norm_equals_torch_group_norm_in_float32(shape) -> None:
    stock, spatial = _norms(channels=shape[1])
    x = torch.randn(shape) * 4 + 3  # an offset mean, as conv outputs have
    with torch.no_grad():
        expected = stock(x)
        assert torch.allclose(spatial(x), expected, rtol=0, atol=1e-5)
        # in place, with the ReLU fused: the same values, written into the input itself
        inplace = x.clone()
        out = spatial.forward_(inplace, relu=True)
    assert out.data_ptr() == inplace.data_ptr()
    assert torch.allclose(out, torch.relu(expected), rtol=0, atol=1e-5)
    assert spatial.uses_spatial(x)


def test_spatial_group_norm_keeps_the_state_dict_and_works_in_channels_last() -> None:
    stock, spatial = _norms()
    assert list(spatial.state_dict()) == list(stock.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 64, 24, 20)
    with torch.no_grad():
        out = spatial(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(out, stock(x), rtol=0, atol=1e-5)


def test_half_precision_statistics_are_accumulated_in_float32() -> None:
    """bfloat16 activations: statistics as precise as float32 ones of the same values, so the output's
    error is the bfloat16 rounding of the result, not of the statistics."""
    stock, spatial = _norms()
    x = (torch.randn(1, 64, 64, 64) * 3 + 20).to(torch.bfloat16)  # |mean| >> std: cancellation-prone
    mean, var = channel_moments(x)
    assert mean.dtype == var.dtype == torch.float32
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(2, 3), correction=0)
    assert torch.allclose(mean.double(), ref_mean, rtol=1e-6)
    assert torch.allclose(var.double(), ref_var, rtol=1e-4)
    with torch.no_grad():
        expected = stock(x.float())
        out = spatial(x)
    assert out.dtype == torch.bfloat16
    # one bfloat16 rounding of the result: at most half its unit in the last place (2**-8 relative)
    assert bool(((out.float() - expected).abs() <= expected.abs() * 2**-8 + 1e-5).all())


def test_group_statistics_combine_channels_like_the_whole_group() -> None:
    offsets = torch.arange(16.0, dtype=torch.float64)[:, None, None]
    x = torch.randn(2, 16, 10, 10, dtype=torch.float64) + offsets
    mean, rstd = group_statistics(*channel_moments(x), groups=4, eps=1e-5)
    grouped = x.view(2, 4, -1)
    assert torch.allclose(mean.double(), grouped.mean(-1), atol=1e-6)
    assert torch.allclose(rstd.double(), torch.rsqrt(grouped.var(-1, unbiased=False) + 1e-5), rtol=1e-6)


def test_native_kernel_is_used_off_cuda_unless_asked() -> None:
    norm = SpatialGroupNorm(8, 64)
    x = torch.randn(1, 64, 8, 8)
    assert not norm.uses_spatial(x)  # auto on the CPU: torch's fused kernel is faster there
    norm.kernel = "native"
    assert not norm.uses_spatial(x.to("meta"))
    norm.kernel = "spatial"
    assert norm.uses_spatial(x) and not norm.uses_spatial(x[0])


def _refiner(channels: int = 16, seed: int = 0) -> CNNRefiner:
    torch.manual_seed(seed)
    refiner = CNNRefiner(7, channels, 4).eval()
    for module in refiner.modules():
        if isinstance(module, SpatialGroupNorm):
            nn.init.normal_(module.weight, 1.0, 0.3)
            nn.init.normal_(module.bias, 0.0, 0.3)
    return refiner


def test_refiner_blocks_have_the_published_dilations() -> None:
    refiner = CNNRefiner(7, 16, 4)
    assert [b.conv1.dilation for b in refiner.blocks] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert [b.conv2.padding for b in refiner.blocks] == [(1, 1), (2, 2), (4, 4), (8, 8)]


@pytest.mark.parametrize("tile", [16, 37, 64, 500])
def test_tiled_refiner_equals_the_whole_image(tile: int) -> None:
    """Tiles of any size (smaller than the largest dilation's reach too, and not dividing the image) give
    the whole-image result: statistics over the whole image, zero padding only at the image's border."""
    refiner = _refiner()
    rgb, coarse = torch.randn(2, 3, 150, 97), torch.rand(2, 4, 150, 97)
    with torch.no_grad():
        whole = refiner(rgb, coarse)
        tiled = refiner(rgb, coarse, tile=tile)
    scale = float(whole.abs().max())
    assert scale > 1.0  # the refiner does something
    assert float((tiled - whole).abs().max()) <= 1e-6 * scale * 10


def test_tiled_refiner_refuses_a_tile_under_one_pixel() -> None:
    with pytest.raises(ValueError, match="tile must be at least 1"):
        _refiner()(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 8, 8), tile=0)


def test_refiner_still_trains() -> None:
    """With autograd on, nothing is done in place: gradients reach every normalisation."""
    refiner = _refiner().train()
    out = refiner(torch.randn(1, 3, 20, 20), torch.rand(1, 4, 20, 20))
    out.square().mean().backward()
    norms = [m for m in refiner.modules() if isinstance(m, SpatialGroupNorm)]
    assert len(norms) == 9 and all(float(m.weight.grad.abs().sum()) > 0 for m in norms)


def test_low_memory_model_gives_the_same_output() -> None:
    model = tiny_model(seed=3)
    x = torch.randn(2, 4, TINY.img_size, TINY.img_size)
    low = copy.deepcopy(model)
    low.refiner_tile = 24
    with torch.inference_mode():
        whole, tiled = model(x), low(x)
    for name in ("alpha", "fg"):
        assert float((tiled[name] - whole[name]).abs().max()) <= 1e-5


def test_activation_meter_counts_live_tensors_once() -> None:
    with ActivationMeter() as meter:
        a = torch.empty(1000)  # 4000 bytes
        view = a[10:]  # the same storage: not counted again
        b = torch.empty(500)  # 2000 bytes
        del a, view
        c = torch.empty(250)  # 1000 bytes, after a's 4000 were freed
        b.add_(1)  # in place: nothing new
    assert meter.peak == 6000
    assert meter.live == 3000
    del b, c


def test_in_place_refiner_holds_a_block_input_and_two_activations_at_most() -> None:
    refiner = _refiner(channels=32)
    for module in refiner.modules():
        if isinstance(module, SpatialGroupNorm):
            module.kernel = "spatial"
    rgb, coarse = torch.randn(1, 3, 160, 160), torch.rand(1, 4, 160, 160)
    pixels = 160 * 160 * 4
    activation = 32 * pixels
    with torch.inference_mode(), ActivationMeter() as meter:
        refiner(rgb, coarse)
    # a block's input, intermediate and output (+ the 7-channel input)
    assert 3.0 * activation <= meter.peak <= 3.0 * activation + 7 * pixels
    with torch.inference_mode(), ActivationMeter() as tiled:
        refiner(rgb, coarse, tile=32)
    # one full activation, two bands of 32 rows held back and one tile's work (+ the same inputs): at this
    # small size the tiles' halos weigh more than at 2048 (see the meta-device test below)
    assert tiled.peak < 0.65 * meter.peak


def test_published_model_at_2048_fits_the_memory_targets() -> None:
    """Counted on the meta device: the published architecture at 2048, float16, batch 1 holds at most
    2.0 GB of activations (whole image) and 1.3 GB in the low-memory mode (issue targets)."""
    whole = activation_peak(CORRIDORKEY_V1, dtype=torch.float16)
    low = activation_peak(CORRIDORKEY_V1, dtype=torch.float16, refiner_tile=256)
    assert whole <= 2.0 * GB
    assert low <= 1.3 * GB
    assert low < 0.6 * whole


def test_with_autograd_the_spatial_norm_and_its_relu_are_out_of_place() -> None:
    """Training through the spatial path: the input is left alone and the gradient flows, also when only
    the input (not the norm's weights) needs one."""
    stock, spatial = _norms()
    x = torch.randn(2, 64, 12, 12, requires_grad=True)
    out = spatial.forward_(x, relu=True)
    assert out.data_ptr() != x.data_ptr()
    assert torch.allclose(out, torch.relu(stock(x)), atol=1e-5)
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    spatial.requires_grad_(False)
    y = torch.randn(1, 64, 8, 8, requires_grad=True)
    kept = y.detach().clone()
    spatial.forward_(y, relu=True).sum().backward()
    assert torch.equal(y.detach(), kept) and y.grad is not None


def test_activation_peak_follows_the_size_asked_for(monkeypatch) -> None:
    from corridorkey_engine.model import memory

    counted = []
    real = memory._count_peak
    monkeypatch.setattr(memory, "_PEAKS", {})
    monkeypatch.setattr(memory, "_count_peak", lambda *a: counted.append(a[1:]) or real(*a))
    small = activation_peak(TINY, dtype=torch.float32, img_size=64)
    large = activation_peak(TINY, dtype=torch.float32, img_size=128)
    assert small == activation_peak(TINY, dtype=torch.float32)  # TINY's own size is 64
    assert activation_peak(TINY, dtype=torch.float32, batch=2) > small
    assert activation_peak(TINY, dtype=torch.float32, refiner_tile=32) != small
    assert activation_peak(TINY, dtype=torch.bfloat16, img_size=64) < small
    activation_peak(TINY, dtype=torch.float32, img_size=128)
    # counted once per set of arguments: the same config asked again (at its own size by name) is cached
    assert counted == [(torch.float32, 1, None)] * 2 + [(torch.float32, 2, None), (torch.float32, 1, 32)] + [
        (torch.bfloat16, 1, None)
    ]
    assert 3.5 * small < large < 4.5 * small  # activations grow with the pixels
