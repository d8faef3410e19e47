"""Single image files: read any frame file as float32 RGB(A), write EXR and PNG outputs atomically.

Readers hand back float32 arrays with channels in RGB order: 8- and 16-bit integer files are scaled to 0-1,
float files (EXR, float TIFF) are passed through as they are. Writers never leave a half-written file: each
output goes through :func:`ckpt_formats.atomic.atomic_write` (a hidden ``.<name>.<random>.tmp`` beside it,
whose name no reader or resume check takes for a frame, then a rename).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ckpt_formats.atomic import atomic_write, temp_path_for

from ..errors import FrameIOError
from .completeness import png_complete, png_damage
from .exr import encode_exr, read_exr
from .pixels import bgr_to_rgb, rgb_to_bgr, to_float, to_uint8, to_uint16


def read_image(path: Path) -> np.ndarray:
    """Read one image file as float32, [H,W] (one channel) or [H,W,C] in RGB(A) order.

    Raises FrameIOError naming the file when it is missing, unreadable or corrupt.
    """
    path = Path(path)
    if path.suffix.lower() == ".exr":
        return read_exr(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise FrameIOError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if path.suffix.lower() == ".png" and (broken := png_damage(data.tobytes())) is not None:
        raise FrameIOError(f"{path}: unreadable or corrupt image ({broken})")  # before libpng prints it raw
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None or arr.size == 0:
        raise FrameIOError(f"{path}: unreadable or corrupt image")
    if path.suffix.lower() == ".png" and not png_complete(data[-12:].tobytes()):
        raise FrameIOError(f"{path}: truncated PNG (no end marker)")
    return to_float(bgr_to_rgb(arr), path)


def write_exr(
    path: Path, data: np.ndarray, channels: str, *, half: bool = True, compression: str = "zip"
) -> None:
    """Atomically write an EXR; ``channels`` names them in order (``"Y"``, ``"RGB"``, ``"RGBA"``);
    ``compression`` is one of :data:`~corridorkey_engine.clips.exr.COMPRESSIONS`."""
    atomic_write(path, lambda tmp: encode_exr(tmp, data, channels, half, compression))


def write_png(path: Path, data: np.ndarray, bits: int = 8) -> None:
    """Atomically write an 8- or 16-bit PNG from float 0-1 (or uint8 for 8 bits) data ([H,W], [H,W,3] RGB
    or [H,W,4] RGBA)."""
    if bits == 16:
        arr = data if data.dtype == np.uint16 else to_uint16(data)
    else:
        arr = data if data.dtype == np.uint8 else to_uint8(data)
    ok, buf = cv2.imencode(".png", rgb_to_bgr(arr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise FrameIOError(f"{path}: OpenCV could not encode the PNG")
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.tobytes()))


def check_writable(folder: Path) -> None:
    """Prove ``folder`` can be made and written to, creating nothing: a probe file is written (and removed)
    in ``folder``, or in its nearest existing parent when it does not exist yet. FrameIOError otherwise."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        probe = temp_path_for(existing / "write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FrameIOError(f"{folder}: output folder not writable ({reason}); pass --output DIR") from exc
