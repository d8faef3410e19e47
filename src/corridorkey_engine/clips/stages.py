"""Where a clip's time goes: milliseconds per frame in each stage, and how busy the device was.

The stages are those of a frame's trip: ``read`` (decoding the input and hint, in reader threads),
``upload`` (to the device, with the model's input prepared there), ``model``, ``post`` (post-processing on
the device), ``download`` (the outputs back to the host) and ``write`` (encoding and writing the files, in
writer threads). Reader and writer times are the threads' own times added up, so with N writer threads a
``write`` figure up to N times the ``model`` figure still keeps up. ``device busy`` is the share of the
keying's wall time the device spent on upload, model and post-processing (on CUDA, measured with events on
the device's own clock): well under 100 % means the GPU waits for something else, and the largest of the
other figures says what.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

ORDER = ("read", "upload", "model", "post", "download", "write")
DEVICE_STAGES = ("upload", "model", "post")


@dataclass
class StageTimes:
    """Accumulated stage times of one or more clips (thread-safe)."""

    totals: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, milliseconds: float, frames: int = 1) -> None:
        """``milliseconds`` spent in ``stage`` on ``frames`` frames."""
        with self._lock:
            self.totals[stage] = self.totals.get(stage, 0.0) + milliseconds
            self.counts[stage] = self.counts.get(stage, 0) + frames

    def add_all(self, durations: dict[str, float], frames: int) -> None:
        for stage, milliseconds in durations.items():
            self.add(stage, milliseconds, frames)

    def merge(self, other: StageTimes) -> None:
        """Add another clip's figures (the wall time too)."""
        for stage, total in other.totals.items():
            self.add(stage, total, other.counts.get(stage, 0))
        self.seconds += other.seconds
        self.device = other.device

    def per_frame(self, stage: str) -> float | None:
        """Milliseconds per frame in ``stage``; None when it was not timed."""
        count = self.counts.get(stage, 0)
        return self.totals[stage] / count if count else None

    def busy(self) -> float | None:
        """The share (0-1) of the wall time the device spent on upload, model and post-processing."""
        if self.seconds <= 0 or not any(s in self.totals for s in DEVICE_STAGES):
            return None
        return min(1.0, sum(self.totals.get(s, 0.0) for s in DEVICE_STAGES) / 1000.0 / self.seconds)

    def line(self) -> str:
        """``stages (ms/frame): read 12.1, upload 0.4, ... write 40.2; cuda busy 78%``."""
        parts = [f"{stage} {value:.1f}" for stage in ORDER if (value := self.per_frame(stage)) is not None]
        busy = self.busy()
        tail = f"; {self.device} busy {busy:.0%}" if busy is not None else ""
        return f"stages (ms/frame): {', '.join(parts) or 'none timed'}{tail}"
