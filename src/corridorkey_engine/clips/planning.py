"""Before and after keying a clip: the checks, the plan (which frames), the output folders and manifest,
and the comp movie once the clip is complete.

Every function here is shared by the local pipeline (:mod:`.pipeline`) and any other runner (the Ray one):
:func:`prepare_clip` checks a clip and creates nothing; :func:`plan_frames` says which frames a run keys
(frame selection, settings-aware resume); :func:`begin_clip` makes the output folders and records the
settings, just before the first frame; :func:`finish_clip` writes the comp movie when the clip is whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ckpt_formats.atomic import sweep_temps

from ..errors import ClipError, FrameSelectionError
from ..keying.frames import PostProcessOptions
from .exr import exr_backend
from .frameranges import FrameSelection, frame_numbers, select_frames
from .headers import frame_sizes
from .images import check_writable
from .layout import HINT, INPUT, find_part
from .manifest import output_current, read_manifest, record_run, valid_since
from .outputs import OUTPUTS, FileType
from .sequences import FrameSequence, discover_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyOptions:
    """How to key: engine settings plus what to write and how.

    ``input_is_linear=None`` means: EXR input is linear, anything else is sRGB. ``post`` is handed to the
    engine as it is, except ``generate_comp``, which follows whether ``comp`` is among the ``outputs``.
    ``formats`` overrides the file type of some outputs; ``frames`` selects frames; ``model`` holds the
    loaded model's settings and ``about`` facts recorded beside them in the manifest (see
    :func:`~corridorkey_engine.clips.fingerprint.model_settings`). ``comp_video`` writes ``Comp.mp4`` at the
    source video's rate, else at ``fps``.
    """

    outputs: tuple[str, ...] = tuple(OUTPUTS)
    exr_half: bool = True
    input_is_linear: bool | None = None
    post: PostProcessOptions = field(default_factory=PostProcessOptions)
    refiner_scale: float = 1.0
    batch_size: int = 1
    overwrite: bool = False
    hint: str = "alphahint"  # or "chroma"
    screen: str = "auto"
    read_threads: int = 2
    write_threads: int = 2
    pin_memory: bool = False
    formats: dict[str, FileType] = field(default_factory=dict)
    frames: FrameSelection = field(default_factory=FrameSelection)
    model: dict[str, Any] = field(default_factory=dict)
    about: dict[str, Any] = field(default_factory=dict)
    comp_video: bool = False
    fps: float = 24.0

    def __post_init__(self) -> None:
        unknown = [o for o in (*self.outputs, *self.formats) if o not in OUTPUTS]
        if unknown or not self.outputs:
            raise ValueError(
                f"outputs must be a non-empty subset of {list(OUTPUTS)}, got {list(self.outputs)}"
            )
        if self.hint not in ("alphahint", "chroma"):
            raise ValueError(f"hint must be 'alphahint' or 'chroma', got {self.hint!r}")
        if self.batch_size < 1 or self.read_threads < 1 or self.write_threads < 1:
            raise ValueError("batch_size, read_threads and write_threads must be at least 1")
        if self.comp_video and "comp" not in self.outputs:
            raise ValueError("the comp movie is made of the comp output: add comp to the outputs")

    def filetype(self, kind: str) -> FileType:
        """The file type output ``kind`` is written as."""
        if kind in self.formats:
            return self.formats[kind]
        default = OUTPUTS[kind].default
        return (
            replace(default, depth="half" if self.exr_half else "float") if default.kind == "exr" else default
        )

    @property
    def needs_exr(self) -> bool:
        return any(self.filetype(o).kind == "exr" for o in self.outputs)


@dataclass
class Clip:
    """A clip folder, its frame sequences and where its outputs go (``filetypes``: each output's type)."""

    root: Path
    input: FrameSequence
    hint: FrameSequence | None  # None: the chroma key makes the hint
    out_dir: Path
    input_is_linear: bool
    filetypes: dict[str, FileType] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name

    def __len__(self) -> int:
        return len(self.input)

    def output_path(self, kind: str, index: int) -> Path:
        spec = OUTPUTS[kind]
        suffix = self.filetypes[kind].suffix if kind in self.filetypes else spec.suffix
        return self.out_dir / spec.folder / f"{self.input.names[index]}{suffix}"


def check_frames(seq: FrameSequence, hint: FrameSequence | None, indices: list[int]) -> None:
    """Every frame ``indices`` names is readable (its header) and, with a hint, the hint's frame is the
    same size: checked before anything is written.

    Raises:
        FrameIOError: a frame is unreadable or truncated; ClipError: an input and hint frame differ in size.
    """
    sizes = frame_sizes(seq, indices)
    hint_sizes = frame_sizes(hint, indices) if hint is not None else sizes
    for i in indices:
        if sizes[i] != hint_sizes[i]:
            raise ClipError(size_message(seq, hint, i, sizes[i], hint_sizes[i]))


def frame_label(seq: FrameSequence, index: int) -> str:
    """``path/f_0042.png``, or ``video.mp4 frame 43`` (1-based)."""
    if seq.video is not None:
        return f"{seq.video} frame {index + 1}"
    return str(seq.paths[index])


def size_message(
    seq: FrameSequence, hint: FrameSequence, index: int, a: tuple[int, int], b: tuple[int, int]
) -> str:
    """The one-line error for an input and hint frame of different sizes."""
    return (
        f"{frame_label(seq, index)} is {a[0]}x{a[1]} but {frame_label(hint, index)} is {b[0]}x{b[1]}; "
        "input and hint frames must have the same size"
    )


def _shown(path: Path) -> str:
    return f"{path.name}/" if path.is_dir() else path.name


def prepare_clip(clip_dir: Path, opts: KeyOptions, output_root: Path | None = None) -> Clip:
    """Check a clip folder before any keying and say what is wrong in one line; creates nothing.

    Checks: an ``Input/`` folder or ``Input.<video>`` with frames; an ``AlphaHint`` one (unless
    ``opts.hint == "chroma"``) with as many frames, its first frame the input's size; frame numbers when
    ``opts.frames`` has ranges; EXR support when needed; every output folder can be made and written.

    Raises:
        ClipError, FrameIOError: the message names the file and what to do.
    """
    root = Path(clip_dir)
    if not root.is_dir():
        raise ClipError(f"{root}: clip folder not found")
    input_src = find_part(root, INPUT)
    if input_src is None:
        raise ClipError(
            f"{root}: no {INPUT}/ folder or {INPUT}.<video> (put the plate's frames in {root / INPUT}/)"
        )
    seq = discover_frames(input_src)
    hint_src = find_part(root, HINT)
    hint: FrameSequence | None = None
    if opts.hint == "chroma":
        if hint_src is not None:
            log.info("%s: --hint chroma: ignoring %s", root.name, hint_src)
    elif hint_src is None:
        raise ClipError(
            f"{root}: no {HINT}/ folder or {HINT}.<video>; provide a coarse alpha hint sequence or video in "
            f"{root / HINT}/ (white = foreground), or pass --hint chroma for a rough built-in green/blue key"
        )
    else:
        hint = discover_frames(hint_src)
        if len(hint) != len(seq):
            raise ClipError(
                f"{root}: {_shown(input_src)} has {len(seq)} frames but {_shown(hint_src)} has {len(hint)}; "
                "they pair frame by frame, so the counts must match"
            )
    selected = select_frames(seq, opts.frames)  # frame numbers readable when ranges are given
    if not selected:
        numbers = frame_numbers(seq)
        raise FrameSelectionError(
            f"{root}: --frames {opts.frames.describe()} selects none of its frames (its first frame is "
            f"{min(numbers)}, its last {max(numbers)})"
        )
    uses_exr = opts.needs_exr or (not seq.is_video and any(p.suffix.lower() == ".exr" for p in seq.paths))
    if hint is not None and not hint.is_video:
        uses_exr = uses_exr or any(p.suffix.lower() == ".exr" for p in hint.paths)
    if uses_exr:
        exr_backend()
    check_frames(seq, hint, selected)
    out_dir = Path(output_root) / root.name if output_root is not None else root
    for kind in opts.outputs:
        check_writable(out_dir / OUTPUTS[kind].folder)
    if opts.input_is_linear is None:
        linear = not seq.is_video and seq.paths[0].suffix.lower() == ".exr"
    else:
        linear = opts.input_is_linear
    filetypes = {kind: opts.filetype(kind) for kind in OUTPUTS}
    return Clip(root=root, input=seq, hint=hint, out_dir=out_dir, input_is_linear=linear, filetypes=filetypes)


def output_settings(clip: Clip, opts: KeyOptions) -> dict[str, dict[str, Any]]:
    """Output name -> the settings its frames are made with in this run (what the manifest records)."""
    post = {k: v for k, v in vars(opts.post).items() if k != "generate_comp"}
    keying: dict[str, Any] = {
        **post,
        "refiner_scale": opts.refiner_scale,
        "input_is_linear": clip.input_is_linear,
        "hint": opts.hint,
    }
    if opts.hint == "chroma":
        keying["screen"] = opts.screen
    return {
        kind: {"model": dict(opts.model), "keying": keying, "file": opts.filetype(kind).label()}
        for kind in opts.outputs
    }


def plan_frames(clip: Clip, opts: KeyOptions) -> list[int]:
    """Indices of the frames to key: the selected ones (``opts.frames``), all of them with ``overwrite``,
    else those with an output that is missing, partial, or made with other settings (see
    :mod:`.manifest`)."""
    selected = select_frames(clip.input, opts.frames)
    if opts.overwrite or not selected:
        return selected
    since = valid_since(read_manifest(clip.out_dir), output_settings(clip, opts))
    if any(s is None for s in since.values()):
        return selected
    return [
        i
        for i in selected
        if not all(output_current(clip.output_path(kind, i), since[kind]) for kind in opts.outputs)
    ]


def begin_clip(clip: Clip, opts: KeyOptions, frames: list[int]) -> dict[str, list[str]]:
    """Make the output folders, remove temporary files a killed run left, and record this run's settings
    in the manifest, just before keying ``frames``. Returns the settings that changed, per output."""
    for kind in opts.outputs:
        folder = clip.out_dir / OUTPUTS[kind].folder
        folder.mkdir(parents=True, exist_ok=True)
        sweep_temps(folder)
    redo = [clip.output_path(kind, i) for i in frames for kind in opts.outputs] if opts.overwrite else []
    changes = record_run(clip.out_dir, output_settings(clip, opts), opts.about, redo)
    for kind, changed in changes.items():
        log.info("%s: %s made with other settings (%s): redoing them", clip.name, kind, "; ".join(changed))
    return changes


def clip_complete(clip: Clip, opts: KeyOptions, kinds: tuple[str, ...]) -> bool:
    """True when every frame of the whole clip has each output in ``kinds`` done with this run's settings."""
    since = valid_since(read_manifest(clip.out_dir), output_settings(clip, replace(opts, outputs=kinds)))
    return all(output_current(clip.output_path(k, i), since[k]) for i in range(len(clip)) for k in kinds)


def finish_clip(clip: Clip, opts: KeyOptions) -> Path | None:
    """After keying: write ``Comp.mp4`` (with ``opts.comp_video``) once the whole clip's comp frames are
    done, unless it is already newer than all of them. Returns the movie written, if any."""
    if not opts.comp_video:
        return None
    from .comp_video import COMP_VIDEO_NAME, write_comp_video

    movie = clip.out_dir / COMP_VIDEO_NAME
    if not clip_complete(clip, opts, ("comp",)):
        log.info("%s: %s waits until every frame of the clip is keyed", clip.name, COMP_VIDEO_NAME)
        return None
    paths = [clip.output_path("comp", i) for i in range(len(clip))]
    newest = max(p.stat().st_mtime_ns for p in paths)
    if movie.is_file() and movie.stat().st_mtime_ns >= newest:
        return None
    fps = clip.input.fps if clip.input.is_video and clip.input.fps else opts.fps
    write_comp_video(movie, paths, fps)
    return movie
