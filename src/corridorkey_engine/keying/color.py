"""Colour operations on ``[B, C, H, W]`` tensors, on whatever device they live (GPU or CPU)."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKER_SIZE = 128
CHECKER_COLOURS = (0.15, 0.55)  # sRGB grey levels of the preview's checkerboard


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function's inverse (IEC 61966-2-1); input and output clamped to 0-1."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).clamp(0.0, 1.0)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function (IEC 61966-2-1); input and output clamped to 0-1."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1.0 / 2.4) - 0.055).clamp(0.0, 1.0)


def imagenet_normalise(rgb: torch.Tensor) -> torch.Tensor:
    """``(rgb - mean) / std`` with ImageNet's statistics; ``rgb`` is ``[B, 3, H, W]`` sRGB 0-1."""
    mean = torch.tensor(IMAGENET_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - mean) / std


def despill(rgb: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Remove green spill: green is limited to the average of red and blue, the excess is added half to
    red and half to blue (luminance roughly kept), and the result is blended with the input by
    ``strength`` (0 = unchanged, 1 = full)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"despill strength must be between 0 and 1, got {strength}")
    if strength == 0.0:
        return rgb
    r, g, b = rgb.unbind(dim=1)
    excess = (g - (r + b) * 0.5).clamp(min=0.0)
    despilled = torch.stack([r + excess * 0.5, g - excess, b + excess * 0.5], dim=1)
    return despilled if strength == 1.0 else torch.lerp(rgb, despilled, strength)


def checkerboard(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The preview background, ``[1, 1, H, W]`` sRGB: 128-px squares of 0.15 (top-left) and 0.55."""
    ys = torch.arange(height, device=device) // CHECKER_SIZE
    xs = torch.arange(width, device=device) // CHECKER_SIZE
    odd = (ys[:, None] + xs[None, :]) % 2 == 1
    dark, light = CHECKER_COLOURS
    return torch.where(odd, light, dark).to(torch.float32)[None, None]


def composite_over(fg_linear: torch.Tensor, alpha: torch.Tensor, bg_linear: torch.Tensor) -> torch.Tensor:
    """Straight (un-premultiplied) ``fg`` over ``bg``, all linear: ``fg·a + bg·(1-a)``."""
    return torch.lerp(bg_linear, fg_linear, alpha)
