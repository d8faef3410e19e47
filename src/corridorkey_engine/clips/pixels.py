"""Pixel conversions between OpenCV's arrays and the engine's: channel order, scaling, channel counts.

No file access here: the readers and writers (:mod:`.images`, :mod:`.exr`, :mod:`.sequences`) use these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FrameIOError


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def bgr_to_rgb(arr: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) channel order to RGB(A) (grey untouched); its own inverse."""
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr[..., ::-1]
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[..., [2, 1, 0, 3]]
    return arr


rgb_to_bgr = bgr_to_rgb


def to_float(arr: np.ndarray, path: Path) -> np.ndarray:
    """8/16-bit integers scaled to float32 0-1, floats passed through; FrameIOError for other types."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * (1.0 / 255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * (1.0 / 65535.0)
    if arr.dtype in (np.float16, np.float32, np.float64):
        return arr.astype(np.float32, copy=False)
    raise FrameIOError(f"{path}: unsupported pixel type {arr.dtype}")


def as_rgb(arr: np.ndarray) -> np.ndarray:
    """[H,W] / [H,W,1] / [H,W,3] / [H,W,4] -> [H,W,3] (grey replicated, alpha dropped)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def as_mask(arr: np.ndarray) -> np.ndarray:
    """A hint frame -> [H,W] float32 0-1: one channel as is, RGB(A) -> its first (red) channel."""
    if arr.ndim == 3:
        arr = arr[..., 0]
    return np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False)


def to_uint8(data: np.ndarray) -> np.ndarray:
    """Float 0-1 -> uint8 with rounding (values outside 0-1 are clipped)."""
    return (np.clip(data, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_uint16(data: np.ndarray) -> np.ndarray:
    """Float 0-1 -> uint16 with rounding (values outside 0-1 are clipped)."""
    return (np.clip(data, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
