"""The frame contract: user arrays in, model input tensors; model output, user arrays out.

Inputs: image ``[H,W,3]`` or ``[B,H,W,3]`` (uint8, uint16 or float 0-1; sRGB unless linear), mask ``[H,W]``,
``[H,W,1]`` (or the same with a leading batch axis), linear 0-1. Everything after the upload runs on the
model's device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection
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
    """How the model's prediction becomes the outputs (see :meth:`CorridorKeyEngine.process_frame`).

    The defaults are what upstream CorridorKey's ``run-inference`` uses by default (despill 5 of 10).
    ``checker_size`` is the preview's checker square in pixels (upstream's 128); None scales it with the
    frame (:func:`~corridorkey_engine.keying.color.checker_size_for`: 1/16 of the shorter side), so it
    shows on small frames too (the demo's 128-px clip).
    """

    despill_strength: float = 0.5
    auto_despeckle: bool = True
    despeckle_size: int = 400
    generate_comp: bool = True
    screen_color: str = "green"
    checker_size: int | None = color.CHECKER_SIZE

    def __post_init__(self) -> None:
        if not 0.0 <= self.despill_strength <= 1.0:
            raise ValueError(f"despill_strength must be between 0 and 1, got {self.despill_strength}")
        if isinstance(self.despeckle_size, bool) or not isinstance(self.despeckle_size, int | np.integer):
            raise ValueError(f"despeckle_size must be a whole number of pixels, got {self.despeckle_size!r}")
        if self.despeckle_size < 0:
            raise ValueError(f"despeckle_size must be >= 0, got {self.despeckle_size}")
        color.screen_channel(self.screen_color)  # raises for anything but green/blue
        if self.checker_size is not None and (
            isinstance(self.checker_size, bool)
            or not isinstance(self.checker_size, int | np.integer)
            or self.checker_size < 1
        ):
            raise ValueError(
                f"checker_size must be a positive whole number of pixels or None, got {self.checker_size!r}"
            )


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


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize ``[B,C,H,W]`` bilinearly with antialiasing (torchvision's default, as upstream resizes a
    frame for the model); untouched when the size already matches."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def model_input(
    rgb: torch.Tensor, mask: torch.Tensor, size: int, *, input_is_linear: bool, dtype: torch.dtype
) -> torch.Tensor:
    """``[B,4,size,size]``: the image resized (in linear light when it is linear, then converted to sRGB),
    ImageNet-normalised, and the resized hint; in the model's ``dtype``. Values are not clamped (as
    upstream: a linear highlight above 1 reaches the model above 1)."""
    rgb = resize(rgb, size, size)
    if input_is_linear:
        rgb = color.linear_to_srgb(rgb)
    inputs = torch.cat([color.imagenet_normalise(rgb), resize(mask, size, size)], dim=1)
    return inputs.to(dtype).contiguous()  # one memory layout whatever the mask's, so the same kernels run


_S45 = math.sqrt(0.5)
_LANCZOS_PHASES = (
    (1, 0),
    (-_S45, -_S45),
    (0, 1),
    (_S45, -_S45),
    (-1, 0),
    (_S45, _S45),
    (0, -1),
    (-_S45, _S45),
)


@functools.lru_cache(maxsize=16)
def lanczos_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``INTER_LANCZOS4`` sampling along one axis: for each output index, the 8 source indices
    (clamped to the edge) and their float32 weights (``sinc(x)·sinc(x/4)``, normalised to sum 1), from
    the source position ``(i + 0.5)·size_in/size_out - 0.5``; whatever the scale (no antialiasing)."""
    scale = 1.0 / (size_out / size_in)
    index = np.empty((size_out, 8), np.int64)
    weight = np.empty((size_out, 8), np.float32)
    for i in range(size_out):
        position = np.float32((i + 0.5) * scale - 0.5)
        start = math.floor(position)
        frac = float(np.float32(position - np.float32(start)))
        angle = -(frac + 3) * math.pi * 0.25
        sin0, cos0 = math.sin(angle), math.cos(angle)
        taps = np.empty(8, np.float32)
        for k, (a, b) in enumerate(_LANCZOS_PHASES):
            offset = float(np.float32(frac + 3 - k))
            y = -offset * math.pi * 0.25
            taps[k] = (a * sin0 + b * cos0) / (y * y) if abs(offset) >= 1e-6 else 1e30
        weight[i] = taps * (np.float32(1.0) / taps.sum(dtype=np.float32))
        index[i] = np.clip(np.arange(start - 3, start + 5), 0, size_in - 1)
    return index, weight


