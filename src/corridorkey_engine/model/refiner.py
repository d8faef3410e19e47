"""The CNN refiner: full-resolution corrections of the coarse prediction, whole or in tiles.

A 3×3 stem and four residual blocks of dilated 3×3 convolutions (dilations 1, 2, 4, 8), each convolution
followed by ``GroupNorm(8)``; module names and parameters are those of the published checkpoint. At 2048
every 64-channel activation is 512 MiB in float16, so the whole-image path (:meth:`CNNRefiner.forward`)
frees what is dead and normalises and activates in place (with autograd off): a block holds its input, its
intermediate and its output, no more.

The tiled path (``tile=``, the engine's low-memory mode) gives the **same** result with one full-size
activation (the block's input) plus tile-sized work at a time, recomputing rather than storing:

- every value of a tile is computed from its *receptive field*: the region grown by the dilation of each
  convolution on the way, clipped to the image and padded with zeros where the whole-image convolution
  pads with zeros (:func:`_conv_region`), so a tile's values are the whole image's values;
- GroupNorm's statistics are over the whole image, so they are gathered before they are used: a block is
  three sweeps over the tiles (the first convolution's statistics; the second's; then the output), each
  tile's per-channel moments merged exactly (Chan's parallel formula, float64 where the device has it);
- a block's output rows are written over its input only once no later tile needs those input rows (one
  band of rows is held back), so the input and the output never both exist in full.

Tiling that changes the statistics (blending tiles normalised on their own, as upstream's tiled refiner
does) drifts from the whole-image result; this does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import SpatialGroupNorm, apply_affine, channel_moments, group_statistics

REFINER_OUTPUT_SCALE = 10.0
"""The refiner predicts small values; its logit corrections are its output times this."""

Region = tuple[int, int, int, int]
"""``(top, bottom, left, right)``: rows ``top:bottom`` and columns ``left:right`` of the image."""


def _inference(*tensors: torch.Tensor) -> bool:
    """Whether in-place operations are safe: autograd is off or none of ``tensors`` needs a gradient."""
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


class RefinerBlock(nn.Module):
    """A residual block of two dilated 3×3 convolutions with GroupNorm(8)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=dilation, dilation=dilation)
        self.gn1 = SpatialGroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=dilation, dilation=dilation)
        self.gn2 = SpatialGroupNorm(8, channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gn1.forward_(self.conv1(x), relu=True)
        out = self.gn2.forward_(self.conv2(out))  # the first intermediate is freed here
        if _inference(out, x):
            return out.add_(x).relu_()
        return self.relu(out + x)


class CNNRefiner(nn.Module):
    """Full-resolution correction of the coarse logits from the image and the coarse predictions.

    Input: normalised RGB (3) + coarse sigmoid alpha (1) and foreground (3). Output: logit deltas for
    alpha (1) and foreground (3), already scaled by :data:`REFINER_OUTPUT_SCALE`.
    """

    def __init__(self, in_channels: int = 7, channels: int = 64, out_channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
            SpatialGroupNorm(8, channels),
            nn.ReLU(inplace=True),
        )
        self.res1 = RefinerBlock(channels, dilation=1)
        self.res2 = RefinerBlock(channels, dilation=2)
        self.res3 = RefinerBlock(channels, dilation=4)
        self.res4 = RefinerBlock(channels, dilation=8)
        self.final = nn.Conv2d(channels, out_channels, kernel_size=1)

    @property
    def blocks(self) -> tuple[RefinerBlock, ...]:
        return (self.res1, self.res2, self.res3, self.res4)

    def forward(self, rgb: torch.Tensor, coarse: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """The scaled corrections ``[B, out, H, W]``; ``tile``: compute in tiles of that many pixels a side
        (same result, far less memory: see the module's docstring)."""
        inputs = torch.cat([rgb, coarse], dim=1)
        if self.stem[0].weight.is_contiguous(memory_format=torch.channels_last):
            inputs = inputs.contiguous(memory_format=torch.channels_last)  # the layout its weights are in
        if tile is not None:
            return _TiledRefiner(self, inputs, tile).run()
        stem_conv, stem_norm = self.stem[0], self.stem[1]
        x = stem_norm.forward_(stem_conv(inputs), relu=True)
        del inputs
        for block in self.blocks:
            x = block(x)  # each block's input is freed once its output exists
        out = self.final(x)
        return out.mul_(REFINER_OUTPUT_SCALE) if _inference(out) else out * REFINER_OUTPUT_SCALE


def _grow(region: Region, by: int, height: int, width: int) -> tuple[Region, tuple[int, int, int, int]]:
    """``region`` grown by ``by`` on each side, clipped to the image, and the zero padding (left, right,
    top, bottom, as ``F.pad`` takes it) that stands for the part outside the image."""
    top, bottom, left, right = region
    clipped = (max(top - by, 0), min(bottom + by, height), max(left - by, 0), min(right + by, width))
    pad = (
        clipped[2] - (left - by),
        (right + by) - clipped[3],
        clipped[0] - (top - by),
        (bottom + by) - clipped[1],
    )
    return clipped, pad


def _conv_region(conv: nn.Conv2d, source, region: Region, height: int, width: int) -> torch.Tensor:
    """``conv``'s output over ``region`` (inside the image), equal to the whole-image convolution's:
    ``source(r)`` gives the convolution's input over a region ``r`` of the image; outside the image it is
    zero, as the whole-image convolution pads it."""
    reach = conv.dilation[0] * (conv.kernel_size[0] // 2)
    clipped, pad = _grow(region, reach, height, width)
    data = source(clipped)
    if any(pad):
        data = F.pad(data, pad)
    return F.conv2d(data, conv.weight, conv.bias, dilation=conv.dilation)


class _Moments:
    """Per-channel mean and biased variance merged over tiles (Chan's parallel formula)."""

    def __init__(self, device: torch.device) -> None:
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        mean, var = channel_moments(x)
        n = x.shape[2] * x.shape[3]
        mean, m2 = mean.to(self.dtype), var.to(self.dtype) * n
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def statistics(self, norm: SpatialGroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """``norm``'s scale and shift for the whole image."""
        assert self.mean is not None and self.m2 is not None
        mean, rstd = group_statistics(self.mean, self.m2 / self.count, norm.num_groups, norm.eps)
        return norm.scale_shift(mean, rstd)


def _normalise(x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor], relu: bool) -> torch.Tensor:
    """A tile normalised in place with the whole image's statistics (then its ReLU)."""
    return apply_affine(x, *scale_shift, relu=relu, inplace=True)


class _TiledRefiner:
    """One tiled run of a :class:`CNNRefiner` (inference only; see the module's docstring)."""

    def __init__(self, refiner: CNNRefiner, inputs: torch.Tensor, tile: int) -> None:
        if tile < 1:
            raise ValueError(f"tile must be at least 1 pixel, got {tile}")
        self.refiner = refiner
        self.inputs = inputs
        self.tile = tile
        self.height, self.width = inputs.shape[2:]
        self.tiles = [
            (top, min(top + tile, self.height), left, min(left + tile, self.width))
            for top in range(0, self.height, tile)
            for left in range(0, self.width, tile)
        ]

    def _moments(self, compute) -> _Moments:
        moments = _Moments(self.inputs.device)
        for region in self.tiles:
            moments.add(compute(region))
        return moments

    @torch.compiler.disable  # a Python loop over tiles: run eagerly inside a compiled model
    def run(self) -> torch.Tensor:
        with torch.inference_mode():
            return self._run()

    def _run(self) -> torch.Tensor:
        stem_conv, stem_norm = self.refiner.stem[0], self.refiner.stem[1]
        h, w = self.height, self.width

        def inputs(r: Region) -> torch.Tensor:
            return self.inputs[:, :, r[0] : r[1], r[2] : r[3]]

        def stem_pre(r: Region) -> torch.Tensor:
            return _conv_region(stem_conv, inputs, r, h, w)

        stem = self._moments(stem_pre).statistics(stem_norm)
        x = torch.empty(
            (self.inputs.shape[0], stem_conv.out_channels, h, w),
            dtype=self.inputs.dtype,
            device=self.inputs.device,
        )
        for r in self.tiles:
            x[:, :, r[0] : r[1], r[2] : r[3]] = _normalise(stem_pre(r), stem, relu=True)
        for block in self.refiner.blocks:
            self._block(block, x)
        return self.refiner.final(x).mul_(REFINER_OUTPUT_SCALE)

    def _block(self, block: RefinerBlock, x: torch.Tensor) -> None:
        """Replace ``x`` by ``block(x)``, in place, band of rows by band of rows."""
        h, w = self.height, self.width

        def source(r: Region) -> torch.Tensor:
            return x[:, :, r[0] : r[1], r[2] : r[3]]

        def conv1(r: Region) -> torch.Tensor:
            return _conv_region(block.conv1, source, r, h, w)

        norm1 = self._moments(conv1).statistics(block.gn1)

        def hidden(r: Region) -> torch.Tensor:
            return _normalise(conv1(r), norm1, relu=True)

        def conv2(r: Region) -> torch.Tensor:
            return _conv_region(block.conv2, hidden, r, h, w)

        norm2 = self._moments(conv2).statistics(block.gn2)
        # A tile's output needs the input up to 2·dilation·(kernel reach) rows away: rows of a finished
        # band are written back only when the band after the next one starts (bands are >= that reach).
        reach = 2 * block.conv1.dilation[0]
        held: list[tuple[Region, torch.Tensor]] = []
        band_top = None
        for r in self.tiles:
            if r[0] != band_top:
                band_top = r[0]
                keep = [(q, out) for q, out in held if q[1] + reach > band_top]
                for q, out in held:
                    if q[1] + reach <= band_top:
                        x[:, :, q[0] : q[1], q[2] : q[3]] = out
                held = keep
            out = _normalise(conv2(r), norm2, relu=False)
            out.add_(source(r)).relu_()
            held.append((r, out))
        for q, out in held:
            x[:, :, q[0] : q[1], q[2] : q[3]] = out
