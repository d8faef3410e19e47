"""Keying whole clips: frame readers → engine → output writers, overlapped.

Frames are read and decoded by a small pool of background threads (a bounded look-ahead, in order), the
engine runs on the calling thread, and every output file is encoded and written by another pool (bounded, so
memory stays flat). On CUDA the decoded frames are put in pinned memory so the host-to-device copy can run
without blocking, and one frame is always in flight: frame N+1 is submitted to the GPU before frame N's
outputs are collected, so N's download (pinned memory, a copy stream: ``keying.transfer``) overlaps N+1's
model. Only the outputs being written are computed and copied. Each stage's time is kept
(:class:`~corridorkey_engine.clips.stages.StageTimes`, ``ClipResult.stages``). Outputs are written
atomically (see :func:`ckpt_formats.atomic.atomic_write`): a frame
whose outputs all exist and are whole is skipped on the next run, so an interrupted run resumes where it
stopped.

Library code: reports through ``logging`` and exceptions (:class:`ClipError`,
:class:`~corridorkey_engine.errors.FrameIOError`), never prints.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ClipError
from ..keying.chroma import chroma_hint
from ..keying.frames import PostProcessOptions
from .outputs import OUTPUTS, write_output
from .pixels import as_mask, as_rgb
from .planning import Clip, KeyOptions, begin_clip, finish_clip, plan_frames, prepare_clip, size_message
from .sequences import FrameReader
from .stages import StageTimes

log = logging.getLogger(__name__)

__all__ = [
    "OUTPUTS",
    "Clip",
    "ClipResult",
    "FrameEngine",
    "KeyOptions",
    "begin_clip",
    "finish_clip",
    "key_clip",
    "plan_frames",
    "prepare_clip",
]


class FrameEngine(Protocol):
    """What the pipeline needs from an engine (:class:`corridorkey_engine.engine.CorridorKeyEngine`)."""

    def process_frame(
        self, image: Any, mask: Any, options: PostProcessOptions | None = None, **kwargs: Any
    ) -> dict[str, np.ndarray]: ...


ENGINE_NAMES = {"matte": "alpha", "fg": "fg", "processed": "processed", "comp": "comp"}
"""Each clip output (``--outputs``) by the name of the engine's result it is written from."""


@dataclass
class ClipResult:
    """What :func:`key_clip` did: frames keyed and skipped, wall time, time per stage."""

    clip: Clip
    keyed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    stages: StageTimes = field(default_factory=StageTimes)


LoadedFrame = tuple[int, Any, Any]
"""A frame ready to key: (index in the clip, image, mask), as :class:`_Loader` makes it."""


class _Loader:
    """Reads frame ``i`` of a clip (input and hint) in a worker thread; raises FrameIOError/ClipError."""

    def __init__(self, clip: Clip, opts: KeyOptions, stages: StageTimes | None = None) -> None:
        self.clip = clip
        self.opts = opts
        self.stages = stages
        self.inputs = FrameReader(clip.input)
        self.hints = FrameReader(clip.hint) if clip.hint is not None else None

    @property
    def sequential(self) -> bool:
        return self.clip.input.is_video or (self.clip.hint is not None and self.clip.hint.is_video)

    def __call__(self, index: int) -> LoadedFrame:
        start = time.perf_counter()
        try:
            return self._load(index)
        finally:
            if self.stages is not None:
                self.stages.add("read", (time.perf_counter() - start) * 1000.0)

    def _load(self, index: int) -> LoadedFrame:
        image = as_rgb(self.inputs.read(index))
        if self.hints is None:
            mask = chroma_hint(image, self.opts.post.screen_color)
        else:
            mask = as_mask(self.hints.read(index))
            if mask.shape != image.shape[:2]:
                assert self.clip.hint is not None
                a = (image.shape[1], image.shape[0])
                b = (mask.shape[1], mask.shape[0])
                raise ClipError(size_message(self.clip.input, self.clip.hint, index, a, b))
        if self.opts.pin_memory:
            import torch

            return index, torch.from_numpy(image).pin_memory(), torch.from_numpy(mask).pin_memory()
        return index, image, mask

    def close(self) -> None:
        self.inputs.close()
        if self.hints is not None:
            self.hints.close()


