"""Keying whole clips: frame readers → engine → output writers, overlapped.

Frames are read and decoded by a small pool of background threads (a bounded look-ahead, in order), the
engine runs on the calling thread, and every output file is encoded and written by another pool (bounded, so
memory stays flat). On CUDA the decoded frames are put in pinned memory so the host-to-device copy can run
without blocking, and one frame is always in flight (``clips.batches``): frame N+1 is uploaded while N is
in the model and submitted before N's outputs are collected, so N's download (pinned memory, a copy
stream: ``keying.transfer``) overlaps N+1's model. Only the outputs being written are computed and
copied. Each stage's time is kept (:class:`~corridorkey_engine.clips.stages.StageTimes`,
``ClipResult.stages``). Outputs are written atomically (see :func:`ckpt_formats.atomic.atomic_write`): a
frame whose outputs all exist and are whole is skipped on the next run, so an interrupted run resumes where
it stopped.

Library code: reports through ``logging`` and exceptions (:class:`ClipError`,
:class:`~corridorkey_engine.errors.FrameIOError`), never prints.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ClipError
from ..keying.chroma import chroma_hint
from .batches import ENGINE_NAMES, FrameEngine, LoadedFrame, engine_kwargs, key_batches
from .outputs import OUTPUTS, write_output
from .pixels import as_mask, as_rgb
from .planning import Clip, KeyOptions, begin_clip, finish_clip, plan_frames, prepare_clip, size_message
from .sequences import FrameReader
from .stages import StageTimes

log = logging.getLogger(__name__)

__all__ = [
    "ENGINE_NAMES",
    "OUTPUTS",
    "Clip",
    "ClipResult",
    "FrameEngine",
    "KeyOptions",
    "begin_clip",
    "engine_kwargs",
    "finish_clip",
    "key_batches",
    "key_clip",
    "plan_frames",
    "prepare_clip",
]


@dataclass
class ClipResult:
    """What :func:`key_clip` did: frames keyed and skipped, wall time, time per stage."""

    clip: Clip
    keyed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    stages: StageTimes = field(default_factory=StageTimes)


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
