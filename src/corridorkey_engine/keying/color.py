"""Colour operations on ``[B, C, H, W]`` tensors, on whatever device they live (GPU or CPU).

The transfer functions, despill and compositing follow upstream CorridorKey's semantics: negative values
are clamped to 0, values above 1 are kept (despill can push a channel over 1; the premultiplied EXR and
the preview keep it, and an 8-bit writer clips it).
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKER_SIZE = 128
CHECKER_COLOURS = (0.15, 0.55)  # sRGB grey levels of the preview's checkerboard
SCREEN_CHANNELS = {"green": 1, "blue": 2}  # the RGB channel a screen colour lights


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function's inverse (IEC 61966-2-1); negative input clamped to 0, none above."""
    x = x.clamp(min=0.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function (IEC 61966-2-1); negative input clamped to 0, none above."""
    x = x.clamp(min=0.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1.0 / 2.4) - 0.055)


def imagenet_normalise(rgb: torch.Tensor) -> torch.Tensor:
    """``(rgb - mean) / std`` with ImageNet's statistics; ``rgb`` is ``[B, 3, H, W]`` sRGB 0-1."""
    mean = torch.tensor(IMAGENET_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - mean) / std


def screen_channel(screen_color: str) -> int:
    """The RGB channel index of a screen colour (``"green"`` 1, ``"blue"`` 2).

    Raises:
        ValueError: ``screen_color`` is neither ``"green"`` nor ``"blue"``.
    """
    try:
        return SCREEN_CHANNELS[screen_color]
    except (KeyError, TypeError):
        raise ValueError(f"screen_color must be 'green' or 'blue', got {screen_color!r}") from None


def despill(rgb: torch.Tensor, strength: float = 1.0, screen_color: str = "green") -> torch.Tensor:
    """Remove screen spill from ``[B, 3, H, W]`` straight sRGB.

    The screen's channel (green, or blue for ``screen_color="blue"``) is limited to the average of the
    other two; the excess is added half to each of them (luminance roughly kept, not clamped: a channel
    may end above 1), and the result is blended with the input by ``strength``:
    ``rgb·(1-s) + despilled·s``.

    Args:
        rgb: straight sRGB colour.
        strength: 0 (unchanged) to 1 (full).
        screen_color: ``"green"`` or ``"blue"``.

    Returns:
        the despilled colour, like ``rgb``.

    Raises:
        ValueError: ``strength`` outside 0-1 or an unknown ``screen_color``.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"despill strength must be between 0 and 1, got {strength}")
    screen = screen_channel(screen_color)
    if strength == 0.0:
        return rgb
    others = [c for c in range(3) if c != screen]
    channels = list(rgb.unbind(dim=1))
    excess = (channels[screen] - (channels[others[0]] + channels[others[1]]) / 2.0).clamp(min=0.0)
    channels[screen] = channels[screen] - excess
    for c in others:
        channels[c] = channels[c] + excess * 0.5
    despilled = torch.stack(channels, dim=1)
    return despilled if strength == 1.0 else rgb * (1.0 - strength) + despilled * strength


def checker_size_for(height: int, width: int) -> int:
    """A checker square that shows at any frame size: 1/16 of the shorter side, at least 4 px (8 px on a
    128-px frame, 68 on 1080p, 135 on UHD, near upstream's fixed 128)."""
    return max(4, round(min(height, width) / 16))


def checkerboard(
    height: int, width: int, size: int = CHECKER_SIZE, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The preview background, ``[1, 1, H, W]`` sRGB: ``size``-px squares (upstream: 128) of 0.15
    (top-left) and 0.55."""
    ys = torch.arange(height, device=device) // size
    xs = torch.arange(width, device=device) // size
    odd = (ys[:, None] + xs[None, :]) % 2 == 1
    dark, light = CHECKER_COLOURS
    return torch.where(odd, light, dark).to(torch.float32)[None, None]


def composite_over(fg_linear: torch.Tensor, alpha: torch.Tensor, bg_linear: torch.Tensor) -> torch.Tensor:
    """Straight (un-premultiplied) ``fg`` over ``bg``, all linear: ``fg·a + bg·(1-a)``."""
    return fg_linear * alpha + bg_linear * (1.0 - alpha)