def _stack(items: list[Any]) -> Any:
    """Stack frames into a batch; pinned tensors are stacked straight into a pinned buffer."""
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    out = torch.empty((len(items), *items[0].shape), dtype=items[0].dtype, pin_memory=True)
    return torch.stack(items, out=out)


def engine_kwargs(clip: Clip, opts: KeyOptions) -> dict[str, Any]:
    """The keyword arguments of ``engine.process_frame`` for ``clip`` keyed with ``opts``."""
    return {
        "options": replace(opts.post, generate_comp="comp" in opts.outputs),
        "input_is_linear": clip.input_is_linear,
        "refiner_scale": opts.refiner_scale,
        "outputs": tuple(ENGINE_NAMES[name] for name in opts.outputs),
    }


def _batches(frames: Iterable[LoadedFrame], size: int) -> Iterator[list[LoadedFrame]]:
    """``frames`` in batches of ``size`` (a frame of another size ends a batch early)."""
    batch: list[LoadedFrame] = []
    for item in frames:
        if batch and tuple(batch[0][1].shape) != tuple(item[1].shape):
            yield batch
            batch = []
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Submitted:
    """A batch handed to the engine: its frames' indices and what gives its outputs."""

    def __init__(self, engine: FrameEngine, batch: list[LoadedFrame], kwargs: dict[str, Any]) -> None:
        self.indices = [b[0] for b in batch]
        image = batch[0][1] if len(batch) == 1 else _stack([b[1] for b in batch])
        mask = batch[0][2] if len(batch) == 1 else _stack([b[2] for b in batch])
        self.clock = None
        submit = getattr(engine, "submit", None)
        if submit is None:  # an engine with process_frame only (the FrameEngine protocol)
            self.pending = None
            self.outputs = engine.process_frame(image, mask, **kwargs)
            return
        from ..keying.transfer import StageClock

        self.clock = StageClock(engine.device)  # type: ignore[attr-defined]
        self.pending = submit(image, mask, clock=self.clock, **kwargs)

    def result(self, stages: StageTimes | None) -> tuple[list[int], list[dict[str, np.ndarray]]]:
        out = self.outputs if self.pending is None else self.pending.result()
        if stages is not None and self.clock is not None:
            stages.add_all(self.clock.durations(), len(self.indices))
        if len(self.indices) == 1:
            return self.indices, [out]
        return self.indices, [{k: v[j] for k, v in out.items()} for j in range(len(self.indices))]


def key_batches(
    engine: FrameEngine,
    clip: Clip,
    opts: KeyOptions,
    frames: Iterable[LoadedFrame],
    stages: StageTimes | None = None,
) -> Iterator[tuple[list[int], list[dict[str, np.ndarray]]]]:
    """Key ``frames`` of ``clip`` in order, ``opts.batch_size`` per engine call (a frame of another size
    ends a batch early); yields each batch's frame indices and per-frame outputs. The one keying loop of
    local runs (:func:`key_clip`) and Ray runs (``clips.ray_stages``): both batch frames alike, so agree.

    With an engine that has ``submit`` (:class:`~corridorkey_engine.engine.CorridorKeyEngine`), batch N+1
    is submitted before batch N's outputs are collected, so the device never waits for the host's copy of
    a finished batch; if submitting fails, the batch before it is still yielded first. ``stages`` gets the
    engine's stage times."""
    kwargs = engine_kwargs(clip, opts)
    in_flight: _Submitted | None = None
    for batch in _batches(frames, opts.batch_size):
        try:
            submitted = _Submitted(engine, batch, kwargs)
        except BaseException:
            if in_flight is not None:
                yield in_flight.result(stages)  # computed before the failure: still written
            raise
        if in_flight is not None:
            yield in_flight.result(stages)
        in_flight = submitted
    if in_flight is not None:
        yield in_flight.result(stages)


