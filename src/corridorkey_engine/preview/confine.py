"""Paths kept inside the folders given on the command line, whatever a request or a symlink says."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import ClipError


def inside(path: Path, root: Path) -> bool:
    """True when ``path``, every symlink resolved, is ``root`` (resolved) or below it."""
    real, base = Path(path).resolve(), Path(root).resolve()
    return real == base or base in real.parents


def check_inside(paths: Iterable[Path], root: Path, what: str) -> None:
    """Refuse when any of ``paths`` resolves outside ``root`` (a ``..`` or a symlink out of the folder).

    Raises:
        ClipError: naming the first path that leaves ``root`` and what it is.
    """
    for path in paths:
        if not inside(path, root):
            raise ClipError(
                f"{path}: {what} leads outside {root} (to {Path(path).resolve()}); the preview reads and "
                "writes only inside the folders given on its command line"
            )
