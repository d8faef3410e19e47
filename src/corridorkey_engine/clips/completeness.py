"""Is an output file whole? Cheap structural checks of PNG and EXR files, never decoding the pixels.

A frame whose outputs all pass :func:`output_complete` is skipped when a run resumes.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def png_damage(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk structure (a bad signature, a chunk past the end, a CRC that does
    not match its chunk), or None: found here, so the decoder never prints its own raw complaint."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return "not a PNG"
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            return "a chunk runs past the end of the file"
        kind = data[pos + 4 : pos + 8]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            return f"CRC error in its {kind.decode('latin-1')!r} chunk"
        if kind == b"IEND":
            return None
        pos = end
    return "no IEND chunk"


def png_complete(tail: bytes) -> bool:
    """True when ``tail`` (a file's last 12 bytes) is the PNG end marker."""
    return tail == _PNG_END


def exr_complete(path: Path, size: int) -> bool:
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
            name = read_cstring(f)
            if name is None:
                return False
            if name == b"":
                break
            if read_cstring(f) is None:
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


def read_cstring(f: Any, limit: int = 256) -> bytes | None:
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
                return png_complete(f.read(12))
        if suffix == ".exr":
            return exr_complete(path, size)
        return True
    except (OSError, struct.error, ValueError, OverflowError):
        return False
