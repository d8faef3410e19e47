"""A render started from the page: one clip keyed by the calls ``corridorkey infer`` makes (plan, begin,
key, finish: :mod:`corridorkey_engine.clips.planning` and
:func:`~corridorkey_engine.clips.pipeline.key_clip`), in a background thread, with progress and cancel.

Cancel stops between engine calls: the frames already computed are written whole (``key_clip`` waits for
its writers), and a later render or ``infer`` resumes from there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import CorridorKeyError

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, as the CLI prints it (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class RenderCancelled(Exception):
    """Raised from the progress callback to stop :func:`key_clip` between engine calls."""


@dataclass
class RenderStatus:
    """What the page shows: ``state`` idle / running / done / cancelled / failed."""

    state: str = "idle"
    clip: str | None = None
    done: int = 0
    total: int = 0
    fps: float = 0.0
    message: str = ""
    command: str = ""
    started: float = field(default=0.0, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("state", "clip", "done", "total", "fps", "message", "command")}


class LockedEngine:
    """The engine seen by the pipeline with each call under ``lock`` (the viewer's frames interleave):
    ``process_frame``, and ``submit`` when the engine has it (the pipeline then submits frames and collects
    their outputs later: the model runs under the lock, the outputs' copy to the host after it)."""

    def __init__(self, engine: Any, lock: threading.Lock) -> None:
        self.engine = engine
        self.lock = lock
        if hasattr(engine, "submit"):
            self.submit = self._submit

    def process_frame(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.engine.process_frame(*args, **kwargs)

    def _submit(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.engine.submit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # device, img_size, dtype, checkpoint: the engine's
        return getattr(self.engine, name)


def run_clip(
    engine: Any, clip_dir: Path, opts: Any, on_frame: Callable[[int], None], on_plan: Callable[[int], None]
) -> tuple[int, Path | None]:
    """Key one clip as ``corridorkey infer`` does: checks, the settings-aware plan, output folders and
    manifest, the frames, the comp movie. Returns (frames keyed, movie written)."""
    from ..clips.fingerprint import model_settings, program_version
    from ..clips.pipeline import begin_clip, finish_clip, key_clip, plan_frames, prepare_clip

    settings, about = model_settings(engine)
    opts = replace(opts, model=settings, about={**about, "program": program_version()})
    if engine.device.type == "cuda":
        opts = replace(opts, pin_memory=True)
    clip = prepare_clip(clip_dir, opts)
    todo = plan_frames(clip, opts)
    on_plan(len(todo))
    keyed = 0
    if todo:
        begin_clip(clip, opts, todo)
        keyed = key_clip(engine, clip, opts, frames=todo, on_frame=on_frame).keyed
    return keyed, finish_clip(clip, opts)


class Renderer:
    """At most one render at a time, in a thread; :attr:`status` is read by the page."""

    def __init__(self) -> None:
        self.status = RenderStatus()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(
        self, name: str, command: str, job: Callable[[Callable[[int], None], Callable[[int], None]], Any]
    ) -> None:
        """Run ``job(on_frame, on_plan)`` in a thread (``job`` keys the clip, see :func:`run_clip`).

        Raises:
            CorridorKeyError: a render is already running.
        """
        if self.running:
            raise CorridorKeyError("a render is already running; cancel it or wait for it to finish")
        self._cancel.clear()
        self.status = RenderStatus("running", name, command=command, started=time.perf_counter())
        self._thread = threading.Thread(target=self._run, args=(job,), name="ck-render", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_frame(self, count: int) -> None:
        status = self.status
        status.done += count
        seconds = time.perf_counter() - status.started
        status.fps = round(status.done / seconds, 2) if seconds > 0 else 0.0
        if self._cancel.is_set():
            raise RenderCancelled

    def _on_plan(self, total: int) -> None:
        self.status.total = total
        self.status.started = time.perf_counter()
        if self._cancel.is_set():
            raise RenderCancelled

    def _run(self, job: Callable[[Callable[[int], None], Callable[[int], None]], Any]) -> None:
        status = self.status
        try:
            keyed, movie = job(self._on_frame, self._on_plan)
        except RenderCancelled:
            status.state = "cancelled"
            status.message = (
                f"cancelled after {status.done} frame(s); every written file is whole. Render again to "
                "finish the rest."
            )
        except (CorridorKeyError, OSError, ValueError) as exc:
            status.state = "failed"
            status.message = f"corridorkey: error: {one_line(exc)}"
        except Exception as exc:  # a bug: name its type, as the CLI does
            log.exception("render failed")
            status.state = "failed"
            status.message = f"corridorkey: error: {type(exc).__name__}: {one_line(exc)}"
        else:
            status.state = "done"
            skipped = "" if keyed else " (nothing to do: every frame was done with these settings)"
            status.message = f"keyed {keyed} frame(s){skipped}" + (f"; {movie.name} written" if movie else "")