def write_frame(
    writers: ThreadPoolExecutor,
    clip: Clip,
    opts: KeyOptions,
    index: int,
    outputs: dict[str, np.ndarray],
    stages: StageTimes | None = None,
) -> list[tuple[Path, Future[None]]]:
    """Start writing the selected outputs of frame ``index`` (atomically, on ``writers``); returns each
    file with the future that finishes it."""
    jobs = []
    for kind in opts.outputs:
        path = clip.output_path(kind, index)
        jobs.append((path, writers.submit(_write, path, kind, outputs, opts.filetype(kind), stages)))
    return jobs


def _write(
    path: Path, kind: str, outputs: dict[str, np.ndarray], filetype: Any, stages: StageTimes | None
) -> None:
    """:func:`write_output`, timed into ``stages`` (``write``)."""
    start = time.perf_counter()
    try:
        write_output(path, kind, outputs, filetype)
    finally:
        if stages is not None:
            stages.add("write", (time.perf_counter() - start) * 1000.0, 0)


def key_clip(
    engine: FrameEngine,
    clip: Clip,
    opts: KeyOptions,
    frames: Sequence[int] | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> ClipResult:
    """Key ``frames`` of ``clip`` (default: :func:`plan_frames`) and write the selected outputs.

    ``on_frame(n)`` is called after each engine call with the number of frames it keyed. On an error (or
    Ctrl-C) no further frames are read, outputs already computed are still written whole, and the exception
    propagates: a rerun resumes from there.
    """
    start = time.perf_counter()
    todo = list(plan_frames(clip, opts) if frames is None else frames)
    result = ClipResult(clip, skipped=len(clip) - len(todo))
    result.stages.device = str(getattr(engine, "device", "cpu"))
    if not todo:
        result.seconds = time.perf_counter() - start
        return result
    loader = _Loader(clip, opts, result.stages)
    readers = ThreadPoolExecutor(1 if loader.sequential else opts.read_threads, thread_name_prefix="ck-read")
    writers = ThreadPoolExecutor(opts.write_threads, thread_name_prefix="ck-write")
    lookahead = max(2, opts.batch_size * 2, opts.read_threads * 2)
    max_pending_writes = max(4, opts.write_threads * 2) * len(opts.outputs)
    reads: deque[Future[LoadedFrame]] = deque()
    writes: deque[Future[None]] = deque()
    pending = iter(todo)

    def submit_read() -> None:
        index = next(pending, None)
        if index is not None:
            reads.append(readers.submit(loader, index))

    def loaded() -> Iterator[LoadedFrame]:
        while reads:
            item = reads.popleft().result()
            submit_read()
            yield item

    try:
        for _ in range(lookahead):
            submit_read()
        for indices, per_frame in key_batches(engine, clip, opts, loaded(), result.stages):
            for index, frame_out in zip(indices, per_frame, strict=True):
                result.stages.add("write", 0.0)  # one frame written (its files' times add up below)
                for path, job in write_frame(writers, clip, opts, index, frame_out, result.stages):
                    writes.append(job)
                    result.outputs.append(path)
                while len(writes) > max_pending_writes:
                    writes.popleft().result()
            while writes and writes[0].done():
                writes.popleft().result()
            result.keyed += len(indices)
            if on_frame is not None:
                on_frame(len(indices))
        while writes:
            writes.popleft().result()
    finally:
        for fut in reads:
            fut.cancel()
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True)  # let every computed frame finish writing, whole
        loader.close()
        result.seconds = time.perf_counter() - start
        result.stages.seconds = result.seconds
    log.info("%s: keyed %d, skipped %d, in %.1f s", clip.name, result.keyed, result.skipped, result.seconds)
    return result
