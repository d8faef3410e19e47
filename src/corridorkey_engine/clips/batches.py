"""The keying loop shared by local and Ray runs: frames in batches through the engine, one batch in flight.

With an engine that has ``submit`` (:class:`~corridorkey_engine.engine.CorridorKeyEngine`), a batch's life
on CUDA is: its pinned frames start uploading on the copy stream while the batch before it is still in the
model (``keying.transfer.start_upload``); it is submitted (model and post-processing on the compute stream,
which waits for the upload's event); its outputs start downloading into pinned memory on the copy stream;
and only after the *next* batch has been submitted are they collected and handed to the writers. So the
GPU's work on frame N overlaps the download of N−1 and the upload of N+1, and no step waits for the whole
device.

This module imports no torch at import time (``cli_args`` reaches it through ``clips.pipeline``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from ..keying.frames import PostProcessOptions
from .planning import Clip, KeyOptions
from .stages import StageTimes

LoadedFrame = tuple[int, Any, Any]
"""A frame ready to key: (index in the clip, image, mask), as the pipeline's loader makes it."""

ENGINE_NAMES = {"matte": "alpha", "fg": "fg", "processed": "processed", "comp": "comp"}
"""Each clip output (``--outputs``) by the name of the engine's result it is written from."""


class FrameEngine(Protocol):
    """What the pipeline needs from an engine (:class:`corridorkey_engine.engine.CorridorKeyEngine`)."""

    def process_frame(
        self, image: Any, mask: Any, options: PostProcessOptions | None = None, **kwargs: Any
    ) -> dict[str, np.ndarray]: ...


def engine_kwargs(clip: Clip, opts: KeyOptions) -> dict[str, Any]:
    """The keyword arguments of ``engine.process_frame`` for ``clip`` keyed with ``opts``."""
    return {
        "options": replace(opts.post, generate_comp="comp" in opts.outputs),
        "input_is_linear": clip.input_is_linear,
        "refiner_scale": opts.refiner_scale,
        "outputs": tuple(ENGINE_NAMES[name] for name in opts.outputs),
    }


def _stack(items: list[Any]) -> Any:
    """Stack frames into a batch; pinned tensors are stacked straight into a pinned buffer."""
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    out = torch.empty((len(items), *items[0].shape), dtype=items[0].dtype, pin_memory=True)
    return torch.stack(items, out=out)


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


class _Staged:
    """A batch stacked, its upload started when the engine can take device tensors."""

    def __init__(self, engine: FrameEngine, batch: list[LoadedFrame]) -> None:
        self.indices = [b[0] for b in batch]
        image = batch[0][1] if len(batch) == 1 else _stack([b[1] for b in batch])
        mask = batch[0][2] if len(batch) == 1 else _stack([b[2] for b in batch])
        self.upload = None
        self.arrays = (image, mask)
        if hasattr(engine, "submit"):
            from ..keying.transfer import start_upload

            self.upload = start_upload((image, mask), engine.device)  # type: ignore[attr-defined]


class _Submitted:
    """A batch handed to the engine: its frames' indices and what gives its outputs."""

    def __init__(self, engine: FrameEngine, staged: _Staged, kwargs: dict[str, Any]) -> None:
        self.indices = staged.indices
        self.clock = None
        if staged.upload is None:  # an engine with process_frame only (the FrameEngine protocol)
            self.pending = None
            self.outputs = engine.process_frame(*staged.arrays, **kwargs)
            return
        from ..keying.transfer import StageClock

        self.clock = StageClock(engine.device)  # type: ignore[attr-defined]
        image, mask = staged.upload.take()
        self.pending = engine.submit(image, mask, clock=self.clock, **kwargs)  # type: ignore[attr-defined]

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
    local runs (``clips.pipeline.key_clip``) and Ray runs (``clips.ray_stages``): both batch frames alike.

    Batch N+1 is read and its upload started before batch N is submitted, and batch N's outputs are
    collected only after N+1 has been submitted (see the module's docstring). If reading or submitting
    fails, the batches before the failure are still yielded first (their outputs get written), then the
    error propagates. ``stages`` gets the engine's stage times."""
    kwargs = engine_kwargs(clip, opts)
    batches = _batches(frames, opts.batch_size)
    in_flight: _Submitted | None = None
    failure: BaseException | None = None
    try:
        upcoming = next(batches, None)
        staged = _Staged(engine, upcoming) if upcoming is not None else None
    except BaseException as exc:  # reading the first batch failed
        staged, failure = None, exc
    while staged is not None:
        current, staged = staged, None
        try:
            upcoming = next(batches, None)  # reads the next frames: overlaps the current batch's upload
            staged = _Staged(engine, upcoming) if upcoming is not None else None
        except BaseException as exc:  # a frame after this batch is unreadable: key this one first
            failure = exc
        try:
            submitted = _Submitted(engine, current, kwargs)
        except BaseException:
            if in_flight is not None:
                yield in_flight.result(stages)  # computed before the failure: still written
            raise
        if in_flight is not None:
            yield in_flight.result(stages)
        in_flight = submitted
    if in_flight is not None:
        yield in_flight.result(stages)
    if failure is not None:
        raise failure
