"""Auto-despeckle: drop alpha islands smaller than a size, with upstream CorridorKey's semantics.

The matte is thresholded (``alpha > 0.5``), its 8-connected islands smaller than ``min_area`` pixels are
dropped, and the kept ones become a soft *safe zone* that multiplies the matte: an 8-bit mask (0/255)
dilated by an ellipse (OpenCV's ``MORPH_ELLIPSE`` of ``2·dilation+1`` px) and blurred by an 8-bit
Gaussian (``2·blur+1`` taps, OpenCV's default sigma, reflected borders, OpenCV's bit-exact fixed-point
arithmetic), then divided by 255. This is what upstream's default (OpenCV) post-processing does.

Two implementations of exactly those operations: OpenCV on the host (the CPU path) and tensor operations
(the CUDA path, so the matte never leaves the GPU). On tensors, connected components are labelled by
hook-and-compress rounds over a union-find forest: each root adopts the smallest root found in the 3×3
neighbourhood of any of its pixels, then every pixel jumps to its root. Roots only ever decrease, so the
loop ends, with one root per component, after a few rounds for real mattes. The elliptic dilation is
built from shifted element-wise maxima, and the blur is computed in
exact integers (held in float32: every partial sum stays below 2**24), so both paths give the same mask.
"""

from __future__ import annotations

import functools
import math

import torch

DESPECKLE_THRESHOLD = 0.5  # alpha above this is foreground for the island analysis
SAFE_ZONE_DILATION = 25  # radius (px) of the ellipse the kept islands are dilated by
SAFE_ZONE_BLUR = 5  # radius (px) of the 8-bit Gaussian that softens the cut
_FIXED_ONE = 256  # the blur's taps are integers in units of 1/256 (OpenCV's ufixedpoint16)
_SMALL_TAPS = {3: (64, 128, 64), 5: (16, 64, 96, 64, 16), 7: (8, 28, 56, 72, 56, 28, 8)}


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Label the 8-connected components of a boolean ``[B, H, W]`` mask.

    Args:
        mask: boolean ``[B, H, W]``.

    Returns:
        int64 labels of the same shape: for a foreground pixel, the flat index (over ``B·H·W``) of the
        first pixel of its component; for background, ``B·H·W``.
    """
    b, h, w = mask.shape
    n = b * h * w
    flat_mask = mask.flatten()
    # parent[i] <= i: a forest over the pixels (plus one background sentinel), compressed after each round
    parent = torch.where(flat_mask, torch.arange(n, device=mask.device), n)
    parent = torch.cat([parent, parent.new_full((1,), n)])
    padded = torch.full((b, h + 2, w + 2), n, dtype=torch.int64, device=mask.device)
    while True:
        roots = parent[:n].view(b, h, w)
        padded[:, 1:-1, 1:-1] = roots
        # The 3×3 minimum, separably: over columns, then over rows.
        rows = torch.minimum(torch.minimum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
        smallest = torch.minimum(torch.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
        smallest = torch.where(mask, smallest, n)
        if torch.equal(smallest, roots):
            return roots
        # Hook: every root adopts the smallest root seen next to any of its pixels ...
        parent.scatter_reduce_(0, roots.flatten()[flat_mask], smallest.flatten()[flat_mask], reduce="amin")
        # ... then every pixel points straight at its new root.
        while True:
            grandparent = parent[parent]
            if torch.equal(grandparent, parent):
                break
            parent = grandparent


def remove_small_islands(mask: torch.Tensor, min_area: int) -> torch.Tensor:
    """``mask`` (boolean ``[B, H, W]``) without its 8-connected components of fewer than ``min_area`` px."""
    if min_area <= 1 or not bool(mask.any()):
        return mask
    labels = connected_components(mask)
    areas = torch.bincount(labels.flatten(), minlength=labels.numel() + 1)
    return mask & (areas[labels] >= min_area)


@functools.lru_cache(maxsize=8)
def ellipse_half_widths(radius: int) -> tuple[int, ...]:
    """Half-width of each row (``dy = -radius … radius``) of OpenCV's ``MORPH_ELLIPSE`` structuring
    element of size ``2·radius+1``: row ``dy`` covers ``dx = -w … w``."""
    if radius <= 0:
        return (0,)
    return tuple(
        round(radius * math.sqrt((radius * radius - dy * dy) / (radius * radius)))
        for dy in range(-radius, radius + 1)
    )


def _max_shifted(target: torch.Tensor, source: torch.Tensor, shift: int, dim: int) -> None:
    """``target = max(target, source shifted by shift along dim)`` in place; what leaves is dropped."""
    size = source.shape[dim]
    if abs(shift) >= size:
        return
    if shift > 0:
        dst, src = target.narrow(dim, shift, size - shift), source.narrow(dim, 0, size - shift)
    else:
        dst, src = target.narrow(dim, 0, size + shift), source.narrow(dim, -shift, size + shift)
    torch.maximum(dst, src, out=dst)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilation of a non-negative ``[B, 1, H, W]`` mask by the ellipse of :func:`ellipse_half_widths`;
    pixels outside the image are ignored (OpenCV's default border for ``dilate``).

    Row by row of the ellipse, from its tips to its middle: a running horizontal maximum is widened to
    the row's half-width, then merged into the result shifted up and down by the row's offset, so the
    whole dilation is about ``4·radius`` element-wise maxima.
    """
    if radius <= 0:
        return mask
    widths = ellipse_half_widths(radius)
    out = mask.clone()
    running, reach = mask.clone(), 0  # running = max of mask over |dx| <= reach
    for dy in range(radius, -1, -1):
        while reach < widths[radius + dy]:
            reach += 1
            _max_shifted(running, mask, reach, dim=-1)
            _max_shifted(running, mask, -reach, dim=-1)
        if dy == 0:
            torch.maximum(out, running, out=out)
        else:
            _max_shifted(out, running, dy, dim=-2)
            _max_shifted(out, running, -dy, dim=-2)
    return out