def _lanczos_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    index, weight = lanczos_taps(x.shape[dim], size)
    index_t = torch.from_numpy(index).to(x.device)
    weight_t = torch.from_numpy(weight).to(x.device, x.dtype)
    shape = [1] * x.ndim
    shape[dim] = size
    out = None
    for k in range(8):
        term = x.index_select(dim, index_t[:, k]) * weight_t[:, k].view(shape)
        out = term if out is None else out + term
    return out


def resize_lanczos(
    x: torch.Tensor, height: int, width: int, *, tensor_path: bool | None = None
) -> torch.Tensor:
    """Resize ``[B,C,H,W]`` float32 as OpenCV's ``INTER_LANCZOS4`` (not clamped: it rings slightly past
    the input's range), the way upstream brings the prediction back to the frame's size. ``tensor_path``:
    separable 8-tap gathers on ``x``'s device (default on CUDA) rather than ``cv2.resize`` on the host."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    if tensor_path is None:
        tensor_path = x.device.type == "cuda"
    if tensor_path:
        return _lanczos_axis(_lanczos_axis(x, width, 3), height, 2)
    import cv2

    frames = x.detach().permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LANCZOS4) for f in frames])
    out = out.reshape(len(frames), height, width, x.shape[1])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device)


ENGINE_OUTPUTS = ("alpha", "fg", "processed", "comp")
"""What :func:`postprocess` can compute, by the names of :meth:`CorridorKeyEngine.process_frame`'s result."""


def selected_outputs(options: PostProcessOptions, outputs: Collection[str] | None) -> tuple[str, ...]:
    """The outputs to compute: ``outputs`` if given (checked), else every one (``comp`` only with
    ``options.generate_comp``)."""
    if outputs is None:
        return ENGINE_OUTPUTS if options.generate_comp else ENGINE_OUTPUTS[:3]
    chosen = tuple(dict.fromkeys(outputs))
    unknown = [name for name in chosen if name not in ENGINE_OUTPUTS]
    if unknown or not chosen:
        raise ValueError(f"outputs must be a non-empty subset of {list(ENGINE_OUTPUTS)}, got {list(outputs)}")
    return chosen


