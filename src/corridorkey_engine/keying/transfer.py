"""Outputs from the device to the host without stalling the GPU, and where a frame's time goes.

On CUDA, :func:`start_upload` copies a frame's pinned host tensors to the device on a copy stream, so the
next frame travels while the GPU computes the current one (the compute stream waits for an event, not for
the device), and :func:`start_download` lays each output out as ``[B, H, W, C]`` on the device, then copies it
into page-locked (pinned) host memory on a separate copy stream that waits only for that frame's work
(an event, not a device-wide synchronisation), and returns at once: the GPU goes on with the next frame
while the copy engine brings this one back. Pinned blocks come from torch's caching host allocator, so a
run reuses the same few buffers frame after frame (a block returns to the cache when the arrays made from
it are no longer used, and is handed out again only once the copies recorded on it are done). Copying into
pinned memory runs at the bus's speed; ``.cpu()`` into pageable memory costs 50+ ms per 1080p frame on an
H200 (measured), most of a frame's budget.

Elsewhere (CPU, MPS) the download is an ordinary synchronous copy.

:class:`StageClock` times the stages of a frame on the device's own clock (CUDA events) or the host's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .frames import to_numpy

STAGES = ("upload", "model", "post", "download")
"""The engine's stages of a frame, in order (the clip pipeline adds ``read`` and ``write``)."""

_COPY_STREAMS: dict[torch.device, torch.cuda.Stream] = {}
_COPY_LOCK = threading.Lock()


def copy_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream that carries device-to-host copies for ``device`` (one per device, made once)."""
    with _COPY_LOCK:
        stream = _COPY_STREAMS.get(device)
        if stream is None:
            stream = _COPY_STREAMS[device] = torch.cuda.Stream(device=device)
        return stream


class StageClock:
    """Marks the boundaries of a frame's stages; :meth:`durations` gives each stage's milliseconds.

    On CUDA the marks are events on the compute stream (the download's end on the copy stream), so the
    figures are the GPU's own time and reading them never blocks before the frame is done; elsewhere they
    are host times.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.marks: dict[str, object] = {}

    def mark(self, name: str, stream: torch.cuda.Stream | None = None) -> None:
        """Mark the end of stage ``name`` (``start`` first) on ``stream`` (default: the device's current)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(stream if stream is not None else torch.cuda.current_stream(self.device))
            self.marks[name] = event
        else:
            self.marks[name] = time.perf_counter()

    def durations(self) -> dict[str, float]:
        """Milliseconds per stage between consecutive marks ``start``, then each of :data:`STAGES`."""
        out = {}
        previous = self.marks.get("start")
        for stage in STAGES:
            current = self.marks.get(stage)
            if previous is None or current is None:
                continue
            if self.cuda:
                current.synchronize()  # type: ignore[attr-defined]
                out[stage] = float(previous.elapsed_time(current))  # type: ignore[attr-defined]
            else:
                out[stage] = (float(current) - float(previous)) * 1000.0  # type: ignore[arg-type]
            previous = current
        return out


@dataclass
class PendingDownload:
    """Outputs on their way to the host: :meth:`result` waits for them (only on CUDA is there anything
    to wait for)."""

    arrays: dict[str, np.ndarray]
    batched: bool
    done: Callable[[], None] = field(default=lambda: None)

    def result(self) -> dict[str, np.ndarray]:
        """float32 ``[B, H, W, C]`` arrays (``[H, W, C]`` when not batched), complete."""
        self.done()
        self.done = lambda: None
        return {name: a if self.batched else a[0] for name, a in self.arrays.items()}


def start_download(
    outputs: dict[str, torch.Tensor], batched: bool, clock: StageClock | None = None
) -> PendingDownload:
    """Start copying ``[B, C, H, W]`` device tensors to host arrays ``[B, H, W, C]`` (see the module's
    docstring); ``clock`` gets its ``download`` mark when the copies are done."""
    if not outputs:
        return PendingDownload({}, batched)
    device = next(iter(outputs.values())).device
    if device.type != "cuda":
        arrays = to_numpy(outputs, batched=True)  # [B, H, W, C]; result() drops B for a frame
        if clock is not None:
            clock.mark("download")
        return PendingDownload(arrays, batched)
    stream = copy_stream(device)
    laid_out = {name: t.permute(0, 2, 3, 1).contiguous() for name, t in outputs.items()}
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(device))  # after the frame's last kernel on the compute stream
    hosts: dict[str, torch.Tensor] = {}
    with torch.cuda.stream(stream):
        stream.wait_event(ready)
        for name, tensor in laid_out.items():
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            tensor.record_stream(stream)  # its memory is not reused before the copy has read it
            hosts[name] = host
    finished = torch.cuda.Event()
    finished.record(stream)
    if clock is not None:
        clock.mark("download", stream)
    return PendingDownload({name: h.numpy() for name, h in hosts.items()}, batched, finished.synchronize)


@dataclass
class StagedUpload:
    """Tensors on their way to the device (:func:`start_upload`); :meth:`take` hands them to the compute
    stream."""

    tensors: tuple[object, ...]
    ready: torch.cuda.Event | None = None
    device: torch.device | None = None

    def take(self) -> tuple[object, ...]:
        """The tensors, usable on the current stream: it waits for the copies (on the device, not here)."""
        if self.ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(self.ready)
            for tensor in self.tensors:
                tensor.record_stream(current)  # type: ignore[attr-defined]
            self.ready = None
        return self.tensors


def start_upload(tensors: tuple[object, ...], device: torch.device) -> StagedUpload:
    """Start copying pinned host tensors to ``device`` on its copy stream; anything else (numpy arrays,
    pageable tensors, a device other than CUDA) is handed over as it is, for the engine to upload."""
    pinned = all(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.is_pinned() for t in tensors)
    if device.type != "cuda" or not pinned:
        return StagedUpload(tuple(tensors))
    stream = copy_stream(device)
    with torch.cuda.stream(stream):
        moved = tuple(t.to(device, non_blocking=True) for t in tensors)  # type: ignore[attr-defined]
    ready = torch.cuda.Event()
    ready.record(stream)
    return StagedUpload(moved, ready, device)
