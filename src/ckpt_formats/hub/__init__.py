"""Fetch a checkpoint from the Hugging Face Hub when a directory has none.

:func:`fetch` asks the Hub for each allowed format's remote file names, highest priority first, and places
the first one that exists (with its companion files) in the directory. The rules:

* It falls back to the next file **only** when the Hub answers that the file is absent from an existing
  repository and revision. Any other failure (no connection, timeout, HTTP 5xx, 401/403, gated or missing
  repository, missing revision, offline with nothing cached) raises :class:`CheckpointDownloadError` at
  once: a network hiccup never downgrades a download to a less safe format.
* Bytes go through the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``, the client's own layout), are
  copied to a hidden temporary file beside their destination (:func:`ckpt_formats.atomic.temp_path_for`)
  while their sha256 (or git blob sha1) is checked against the Hub's, and are renamed into place: discovery
  never sees a partial or unverified file.
* A lock file in the directory makes concurrent fetches download once; the others find the file placed.
* With ``HF_HUB_OFFLINE=1`` the cache alone is used, without any request.

The modules, one reason to change each: :mod:`._source` (:class:`HubSource`), :mod:`._session` (the
huggingface_hub calls), :mod:`._placement` (integrity and placement), :mod:`._errors` (error translation).
huggingface_hub is imported inside the functions: ``import ckpt_formats.hub`` stays cheap.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import CheckpointNotFoundError
from ..formats import CheckpointFormat
from ._source import HubSource

__all__ = ["LOCK_NAME", "HubSource", "fetch"]

logger = logging.getLogger("ckpt_formats.hub")

LOCK_NAME = ".ckpt-formats-fetch.lock"


def fetch(
    source: HubSource, directory: str | os.PathLike[str], formats: Sequence[CheckpointFormat]
) -> list[Path]:
    """Download the best available format of ``source`` into ``directory``.

    Args:
        source: the repository, revision and settings.
        directory: where the files land (created if needed).
        formats: the allowed formats, highest priority first (the safety policy already applied).

    Returns:
        The paths placed: the primary file first, then its companions.

    Raises:
        CheckpointNotFoundError: the repository has none of the files asked for.
        CheckpointDownloadError: anything else (network, access, integrity, disk space).
    """
    from ._placement import place
    from ._session import Absent, Session

    directory = Path(directory)
    plan = [(fmt, name) for fmt in formats for name in source.files_for(fmt)]
    if not plan:
        allowed = ", ".join(f.name for f in formats) or "none"
        raise CheckpointNotFoundError(
            f"nothing to fetch from {source.repo_url}: none of the allowed formats ({allowed}) has hub file "
            "names; pass them with HubSource(filenames={FORMAT: [NAME]}) (command line: --filename FMT=NAME)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    with _directory_lock(directory):
        placed = _already_placed(directory, plan)
        if placed:
            logger.info("%s already present in %s; nothing downloaded", placed[0].name, directory)
            return placed
        session = Session(source, directory)
        asked: list[str] = []
        for fmt, name in plan:
            asked.append(f"{name} ({fmt.name})")
            try:
                primary = session.resolve(name)
            except Absent:
                logger.info("%s has no %s at revision %s", source.repo_url, name, session.revision)
                continue
            return place(session, fmt, primary)
    raise CheckpointNotFoundError(
        f"{source.repo_url} (revision {session.revision}) has none of the files asked for: "
        f"{', '.join(asked)}. Check the repository id and revision, or name the files with "
        "HubSource(filenames=...) (command line: --filename FMT=NAME)"
    )


def _already_placed(directory: Path, plan: Sequence[tuple[CheckpointFormat, str]]) -> list[Path]:
    """What a concurrent fetch (which held the lock before us) placed, primary first; else []."""
    for fmt, name in plan:
        primary = directory / posixpath.basename(name)
        if primary.is_file():
            companions = [directory / c for c in (fmt.companions(primary) if fmt.companions else [])]
            if all(c.is_file() for c in companions):
                return [primary, *companions]
    return []


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(directory / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process fetching into %s (lock %s)", directory, lock.lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
