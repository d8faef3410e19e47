"""The frame contract: user arrays in, model input tensors; model output, user arrays out.

Inputs: image ``[H,W,3]`` or ``[B,H,W,3]`` (uint8, uint16 or float 0-1; sRGB unless linear), mask ``[H,W]``,
``[H,W,1]`` (or the same with a leading batch axis), linear 0-1. Everything after the upload runs on the
model's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import color
from .despeckle import despeckle

Array = np.ndarray | torch.Tensor
_TENSOR_DTYPES = (torch.uint8, torch.uint16, torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class PostProcessOptions:
    """How the model's prediction becomes the outputs (see :meth:`CorridorKeyEngine.process_frame`)."""

    despill_strength: float = 1.0
    auto_despeckle: bool = True
    despeckle_size: int = 400
    generate_comp: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.despill_strength <= 1.0:
            raise ValueError(f"despill_strength must be between 0 and 1, got {self.despill_strength}")
        if isinstance(self.despeckle_size, bool) or not isinstance(self.despeckle_size, int | np.integer):
            raise ValueError(f"despeckle_size must be a whole number of pixels, got {self.despeckle_size!r}")
        if self.despeckle_size < 0:
            raise ValueError(f"despeckle_size must be >= 0, got {self.despeckle_size}")


def _upload(x: Array, name: str, device: torch.device) -> torch.Tensor:
    """To a float32 tensor on ``device``, scaled to 0-1 by its integer type (uint8 travels as uint8)."""
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:
            x = x.astype(np.float32) / 65535.0
        elif x.dtype == np.float64 or x.dtype == np.float16:
            x = x.astype(np.float32)
        elif x.dtype not in (np.uint8, np.float32):
            raise TypeError(f"{name} must be uint8, uint16 or float, got {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    elif x.dtype not in _TENSOR_DTYPES:
        raise TypeError(f"{name} must be uint8, uint16 or float, got {x.dtype}")
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    if x.dtype == torch.uint16:
        return x.to(torch.float32) / 65535.0
    return x.to(torch.float32)


def to_batch(image: Array, mask: Array, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate and upload one frame or a batch: ``rgb [B,3,H,W]``, ``mask [B,1,H,W]`` (float32 on
    ``device``) and whether the input was batched."""
    if image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] or [B, H, W, 3] (RGB), got shape {tuple(image.shape)}")
    batched = image.ndim == 4
    lead = image.shape[:-1]  # (H, W) or (B, H, W)
    mask_shape = tuple(mask.shape)
    if mask_shape not in (tuple(lead), (*lead, 1)):
        raise ValueError(
            f"mask must be {list(lead)} or {[*lead, 1]} to match the image {list(image.shape)}, "
            f"got {list(mask_shape)}"
        )
    rgb = _upload(image, "image", device)
    alpha = _upload(mask, "mask", device)
    if not batched:
        rgb, alpha = rgb[None], alpha[None]
    if alpha.ndim == 3:
        alpha = alpha[..., None]
    return rgb.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2), batched


def resize(x: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize ``[B,C,H,W]``; antialiased when shrinking, untouched when the size already matches."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    shrink = h > height or w > width
    return F.interpolate(x, size=(height, width), mode=mode, align_corners=False, antialias=shrink)


def model_input(
    rgb: torch.Tensor, mask: torch.Tensor, size: int, *, input_is_linear: bool, dtype: torch.dtype
) -> torch.Tensor:
    """``[B,4,size,size]``: the image resized (in linear light when it is linear, then converted to sRGB),
    ImageNet-normalised, and the resized hint; in the model's ``dtype``."""
    rgb = resize(rgb, size, size)
    rgb = color.linear_to_srgb(rgb) if input_is_linear else rgb.clamp(0.0, 1.0)
    hint = resize(mask, size, size).clamp(0.0, 1.0)
    return torch.cat([color.imagenet_normalise(rgb), hint], dim=1).to(dtype)


def postprocess(
    alpha: torch.Tensor, fg: torch.Tensor, height: int, width: int, options: PostProcessOptions
) -> dict[str, torch.Tensor]:
    """The model's ``alpha`` / ``fg`` (any size) -> the outputs at ``height × width``, float32 ``[B,C,H,W]``:
    ``alpha`` (linear), ``fg`` (straight sRGB), ``processed`` (linear premultiplied RGBA after despeckle and
    despill) and, unless disabled, ``comp`` (sRGB preview over the checkerboard)."""
    alpha = resize(alpha.float(), height, width, mode="bicubic").clamp(0.0, 1.0)
    fg = resize(fg.float(), height, width, mode="bicubic").clamp(0.0, 1.0)
    matte = despeckle(alpha, options.despeckle_size) if options.auto_despeckle else alpha
    fg_linear = color.srgb_to_linear(color.despill(fg, options.despill_strength))
    out = {"alpha": alpha, "fg": fg, "processed": torch.cat([fg_linear * matte, matte], dim=1)}
    if options.generate_comp:
        background = color.srgb_to_linear(color.checkerboard(height, width, device=alpha.device))
        out["comp"] = color.linear_to_srgb(color.composite_over(fg_linear, matte, background))
    return out


def to_numpy(outputs: dict[str, torch.Tensor], batched: bool) -> dict[str, np.ndarray]:
    """``[B,C,H,W]`` tensors -> float32 ``[B,H,W,C]`` arrays on the host (``[H,W,C]`` when not batched)."""
    arrays = {}
    for name, tensor in outputs.items():
        array = tensor.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        arrays[name] = array if batched else array[0]
    return arrays
