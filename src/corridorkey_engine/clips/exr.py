"""The EXR codec: which library reads and writes EXR here, and the reading and encoding themselves.

EXR goes through the ``OpenEXR`` package when it is installed, else through OpenCV when OpenCV was built
with its OpenEXR codec (which then needs ``OPENCV_IO_ENABLE_OPENEXR=1`` before ``cv2`` is first imported:
``corridorkey_engine.clips`` sets it if unset). ``CORRIDORKEY_EXR_BACKEND=openexr|cv2`` forces one of the two.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ExrSupportError, FrameIOError
from .completeness import output_complete
from .pixels import bgr_to_rgb, first_line, rgb_to_bgr


def _openexr_module() -> Any | None:
    try:
        import OpenEXR
    except ImportError:
        return None
    return OpenEXR


def exr_backend() -> str:
    """Which library handles EXR here: ``"openexr"`` or ``"cv2"``; raises ExrSupportError if neither."""
    wanted = os.environ.get("CORRIDORKEY_EXR_BACKEND", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "openexr", "cv2"):
        raise FrameIOError(f"CORRIDORKEY_EXR_BACKEND={wanted!r}: use auto, openexr or cv2")
    if wanted in ("auto", "openexr") and _openexr_module() is not None:
        return "openexr"
    if wanted in ("auto", "cv2") and cv2.haveImageWriter(".exr"):
        return "cv2"
    raise ExrSupportError(
        "EXR support missing: the OpenEXR package is not installed"
        + (" (or not selected)" if wanted == "cv2" else "")
        + " and this OpenCV cannot read/write EXR. Fix: `pip install OpenEXR` (part of the `engine` extra), "
        "or use an OpenCV built with OpenEXR and set OPENCV_IO_ENABLE_OPENEXR=1 before starting"
    )


def read_exr(path: Path) -> np.ndarray:
    """Read an EXR into float32 [H,W,C] RGB(A) order, or [H,W] for one channel."""
    if exr_backend() == "cv2":
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise FrameIOError(f"{path}: unreadable or corrupt EXR")
        return bgr_to_rgb(arr).astype(np.float32, copy=False)
    openexr = _openexr_module()
    if not path.is_file():
        raise FrameIOError(f"{path}: cannot read (no such file)")
    if not output_complete(path):  # catch truncation before the library prints its own warnings
        raise FrameIOError(f"{path}: unreadable or corrupt EXR (truncated or not an EXR)")
    try:
        with openexr.File(str(path), separate_channels=True) as f:
            channels = {name: ch.pixels for name, ch in f.channels().items()}
    except Exception as exc:  # the binding raises RuntimeError / ValueError on bad files
        raise FrameIOError(f"{path}: unreadable or corrupt EXR ({first_line(exc)})") from exc
    if not channels:
        raise FrameIOError(f"{path}: EXR has no channels")
    # Layered files name channels like "rgba.R": take the default (unprefixed) layer when there is one.
    plain = {k: v for k, v in channels.items() if "." not in k} or channels
    by_last = {k.rsplit(".", 1)[-1].upper(): v for k, v in plain.items()}
    order = [c for c in ("R", "G", "B", "A") if c in by_last]
    if order[:3] == ["R", "G", "B"]:
        stack = [by_last[c] for c in order]
    elif "Y" in by_last:
        stack = [by_last["Y"]]
    else:
        stack = [plain[k] for k in sorted(plain)]
    out = np.stack([np.asarray(c, dtype=np.float32) for c in stack], axis=-1)
    return out[..., 0] if out.shape[-1] == 1 else out


COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab")
"""The EXR compressions both backends write."""


def encode_exr(path: Path, data: np.ndarray, channels: str, half: bool, compression: str = "zip") -> None:
    """Write ``data`` ([H,W] or [H,W,C]) to ``path`` as a scanline EXR (``compression``: one of
    :data:`COMPRESSIONS`)."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"EXR compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    name = "NO" if compression == "none" else compression.upper()
    dtype = np.float16 if half else np.float32
    arr = np.ascontiguousarray(data, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] != len(channels):
        raise ValueError(f"{len(channels)} channel names for an array with {arr.shape[-1]} channels")
    if exr_backend() == "cv2":
        kind = cv2.IMWRITE_EXR_TYPE_HALF if half else cv2.IMWRITE_EXR_TYPE_FLOAT
        bgr = arr[..., 0] if arr.shape[-1] == 1 else rgb_to_bgr(arr)
        params = [cv2.IMWRITE_EXR_TYPE, kind, cv2.IMWRITE_EXR_COMPRESSION]
        ok, buf = cv2.imencode(".exr", bgr, [*params, getattr(cv2, f"IMWRITE_EXR_COMPRESSION_{name}")])
        if not ok:
            raise FrameIOError(f"{path}: OpenCV could not encode the EXR")
        path.write_bytes(buf.tobytes())
        return
    openexr = _openexr_module()
    header = {"compression": getattr(openexr, f"{name}_COMPRESSION"), "type": openexr.scanlineimage}
    if len(channels) == 1:
        payload = {channels: arr[..., 0].astype(dtype)}
    else:
        payload = {channels: np.ascontiguousarray(arr.astype(dtype))}
    with openexr.File(header, payload) as f:
        f.write(str(path))
