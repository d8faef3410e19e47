"""Fetch a checkpoint from the Hugging Face Hub when a directory has none.

:func:`fetch` asks the Hub for each allowed format's remote file names, highest priority first, and places
the first one that exists (with its companion files) in the directory. The rules:

* It falls back to the next file **only** when the Hub answers that the file is absent from an existing
  repository and revision. Any other failure (no connection, timeout, HTTP 5xx, 401/403, gated or missing
  repository, missing revision, offline with nothing cached) raises :class:`CheckpointDownloadError` at
  once: a network hiccup never downgrades a download to a less safe format.
* Bytes go through the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``, the client's own layout), are
  copied to a hidden ``.NAME.*.part`` file in the directory while their sha256 (or git blob sha1) is checked
  against the Hub's, and are renamed into place: discovery never sees a partial or unverified file.
* A lock file in the directory makes concurrent fetches download once; the others find the file placed.
* With ``HF_HUB_OFFLINE=1`` the cache alone is used, without any request.

huggingface_hub is imported inside the functions: ``import ckpt_formats`` stays cheap.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import logging
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointDownloadError, CheckpointNotFoundError
from .types import CheckpointFormat

logger = logging.getLogger(__name__)

LOCK_NAME = ".ckpt-formats-fetch.lock"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HubSource:
    """Where to fetch a checkpoint from when the directory has none.

    Attributes:
        repo_id: ``owner/name`` of a model repository.
        revision: branch, tag or commit hash (a commit hash pins the download); None means ``main``.
        filenames: remote file names per format name, replacing the formats' ``hub_filenames``. When given,
            only the formats named here are asked for (still in priority order).
        token: Hub token; None uses the client's default (``HF_TOKEN`` or the saved login), False sends none.
        progress: progress bar on stderr; None shows one only when stderr is a terminal.
        cache_dir: the Hugging Face cache to download through (default: the client's ``HF_HUB_CACHE``).
        endpoint: Hub URL (default: the client's ``HF_ENDPOINT``).
        timeout: seconds to wait for the Hub's answer about each file.
    """

    repo_id: str
    revision: str | None = None
    filenames: Mapping[str, Sequence[str]] | None = field(default=None, hash=False)
    token: str | bool | None = None
    progress: bool | None = None
    cache_dir: str | os.PathLike[str] | None = None
    endpoint: str | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(self.repo_id)  # a ValueError naming the bad id
        if self.filenames is not None:
            names: dict[str, tuple[str, ...]] = {}
            for fmt, value in self.filenames.items():
                value = (value,) if isinstance(value, str) else tuple(value)
                for name in value:
                    _check_remote_name(name)
                names[fmt] = value
            object.__setattr__(self, "filenames", names)

    @property
    def repo_url(self) -> str:
        return f"{self.resolved_endpoint}/{self.repo_id}"

    @property
    def resolved_endpoint(self) -> str:
        from huggingface_hub import constants

        return (self.endpoint or constants.ENDPOINT).rstrip("/")

    @property
    def resolved_cache_dir(self) -> Path:
        from huggingface_hub import constants

        return Path(self.cache_dir if self.cache_dir is not None else constants.HF_HUB_CACHE).expanduser()

    def files_for(self, fmt: CheckpointFormat) -> tuple[str, ...]:
        """The remote names to ask for ``fmt``, in order."""
        if self.filenames is None:
            return tuple(fmt.hub_filenames)
        return tuple(self.filenames.get(fmt.name, ()))


def _check_remote_name(name: object) -> None:
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"hub file name {name!r} must be a relative path inside the repository")


class _Absent(Exception):
    """The Hub answered that the file is not in this (existing) repository and revision."""


@dataclass
class _Remote:
    """One remote file resolved into the Hugging Face cache, not yet placed."""

    name: str
    cached: Path
    digest: str | None  # the Hub's sha256 (LFS) or git blob sha1, when known
    size: int | None


def fetch(
    source: HubSource, directory: str | os.PathLike[str], formats: Sequence[CheckpointFormat]
) -> list[Path]:
    """Download the best available format of ``source`` into ``directory``; return the paths placed.

    ``formats`` are the allowed formats, highest priority first (the safety policy already applied). The
    primary file comes first in the result, then its companions. Raises :class:`CheckpointNotFoundError`
    when the repository has none of the files asked for, :class:`CheckpointDownloadError` for anything else.
    """
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
        session = _Session(source, directory)
        asked: list[str] = []
        for fmt, name in plan:
            asked.append(f"{name} ({fmt.name})")
            try:
                primary = session.resolve(name)
            except _Absent:
                logger.info("%s has no %s at revision %s", source.repo_url, name, session.revision)
                continue
            return session.place(fmt, primary)
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


class _Session:
    """The huggingface_hub calls for one fetch: ask, download into the cache, place into the directory."""

    def __init__(self, source: HubSource, directory: Path) -> None:
        from huggingface_hub import constants

        self.source = source
        self.directory = directory
        self.revision = source.revision or "main"
        self.cache_dir = source.resolved_cache_dir
        is_offline = getattr(constants, "is_offline_mode", None)
        self.offline = bool(is_offline() if callable(is_offline) else constants.HF_HUB_OFFLINE)

    # -- asking the Hub -------------------------------------------------------------------------------

    def resolve(self, name: str) -> _Remote:
        """Bring ``name`` into the cache (or find it there). Raises :class:`_Absent` or a download error."""
        from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

        cached = try_to_load_from_cache(
            self.source.repo_id, name, cache_dir=self.cache_dir, revision=self.revision
        )
        pinned = bool(_COMMIT.fullmatch(self.revision))
        if self.offline or pinned:  # a commit's files never change: the cache answers for it
            if isinstance(cached, str):
                logger.info("using %s from the Hugging Face cache (%s)", name, cached)
                return _Remote(name, Path(cached), _digest_from_blob(Path(cached)), None)
            if cached is _CACHED_NO_EXIST:
                raise _Absent(name)
            if self.offline:
                raise CheckpointDownloadError(
                    f"the machine is offline (HF_HUB_OFFLINE=1) and {name} of {self.source.repo_url} "
                    f"(revision {self.revision}) is not in the Hugging Face cache {self.cache_dir}. "
                    f"Place the file at {self.directory / posixpath.basename(name)}, or check the network "
                    "connection and unset HF_HUB_OFFLINE"
                )
        metadata = self._head(name)
        self._check_space(name, metadata.size)
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
            if _is_remote_absent(exc):
                self._remember_absent(name, exc)
                raise _Absent(name) from exc
            raise self._error(name, exc) from exc
        if metadata.commit_hash is None or metadata.etag is None:
            raise self._error(
                name, None, "the answer lacks the X-Repo-Commit or ETag header: it is not a Hub endpoint"
            )
        return metadata

    def _download(self, name: str, metadata: Any) -> _Remote:
        from huggingface_hub import hf_hub_download

        logger.info(
            "Downloading %s (%s) from %s (revision %s)",
            name,
            _human(metadata.size),
            self.source.repo_url,
            self.revision,
        )
        try:
            path = hf_hub_download(
                self.source.repo_id,
                name,
                revision=self.revision,
                cache_dir=self.cache_dir,
                token=self.source.token,
                endpoint=self.source.endpoint,
                etag_timeout=self.source.timeout,
                tqdm_class=_progress_class(self.source.progress),
            )
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise self._no_space(name, metadata.size, self.cache_dir, exc) from exc
            raise self._error(name, exc) from exc
        except Exception as exc:
            raise self._error(name, exc) from exc
        return _Remote(name, Path(path), metadata.etag, metadata.size)

    # -- placing into the directory -------------------------------------------------------------------

    def place(self, fmt: CheckpointFormat, primary: _Remote) -> list[Path]:
        """Stage the primary file and its companions as verified hidden files, then rename them into place.

        Companions are renamed first and the primary last, so discovery never sees an incomplete set.
        """
        remotes = [primary]
        if fmt.companions is not None:
            folder = posixpath.dirname(primary.name)
            for companion in fmt.companions(primary.cached):
                name = posixpath.join(folder, companion) if folder else companion
                if Path(companion).name != companion:
                    raise self._error(name, None, f"{primary.name} lists a file outside its folder; refused")
                try:
                    remotes.append(self.resolve(name))
                except _Absent:
                    raise self._error(
                        name, None, f"{primary.name} lists it but the repository has no such file"
                    ) from None
        staged: list[tuple[str, Path, Path]] = []
        renamed: list[Path] = []
        try:
            for remote in remotes:
                dest = self.directory / posixpath.basename(remote.name)
                staged.append((remote.name, self._stage(remote, dest), dest))
            for name, tmp, dest in reversed(staged):
                os.replace(tmp, dest)
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

    def _stage(self, remote: _Remote, dest: Path) -> Path:
        """Copy a cached file to a hidden temporary name beside ``dest``, checking its digest on the way."""
        tmp = staging_path(dest)
        self._check_space(remote.name, remote.size or remote.cached.stat().st_size, only=self.directory)
        digest = _Digest(remote.digest, remote.cached.stat().st_size)
        try:
            with open(remote.cached, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in _NO_SPACE:
                raise self._no_space(remote.name, remote.size, self.directory, exc) from exc
            raise CheckpointDownloadError(
                f"could not copy {remote.name} from the Hugging Face cache ({remote.cached}) to {dest}: "
                f"{exc.strerror or exc}. Check that {self.directory} is writable and retry"
            ) from exc
        if not digest.matches():
            tmp.unlink(missing_ok=True)
            _evict(remote.cached, self.cache_dir)
            raise self._error(
                remote.name,
                None,
                f"the downloaded bytes do not match the Hub's {digest.kind} (expected {remote.digest}, got "
                f"{digest.hexdigest()}); the corrupt copy was deleted (also from the cache {self.cache_dir})",
            )
        if digest.kind is None:
            logger.warning(
                "%s: no sha256 or git sha1 known for it; its content was not verified", remote.name
            )
        return tmp

    # -- errors and bookkeeping -----------------------------------------------------------------------

    def _check_space(self, name: str, size: int | None, only: Path | None = None) -> None:
        if not size:
            return
        for where in [only] if only else [self.cache_dir, self.directory]:
            free = _free_bytes(where)
            if free is not None and free < size:
                raise self._no_space(name, size, where, None, free)

    def _no_space(
        self, name: str, size: int | None, where: Path, exc: OSError | None, free: int | None = None
    ) -> CheckpointDownloadError:
        free = _free_bytes(where) if free is None else free
        needed = f"{_human(size)} ({size} bytes, size from the Hub)" if size else "an unknown size"
        return CheckpointDownloadError(
            f"not enough disk space for {name} from {self.source.repo_url}: it needs {needed} in {where}, "
            f"which has {_human(free)} free{f' ({exc.strerror})' if exc is not None else ''}. "
            f"Free some space (the file also goes through the Hugging Face cache {self.cache_dir}) and retry"
        )

    def _error(
        self, name: str, exc: BaseException | None, reason: str | None = None
    ) -> CheckpointDownloadError:
        reason = reason or _reason(exc, self.source.timeout)
        return CheckpointDownloadError(
            f"could not download {name} from {self.source.repo_url} (revision {self.revision}): {reason}. "
            "Check the network connection (and HF_ENDPOINT, the token, the repository id and revision) and "
            "retry; no other file was tried"
        )

    def _remember_absent(self, name: str, exc: BaseException) -> None:
        """Record the absence in the cache as the client does (``.no_exist``), so offline runs know it."""
        from huggingface_hub.file_download import repo_folder_name

        response = getattr(exc, "response", None)
        commit = response.headers.get("X-Repo-Commit") if response is not None else None
        if not commit or not _COMMIT.fullmatch(commit):
            return
        repo = repo_folder_name(repo_id=self.source.repo_id, repo_type="model")
        marker = self.cache_dir / repo / ".no_exist" / commit / name
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as err:
            logger.debug("could not record the absence of %s in the cache: %s", name, err)


def staging_path(dest: Path) -> Path:
    """Where ``dest`` is written before its rename: hidden (discovery skips dotfiles), ``.part`` suffix."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")


def _is_remote_absent(exc: BaseException) -> bool:
    """True only for the Hub's own "entry not found" answer (X-Error-Code: EntryNotFound)."""
    from huggingface_hub import errors

    remote = getattr(errors, "RemoteEntryNotFoundError", None) or errors.EntryNotFoundError
    local = getattr(errors, "LocalEntryNotFoundError", ())
    return (
        isinstance(exc, remote) and not isinstance(exc, local) and getattr(exc, "response", None) is not None
    )


def _reason(exc: BaseException | None, timeout: float) -> str:
    """A short human reason for a failed request."""
    if exc is None:
        return "unknown error"
    from huggingface_hub import errors

    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return "offline mode is enabled (HF_HUB_OFFLINE=1)"
    if isinstance(exc, errors.GatedRepoError):
        return f"the repository is gated (HTTP {status}): accept its terms on the Hub and pass a token"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"repository not found (HTTP {status}); if it is private, pass a token"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"revision not found (HTTP {status})"
    if any("Timeout" in n for n in names):
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    if "RemoteProtocolError" in names:
        return f"the connection was dropped ({exc})"
    if any("Connect" in n for n in names):
        return f"could not connect ({type(exc).__name__}: {exc})"
    if status is not None:
        return f"the Hub answered HTTP {status}" + (
            " (access denied: check the token)" if status in (401, 403) else ""
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _Digest:
    """sha256 for an LFS etag (64 hex), git blob sha1 for a regular file's etag (40 hex), else nothing."""

    def __init__(self, expected: str | None, size: int) -> None:
        self.expected = expected
        self.kind: str | None = None
        self._hash: Any = None
        if expected and _SHA256.fullmatch(expected):
            self.kind, self._hash = "sha256", hashlib.sha256()
        elif expected and _COMMIT.fullmatch(expected):
            self.kind, self._hash = "git sha1", hashlib.sha1(f"blob {size}\0".encode())

    def update(self, chunk: bytes) -> None:
        if self._hash is not None:
            self._hash.update(chunk)

    def hexdigest(self) -> str | None:
        return self._hash.hexdigest() if self._hash is not None else None

    def matches(self) -> bool:
        return self._hash is None or self._hash.hexdigest() == self.expected


def _digest_from_blob(cached: Path) -> str | None:
    """The cache names blobs by their etag: read it back through the snapshot's symlink."""
    name = Path(os.path.realpath(cached)).name
    return name if (_SHA256.fullmatch(name) or _COMMIT.fullmatch(name)) else None


def _evict(cached: Path, cache_dir: Path) -> None:
    """Remove a corrupt file from the cache (snapshot link and blob) so the next try downloads again."""
    root = Path(os.path.realpath(cache_dir))
    blob = Path(os.path.realpath(cached))
    for path in (cached, blob):
        if root in Path(os.path.realpath(path.parent)).parents:
            with suppress(OSError):
                path.unlink()


def _progress_class(progress: bool | None) -> Any:
    """huggingface_hub's own bar: auto (TTY only) for None, forced on for True, silent for False."""
    from huggingface_hub.utils import silent_tqdm
    from huggingface_hub.utils import tqdm as hf_tqdm

    if progress is None:
        return None
    if not progress:
        return silent_tqdm

    class _ForcedBar(hf_tqdm):  # shown even when stderr is not a terminal (HF_HUB_DISABLE_PROGRESS_BARS wins)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

    return _ForcedBar


def _free_bytes(path: Path) -> int | None:
    for candidate in [path, *path.parents]:
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _human(size: int | None) -> str:
    if size is None:
        return "unknown size"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
