"""Placement and integrity: copy files from the cache into the directory, verified, as one set.

Each file is copied to a hidden temporary name beside its destination
(:func:`ckpt_formats.atomic.temp_path_for`, the project's one temp naming) while its sha256 or git blob sha1
is checked against the Hub's; then the set is renamed into place with
:func:`ckpt_formats.atomic.replace_durably`, companions first and the primary last, so discovery never sees a
partial, unverified or incomplete set. A failure removes what was already renamed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..atomic import replace_durably, temp_path_for
from ..errors import CheckpointDownloadError
from ..untrusted import COMMIT
from ._context import FetchContext, Remote
from ._errors import NO_SPACE

logger = logging.getLogger("ckpt_formats.hub")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


def place(session: FetchContext, remotes: list[Remote]) -> list[Path]:
    """Stage ``remotes`` (the primary first, then its companions) as verified hidden files, then rename them
    into place, the primary last.

    Returns:
        The placed paths, primary first.

    Raises:
        CheckpointDownloadError: a copy failed or a digest did not match; nothing is left in the directory.
    """
    staged: list[tuple[str, Path, Path]] = []
    renamed: list[Path] = []
    try:
        for remote in remotes:
            dest = session.directory / posixpath.basename(remote.name)
            staged.append((remote.name, _stage(session, remote, dest), dest))
        for name, tmp, dest in reversed(staged):
            replace_durably(tmp, dest)
            renamed.append(dest)
            logger.info("%s saved to %s", name, dest)
    except BaseException:
        for dest in renamed:  # a shard without its index must not stay behind
            dest.unlink(missing_ok=True)
        raise
    finally:
        for _, tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return [dest for _, _, dest in staged]


def _stage(session: FetchContext, remote: Remote, dest: Path) -> Path:
    """Copy a cached file to a hidden temporary name beside ``dest``, checking its digest on the way."""
    tmp = temp_path_for(dest)
    session.check_space(remote.name, remote.size or remote.cached.stat().st_size, only=session.directory)
    digest = _Digest(remote.digest, remote.cached.stat().st_size)
    try:
        with open(remote.cached, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in NO_SPACE:
            raise session.no_space(remote.name, remote.size, session.directory, exc) from exc
        raise CheckpointDownloadError(
            f"could not copy {remote.name} from the Hugging Face cache ({remote.cached}) to {dest}: "
            f"{exc.strerror or exc}. Check that {session.directory} is writable and retry"
        ) from exc
    except BaseException:  # KeyboardInterrupt: no temporary left behind either
        tmp.unlink(missing_ok=True)
        raise
    if not digest.matches():
        tmp.unlink(missing_ok=True)
        _evict(remote.cached, session.cache_dir)
        raise session.error(
            remote.name,
            None,
            f"the downloaded bytes do not match the Hub's {digest.kind} (expected {remote.digest}, got "
            f"{digest.hexdigest()}); the corrupt copy was deleted (also from the cache {session.cache_dir})",
        )
    if digest.kind is None:
        logger.warning("%s: no sha256 or git sha1 known for it; its content was not verified", remote.name)
    return tmp


class _Digest:
    """sha256 for an LFS etag (64 hex), git blob sha1 for a regular file's etag (40 hex), else nothing."""

    def __init__(self, expected: str | None, size: int) -> None:
        self.expected = expected
        self.kind: str | None = None
        self._hash: Any = None
        if expected and _SHA256.fullmatch(expected):
            self.kind, self._hash = "sha256", hashlib.sha256()
        elif expected and COMMIT.fullmatch(expected):
            self.kind, self._hash = "git sha1", hashlib.sha1(f"blob {size}\0".encode())

    def update(self, chunk: bytes) -> None:
        if self._hash is not None:
            self._hash.update(chunk)

    def hexdigest(self) -> str | None:
        return self._hash.hexdigest() if self._hash is not None else None

    def matches(self) -> bool:
        return self._hash is None or self._hash.hexdigest() == self.expected


def digest_from_blob(cached: Path) -> str | None:
    """The cache names blobs by their etag: read it back through the snapshot's symlink."""
    name = Path(os.path.realpath(cached)).name
    return name if (_SHA256.fullmatch(name) or COMMIT.fullmatch(name)) else None


def _evict(cached: Path, cache_dir: Path) -> None:
    """Remove a corrupt file from the cache (snapshot link and blob) so the next try downloads again."""
    root = Path(os.path.realpath(cache_dir))
    blob = Path(os.path.realpath(cached))
    for path in (cached, blob):
        if root in Path(os.path.realpath(path.parent)).parents:
            with suppress(OSError):
                path.unlink()
