"""The huggingface_hub calls of one fetch: ask the Hub about a file, bring it into the Hugging Face cache.

Nothing here writes into the checkpoint directory (that is :mod:`._placement`); the cache is the client's
own (``HF_HOME``/``HF_HUB_CACHE``), in its own layout.
"""

from __future__ import annotations

import inspect
import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointDownloadError
from ._errors import download_error, free_bytes, human, is_remote_absent, no_space_error, reason
from ._placement import COMMIT, digest_from_blob
from ._source import HubSource

logger = logging.getLogger("ckpt_formats.hub")


class Absent(Exception):
    """The Hub answered that the file is not in this (existing) repository and revision."""


@dataclass
class Remote:
    """One remote file resolved into the Hugging Face cache, not yet placed."""

    name: str
    cached: Path
    digest: str | None  # the Hub's sha256 (LFS) or git blob sha1, when known
    size: int | None


class Session:
    """One fetch from ``source`` into ``directory``: its revision, cache and offline state."""

    def __init__(self, source: HubSource, directory: Path) -> None:
        from huggingface_hub import constants

        self.source = source
        self.directory = directory
        self.revision = source.revision or "main"
        self.cache_dir = source.resolved_cache_dir
        is_offline = getattr(constants, "is_offline_mode", None)
        self.offline = bool(is_offline() if callable(is_offline) else constants.HF_HUB_OFFLINE)

    def resolve(self, name: str) -> Remote:
        """Bring ``name`` into the cache (or find it there). Raises :class:`Absent` or a download error."""
        from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

        cached = try_to_load_from_cache(
            self.source.repo_id, name, cache_dir=self.cache_dir, revision=self.revision
        )
        pinned = bool(COMMIT.fullmatch(self.revision))
        if self.offline or pinned:  # a commit's files never change: the cache answers for it
            if isinstance(cached, str):
                logger.info("using %s from the Hugging Face cache (%s)", name, cached)
                return Remote(name, Path(cached), digest_from_blob(Path(cached)), None)
            if cached is _CACHED_NO_EXIST:
                raise Absent(name)
            if self.offline:
                raise CheckpointDownloadError(
                    f"the machine is offline (HF_HUB_OFFLINE=1) and {name} of {self.source.repo_url} "
                    f"(revision {self.revision}) is not in the Hugging Face cache {self.cache_dir}. "
                    f"Place the file at {self.directory / posixpath.basename(name)}, or check the network "
                    "connection and unset HF_HUB_OFFLINE"
                )
        metadata = self._head(name)
        self.check_space(name, metadata.size)
        return self._download(name, metadata)

    def _head(self, name: str) -> Any:
        """One metadata request, never retried: a failure is reported, not papered over."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(self.source.repo_id, name, revision=self.revision, endpoint=self.source.endpoint)
        kwargs: dict[str, Any] = {}
        if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
            kwargs["retry_on_errors"] = False
        try:
            metadata = get_hf_file_metadata(
                url,
                token=self.source.token,
                timeout=self.source.timeout,
                endpoint=self.source.endpoint,
                **kwargs,
            )
        except Exception as exc:
            if is_remote_absent(exc):
                self._remember_absent(name, exc)
                raise Absent(name) from exc
            raise self.error(name, exc) from exc
        if metadata.commit_hash is None or metadata.etag is None:
            raise self.error(
                name, None, "the answer lacks the X-Repo-Commit or ETag header: it is not a Hub endpoint"
            )
        return metadata

    def _download(self, name: str, metadata: Any) -> Remote:
        from ._transfer import download_to_cache

        logger.info(
            "Downloading %s (%s) from %s (revision %s)",
            name,
            human(metadata.size),
            self.source.repo_url,
            self.revision,
        )
        path = download_to_cache(self, name, metadata, _progress_class(self.source.progress))
        return Remote(name, path, metadata.etag, metadata.size)

    def _remember_absent(self, name: str, exc: BaseException) -> None:
        """Record the absence in the cache as the client does (``.no_exist``), so offline runs know it."""
        from huggingface_hub.file_download import repo_folder_name

        response = getattr(exc, "response", None)
        commit = response.headers.get("X-Repo-Commit") if response is not None else None
        if not commit or not COMMIT.fullmatch(commit):
            return
        repo = repo_folder_name(repo_id=self.source.repo_id, repo_type="model")
        marker = self.cache_dir / repo / ".no_exist" / commit / name
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as err:
            logger.debug("could not record the absence of %s in the cache: %s", name, err)

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


def _progress_class(progress: bool | None) -> Any:
    """huggingface_hub's own bar: auto (terminal only) for None, forced on for True, none for False."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    if progress is False:
        return None
    forced = bool(progress)

    class _Bar(hf_tqdm):  # HF_HUB_DISABLE_PROGRESS_BARS still wins (hf_tqdm checks it)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False if forced else None  # None: tqdm shows it only on a terminal
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # tqdm is untyped

    return _Bar
