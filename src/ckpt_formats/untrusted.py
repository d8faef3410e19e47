"""Names from outside, validated before they touch the disk.

Every path component that a server or a file supplies passes through one of these functions before any
folder is made or any byte is written: the commit hash and etags a hub answers (they name folders and blobs
of the Hugging Face cache), the file names a sharded index lists (they name files beside it), the names a
plugin finds inside an archive, and the redirect a hub answers. Each function returns the value unchanged
when it is safe and otherwise raises :class:`~ckpt_formats.errors.UnsafeNameError` (or the subclass the
caller passes, such as :class:`~ckpt_formats.errors.HubAnswerError`), one line naming where the value came
from and the value itself.

:func:`inside` is the last check before a write: it resolves the links of the folder a file is about to be
written into and refuses it when the folder is no longer inside its root (a link planted in the cache).

Plugin authors use :func:`file_name` for the names an index or archive of theirs lists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UnsafeNameError

__all__ = ["COMMIT", "MAX_NAME_BYTES", "commit_hash", "etag", "file_name", "inside", "repo_path", "url"]

COMMIT = re.compile(r"[0-9a-f]{40}")
"""A full git commit hash, as the Hub sends it in ``X-Repo-Commit``."""

_ETAG = re.compile(r"[0-9a-f]{32,128}")  # git blob sha1 (40), sha256 (64); md5 (32) from some mirrors
MAX_NAME_BYTES = 255
"""The longest path component (in UTF-8 bytes) accepted: the limit of common file systems."""
MAX_PATH_BYTES = 1024
_MAX_SHOWN = 80


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else f"{text[:_MAX_SHOWN]}... ({len(str(value))} characters)"


def _refuse(what: str, value: object, why: str, error: type[UnsafeNameError]) -> UnsafeNameError:
    return error(
        f"{what} is {_shown(value)}: {why}; refused, nothing was written. If this is a mirror or proxy, "
        "check it (or HF_ENDPOINT)",
        what=what,
        value=value,
    )


def commit_hash(value: object, what: str, error: type[UnsafeNameError] = UnsafeNameError) -> str:
    """``value`` if it is a full commit hash (40 lower-case hex digits).

    Raises:
        UnsafeNameError: (or ``error``) anything else, naming ``what`` and the value.
    """
    if isinstance(value, str) and COMMIT.fullmatch(value):
        return value
    raise _refuse(what, value, "not a commit hash (40 hexadecimal digits)", error)


def etag(value: object, what: str, error: type[UnsafeNameError] = UnsafeNameError) -> str:
    """``value`` if it is an etag of the forms hubs use, quotes removed: 32 to 128 lower-case hex digits
    (a git blob sha1, a sha256).

    Raises:
        UnsafeNameError: (or ``error``) anything else, naming ``what`` and the value.
    """
    if isinstance(value, str) and _ETAG.fullmatch(value):
        return value
    raise _refuse(what, value, "not an etag (a sha256 or git sha1: hexadecimal digits)", error)


def file_name(value: object, what: str, error: type[UnsafeNameError] = UnsafeNameError) -> str:
    """``value`` if it is one plain file name: not empty, ``.`` or ``..``, no ``/`` or ``\\``, no NUL or
    other control character, at most :data:`MAX_NAME_BYTES` bytes.

    Raises:
        UnsafeNameError: (or ``error``) anything else, naming ``what`` and the value.
    """
    if not isinstance(value, str):
        raise _refuse(what, value, f"a {type(value).__name__}, not a file name", error)
    if value in ("", ".", ".."):
        raise _refuse(what, value, "not a file name", error)
    if "/" in value or "\\" in value:
        raise _refuse(what, value, "a path, not a plain file name (it holds a separator)", error)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _refuse(what, value, "it holds a NUL or another control character", error)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise _refuse(what, value, f"longer than {MAX_NAME_BYTES} bytes", error)
    return value


def repo_path(value: object, what: str, error: type[UnsafeNameError] = UnsafeNameError) -> str:
    """``value`` if it is a relative path inside a repository: ``/``-separated :func:`file_name` parts
    (``subfolder/model.safetensors``), never absolute, at most :data:`MAX_PATH_BYTES` bytes.

    Raises:
        UnsafeNameError: (or ``error``) anything else, naming ``what`` and the value.
    """
    if not isinstance(value, str) or not value:
        raise _refuse(what, value, "not a path", error)
    if value.startswith("/") or re.match(r"[A-Za-z]:", value):
        raise _refuse(what, value, "an absolute path", error)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise _refuse(what, value, f"longer than {MAX_PATH_BYTES} bytes", error)
    for part in value.split("/"):
        try:
            file_name(part, what, error)
        except UnsafeNameError:
            raise _refuse(what, value, f"its part {_shown(part)} is not a plain file name", error) from None
    return value


def url(value: object, what: str, error: type[UnsafeNameError] = UnsafeNameError) -> str:
    """``value`` if it is an absolute ``http``/``https`` URL with a host and no control character.

    Raises:
        UnsafeNameError: (or ``error``) anything else, naming ``what`` and the value.
    """
    if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _refuse(what, value, "not a URL (it holds a control character)", error)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(what, value, "not an http(s) URL with a host", error)
    return value


def inside(
    root: str | os.PathLike[str], path: str | os.PathLike[str], what: str,
    error: type[UnsafeNameError] = UnsafeNameError,
) -> Path:
    """``path`` if it lies inside ``root`` once every link of its folder is resolved.

    Called just before writing ``path`` (its folder exists): a link planted in the folder's chain that points
    out of ``root`` is refused. ``path`` itself may be a link: writers replace it, never write through it.

    Raises:
        UnsafeNameError: (or ``error``) ``path`` would land outside ``root``.
    """
    path = Path(path)
    real_root = Path(os.path.realpath(root))
    real_folder = Path(os.path.realpath(path.parent))
    if real_folder != real_root and real_root not in real_folder.parents:
        raise _refuse(what, str(path), f"its folder leads to {real_folder}, outside {real_root}", error)
    return path
