"""Error translation: huggingface_hub's exceptions and OS errors into one-line download errors."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import NO_SPACE_ERRNOS, CheckpointDownloadError, DownloadNoSpaceError

NO_SPACE = NO_SPACE_ERRNOS


def is_remote_absent(exc: BaseException) -> bool:
    """True only for the Hub's own "entry not found" answer (X-Error-Code: EntryNotFound)."""
    from huggingface_hub import errors

    remote = getattr(errors, "RemoteEntryNotFoundError", None) or errors.EntryNotFoundError
    local = getattr(errors, "LocalEntryNotFoundError", ())
    return (
        isinstance(exc, remote) and not isinstance(exc, local) and getattr(exc, "response", None) is not None
    )


def reason(exc: BaseException | None, timeout: float) -> str:
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


def download_error(repo_url: str, revision: str, name: str, why: str) -> CheckpointDownloadError:
    """The error for a file that could not be downloaded, with what to check."""
    return CheckpointDownloadError(
        f"could not download {name} from {repo_url} (revision {revision}): {why}. "
        "Check the network connection (and HF_ENDPOINT, the token, the repository id and revision) and "
        "retry; no other file was tried"
    )


def no_space_error(
    repo_url: str,
    cache_dir: Path,
    name: str,
    size: int | None,
    where: Path,
    exc: OSError | None,
    free: int | None = None,
) -> DownloadNoSpaceError:
    """The error for a file that does not fit in ``where``: the size the Hub announced and the free space.

    It is also an ``OSError`` with ``errno.ENOSPC`` (see :class:`~ckpt_formats.errors.NoSpaceError`).
    """
    free = free_bytes(where) if free is None else free
    needed = f"{human(size)} ({size} bytes, size from the Hub)" if size else "an unknown size"
    return DownloadNoSpaceError(
        f"not enough disk space for {name} from {repo_url}: it needs {needed} in {where}, "
        f"which has {human(free)} free{f' ({exc.strerror})' if exc is not None else ''}. "
        f"Free some space (the file also goes through the Hugging Face cache {cache_dir}) and retry",
        str(where),
    )


def free_bytes(path: Path) -> int | None:
    """Free space of the file system holding ``path`` (or its nearest existing parent); None if unknown."""
    for candidate in [path, *path.parents]:
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def human(size: int | None) -> str:
    """``382.4 MB``: a size in decimal units for messages."""
    if size is None:
        return "unknown size"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
