"""Frame sizes and readability from file headers alone, for the checks made before anything is written.

A PNG's size is in its ``IHDR`` chunk (bytes 16-24) and a whole PNG ends with the ``IEND`` marker; an EXR's
size is its ``dataWindow`` header attribute and a whole EXR's chunk table reaches the end of the file
(:func:`.completeness.exr_complete`). Neither needs a pixel decoded, so every selected frame of a long shot
is checked in moments. Other image types are decoded (they are rare as plates); a video's frames share the
size of its first frame.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import FrameIOError
from .completeness import exr_complete, png_complete, read_cstring
from .sequences import FrameReader, FrameSequence

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXR_MAGIC = b"\x76\x2f\x31\x01"


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of one image file, from its header where the format allows.

    Raises:
        FrameIOError: the file is missing, unreadable, truncated or not the image its name says.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            return _png_size(path)
        if suffix == ".exr":
            return _exr_size(path)
    except OSError as exc:
        raise FrameIOError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    from .images import read_image

    arr = read_image(path)
    return arr.shape[1], arr.shape[0]


def _png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 12))
        tail = f.read(12)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise FrameIOError(f"{path}: unreadable or corrupt image (not a PNG)")
    if not png_complete(tail):
        raise FrameIOError(f"{path}: truncated PNG (no end marker)")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _exr_size(path: Path) -> tuple[int, int]:
    corrupt = FrameIOError(f"{path}: unreadable or corrupt EXR (truncated or not an EXR)")
    with open(path, "rb") as f:
        if f.read(4) != _EXR_MAGIC:
            raise corrupt
        f.seek(8)
        while True:
            name = read_cstring(f)
            kind = read_cstring(f) if name else None
            raw = f.read(4) if kind is not None else b""
            if name is None or name == b"" or len(raw) < 4:
                raise corrupt
            length = struct.unpack("<i", raw)[0]
            if name == b"dataWindow" and kind == b"box2i" and length == 16:
                xmin, ymin, xmax, ymax = struct.unpack("<4i", f.read(16))
                break
            f.seek(length, 1)
    if not exr_complete(path, path.stat().st_size):
        raise corrupt
    return xmax - xmin + 1, ymax - ymin + 1


def frame_sizes(seq: FrameSequence, indices: list[int]) -> dict[int, tuple[int, int]]:
    """``index -> (width, height)`` of the frames ``indices`` of ``seq`` (headers only for PNG and EXR).

    Raises:
        FrameIOError: a frame is unreadable (the message names it).
    """
    if seq.is_video:
        with FrameReader(seq) as reader:
            arr = reader.read(0)
        return dict.fromkeys(indices, (arr.shape[1], arr.shape[0]))
    return {i: image_size(seq.paths[i]) for i in indices}