def postprocess(
    alpha: torch.Tensor,
    fg: torch.Tensor,
    height: int,
    width: int,
    options: PostProcessOptions,
    *,
    tensor_path: bool | None = None,
    outputs: Collection[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The model's ``alpha`` / ``fg`` (any size) -> the outputs at ``height × width``, float32 ``[B,C,H,W]``:
    ``alpha`` (linear), ``fg`` (straight sRGB), ``processed`` (linear premultiplied RGBA after despeckle and
    despill) and, unless disabled, ``comp`` (sRGB preview over the checkerboard).

    Upstream CorridorKey's OpenCV post-processing: Lanczos-4 back to the frame size, despeckle
    (:func:`~corridorkey_engine.keying.despeckle.despeckle`), despill on the screen's channel, sRGB to linear,
    premultiply, and the preview composited in linear light. ``tensor_path`` (default: on CUDA) does the
    same with tensor operations on the device; otherwise the resize and despeckle run on the host with
    OpenCV. ``outputs`` (names of :data:`ENGINE_OUTPUTS`; default all, ``comp`` per ``generate_comp``):
    only those are computed, and only the work they need is done (a matte alone is one resize).

    Two stages, callable on their own (the preview caches the first): the resize to the frame
    (:func:`resize_lanczos` of ``alpha``, and of ``fg`` unless only the matte is wanted), then
    :func:`finish_outputs`.
    """
    wanted = selected_outputs(options, outputs)
    if tensor_path is None:
        tensor_path = alpha.device.type == "cuda"
    alpha = resize_lanczos(alpha.float(), height, width, tensor_path=tensor_path)
    fg_full = (
        None if wanted == ("alpha",) else resize_lanczos(fg.float(), height, width, tensor_path=tensor_path)
    )
    return finish_outputs(alpha, fg_full, options, tensor_path=tensor_path, outputs=wanted)


def despeckled(alpha: torch.Tensor, options: PostProcessOptions, *, tensor_path: bool) -> torch.Tensor:
    """The matte ``processed`` and ``comp`` are made with: the frame-size ``alpha`` despeckled as
    ``options`` say (``alpha`` itself with ``auto_despeckle`` off)."""
    if not options.auto_despeckle:
        return alpha
    return despeckle(alpha, options.despeckle_size, tensor_path=tensor_path)


def finish_outputs(
    alpha: torch.Tensor,
    fg: torch.Tensor | None,
    options: PostProcessOptions,
    *,
    tensor_path: bool,
    outputs: Collection[str] | None = None,
    matte: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`postprocess` after its resize: the model's ``alpha`` and ``fg`` already at the frame's size
    (float32; ``fg`` may be None when only ``alpha`` is wanted) -> the outputs. ``matte``: the result of
    :func:`despeckled` for these ``alpha`` and ``options`` when the caller has it (else it is computed)."""
    wanted = selected_outputs(options, outputs)
    out = {"alpha": alpha} if "alpha" in wanted else {}
    if wanted == ("alpha",):
        return out
    if fg is None:
        raise ValueError(f"the outputs {list(wanted)} need the foreground, got fg=None")
    if "fg" in wanted:
        out["fg"] = fg
    if "processed" not in wanted and "comp" not in wanted:
        return {name: out[name] for name in wanted}
    if matte is None:
        matte = despeckled(alpha, options, tensor_path=tensor_path)
    fg_linear = color.srgb_to_linear(color.despill(fg, options.despill_strength, options.screen_color))
    if "processed" in wanted:
        out["processed"] = torch.cat([fg_linear * matte, matte], dim=1)
    if "comp" in wanted:
        height, width = alpha.shape[-2:]
        background = comp_background(height, width, options.checker_size, alpha.device)
        out["comp"] = color.linear_to_srgb(color.composite_over(fg_linear, matte, background))
    return {name: out[name] for name in wanted}


def comp_background(height: int, width: int, checker_size: int | None, device: torch.device) -> torch.Tensor:
    """The comp's background, ``[1,1,H,W]`` linear: the checkerboard of ``checker_size``-px squares (None:
    scaled to the frame, :func:`~corridorkey_engine.keying.color.checker_size_for`). Made once per size on
    the CPU (the preview's post-processing redoes the comp on every settings change); the tensor is shared,
    so callers must not write into it."""
    square = checker_size or color.checker_size_for(height, width)
    if device.type == "cpu":
        return _cpu_background(height, width, square)
    return color.srgb_to_linear(color.checkerboard(height, width, square, device=device))


@functools.lru_cache(maxsize=2)
def _cpu_background(height: int, width: int, square: int) -> torch.Tensor:
    return color.srgb_to_linear(color.checkerboard(height, width, square))


def to_numpy(outputs: dict[str, torch.Tensor], batched: bool) -> dict[str, np.ndarray]:
    """``[B,C,H,W]`` tensors -> float32 ``[B,H,W,C]`` arrays on the host (``[H,W,C]`` when not batched)."""
    arrays = {}
    for name, tensor in outputs.items():
        array = tensor.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        arrays[name] = array if batched else array[0]
    return arrays
