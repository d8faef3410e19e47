"""Which frames of a clip a run keys: ``--frames 1001-1050,1060`` and ``--max-frames N``.

Image sequences are numbered by the frame number in their file names (the last run of digits of the stem:
``shot010_1001.exr`` is 1001); videos by frame index from 0. A render farm splits a shot into ranges keyed
by separate processes: each keys exactly the frames of its range, named as a whole run names them, so the
chunks together write the files of one whole run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ClipError
from .sequences import FrameSequence

_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class FrameSelection:
    """Frame ranges (inclusive ``(first, last)`` pairs; empty: every frame) and a cap on their count."""

    ranges: tuple[tuple[int, int], ...] = ()
    max_frames: int | None = None

    @classmethod
    def parse(cls, text: str | None, max_frames: int | None = None) -> FrameSelection:
        """``1001-1050,1060`` (ranges inclusive, single frames, in any order) into a selection.

        Raises:
            ValueError: a malformed item or a range whose end is before its start.
        """
        ranges: list[tuple[int, int]] = []
        for item in (p.strip() for p in (text or "").split(",") if p.strip()):
            match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
            if match is None:
                raise ValueError(
                    f"{item!r}: write frame numbers as A-B or N, comma-separated (1001-1050,1060)"
                )
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else first
            if last < first:
                raise ValueError(f"{item!r}: the range ends before it starts")
            ranges.append((first, last))
        if text is not None and not ranges:
            raise ValueError("give at least one frame or range")
        if max_frames is not None and max_frames < 1:
            raise ValueError("--max-frames must be at least 1")
        return cls(tuple(ranges), max_frames)

    @property
    def everything(self) -> bool:
        return not self.ranges and self.max_frames is None

    def describe(self) -> str:
        parts = [",".join(f"{a}-{b}" if a != b else str(a) for a, b in self.ranges)] if self.ranges else []
        if self.max_frames is not None:
            parts.append(f"at most {self.max_frames}")
        return " ".join(parts) or "all"


def frame_numbers(seq: FrameSequence) -> list[int]:
    """The number of each frame: from its file name for an image sequence, its index (from 0) for a video.

    Raises:
        ClipError: an image file name has no number, or two frames have the same one.
    """
    if seq.is_video:
        return list(range(len(seq)))
    numbers = []
    for name in seq.names:
        match = _NUMBER.search(name)
        if match is None:
            raise ClipError(
                f"{seq.folder / name}: no frame number in the file name, so --frames cannot select by it; "
                "name frames like shot_1001.exr"
            )
        numbers.append(int(match.group(1)))
    if len(set(numbers)) != len(numbers):
        dupe = next(n for n in numbers if numbers.count(n) > 1)
        raise ClipError(
            f"{seq.folder}: several frames carry the number {dupe}; --frames cannot tell them apart"
        )
    return numbers


def select_frames(seq: FrameSequence, selection: FrameSelection) -> list[int]:
    """Indices (in clip order) of the frames ``selection`` picks in ``seq``.

    Raises:
        ClipError: see :func:`frame_numbers` (only when ranges are given).
    """
    indices: Sequence[int] = range(len(seq))
    if selection.ranges:
        numbers = frame_numbers(seq)
        indices = [i for i, n in enumerate(numbers) if any(a <= n <= b for a, b in selection.ranges)]
    chosen = list(indices)
    return chosen[: selection.max_frames] if selection.max_frames is not None else chosen
