"""Keying whole clips: frame readers → engine → output writers, overlapped.

Frames are read and decoded by a small pool of background threads (a bounded look-ahead, in order), the
engine runs on the calling thread, and every output file is encoded and written by another pool (bounded, so
memory stays flat). On CUDA the decoded frames are put in pinned memory so the host-to-device copy can run
without blocking. Outputs are written atomically (see :func:`ckpt_formats.atomic.atomic_write`): a frame
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

from ckpt_formats.atomic import sweep_temps

from ..errors import ClipError
from ..keying.chroma import chroma_hint
from ..keying.frames import PostProcessOptions
from .completeness import output_complete
from .exr import exr_backend
from .images import check_writable, write_exr, write_png
from .pixels import as_mask, as_rgb
from .sequences import FrameReader, FrameSequence, discover_frames

log = logging.getLogger(__name__)

INPUT_DIR = "Input"
HINT_DIR = "AlphaHint"


@dataclass(frozen=True)
class OutputKind:
    """One kind of output: its folder, file extension and which engine result it comes from."""

    name: str
    folder: str
    suffix: str
    description: str


OUTPUTS: dict[str, OutputKind] = {
    "matte": OutputKind("matte", "Matte", ".exr", "linear alpha, single-channel EXR"),
    "fg": OutputKind("fg", "FG", ".exr", "straight foreground, sRGB, RGB EXR"),
    "processed": OutputKind("processed", "Processed", ".exr", "linear premultiplied RGBA EXR"),
    "comp": OutputKind("comp", "Comp", ".png", "8-bit sRGB PNG preview over a checkerboard"),
}
"""Every output ``corridorkey infer`` can write, keyed by the name ``--outputs`` takes."""


class FrameEngine(Protocol):
    """What the pipeline needs from an engine (:class:`corridorkey_engine.engine.CorridorKeyEngine`)."""

    def process_frame(
        self, image: Any, mask: Any, options: PostProcessOptions | None = None, **kwargs: Any
    ) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class KeyOptions:
    """How to key: engine settings plus what to write and how.

    ``input_is_linear=None`` means: EXR input is linear, anything else is sRGB. ``post`` is handed to the
    engine as it is, except ``generate_comp``, which follows whether ``comp`` is among the ``outputs``.
    """

    outputs: tuple[str, ...] = tuple(OUTPUTS)
    exr_half: bool = True
    input_is_linear: bool | None = None
    post: PostProcessOptions = field(default_factory=PostProcessOptions)
    refiner_scale: float = 1.0
    batch_size: int = 1
    overwrite: bool = False
    hint: str = "alphahint"  # or "chroma": a difference key of post.screen_color's screen
    read_threads: int = 2
    write_threads: int = 2
    pin_memory: bool = False

    def __post_init__(self) -> None:
        unknown = [o for o in self.outputs if o not in OUTPUTS]
        if unknown or not self.outputs:
            raise ValueError(
                f"outputs must be a non-empty subset of {list(OUTPUTS)}, got {list(self.outputs)}"
            )
        if self.hint not in ("alphahint", "chroma"):
            raise ValueError(f"hint must be 'alphahint' or 'chroma', got {self.hint!r}")
        if self.batch_size < 1 or self.read_threads < 1 or self.write_threads < 1:
            raise ValueError("batch_size, read_threads and write_threads must be at least 1")

    @property
    def needs_exr(self) -> bool:
        return any(OUTPUTS[o].suffix == ".exr" for o in self.outputs)


@dataclass
class Clip:
    """A clip folder, its frame sequences and where its outputs go."""

    root: Path
    input: FrameSequence
    hint: FrameSequence | None  # None: the chroma key makes the hint
    out_dir: Path
    input_is_linear: bool

    @property
    def name(self) -> str:
        return self.root.name

    def __len__(self) -> int:
        return len(self.input)

    def output_path(self, kind: str, index: int) -> Path:
        spec = OUTPUTS[kind]
        return self.out_dir / spec.folder / f"{self.input.names[index]}{spec.suffix}"

    def frame_done(self, index: int, outputs: Sequence[str]) -> bool:
        """True when every selected output of frame ``index`` exists and is whole."""
        return all(output_complete(self.output_path(kind, index)) for kind in outputs)


@dataclass
class ClipResult:
    """What :func:`key_clip` did: frames keyed and skipped, wall time."""

    clip: Clip
    keyed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)


def _frame_size(seq: FrameSequence) -> tuple[int, int]:
    with FrameReader(seq) as reader:
        arr = reader.read(0)
    return arr.shape[1], arr.shape[0]


def prepare_clip(clip_dir: Path, opts: KeyOptions, output_root: Path | None = None) -> Clip:
    """Check a clip folder before any keying and say what is wrong in one line (ClipError/FrameIOError).

    Checks: ``Input/`` exists and has frames; ``AlphaHint/`` exists (unless ``opts.hint == "chroma"``), has
    as many frames, and its first frame has the input's size; EXR is supported when it is needed; every
    output folder is writable. Temporary files a killed run left behind are removed.
    """
    root = Path(clip_dir)
    if not root.is_dir():
        raise ClipError(f"{root}: clip folder not found")
    input_dir = root / INPUT_DIR
    if not input_dir.is_dir():
        raise ClipError(f"{root}: no {INPUT_DIR}/ folder (put the plate's frames or video in {input_dir})")
    seq = discover_frames(input_dir)
    hint_dir = root / HINT_DIR
    hint: FrameSequence | None = None
    if opts.hint == "chroma":
        if hint_dir.is_dir():
            log.info("%s: --hint chroma: ignoring %s", root.name, hint_dir)
    elif not hint_dir.is_dir():
        raise ClipError(
            f"{root}: no {HINT_DIR}/ folder; provide a coarse alpha hint sequence or video in {hint_dir} "
            "(white = foreground), or pass --hint chroma for a rough built-in green/blue key"
        )
    else:
        hint = discover_frames(hint_dir)
        if len(hint) != len(seq):
            raise ClipError(
                f"{root}: {INPUT_DIR}/ has {len(seq)} frames but {HINT_DIR}/ has {len(hint)}; "
                "they pair frame by frame, so the counts must match"
            )
    uses_exr = opts.needs_exr or (not seq.is_video and any(p.suffix.lower() == ".exr" for p in seq.paths))
    if hint is not None and not hint.is_video:
        uses_exr = uses_exr or any(p.suffix.lower() == ".exr" for p in hint.paths)
    if uses_exr:
        exr_backend()
    if hint is not None:
        in_size, hint_size = _frame_size(seq), _frame_size(hint)
        if in_size != hint_size:
            raise ClipError(_size_message(seq, hint, 0, in_size, hint_size))
    out_dir = Path(output_root) / root.name if output_root is not None else root
    for kind in opts.outputs:
        folder = out_dir / OUTPUTS[kind].folder
        check_writable(folder)
        sweep_temps(folder)
    if opts.input_is_linear is None:
        linear = not seq.is_video and seq.paths[0].suffix.lower() == ".exr"
    else:
        linear = opts.input_is_linear
    return Clip(root=root, input=seq, hint=hint, out_dir=out_dir, input_is_linear=linear)


def _frame_label(seq: FrameSequence, index: int) -> str:
    if seq.video is not None:
        return f"{seq.video} frame {index + 1}"
    return str(seq.paths[index])


def _size_message(
    seq: FrameSequence, hint: FrameSequence, index: int, a: tuple[int, int], b: tuple[int, int]
) -> str:
    return (
        f"{_frame_label(seq, index)} is {a[0]}x{a[1]} but {_frame_label(hint, index)} is {b[0]}x{b[1]}; "
        "input and hint frames must have the same size"
    )


def plan_frames(clip: Clip, opts: KeyOptions) -> list[int]:
    """Indices of the frames to key: all with ``overwrite``, else those missing a whole output."""
    if opts.overwrite:
        return list(range(len(clip)))
    return [i for i in range(len(clip)) if not clip.frame_done(i, opts.outputs)]


LoadedFrame = tuple[int, Any, Any]
"""A frame ready to key: (index in the clip, image, mask), as :class:`_Loader` makes it."""


class _Loader:
    """Reads frame ``i`` of a clip (input and hint) in a worker thread; raises FrameIOError/ClipError."""

    def __init__(self, clip: Clip, opts: KeyOptions) -> None:
        self.clip = clip
        self.opts = opts
        self.inputs = FrameReader(clip.input)
        self.hints = FrameReader(clip.hint) if clip.hint is not None else None

    @property
    def sequential(self) -> bool:
        return self.clip.input.is_video or (self.clip.hint is not None and self.clip.hint.is_video)

    def __call__(self, index: int) -> LoadedFrame:
        image = as_rgb(self.inputs.read(index))
        if self.hints is None:
            mask = chroma_hint(image, self.opts.post.screen_color)
        else:
            mask = as_mask(self.hints.read(index))
            if mask.shape != image.shape[:2]:
                assert self.clip.hint is not None
                a = (image.shape[1], image.shape[0])
                b = (mask.shape[1], mask.shape[0])
                raise ClipError(_size_message(self.clip.input, self.clip.hint, index, a, b))
        if self.opts.pin_memory:
            import torch

            return index, torch.from_numpy(image).pin_memory(), torch.from_numpy(mask).pin_memory()
        return index, image, mask

    def close(self) -> None:
        self.inputs.close()
        if self.hints is not None:
            self.hints.close()


def _write_output(path: Path, kind: str, result: dict[str, np.ndarray], exr_half: bool) -> None:
    if kind == "matte":
        alpha = result["alpha"]
        write_exr(path, alpha[..., 0] if alpha.ndim == 3 else alpha, "Y", half=exr_half)
    elif kind == "fg":
        write_exr(path, result["fg"], "RGB", half=exr_half)
    elif kind == "processed":
        write_exr(path, result["processed"], "RGBA", half=exr_half)
    elif kind == "comp":
        write_png(path, result["comp"])
    else:  # pragma: no cover - KeyOptions validates the names
        raise ValueError(kind)


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
    }


def key_batches(
    engine: FrameEngine, clip: Clip, opts: KeyOptions, frames: Iterable[LoadedFrame]
) -> Iterator[tuple[list[int], list[dict[str, np.ndarray]]]]:
    """Key ``frames`` of ``clip`` in order, ``opts.batch_size`` per engine call (a frame of another size
    ends a batch early); yields each batch's frame indices and per-frame outputs. The one keying loop of
    local runs (:func:`key_clip`) and Ray runs (``clips.ray_stages``): both batch frames alike, so agree."""
    kwargs = engine_kwargs(clip, opts)

    def run(batch: list[LoadedFrame]) -> tuple[list[int], list[dict[str, np.ndarray]]]:
        if len(batch) == 1:
            return [batch[0][0]], [engine.process_frame(batch[0][1], batch[0][2], **kwargs)]
        out = engine.process_frame(_stack([b[1] for b in batch]), _stack([b[2] for b in batch]), **kwargs)
        return [b[0] for b in batch], [{k: v[j] for k, v in out.items()} for j in range(len(batch))]

    batch: list[LoadedFrame] = []
    for item in frames:
        if batch and tuple(batch[0][1].shape) != tuple(item[1].shape):
            yield run(batch)
            batch = []
        batch.append(item)
        if len(batch) >= opts.batch_size:
            yield run(batch)
            batch = []
    if batch:
        yield run(batch)


def write_frame(
    writers: ThreadPoolExecutor, clip: Clip, opts: KeyOptions, index: int, outputs: dict[str, np.ndarray]
) -> list[tuple[Path, Future[None]]]:
    """Start writing the selected outputs of frame ``index`` (atomically, on ``writers``); returns each
    file with the future that finishes it."""
    jobs = []
    for kind in opts.outputs:
        path = clip.output_path(kind, index)
        jobs.append((path, writers.submit(_write_output, path, kind, outputs, opts.exr_half)))
    return jobs


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
    if not todo:
        result.seconds = time.perf_counter() - start
        return result
    loader = _Loader(clip, opts)
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
        for indices, per_frame in key_batches(engine, clip, opts, loaded()):
            for index, frame_out in zip(indices, per_frame, strict=True):
                for path, job in write_frame(writers, clip, opts, index, frame_out):
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
    log.info("%s: keyed %d, skipped %d, in %.1f s", clip.name, result.keyed, result.skipped, result.seconds)
    return result
