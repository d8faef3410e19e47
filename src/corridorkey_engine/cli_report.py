"""What ``corridorkey infer`` says it did: per clip and in total, frames keyed, already done, outside the
selection and failed, so the counts always add up to the clip's frames; and the progress bar of a clip."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class ClipTally:
    """One clip's frames: ``frames`` = keyed + already done + outside the selection + failed."""

    name: str
    frames: int  # in the clip
    selected: int  # chosen by --frames / --max-frames (all without them)
    todo: int  # selected and not done yet
    keyed: int = 0  # written by this run (also those written before a failure)
    failed: bool = False  # the clip stopped at an error
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.selected - self.todo

    @property
    def outside(self) -> int:
        return self.frames - self.selected

    @property
    def not_keyed(self) -> int:
        return self.todo - self.keyed if self.failed else 0


def counts(tallies: Sequence[ClipTally]) -> str:
    """``2 already done, 0 outside the selection, 1 failed``."""
    done = sum(t.done for t in tallies)
    outside = sum(t.outside for t in tallies)
    failed = sum(t.not_keyed for t in tallies)
    return f"{done} already done, {outside} outside the selection, {failed} failed"


def clip_line(tally: ClipTally, selection: str | None, movie: str | None) -> str:
    """``shot010: keyed 12 of 120 frames (frames 1001-1012; 0 already done, 108 outside the selection,
    0 failed) in 8.1 s; Comp.mp4 written``."""
    selected = f"frames {selection}; " if selection else ""
    text = f"{tally.name}: keyed {tally.keyed} of {tally.frames} frames ({selected}{counts([tally])})"
    return text + f" in {tally.seconds:.1f} s" + (f"; {movie}" if movie else "")


def total_line(tallies: Sequence[ClipTally], seconds: float, load_s: float, failed_clips: int) -> str:
    """``keyed 120 frames (0 already done, 0 outside the selection, 0 failed) from 1 clip(s) in …``."""
    keyed = sum(t.keyed for t in tallies)
    fps = keyed / seconds if seconds > 0 else 0.0
    return (
        f"keyed {keyed} frames ({counts(tallies)}) from {len(tallies)} clip(s) in {seconds:.2f} s: "
        f"{fps:.2f} frames/s (model load {load_s:.1f} s)"
        + (f"; {failed_clips} clip(s) failed" if failed_clips else "")
    )


SOFT_RATIO = 4
"""A plate this many times the model's resolution (or more) keys visibly soft: said once per run."""


def resolution_note(clips: Sequence[Any], img_size: int) -> str | None:
    """The one line saying the plates are much larger than the model's resolution and how to change it,
    or None (the first clip that is, from its first frame's header)."""
    from .clips.headers import frame_sizes

    for clip in clips:
        width, height = frame_sizes(clip.input, [0])[0]
        ratio = max(width, height) / img_size
        if ratio >= SOFT_RATIO:
            sharper = min(2048, max(2 * img_size, 32 * math.ceil(max(width, height) / 4 / 32)))
            return (
                f"{clip.name}: the plate ({width}x{height}) is {ratio:.0f}x the model's {img_size} px "
                f"resolution, so edges come out soft and stair-stepped; --img-size {sharper} (a multiple of "
                "32; more memory and time) keys it sharper"
            )
    return None


def progress_bar(name: str, total: int, args: Any) -> Any:
    """One named bar per clip on stderr: none with ``--quiet``, nor when stderr is not a terminal unless
    ``--progress`` asks for it."""
    from tqdm import tqdm

    wanted = getattr(args, "progress", None)
    shown = not args.quiet and (wanted if wanted is not None else sys.stderr.isatty())
    return tqdm(total=total, desc=name, unit="frame", disable=not shown, dynamic_ncols=True, file=sys.stderr)
