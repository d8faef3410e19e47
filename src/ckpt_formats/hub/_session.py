"""The huggingface_hub calls of one fetch: ask the Hub about a file, bring it into the Hugging Face cache.

Nothing here writes into the checkpoint directory (that is :mod:`._placement`); the cache is the client's
own (``HF_HOME``/``HF_HUB_CACHE``), in its own layout.
"""

from __future__ import annotations

import inspect
import logging
import os
import posixpath
from pathlib import Path
from typing import Any

from .. import untrusted
from ..errors import CheckpointDownloadError
from ..formats import CheckpointFormat
from ._context import Absent, FetchContext, Remote
from ._errors import human, is_remote_absent
from ._placement import digest_from_blob
from ._source import HubSource
from ._transfer import download_to_cache

__all__ = ["Absent", "Remote", "Session"]

logger = logging.getLogger("ckpt_formats.hub")


class Session(FetchContext):
    """One fetch from ``source`` into ``directory``: its revision, cache and offline state."""

    def __init__(self, source: HubSource, directory: Path) -> None:
        from huggingface_hub import constants

        super().__init__(source, directory)
        is_offline = getattr(constants, "is_offline_mode", None)
        self.offline = bool(is_offline() if callable(is_offline) else constants.HF_HUB_OFFLINE)

    def resolve(self, name: str) -> Remote:
        """Bring ``name`` into the cache (or find it there). Raises :class:`Absent` or a download error."""
        from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

        name = self.checked(untrusted.repo_path, name, "the file name")
        cached = try_to_load_from_cache(
            self.source.repo_id, name, cache_dir=self.cache_dir, revision=self.revision
        )
        pinned = bool(untrusted.COMMIT.fullmatch(self.revision))
        if self.offline or pinned:  # a commit's files never change: the cache answers for it
            if isinstance(cached, str):
                self._check_cached(name, Path(cached))
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

    def companions(self, fmt: CheckpointFormat, primary: Remote) -> list[Remote]:
        """The files ``primary`` needs beside it (a sharded index's shards), each brought into the cache.

        Raises:
            HubAnswerError: the primary lists a name that is not a plain file name.
            CheckpointDownloadError: a listed file is missing from the repository, or its download failed.
        """
        if fmt.companions is None:
            return []
        folder = posixpath.dirname(primary.name)
        remotes = []
        for companion in fmt.companions(primary.cached):
            self.checked(untrusted.file_name, companion, f"a file name {primary.name} lists")
            name = posixpath.join(folder, companion) if folder else companion
            try:
                remotes.append(self.resolve(name))
            except Absent:
                raise self.error(
                    name, None, f"{primary.name} lists it but the repository has no such file"
                ) from None
        return remotes

    def _check_cached(self, name: str, cached: Path) -> None:
        """A cache entry (snapshot link and its blob) must lie in the cache: an earlier hostile answer or a
        planted link could point it elsewhere."""
        self.in_storage(cached, f"the Hugging Face cache entry of {name}")
        self.in_storage(Path(os.path.realpath(cached)), f"the blob the cache entry of {name} links to")

    def _head(self, name: str) -> Any:
        """One metadata request, never retried: a failure is reported, not papered over; every value the
        answer names a file or a URL by is checked (``untrusted``) before it is used."""
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
        self.checked(untrusted.commit_hash, metadata.commit_hash, f"the X-Repo-Commit header of {name}")
        self.checked(untrusted.etag, metadata.etag, f"the X-Linked-Etag (or ETag) header of {name}")
        self.checked(untrusted.url, metadata.location, f"the location (redirect) of {name}")
        return metadata

    def _download(self, name: str, metadata: Any) -> Remote:
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
        response = getattr(exc, "response", None)
        commit = response.headers.get("X-Repo-Commit") if response is not None else None
        if not commit or not untrusted.COMMIT.fullmatch(commit):
            return
        marker = self.storage / ".no_exist" / commit / name
        try:
            self.in_storage(marker, f"the absence marker of {name}")
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except (OSError, CheckpointDownloadError) as err:
            logger.debug("could not record the absence of %s in the cache: %s", name, err)


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
