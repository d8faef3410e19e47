"""The errors ckpt_formats raises. Each message is one line naming the file, the format and what to do."""

from __future__ import annotations

import errno
from typing import Any

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""The ``errno`` values of a write that did not fit: disk full, quota exceeded, file size limit."""


class CheckpointError(Exception):
    """Base class of every error raised by ckpt_formats."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file in the directory matched any allowed format (and no hub could supply one)."""


class AmbiguousCheckpointError(CheckpointError):
    """Two or more candidates of the winning format: the registry will not guess which one."""


class CheckpointAccessError(CheckpointError, PermissionError):
    """A folder or file may not be read by this user. Also a ``PermissionError``; ``filename`` names it."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0])


class CheckpointLoadError(CheckpointError):
    """The chosen checkpoint failed to load (corrupt, truncated, unreadable, unsafe or wrong content)."""


class CheckpointContentError(CheckpointLoadError):
    """A file's content is not what its name claims (a pickle named .safetensors, a Git LFS pointer, ...)."""


class DeviceUnavailableError(CheckpointLoadError):
    """The device asked for (``cuda``, ``cuda:N``, ``mps``...) is not available in this torch build or on this
    machine; nothing was read. The file itself may be fine."""


class CheckpointDownloadError(CheckpointError, RuntimeError):
    """Fetching a checkpoint from a hub failed for a reason other than "the file is not there"."""


class UnsafeNameError(CheckpointError, ValueError):
    """A name that came from outside (a server's header, an index's file list, a name inside an archive) is
    not safe to use as a path: ``..``, an absolute path, a separator, NUL, a control character, too long, or
    not the form it must have (a commit hash, an etag). Nothing was created or written.

    Attributes:
        what: where the value came from (``the X-Repo-Commit header``, ``model.safetensors.index.json``).
        value: the refused value.
    """

    def __init__(self, message: str, *, what: str = "", value: object = None) -> None:
        super().__init__(message)
        self.what = what
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes with its message intact
        return (_rebuild, (type(self), str(self), self.what, self.value))


class HubAnswerError(UnsafeNameError, CheckpointDownloadError):
    """A hub (or a mirror, a proxy) answered a value that would place a file outside the cache or the
    destination: the fetch stops at once, with nothing written."""


def _rebuild(cls: type[UnsafeNameError], message: str, what: str, value: object) -> UnsafeNameError:
    return cls(message, what=what, value=value)


class PluginError(CheckpointError):
    """A plugin declared something invalid, could not be imported, or one of its functions failed.

    Attributes:
        plugin: the plugin's name, when the error is about one of its functions (else None).
        format: the format whose function failed (else None).
        hook: which function failed: ``discover``, ``matches``, ``load``, ``read_metadata``, ``save`` or
            ``companions`` (else None).
    """

    def __init__(
        self, message: str, *, plugin: str | None = None, format: str | None = None, hook: str | None = None
    ) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.format = format
        self.hook = hook


class PluginLoadError(PluginError, CheckpointLoadError):
    """A plugin's ``load`` or ``read_metadata`` raised something other than a :class:`CheckpointError`
    (or called ``sys.exit``): the checkpoint was not loaded. Both a plugin error and a load error."""


class NoSpaceError(CheckpointError, OSError):
    """A write ran out of disk space. Also an ``OSError`` with ``errno.ENOSPC``, so callers that catch
    ``OSError`` (or check ``errno``) handle it like the operating system's own disk-full error.

    ``str(error)`` is the one-line message; ``filename`` is the file that did not fit, when known.
    """

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(errno.ENOSPC, message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[CheckpointError], tuple[str, str | None]]:
        # picklable across processes with its message intact
        return (type(self), (self.message, self.filename))


class DownloadNoSpaceError(NoSpaceError, CheckpointDownloadError):
    """A hub fetch did not fit on the disk (the cache or the checkpoint directory)."""
