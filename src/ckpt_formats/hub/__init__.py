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
* A folder that already holds a checkpoint of an allowed format is left alone (:func:`present`); ``force``
  fetches anyway.
* A lock in the Hugging Face cache (``.locks/ckpt-formats/``, keyed by the destination's real path) makes
  concurrent fetches into one folder download once; the others find the file placed. Nothing but the
  checkpoint's own files is ever created in the directory.
* A download that receives nothing for ``HubSource.stall_timeout`` seconds, or outlives
  ``HubSource.deadline``, fails with one line (:mod:`._transfer`).
* With ``HF_HUB_OFFLINE=1`` the cache alone is used, without any request.

The modules, one reason to change each: :mod:`._source` (:class:`HubSource`), :mod:`._context` (what a
fetch knows, its errors, the checks of what a server sends), :mod:`._session` (the huggingface_hub calls),
:mod:`._transfer` (the bytes, bounded in time), :mod:`._placement` (integrity and
placement), :mod:`._errors` (error translation), :mod:`._remote` (inspecting a Hub checkpoint from its
headers).
huggingface_hub is imported inside the functions: ``import ckpt_formats.hub`` stays cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointNotFoundError
from ..formats import CheckpointFormat
from ._source import HubSource

if TYPE_CHECKING:
    from .._summary import Inspection

__all__ = ["LOCKS_FOLDER", "HubSource", "fetch", "inspect_remote", "lock_path", "present"]

logger = logging.getLogger("ckpt_formats.hub")

LOCKS_FOLDER = Path(".locks") / "ckpt-formats"
"""Where fetch locks live, relative to the Hugging Face cache (the client keeps its own in ``.locks``)."""


def fetch(
    source: HubSource,
    directory: str | os.PathLike[str],
    formats: Sequence[CheckpointFormat],
    *,
    force: bool = False,
    exclude: Sequence[str] = (),
    select: str | Sequence[str] | None = None,
) -> list[Path]:
    """Download the best available format of ``source`` into ``directory``.

    Args:
        source: the repository, revision and settings.
        directory: where the files land (created if needed; removed again if the fetch fails and it is empty).
        formats: the allowed formats, highest priority first (the safety policy already applied).
        force: download even when ``directory`` already holds a checkpoint of one of ``formats``.
        exclude: the discovery filters of the caller (:meth:`Registry.resolve`): a checkpoint they
            leave out (another model's file in a shared folder) does not count as already there, and a
            remote file they leave out is not downloaded.
        select: the other discovery filter, the same way.

    Returns:
        The paths placed (or, without ``force``, already there): the primary file first, then its companions.

    Raises:
        CheckpointNotFoundError: the repository has none of the files asked for.
        AmbiguousCheckpointError: (without ``force``) ``directory`` already holds several checkpoints.
        CheckpointDownloadError: anything else (network, stall, deadline, access, integrity, disk space).
    """
    from .._discovery import filtered_out
    from ._placement import place
    from ._session import Absent, Session

    directory = Path(directory)
    every = [(fmt, name) for fmt in formats for name in source.files_for(fmt)]
    plan = [(fmt, name) for fmt, name in every if not filtered_out(posixpath.basename(name), exclude, select)]
    if every and not plan:
        names = ", ".join(name for _, name in every)
        raise CheckpointNotFoundError(
            f"nothing to fetch from {source.repo_url}: every file name asked for ({names}) is left out by "
            f"exclude={list(exclude)} or select={select!r}"
        )
    if not plan:
        allowed = ", ".join(f.name for f in formats) or "none"
        raise CheckpointNotFoundError(
            f"nothing to fetch from {source.repo_url}: none of the allowed formats ({allowed}) has hub file "
            "names; pass them with HubSource(filenames={FORMAT: [NAME]}) (command line: --filename FMT=NAME)"
        )
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with _fetch_lock(lock_path(source, directory), directory):
            placed = None if force else present(directory, formats, exclude=exclude, select=select)
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
                return place(session, [primary, *session.companions(fmt, primary)])
        raise CheckpointNotFoundError(
            f"{source.repo_url} (revision {session.revision}) has none of the files asked for: "
            f"{', '.join(asked)}. Check the repository id and revision, or name the files with "
            "HubSource(filenames=...) (command line: --filename FMT=NAME)"
        )
    except BaseException:
        if created:
            with suppress(OSError):
                directory.rmdir()  # only if still empty: a folder we made for nothing goes again
        raise


def present(
    directory: str | os.PathLike[str],
    formats: Sequence[CheckpointFormat],
    *,
    exclude: Sequence[str] = (),
    select: str | Sequence[str] | None = None,
) -> list[Path] | None:
    """The checkpoint ``directory`` already resolves to among ``formats``: its files, primary first.

    Args:
        directory: the folder (missing is fine: None).
        formats: the allowed formats, highest priority first.
        exclude: a discovery filter, as :meth:`Registry.resolve` takes it.
        select: the other discovery filter, likewise.

    Returns:
        The winning candidate's paths, or None when no allowed format has a candidate there, or the winner
        is incomplete (an index whose shards are not all there).

    Raises:
        AmbiguousCheckpointError: several candidates of the winning format (fetching would add one more).
    """
    from .._discovery import discover

    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = discover(directory, formats, formats, exclude=exclude, select=select)
    if found.winner is None:
        return None
    _, candidate, _ = found.choose()
    if not all(p.is_file() for p in candidate.paths):
        return None  # an index whose shards are not all there (a crash, a partial copy): fetch the set again
    return list(candidate.paths)


def lock_path(source: HubSource, directory: str | os.PathLike[str]) -> Path:
    """The lock file of fetches into ``directory``: in the cache, named by a hash of its real path."""
    key = hashlib.sha256(os.path.realpath(directory).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return source.resolved_cache_dir / LOCKS_FOLDER / f"fetch-{key}.lock"


def inspect_remote(repo_id: str, **kwargs: Any) -> Inspection:
    """Summarise a safetensors checkpoint on the Hub from its headers; see :func:`._remote.inspect_remote`."""
    from ._remote import inspect_remote as _inspect

    return _inspect(repo_id, **kwargs)


@contextmanager
def _fetch_lock(path: Path, directory: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process fetching into %s (lock %s)", directory, lock.lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