@functools.lru_cache(maxsize=8)
def gaussian_taps(radius: int) -> tuple[int, ...]:
    """The ``2·radius+1`` integer taps (summing to 256) of OpenCV's bit-exact 8-bit Gaussian blur with its
    default sigma for that size (``0.3·((n-1)/2 - 1) + 0.8``): the double-precision kernel quantised to
    1/256 with the rounding error carried from the outside in, the centre tap taking the remainder."""
    n = 2 * radius + 1
    if n in _SMALL_TAPS:  # OpenCV's fixed small kernels for the default sigma
        return _SMALL_TAPS[n]
    if n == 1:
        return (_FIXED_ONE,)
    sigma = n * 0.15 + 0.35
    values = [math.exp(x * x * (-0.125 / (sigma * sigma))) for x in range(1 - n, n, 2)]
    scale = 1.0 / sum(values)
    taps = [0] * n
    carried, side = 0.0, 0
    for i in range(radius):
        wanted = values[i] * scale * _FIXED_ONE + carried
        taps[i] = taps[n - 1 - i] = round(wanted)
        carried = wanted - taps[i]
        side += taps[i]
    taps[radius] = _FIXED_ONE - 2 * side
    return tuple(taps)


def _reflect_101(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices ``-pad … size+pad-1`` folded into the image as OpenCV's ``BORDER_REFLECT_101`` does."""
    index = []
    for i in range(-pad, size + pad):
        while size > 1 and not 0 <= i < size:
            i = -i if i < 0 else 2 * (size - 1) - i
        index.append(i if size > 1 else 0)
    return torch.tensor(index, device=device)


def blur_8bit(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """OpenCV's ``GaussianBlur`` of an 8-bit image (values 0-255 held in a float32 ``[B, 1, H, W]``),
    bit for bit: integer taps, reflected borders, the result rounded half up to whole levels."""
    if radius <= 0:
        return mask
    taps = gaussian_taps(radius)
    h, w = mask.shape[-2:]
    wide = mask.index_select(-1, _reflect_101(w, radius, mask.device))
    rows = sum(t * wide[..., i : i + w] for i, t in enumerate(taps))
    tall = rows.index_select(-2, _reflect_101(h, radius, mask.device))
    total = sum(t * tall[..., i : i + h, :] for i, t in enumerate(taps))
    return torch.floor((total + _FIXED_ONE**2 / 2) / _FIXED_ONE**2)


def despeckle_torch(alpha: torch.Tensor, min_area: int, dilation: int, blur: int) -> torch.Tensor:
    """:func:`despeckle` with tensor operations only (the CUDA path)."""
    keep = remove_small_islands(alpha[:, 0] > DESPECKLE_THRESHOLD, min_area)
    levels = dilate(keep[:, None].to(torch.float32), dilation) * 255.0
    safe = blur_8bit(levels, blur) / 255.0
    return alpha * safe.to(alpha.dtype)


def despeckle_opencv(alpha: torch.Tensor, min_area: int, dilation: int, blur: int) -> torch.Tensor:
    """:func:`despeckle` with OpenCV on the host (the CPU path)."""
    import cv2
    import numpy as np

    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation + 1, 2 * dilation + 1))
    safe_zones = []
    for frame in alpha[:, 0].detach().float().cpu().numpy():
        binary = np.where(frame > DESPECKLE_THRESHOLD, 255, 0).astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        keep = np.where(stats[:, cv2.CC_STAT_AREA] >= min_area, 255, 0).astype(np.uint8)
        keep[0] = 0  # the background
        zone = keep[labels]
        if dilation > 0:
            zone = cv2.dilate(zone, ellipse)
        if blur > 0:
            zone = cv2.GaussianBlur(zone, (2 * blur + 1, 2 * blur + 1), 0)
        safe_zones.append(zone.astype(np.float32) / np.float32(255.0))
    safe = torch.from_numpy(np.stack(safe_zones))[:, None].to(alpha.device, alpha.dtype)
    return alpha * safe


def despeckle(
    alpha: torch.Tensor,
    min_area: int,
    *,
    dilation: int = SAFE_ZONE_DILATION,
    blur: int = SAFE_ZONE_BLUR,
    tensor_path: bool | None = None,
) -> torch.Tensor:
    """Cut alpha islands (``alpha > 0.5``, 8-connected) smaller than ``min_area`` pixels out of ``alpha``.

    The kept islands are dilated by an ellipse of radius ``dilation`` px and blurred by an 8-bit Gaussian
    of radius ``blur`` px into a soft safe zone that multiplies the matte, so edges and semi-transparent
    detail next to them survive (upstream CorridorKey's OpenCV post-processing, exactly).

    Args:
        alpha: the matte, ``[B, 1, H, W]`` float.
        min_area: islands with fewer pixels are removed (0 or 1 keeps them all).
        dilation: radius of the elliptic dilation of the kept islands.
        blur: radius of the Gaussian blur of the safe zone.
        tensor_path: ``True`` for the tensor implementation, ``False`` for OpenCV on the host; default
            tensors on CUDA, OpenCV elsewhere (the CPU, and MPS, whose integer kernels the labelling
            relies on are not all there).

    Returns:
        the despeckled matte, like ``alpha``.
    """
    if tensor_path is None:
        tensor_path = alpha.device.type == "cuda"
    if tensor_path:
        return despeckle_torch(alpha, min_area, dilation, blur)
    return despeckle_opencv(alpha, min_area, dilation, blur)
