"""Frame I/O for the CorridorKey CLI: discovery, readers, writers and atomic writes.

Readers hand back float32 arrays with channels in RGB order: 8- and 16-bit integer files are scaled to 0-1,
float files (EXR, float TIFF) are passed through as they are. Writers never leave a half-written file: each
output is written under a temporary name in the same folder (``.<name>.<random>.tmp``: a dot-file whose
suffix no reader or resume check takes for a frame) and then renamed over the final name.

EXR goes through the ``OpenEXR`` package when it is installed, else through OpenCV when OpenCV was built
with its OpenEXR codec (which then needs ``OPENCV_IO_ENABLE_OPENEXR=1`` before ``cv2`` is first imported:
this module sets it if unset). ``CORRIDORKEY_EXR_BACKEND=openexr|cv2`` forces one of the two.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mxf", ".mpg", ".mpeg")
TEMP_SUFFIX = ".tmp"
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


class FrameIOError(Exception):
    """A frame or folder cannot be read or written; the message names the file and what to do."""


class ExrSupportError(FrameIOError):
    """Neither the OpenEXR package nor an EXR-enabled OpenCV is available."""


# --------------------------------------------------------------------------------------------- discovery


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value: ``frame_2`` before ``frame_10``."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _visible_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


@dataclass
class FrameSequence:
    """The frames of one ``Input/`` or ``AlphaHint/`` folder: an image sequence or a single video file.

    ``names`` are the per-frame output stems: the image file stems, or ``<video stem>_<index>`` (1-based,
    zero-padded) for a video.
    """

    folder: Path
    paths: list[Path]
    video: Path | None = None
    frame_count: int = 0
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_video(self) -> bool:
        return self.video is not None

    def describe(self) -> str:
        if self.video is not None:
            return f"video {self.video} ({len(self)} frames)"
        return f"{len(self)} frames in {self.folder}"


def discover_frames(folder: Path) -> FrameSequence:
    """Find the frames in ``folder``: image files in natural order, or exactly one video file.

    Raises FrameIOError when the folder is missing, holds no frames, holds several videos, or mixes video
    and image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FrameIOError(f"{folder}: not a folder")
    files = _visible_files(folder)
    images = sorted(
        (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: natural_key(p.name)
    )
    videos = sorted(p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS)
    if videos and images:
        raise FrameIOError(
            f"{folder}: holds both image frames and video ({videos[0].name}); keep one or the other"
        )
    if len(videos) > 1:
        names = ", ".join(v.name for v in videos[:3])
        raise FrameIOError(f"{folder}: holds {len(videos)} videos ({names}); a clip folder takes one")
    if videos:
        count = video_frame_count(videos[0])
        width = max(5, len(str(count)))
        names = [f"{videos[0].stem}_{i:0{width}d}" for i in range(1, count + 1)]
        return FrameSequence(folder, [], video=videos[0], frame_count=count, names=names)
    if not images:
        exts = ", ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        raise FrameIOError(f"{folder}: no frames found (looked for {exts})")
    stems = [p.stem for p in images]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise FrameIOError(
            f"{folder}: several files share the frame name {dupes[0]!r} (e.g. .png and .exr); "
            "outputs are named after frames, so keep one"
        )
    return FrameSequence(folder, images, frame_count=len(images), names=stems)


# ------------------------------------------------------------------------------------------------- EXR


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


def _read_exr(path: Path) -> np.ndarray:
    """Read an EXR into float32 [H,W,C] RGB(A) order, or [H,W] for one channel."""
    if exr_backend() == "cv2":
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise FrameIOError(f"{path}: unreadable or corrupt EXR")
        return _bgr_to_rgb(arr).astype(np.float32, copy=False)
    openexr = _openexr_module()
    if not path.is_file():
        raise FrameIOError(f"{path}: cannot read (no such file)")
    if not output_complete(path):  # catch truncation before the library prints its own warnings
        raise FrameIOError(f"{path}: unreadable or corrupt EXR (truncated or not an EXR)")
    try:
        with openexr.File(str(path), separate_channels=True) as f:
            channels = {name: ch.pixels for name, ch in f.channels().items()}
    except Exception as exc:  # the binding raises RuntimeError / ValueError on bad files
        raise FrameIOError(f"{path}: unreadable or corrupt EXR ({_first_line(exc)})") from exc
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


def _exr_payload(path: Path, data: np.ndarray, channels: str, half: bool) -> None:
    """Write ``data`` ([H,W] or [H,W,C]) to ``path`` as a ZIP-compressed scanline EXR."""
    dtype = np.float16 if half else np.float32
    arr = np.ascontiguousarray(data, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] != len(channels):
        raise ValueError(f"{len(channels)} channel names for an array with {arr.shape[-1]} channels")
    if exr_backend() == "cv2":
        kind = cv2.IMWRITE_EXR_TYPE_HALF if half else cv2.IMWRITE_EXR_TYPE_FLOAT
        bgr = arr[..., 0] if arr.shape[-1] == 1 else _rgb_to_bgr(arr)
        ok, buf = cv2.imencode(".exr", bgr, [cv2.IMWRITE_EXR_TYPE, kind])
        if not ok:
            raise FrameIOError(f"{path}: OpenCV could not encode the EXR")
        path.write_bytes(buf.tobytes())
        return
    openexr = _openexr_module()
    header = {"compression": openexr.ZIP_COMPRESSION, "type": openexr.scanlineimage}
    if len(channels) == 1:
        payload = {channels: arr[..., 0].astype(dtype)}
    else:
        payload = {channels: np.ascontiguousarray(arr.astype(dtype))}
    with openexr.File(header, payload) as f:
        f.write(str(path))


# ----------------------------------------------------------------------------------------------- readers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _bgr_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr[..., ::-1]
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[..., [2, 1, 0, 3]]
    return arr


_rgb_to_bgr = _bgr_to_rgb


def _to_float(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * (1.0 / 255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * (1.0 / 65535.0)
    if arr.dtype in (np.float16, np.float32, np.float64):
        return arr.astype(np.float32, copy=False)
    raise FrameIOError(f"{path}: unsupported pixel type {arr.dtype}")


def read_image(path: Path) -> np.ndarray:
    """Read one image file as float32, [H,W] (one channel) or [H,W,C] in RGB(A) order.

    Raises FrameIOError naming the file when it is missing, unreadable or corrupt.
    """
    path = Path(path)
    if path.suffix.lower() == ".exr":
        return _read_exr(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise FrameIOError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None or arr.size == 0:
        raise FrameIOError(f"{path}: unreadable or corrupt image")
    if path.suffix.lower() == ".png" and not _png_complete(data[-12:].tobytes()):
        raise FrameIOError(f"{path}: truncated PNG (no end marker)")
    return _to_float(_bgr_to_rgb(arr), path)


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


def video_frame_count(path: Path) -> int:
    """Number of frames in a video, counting by decoding when the container does not say."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise FrameIOError(f"{path}: cannot open video (unsupported codec or corrupt file)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:
            count = 0
            while cap.grab():
                count += 1
        if count <= 0:
            raise FrameIOError(f"{path}: video has no frames")
        return count
    finally:
        cap.release()


class FrameReader:
    """Reads frame ``i`` of a sequence as float32 RGB/grey arrays. Thread-safe.

    Image sequences read any frame in any order; a video decodes forward only, so frames must be asked
    for in increasing order (skipped frames are grabbed without decoding).
    """

    def __init__(self, seq: FrameSequence) -> None:
        self.seq = seq
        self._lock = threading.Lock()
        self._cap: Any = None
        self._next = 0

    def read(self, index: int) -> np.ndarray:
        if not self.seq.is_video:
            return read_image(self.seq.paths[index])
        with self._lock:
            return self._read_video(index)

    def _read_video(self, index: int) -> np.ndarray:
        video = self.seq.video
        assert video is not None
        if self._cap is None:
            self._cap = cv2.VideoCapture(str(video))
            if not self._cap.isOpened():
                raise FrameIOError(f"{video}: cannot open video")
        if index < self._next:
            raise ValueError("video frames must be read in increasing order")
        while self._next < index:
            if not self._cap.grab():
                raise FrameIOError(f"{video}: ends at frame {self._next + 1}, expected {len(self.seq)}")
            self._next += 1
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise FrameIOError(f"{video}: cannot decode frame {index + 1} (corrupt or shorter than expected)")
        self._next += 1
        return _to_float(_bgr_to_rgb(frame), video)

    def close(self) -> None:
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_frames(seq: FrameSequence) -> Iterator[np.ndarray]:
    """Every frame of ``seq`` in order (a convenience for small clips and tests)."""
    with FrameReader(seq) as reader:
        for i in range(len(seq)):
            yield reader.read(i)


# ----------------------------------------------------------------------------------------------- writers


def temp_path_for(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<12 hex>.tmp`` (hidden, never a frame name)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def is_temp_file(path: Path) -> bool:
    """True for a temporary file left by :func:`atomic_write` (a crash between write and rename)."""
    return bool(_TEMP_RE.match(Path(path).name))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary name in the same folder, then rename it over ``path``.

    On any failure (including KeyboardInterrupt) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_exr(path: Path, data: np.ndarray, channels: str, *, half: bool = True) -> None:
    """Atomically write an EXR; ``channels`` names them in order (``"Y"``, ``"RGB"``, ``"RGBA"``)."""
    atomic_write(path, lambda tmp: _exr_payload(tmp, data, channels, half))


def to_uint8(data: np.ndarray) -> np.ndarray:
    """Float 0-1 -> uint8 with rounding (values outside 0-1 are clipped)."""
    return (np.clip(data, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: Path, data: np.ndarray) -> None:
    """Atomically write an 8-bit PNG from float 0-1 or uint8 data ([H,W], [H,W,3] RGB or [H,W,4] RGBA)."""
    arr = data if data.dtype == np.uint8 else to_uint8(data)
    ok, buf = cv2.imencode(".png", _rgb_to_bgr(arr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise FrameIOError(f"{path}: OpenCV could not encode the PNG")
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.tobytes()))


# ------------------------------------------------------------------------------------ completeness checks

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _png_complete(tail: bytes) -> bool:
    return tail == _PNG_END


def _exr_complete(path: Path, size: int) -> bool:
    """Structural check of a single-part scanline/tiled EXR: its last chunk ends exactly at end of file."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[:4] != b"\x76\x2f\x31\x01":
            return False
        flags = struct.unpack("<I", head[4:])[0]
        if flags & 0x1800:  # deep data or multi-part: not something we write; say complete if it decodes
            return True
        # Skip header attributes: name\0 type\0 int32 size, value; an empty name ends the header.
        while True:
            name = _read_cstring(f)
            if name is None:
                return False
            if name == b"":
                break
            if _read_cstring(f) is None:
                return False
            raw = f.read(4)
            if len(raw) < 4:
                return False
            f.seek(struct.unpack("<i", raw)[0], os.SEEK_CUR)
        table = f.tell()
        raw = f.read(8)
        if len(raw) < 8:
            return False
        first = struct.unpack("<Q", raw)[0]
        count = (first - table) // 8
        if count <= 0 or first > size:
            return False
        f.seek(table)
        raw = f.read(8 * count)
        if len(raw) < 8 * count:
            return False
        last = max(struct.unpack(f"<{count}Q", raw))
        if last + 8 > size:
            return False
        f.seek(last)
        # Scanline chunk: int32 y, int32 size. Tiled chunk: 4 x int32 coordinates, int32 size.
        tiled = bool(flags & 0x200)
        raw = f.read(20 if tiled else 8)
        if len(raw) < (20 if tiled else 8):
            return False
        data_size = struct.unpack("<i", raw[-4:])[0]
        return last + len(raw) + data_size == size


def _read_cstring(f: Any, limit: int = 256) -> bytes | None:
    out = bytearray()
    while len(out) <= limit:
        c = f.read(1)
        if not c:
            return None
        if c == b"\x00":
            return bytes(out)
        out += c
    return None


def output_complete(path: Path) -> bool:
    """True when ``path`` exists and is a whole PNG/EXR (not empty, not truncated).

    Cheap: reads the PNG end marker, or the EXR header and chunk table, never the pixels.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return False
        suffix = path.suffix.lower()
        if suffix == ".png":
            with open(path, "rb") as f:
                f.seek(max(0, size - 12))
                return _png_complete(f.read(12))
        if suffix == ".exr":
            return _exr_complete(path, size)
        return True
    except (OSError, struct.error, ValueError, OverflowError):
        return False


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files an interrupted run left in ``folder``; returns how many."""
    removed = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if is_temp_file(p):
                p.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", removed, folder)
    return removed


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written there; FrameIOError otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path_for(folder / "write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FrameIOError(f"{folder}: output folder not writable ({reason}); pass --output DIR") from exc
