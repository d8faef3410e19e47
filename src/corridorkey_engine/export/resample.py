"""The engine's two resizes written as plain tensor operations whose weights are computed from the frame's
size inside the graph, so that one exported file keys any ``H × W`` (a dynamic axis) with every runtime.

- :func:`resize_to_model`: the frame down (or up) to the model's square, as
  :func:`~corridorkey_engine.keying.frames.resize` (bilinear, antialiased: PyTorch's ``antialias=True``
  triangle filter stretched by the scale), as a weight matrix per axis.
- :func:`resize_to_frame`: the prediction back to the frame, as
  :func:`~corridorkey_engine.keying.frames.resize_lanczos` (OpenCV's ``INTER_LANCZOS4``: 8 taps per output
  pixel, clamped at the edges), as 8 gathers per axis.

The frame's size is never read as a Python number: it comes from ``ones.cumsum`` along the frame's axis, an
operation every tracer (``torch.jit.trace``, the ONNX exporter, ``torch.export``) records as depending on
the input, so no exporter bakes the example's size into the file.
"""

from __future__ import annotations

import math

import torch

from ..keying.frames import _LANCZOS_PHASES

_LANCZOS_A = 4.0


def _positions(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``0, 1, ..., n - 1`` (float64) for ``n = x.shape[dim]``, computed from ``x`` (dynamic under
    tracing)."""
    index = [0] * x.ndim
    index[dim] = slice(None)
    line = x[tuple(index)].detach()
    return torch.ones_like(line, dtype=torch.float64).cumsum(0) - 1.0


def _antialias_weights(size_in: torch.Tensor, positions_in: torch.Tensor, size_out: int) -> torch.Tensor:
    """``[size_out, size_in]`` weights of the antialiased bilinear resize (``_upsample_bilinear2d_aa``
    with ``align_corners=False``): the triangle filter, widened by the scale when shrinking, each row
    normalised to sum 1."""
    scale = size_in / size_out  # a 0-d tensor: dynamic
    support = scale.clamp(min=1.0)
    center = (torch.arange(size_out, dtype=torch.float64, device=positions_in.device) + 0.5) * scale
    distance = (positions_in[None, :] + 0.5 - center[:, None]) / support
    weights = (1.0 - distance.abs()).clamp(min=0.0)
    return (weights / weights.sum(dim=1, keepdim=True)).to(torch.float32)


def _resize_axis_dense(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    positions = _positions(x, dim)
    weights = _antialias_weights(positions[-1] + 1.0, positions, size).to(x.dtype)
    if dim == x.ndim - 1:
        return torch.matmul(x, weights.t())
    return torch.matmul(weights, x)


def resize_to_model(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, C, size, size]``, antialiased bilinear; exact (weights 1 and 0) when the
    frame already is ``size × size``."""
    return _resize_axis_dense(_resize_axis_dense(x, size, 3), size, 2)


def _lanczos_taps(positions_out: torch.Tensor, size_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, weight)``, both ``[n_out, 8]``: OpenCV's ``INTER_LANCZOS4`` taps for every output position
    (the same arithmetic as :func:`~corridorkey_engine.keying.frames.lanczos_taps`: float32 source
    position and fraction, taps in float64, normalised in float32)."""
    size_out = positions_out[-1] + 1.0
    scale = size_in / size_out
    position = ((positions_out + 0.5) * scale - 0.5).to(torch.float32)
    start = torch.floor(position)
    frac = (position - start).to(torch.float64)
    k = torch.arange(8, dtype=torch.float64, device=positions_out.device)
    offset = (frac[:, None] + 3.0 - k[None, :]).to(torch.float32).to(torch.float64)
    angle = -(frac + 3.0) * (math.pi / _LANCZOS_A)
    phases = torch.tensor(_LANCZOS_PHASES, dtype=torch.float64, device=positions_out.device)
    y = -offset * (math.pi / _LANCZOS_A)
    numerator = phases[:, 0] * torch.sin(angle)[:, None] + phases[:, 1] * torch.cos(angle)[:, None]
    taps = torch.where(offset.abs() >= 1e-6, numerator / (y * y), torch.full_like(y, 1e30)).to(torch.float32)
    weight = taps * (1.0 / taps.sum(dim=1, keepdim=True))
    index = start.to(torch.int64)[:, None] - 3 + torch.arange(8, device=positions_out.device)[None, :]
    return index.clamp(0, size_in - 1), weight


def _lanczos_axis(x: torch.Tensor, like: torch.Tensor, dim: int, like_dim: int) -> torch.Tensor:
    index, weight = _lanczos_taps(_positions(like, like_dim), x.shape[dim])
    shape = [1] * x.ndim
    shape[dim] = -1
    weight = weight.to(x.dtype)
    out = x.index_select(dim, index[:, 0]) * weight[:, 0].reshape(shape)
    for k in range(1, 8):
        out = out + x.index_select(dim, index[:, k]) * weight[:, k].reshape(shape)
    return out


def resize_to_frame(x: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """``[B, C, S, S]`` -> ``[B, C, H, W]`` of ``frame`` (``[B, *, H, W]``), Lanczos-4.

    Both passes gather whole rows (dim 2): the width pass runs on the transposed prediction, because a
    gather along the last, contiguous dimension is several times slower on the CPU (1080p: 1.7 s instead of
    10 s); the result is the same to the bit."""
    across = x.transpose(2, 3).contiguous()
    wide = _lanczos_axis(across, frame.transpose(2, 3), 2, 2).transpose(2, 3).contiguous()
    return _lanczos_axis(wide, frame, 2, 2)
