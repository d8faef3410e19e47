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
:func:`sweep_temps`: while a writer works it holds a shared ``flock`` on the folder, and the sweep runs only
when it can take the exclusive one, so a live writer's temporary is never swept (POSIX; elsewhere the sweep
trusts its caller).

A writer from a library that makes its own temporary file beside the path it is given (safetensors >= 0.5
writes ``.tmpXXXXXX`` and renames it) runs inside :func:`write_in_private_folder`, a hidden folder
``.<name>.<12 hex>.tmpdir`` that the sweep also removes: a killed save leaves nothing of another's naming.

``atomic_write(path, write, replace=False)`` publishes with ``os.link`` instead of ``os.replace``: the link
fails when ``path`` exists, so of several concurrent writers exactly one wins and the others get
:class:`FileExistsError`, with no window between a check and the rename.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{12}\.tmp$", re.DOTALL)
_WORK_DIR_SUFFIX = ".tmpdir"
_WORK_DIR_RE = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{12}\.tmpdir$", re.DOTALL)

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "fsync_directory",
    "interrupt_on_sigterm",
    "is_temp_file",
    "publish_durably",
    "replace_durably",
    "staged",
    "sweep_temps",
    "temp_path_for",
    "write_in_private_folder",
]


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<12 hex>.tmp`` (hidden, never a frame name)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def is_temp_file(path: str | os.PathLike[str], target: str | None = None) -> bool:
    """True for a temporary file this project makes (any target, or the one named ``target``)."""
    match = _TEMP_RE.match(Path(path).name)
    return match is not None and (target is None or match.group("target") == target)


def _is_work_dir(path: Path, target: str | None) -> bool:
    match = _WORK_DIR_RE.match(path.name)
    return match is not None and (target is None or match.group("target") == target)


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


def _prepare(tmp: str | os.PathLike[str]) -> None:
    mode = _plain_mode()
    if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
        os.chmod(tmp, mode)
    _fsync_file(Path(tmp))


def replace_durably(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give ``tmp`` the plain-write mode, fsync it, rename it over ``path``, fsync the folder.

    For callers that stage files themselves; :func:`atomic_write` and :func:`staged` end with it.
    """
    _prepare(tmp)
    os.replace(tmp, path)
    fsync_directory(Path(path).parent)


def publish_durably(
    tmp: str | os.PathLike[str], path: str | os.PathLike[str], *, replace: bool = True
) -> None:
    """Move the finished ``tmp`` to ``path``: :func:`replace_durably`, or with ``replace=False`` only if
    ``path`` does not exist.

    Args:
        tmp: the finished temporary file (removed on success).
        path: the final name.
        replace: False: hard-link ``tmp`` to ``path`` (atomic, fails if ``path`` exists), then unlink ``tmp``.

    Raises:
        FileExistsError: ``replace`` is False and ``path`` exists (``tmp`` is left for the caller to remove).
        OSError: the file system refused the rename or the link.
    """
    if replace:
        replace_durably(tmp, path)
        return
    _prepare(tmp)
    try:
        os.link(tmp, path)  # the exclusive claim: exactly one of several concurrent writers gets it
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        raise OSError(
            exc.errno,
            f"{Path(path).parent}: this file system cannot make hard links, which writing {Path(path).name} "
            "without replacing an existing file needs; write it with replace (--force) instead",
        ) from exc
    os.unlink(tmp)
    fsync_directory(Path(path).parent)


@contextmanager
def writing_in(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold a shared lock on ``folder`` while writing temporaries there (see :func:`sweep_temps`)."""
    fd = _lock_folder(folder, exclusive=False)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock; a killed process releases it too


def _lock_folder(folder: str | os.PathLike[str], *, exclusive: bool) -> int | None:
    """A descriptor holding a flock on ``folder``; None where locks are unsupported or (exclusive) taken."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], None], *, replace: bool = True
) -> Path:
    """Call ``write(tmp)`` on a hidden temporary file beside ``path``, then move it to ``path``.

    Args:
        path: the final file name.
        write: writes the whole content to the path it is given (it creates the file).
        replace: False: never replace an existing ``path`` (:func:`publish_durably`).

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``replace`` is False and ``path`` exists (checked atomically at the end).
        Exception: whatever ``write`` raises, or the ``OSError`` of the rename. On any failure
            (KeyboardInterrupt included) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    with writing_in(path.parent):
        try:
            write(tmp)
            publish_durably(tmp, path, replace=replace)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


@contextmanager
def staged(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with staged(path) as tmp:`` write ``tmp``; clean exit renames it to ``path``; else it is deleted."""
    path = Path(path)
    tmp = temp_path_for(path)
    with writing_in(path.parent):
        try:
            yield tmp
            replace_durably(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_in_private_folder(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(inner)`` on a path inside a fresh folder beside ``path``, then rename ``inner`` to
    ``path``; the folder, ``.<final name>.<12 hex>.tmpdir`` (``path`` may itself be a temporary name: the
    final one is used), is removed with whatever is left in it.

    For a library that writes its own temporary file beside the path it is given and renames it into place
    (safetensors >= 0.5: ``.tmpXXXXXX``): a write killed mid-way then leaves only a folder that
    :func:`sweep_temps` recognises, never a name of another program's that it must not touch.
    """
    path = Path(path)
    match = _TEMP_RE.match(path.name)
    final = match.group("target") if match else path.name
    work = path.with_name(f".{final}.{secrets.token_hex(6)}{_WORK_DIR_SUFFIX}")
    work.mkdir()
    try:
        inner = work / path.name
        write(inner)
        os.replace(inner, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sweep_temps(folder: str | os.PathLike[str], target: str | None = None) -> int:
    """Delete the temporaries a killed writer left in ``folder`` (all, or only those of ``target``): the
    files :func:`is_temp_file` recognises and the folders of :func:`write_in_private_folder`.

    Args:
        folder: the folder to clean (a missing folder is fine).
        target: only the temporaries of this final file name.

    Returns:
        How many were removed; 0 when another process is writing in ``folder`` right now (on POSIX every
        writer of this module holds a shared lock on the folder; the sweep needs the exclusive one, so a live
        writer's temporary is never removed: the next sweep gets the dead ones).
    """
    folder = Path(folder)
    removed = 0
    if not folder.is_dir():
        return 0
    fd = _lock_folder(folder, exclusive=True)
    try:
        if fd is None and _locks_supported():
            logger.debug("not sweeping %s: another process is writing there", folder)
            return 0
        for p in folder.iterdir():
            if is_temp_file(p, target) and p.is_file():
                with suppress(FileNotFoundError):
                    p.unlink()
                    removed += 1
            elif _is_work_dir(p, target) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)  # write_in_private_folder's, left by a killed writer
                removed += 1
    finally:
        if fd is not None:
            os.close(fd)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted write in %s", removed, folder)
    return removed


def _locks_supported() -> bool:
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within it, SIGTERM (``kill``, a scheduler stopping a job) raises :class:`KeyboardInterrupt` in the
    main thread, as Ctrl-C does: every writer then removes its temporary file on the way out, instead of
    the process dying with it on the disk. The previous handler is restored afterwards. A no-op outside the
    main thread or where SIGTERM cannot be caught."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
