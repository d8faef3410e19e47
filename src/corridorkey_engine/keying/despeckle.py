"""Auto-despeckle: drop alpha islands smaller than a size.

Two implementations of the same operations: tensor operations for a GPU, so the matte never goes back to
the host there, and OpenCV for the CPU, where it is an order of magnitude faster.

On tensors, connected components (8-connectivity, as OpenCV's) are labelled by hook-and-compress rounds
over a union-find forest: each root adopts the smallest root found in the 3×3 neighbourhood of any of its
pixels, then every pixel jumps to its root. Roots only ever decrease, so the loop ends, with one root per
component, after a few rounds for real mattes (a handful of tensor operations each).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DESPECKLE_THRESHOLD = 0.5  # alpha above this is foreground for the island analysis
SAFE_ZONE_DILATION = 25  # px the kept islands grow before the matte is cut
SAFE_ZONE_BLUR = 5  # px radius of the Gaussian that softens the cut


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Label the 8-connected components of a boolean ``[B, H, W]`` mask.

    Returns int64 labels of the same shape: for a foreground pixel, the flat index (over ``B·H·W``) of
    the first pixel of its component; for background, ``B·H·W``.
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
    """``mask`` (boolean ``[B, H, W]``) without its components of fewer than ``min_area`` pixels."""
    if min_area <= 1 or not bool(mask.any()):
        return mask
    labels = connected_components(mask)
    areas = torch.bincount(labels.flatten(), minlength=labels.numel() + 1)
    return mask & (areas[labels] >= min_area)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey-level dilation of ``[B, 1, H, W]`` by a ``(2r+1)``-px square (two separable max-pools)."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    mask = F.max_pool2d(mask, kernel_size=(1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(mask, kernel_size=(k, 1), stride=1, padding=(radius, 0))


def gaussian_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, 1, H, W]`` with a ``(2r+1)``-tap kernel (OpenCV's default sigma
    for that size) and replicated borders."""
    if radius <= 0:
        return x
    size = 2 * radius + 1
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    taps = torch.arange(size, device=x.device, dtype=x.dtype) - radius
    kernel = torch.exp(-(taps**2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, size))
    return F.conv2d(x, kernel.view(1, 1, size, 1))


def despeckle_torch(alpha: torch.Tensor, min_area: int, dilation: int, blur: int) -> torch.Tensor:
    """:func:`despeckle` with tensor operations only (the GPU path)."""
    keep = remove_small_islands(alpha[:, 0] > DESPECKLE_THRESHOLD, min_area)
    safe = gaussian_blur(dilate(keep[:, None].to(alpha.dtype), dilation), blur)
    return alpha * safe.clamp(max=1.0)  # the blur's kernel sums to 1 only up to rounding


def despeckle_opencv(alpha: torch.Tensor, min_area: int, dilation: int, blur: int) -> torch.Tensor:
    """:func:`despeckle` with OpenCV on the host (the CPU path: its labelling and filters are much faster
    there than tensor operations). Same operations, same borders, as :func:`despeckle_torch`."""
    import cv2
    import numpy as np

    size = 2 * blur + 1
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    square = np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8) if dilation > 0 else None
    safe_zones = []
    for frame in alpha[:, 0].detach().float().cpu().numpy():
        binary = (frame > DESPECKLE_THRESHOLD).astype(np.uint8)
        if min_area > 1:
            count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
            keep = np.zeros(count, np.uint8)
            keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
            binary = keep[labels]
        if square is not None:
            binary = cv2.dilate(binary, square, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        safe = binary.astype(np.float32)
        if blur > 0:
            safe = cv2.GaussianBlur(safe, (size, size), sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
        safe_zones.append(np.minimum(safe, 1.0))
    safe_t = torch.from_numpy(np.stack(safe_zones))[:, None].to(alpha.device, alpha.dtype)
    return alpha * safe_t


def despeckle(
    alpha: torch.Tensor,
    min_area: int,
    *,
    dilation: int = SAFE_ZONE_DILATION,
    blur: int = SAFE_ZONE_BLUR,
) -> torch.Tensor:
    """Cut alpha islands (``alpha > 0.5``, 8-connected) smaller than ``min_area`` pixels out of ``alpha``
    (``[B, 1, H, W]``): tensor operations on a CUDA device, OpenCV on the host otherwise (the CPU, and
    MPS, whose integer kernels the labelling relies on are not all there).

    The kept islands are dilated by ``dilation`` px (a square) and blurred by ``blur`` px (Gaussian) into a
    soft safe zone that multiplies the matte, so edges and semi-transparent detail next to them survive.
    """
    if alpha.device.type == "cuda":
        return despeckle_torch(alpha, min_area, dilation, blur)
    return despeckle_opencv(alpha, min_area, dilation, blur)
