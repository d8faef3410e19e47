"""What one fetch knows (source, revision, cache, destination) and how it reports a failure.

The lowest of the fetch modules: :mod:`._transfer` and :mod:`._placement` work on a :class:`FetchContext`,
and :mod:`._session` (the huggingface_hub calls) is one, so the three never import each other in a circle.
Every value a server sends passes :mod:`ckpt_formats.untrusted` here (:meth:`FetchContext.checked`) before
it names a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import untrusted
from ..errors import CheckpointDownloadError, HubAnswerError
from ._errors import download_error, free_bytes, no_space_error, reason
from ._source import HubSource


class Absent(Exception):
    """The Hub answered that the file is not in this (existing) repository and revision."""


@dataclass
class Remote:
    """One remote file resolved into the Hugging Face cache, not yet placed."""

    name: str
    cached: Path
    digest: str | None  # the Hub's sha256 (LFS) or git blob sha1, when known
    size: int | None


class FetchContext:
    """One fetch from ``source`` into ``directory``: its revision, cache, and its errors."""

    def __init__(self, source: HubSource, directory: Path) -> None:
        from huggingface_hub.file_download import repo_folder_name

        self.source = source
        self.directory = directory
        self.revision = untrusted.repo_path(source.revision or "main", "the revision", HubAnswerError)
        self.cache_dir = source.resolved_cache_dir
        self.storage = self.cache_dir / repo_folder_name(repo_id=source.repo_id, repo_type="model")

    def in_storage(self, path: Path, what: str) -> Path:
        """``path`` if, its links resolved, it lies in this repository's cache folder (see ``untrusted``)."""
        return untrusted.inside(self.storage, path, what, HubAnswerError)

    def checked(self, check: Callable[..., str], value: Any, what: str) -> str:
        """``value`` passed through one of :mod:`ckpt_formats.untrusted`'s checks, refused as the hub's."""
        return check(value, what, HubAnswerError)

    # -- errors of this fetch -------------------------------------------------------------------------

    def check_space(self, name: str, size: int | None, only: Path | None = None) -> None:
        """Refuse ``size`` bytes that do not fit in the cache and the directory (or ``only`` there)."""
        if not size:
            return
        for where in [only] if only else [self.cache_dir, self.directory]:
            free = free_bytes(where)
            if free is not None and free < size:
                raise self.no_space(name, size, where, None, free)

    def no_space(
        self, name: str, size: int | None, where: Path, exc: OSError | None, free: int | None = None
    ) -> CheckpointDownloadError:
        return no_space_error(self.source.repo_url, self.cache_dir, name, size, where, exc, free)

    def error(self, name: str, exc: BaseException | None, why: str | None = None) -> CheckpointDownloadError:
        why = why or reason(exc, self.source.timeout)
        return download_error(self.source.repo_url, self.revision, name, why)
