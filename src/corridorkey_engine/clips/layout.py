"""Clip folders as studios lay them out, and the paths a user names on the command line.

A clip folder holds its plate as an ``Input/`` folder (an image sequence or one video) or as one video file
``Input.<ext>``, and its coarse matte the same way (``AlphaHint/`` or ``AlphaHint.<ext>``); the names are
matched case-insensitively (``input/``, ``alphahint.mov``). A path given to ``corridorkey infer`` is a clip,
or a folder of clips: every direct subfolder that is a clip, in natural order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ClipError
from .sequences import IMAGE_EXTENSIONS, natural_key

INPUT = "Input"
HINT = "AlphaHint"


def find_part(root: Path, name: str) -> Path | None:
    """``root``'s ``name/`` folder or ``name.<ext>`` file (case-insensitive, not hidden), or None.

    Raises:
        ClipError: both a folder and a file, or several files, answer to ``name``.
    """
    try:
        entries = [p for p in Path(root).iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise ClipError(f"{root}: cannot list the folder ({exc.strerror or exc})") from exc
    wanted = name.lower()
    folders = [p for p in entries if p.is_dir() and p.name.lower() == wanted]
    files = [
        p
        for p in entries
        if p.is_file() and p.stem.lower() == wanted and p.suffix.lower() not in IMAGE_EXTENSIONS
    ]
    found = sorted(folders) + sorted(files)
    if len(found) > 1:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found)
        raise ClipError(f"{root}: several {name} sources ({names}); keep one")
    return found[0] if found else None


def is_clip(folder: Path) -> bool:
    """True when ``folder`` is a folder with an ``Input/`` folder or an ``Input.<ext>`` video."""
    try:
        return Path(folder).is_dir() and find_part(folder, INPUT) is not None
    except ClipError:
        return True  # a clip, if an ambiguous one: prepare_clip says what is wrong


@dataclass(frozen=True)
class ClipPath:
    """A clip folder found from a command-line path, or the reason a path holds no clip."""

    path: Path
    error: str | None = None


def expand_clip_paths(paths: list[Path]) -> list[ClipPath]:
    """The clips the command-line ``paths`` name, in order: a clip itself, or each direct subfolder of a
    folder of clips (natural order). A path that is neither is one :class:`ClipPath` with an ``error``."""
    found: list[ClipPath] = []
    for given in paths:
        path = Path(given).absolute()
        if not path.exists():
            found.append(ClipPath(path, f"{given}: clip folder not found"))
        elif not path.is_dir():
            found.append(ClipPath(path, f"{given}: not a folder; name a clip folder or a folder of clips"))
        elif is_clip(path):
            found.append(ClipPath(path))
        else:
            subs = sorted((p for p in path.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
            clips = [p for p in subs if not p.name.startswith(".") and is_clip(p)]
            if not clips:
                found.append(
                    ClipPath(
                        path,
                        f"{given}: neither a clip (no {INPUT}/ folder or {INPUT}.<video>) nor a folder of "
                        f"clips (none of its {len(subs)} subfolder(s) holds one)",
                    )
                )
            found.extend(ClipPath(p) for p in clips)
    return found
