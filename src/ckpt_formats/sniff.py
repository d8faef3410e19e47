"""Tell what a file really is from its first bytes, so a misnamed file gets an accurate error.

Public for plugins: a format's ``matches`` content check may be one of these functions (the builtin
safetensors plugin uses :func:`looks_like_safetensors`), and the registry calls :func:`identify` to say what
a refused file really is. Each function reads at most the first bytes of the file, never loads it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
_HEAD_BYTES = 64

__all__ = [
    "LFS_POINTER_PREFIX",
    "identify",
    "is_lfs_pointer",
    "looks_like_json",
    "looks_like_pickle",
    "looks_like_safetensors",
    "looks_like_zip",
    "read_head",
]


def read_head(path: Path, size: int = _HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of ``path`` (fewer for a shorter file). Raises ``OSError``."""
    with open(path, "rb") as f:
        return f.read(size)


def is_lfs_pointer(path: Path) -> bool:
    """A Git LFS pointer: a ~130-byte text file standing in for the real weights."""
    try:
        return path.stat().st_size < 1024 and read_head(path).startswith(LFS_POINTER_PREFIX)
    except OSError:
        return False


def looks_like_safetensors(path: Path) -> bool:
    """8-byte little-endian header length that fits in the file, followed by a JSON object."""
    head = read_head(path, 9)
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len <= path.stat().st_size - 8 and head[8:9] == b"{"


def looks_like_zip(path: Path) -> bool:
    """A zip archive (``PK\\x03\\x04``): torch.save's container, NumPy's ``.npz``."""
    return read_head(path, 4) == b"PK\x03\x04"


def looks_like_pickle(path: Path) -> bool:
    """A raw pickle stream (protocol 2 to 5): a legacy ``torch.save`` checkpoint, a distributed checkpoint's
    ``.metadata``."""
    head = read_head(path, 2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def looks_like_json(path: Path) -> bool:
    """A whole JSON document (read up to 16 MiB), such as a sharded checkpoint's index."""
    try:
        with open(path, "rb") as f:
            json.loads(f.read(16 * 1024 * 1024))
        return True
    except (OSError, ValueError):
        return False


def identify(path: Path) -> str:
    """A short human description of what the file's content is, whatever its name says."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size == 0:
        return "an empty file"
    if is_lfs_pointer(path):
        return "a Git LFS pointer file, not the weights"
    if looks_like_safetensors(path):
        return "a safetensors file"
    if looks_like_zip(path):
        # DEPRECATED: remove after .pth sunset (torch.save's zip container is a pickle inside)
        return "a zip archive (a PyTorch .pth pickle checkpoint or a NumPy .npz archive)"
    if looks_like_pickle(path):  # DEPRECATED: remove after .pth sunset
        return "a raw pickle (a legacy PyTorch checkpoint)"
    if looks_like_json(path):
        return "a JSON file"
    return "not a recognised checkpoint format"
