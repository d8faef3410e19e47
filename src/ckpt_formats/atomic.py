"""Write a file all at once or not at all: the one atomic-write helper of the project.

Every file ckpt_formats and corridorkey write (conversions, ``save_checkpoint``, clip outputs, hub placement,
manifests) goes through here:

1. the bytes go to a hidden temporary name beside the target, ``.<name>.<12 hex>.tmp`` (discovery skips
   dotfiles, so a partial file is never taken for a checkpoint or a frame);
2. the temporary file is flushed to disk (``fsync``);
3. it is renamed over the target (``os.replace``: atomic on POSIX and Windows);
4. the folder is fsynced, so the rename itself survives a power cut.

The file gets the mode a plain ``open(path, "w")`` gets under the umask (not ``mkstemp``'s 0600, which
some writers, safetensors' ``save_file`` among them, give their output: it is set back before the rename).
Temporaries left by a killed process are recognised by :func:`is_temp_file` and removed by
:func:`sweep_temps`.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{12}\.tmp$", re.DOTALL)

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "fsync_directory",
    "is_temp_file",
    "replace_durably",
    "staged",
    "sweep_temps",
    "temp_path_for",
]


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<12 hex>.tmp`` (hidden, never a frame name)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def is_temp_file(path: str | os.PathLike[str], target: str | None = None) -> bool:
    """True for a temporary file this project makes (any target, or the one named ``target``)."""
    match = _TEMP_RE.match(Path(path).name)
    return bool(match) and (target is None or match.group("target") == target)


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename, a new file) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows, or a folder we may not open: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on folders
        logger.debug("fsync of folder %s failed: %s", folder, exc)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _plain_mode() -> int:
    """The mode a new file gets from ``open(path, "w")``: 0o666 less the process umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:  # Linux: read without changing it
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)  # elsewhere the only way to read it is to set it (and put it back)
    os.umask(umask)
    return 0o666 & ~umask


def replace_durably(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give ``tmp`` the plain-write mode, fsync it, rename it over ``path``, fsync the folder.

    For callers that stage files themselves; :func:`atomic_write` and :func:`staged` end with it.
    """
    mode = _plain_mode()
    if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
        os.chmod(tmp, mode)
    _fsync_file(Path(tmp))
    os.replace(tmp, path)
    fsync_directory(Path(path).parent)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a hidden temporary file beside ``path``, then rename it to ``path``.

    Args:
        path: the final file name.
        write: writes the whole content to the path it is given (it creates the file).

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Raises:
        Whatever ``write`` raises, or the ``OSError`` of the rename. On any failure (KeyboardInterrupt
        included) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        write(tmp)
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staged(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with staged(path) as tmp:`` write ``tmp``; clean exit renames it to ``path``; else it is deleted."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sweep_temps(folder: str | os.PathLike[str], target: str | None = None) -> int:
    """Delete the temporaries a killed writer left in ``folder`` (all, or only those of ``target``).

    Returns how many were removed. Only call it where no other process is writing the same targets.
    """
    folder = Path(folder)
    removed = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if is_temp_file(p, target) and p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted write in %s", removed, folder)
    return removed
