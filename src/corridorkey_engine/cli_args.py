"""The ``corridorkey`` command line's parser.

A flag's ``dest`` is the name of the field it sets: :func:`corridorkey_engine.cli.post_options`,
:func:`~corridorkey_engine.cli.checkpoint_source` and :func:`~corridorkey_engine.cli.key_options` copy every
parsed argument named like a field of :class:`PostProcessOptions`, :class:`CheckpointSource` or
:class:`KeyOptions` into that value. A new setting is therefore its field and its flag, nothing else. This
module imports no torch.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .model.source import CHECKPOINT_DIR_ENV, PUBLISHED_MODELS, SCREEN_COLORS

PROG = "corridorkey"
CHOICE_ADVICE = "--select NAME or --exclude GLOB"
"""What the registry's ambiguity error tells a ``corridorkey`` user (its --select/--exclude flags)."""
PUBLISHED = "published"
"""``--hub``'s default: the published model of ``--screen-color`` (:data:`PUBLISHED_MODELS`)."""

EXAMPLE = """\
example session:
  $ ls shot010 shot010/Input | head -5
  shot010:
  AlphaHint  Input
  shot010/Input:
  shot010_0001.exr  shot010_0002.exr  shot010_0003.exr  ...
  $ corridorkey infer shot010 --checkpoint-dir ~/models/corridorkey
  shot010: 100%|██████████| 120/120 [01:05<00:00,  1.84frame/s]
  shot010: keyed 120 of 120 frames (0 already done, 0 outside the selection, 0 failed) in 65.2 s
  keyed 120 frames (0 already done, 0 outside the selection, 0 failed) from 1 clip(s) in 65.21 s: …
  device cuda (float16), checkpoint /home/me/models/corridorkey/CorridorKey_v1.0.safetensors (safetensors)
  outputs in /shots/shot010/: Matte/ FG/ Processed/ Comp/
  $ corridorkey infer shot010 --checkpoint-dir ~/models/corridorkey   # after Ctrl-C: resumes; now:
  nothing to do: all 120 frames of 1 clip(s) are done (--overwrite redoes them)

  $ corridorkey infer shot020 shot030 --hint chroma --outputs matte,comp --exr-dtype float --output /renders
  $ corridorkey infer shots/ --frames 1001-1050 --comp-video   # each clip in shots/, one farm chunk
  $ corridorkey demo            # a synthetic clip keyed with the bundled model, offline

A clip folder holds Input/ (PNG, JPEG, TIFF, EXR or BMP frames, or one video file) or an Input.mp4 video,
and AlphaHint/ or AlphaHint.mp4 (a coarse matte, white = foreground, matching the input); a PATH may
also be a folder of such clips. Outputs land beside them (or in --output DIR/<clip name>/): Matte/
(linear alpha, 1-channel EXR), FG/ (straight sRGB foreground, EXR), Processed/ (linear premultiplied RGBA,
EXR), Comp/ (8-bit PNG preview), named after the input frames (--format picks EXR or PNG per output);
corridorkey.json records the settings, and frames made with other settings are redone.
Without a checkpoint in the folder, the CorridorKey v1.0 weights are fetched from the hub on first run.
"""


DEVICE_HELP = (
    "cuda, cuda:N, mps, cpu or auto (default: $CORRIDORKEY_DEVICE, else auto: cuda when available, "
    "else mps, else cpu)"
)


def default_io_threads() -> int:
    """Reader (and writer) threads: half the CPU cores, at least 2, at most 8. Writing a 4K frame's four
    outputs takes about a CPU-second, so a fast GPU needs several writers to never wait."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def _outputs_arg(text: str) -> tuple[str, ...]:
    from .clips.pipeline import OUTPUTS  # light: no torch

    names = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if not names:
        raise argparse.ArgumentTypeError("give at least one output")
    if "all" in names:
        return tuple(OUTPUTS)
    bad = [n for n in names if n not in OUTPUTS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown output {bad[0]!r}; choose from {', '.join(OUTPUTS)} or all"
        )
    return names


def _frames_arg(text: str) -> str:
    from .clips.frameranges import FrameSelection

    try:
        FrameSelection.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _format_arg(text: str) -> str:
    from .clips.outputs import parse_format_spec

    try:
        parse_format_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _number(kind: type, low: float | None = None, high: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)``, at least ``low`` and at most ``high`` when given."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if low is not None and high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {value}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


_positive_int = _number(int, low=1)


def _img_size(text: str) -> int:
    """An argparse ``type``: a model resolution, a positive multiple of 32 (Hiera's mask units)."""
    value = _positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 (Hiera's mask units), got {value}")
    return value


def _precision(text: str) -> str:
    """An argparse ``type``: a precision name or alias (checked by the engine's own rule)."""
    from .device import precision_name  # torch: only when --precision is given
    from .errors import ConfigError

    try:
        precision_name(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
_unit_float = _number(float, low=0.0, high=1.0)
_float = _number(float)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log details; show tracebacks on errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary; errors only")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar per clip on stderr (default: only when stderr is a terminal)",
    )


def _add_screen_color(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--screen-color",
        choices=SCREEN_COLORS,
        default="green",
        help="the screen the clips are shot on: chooses the model (file names containing 'blue' are the "
        "blue-screen model), the despill channel and the --hint chroma key (green)",
    )


def _add_choice_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--select",
        metavar="NAME",
        help="the checkpoint file to use when the folder holds several (a name or a glob)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="ignore checkpoint files matching GLOB (repeatable); MLX weights (names containing 'mlx') "
        "are always ignored",
    )


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and device")
    g.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="folder holding the checkpoint (any registered format); fetched from the hub on first run "
        f"when empty (default: ${CHECKPOINT_DIR_ENV}, else ~/.cache/corridorkey/CorridorKey_v1.0, or "
        "CorridorKeyBlue_1.0 beside it with --screen-color blue)",
    )
    _add_screen_color(g)
    _add_choice_options(g)
    hub = g.add_mutually_exclusive_group()
    green, blue = PUBLISHED_MODELS["green"].repo_id, PUBLISHED_MODELS["blue"].repo_id
    hub.add_argument(
        "--hub",
        default=PUBLISHED,
        metavar="REPO_ID",
        help=f"Hugging Face repository to fetch from when the folder is empty ({green}; with "
        f"--screen-color blue {blue})",
    )
    hub.add_argument("--no-hub", dest="hub", action="store_const", const=None, help="never download")
    g.add_argument("--device", help=DEVICE_HELP)
    g.add_argument(
        "--precision",
        type=_precision,
        help="inference precision, e.g. fp16, bf16, fp32 (default: the engine's choice)",
    )
    g.add_argument("--img-size", type=_img_size, metavar="N", help="model resolution (multiple of 32)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first frame)")
    g.add_argument(
        "--compile-backend",
        dest="compile",
        metavar="BACKEND",
        help="torch.compile with this backend (implies --compile; default inductor): e.g. cudagraphs, eager",
    )
    g.add_argument(
        "--safe-only",
        action="store_true",
        default=None,
        help="never load a checkpoint format that can execute code (legacy .pth pickles)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``corridorkey`` argument parser (subcommands ``infer`` and ``demo``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="CorridorKey: neural green-screen keying of whole clips.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    infer = sub.add_parser(
        "infer",
        help="key clip folders, or folders of clips",
        description="Key every frame of each clip (Input/ + AlphaHint/ folders, or Input.mp4 + "
        "AlphaHint.mp4 videos) and write VFX-ready outputs. A PATH is a clip or a folder of clips (each "
        "subfolder that is a clip). Finished frames are skipped, so an interrupted run resumes where it "
        "stopped; frames made with other settings are redone.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    infer.add_argument(
        "clips", nargs="+", type=Path, metavar="PATH", help="clip folder(s) or folder(s) of clips"
    )
    _add_engine_options(infer)
    k = infer.add_argument_group("keying")
    gamma = k.add_mutually_exclusive_group()
    gamma.add_argument(
        "--linear",
        dest="input_is_linear",
        action="store_const",
        const=True,
        help="input frames are linear light (default: EXR is linear, everything else sRGB)",
    )
    gamma.add_argument(
        "--srgb", dest="input_is_linear", action="store_const", const=False, help="input frames are sRGB"
    )
    k.add_argument(
        "--despill",
        dest="despill_strength",
        type=_unit_float,
        default=0.5,
        metavar="0-1",
        help="despill strength (0.5, as upstream's default 5 of 10)",
    )
    k.add_argument(
        "--despeckle",
        dest="auto_despeckle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="remove small isolated specks from the matte (on)",
    )
    k.add_argument("--despeckle-size", type=_positive_int, default=400, metavar="PX", help="speck area (400)")
    k.add_argument("--refiner-scale", type=_float, default=1.0, metavar="F", help="refiner strength (1.0)")
    k.add_argument(
        "--batch-size", type=_positive_int, default=1, metavar="N", help="frames per model call (1)"
    )
    k.add_argument(
        "--hint",
        choices=["alphahint", "chroma"],
        default="alphahint",
        help="alphahint: read AlphaHint/ (default); chroma: a rough built-in difference key of the "
        "--screen-color screen",
    )
    r = infer.add_argument_group("frame ranges (render-farm chunks: docs/cli.md)")
    r.add_argument(
        "--frames",
        type=_frames_arg,
        metavar="RANGES",
        help="key only these frames: A-B (inclusive) and N, comma-separated, e.g. 1001-1050,1060; the "
        "number in the file name for image sequences, the index from 0 for a video",
    )
    r.add_argument("--max-frames", type=_positive_int, metavar="N", help="key at most the first N selected")
    o = infer.add_argument_group("outputs")
    o.add_argument(
        "--output", type=Path, metavar="DIR", help="write to DIR/<clip name>/ instead of the clip folder"
    )
    o.add_argument(
        "--outputs",
        type=_outputs_arg,
        default=("matte", "fg", "processed", "comp"),
        metavar="LIST",
        help="comma-separated subset of matte,fg,processed,comp (default: all)",
    )
    o.add_argument("--exr-dtype", choices=["half", "float"], default="half", help="EXR bit depth (half)")
    o.add_argument(
        "--format",
        type=_format_arg,
        metavar="SPEC",
        help="file type per output, e.g. matte=png:16,fg=exr:float:piz (exr[:half|float][:COMPRESSION], "
        "png[:8|16]; all=... sets every output; default: EXR half ZIP, Comp 8-bit PNG)",
    )
    o.add_argument(
        "--comp-video",
        action="store_true",
        help="also write <clip>/Comp.mp4 (H.264) from Comp/ once every frame of the clip is keyed",
    )
    o.add_argument(
        "--fps",
        type=_number(float, low=0.001),
        default=24.0,
        metavar="F",
        help="frame rate of Comp.mp4 for image sequences (24; a video source keeps its own)",
    )
    o.add_argument("--overwrite", action="store_true", help="redo frames whose outputs already exist")
    o.add_argument(
        "--io-threads",
        type=_positive_int,
        metavar="N",
        help="reader threads and writer threads each (default: half the CPU cores, 2 to 8)",
    )
    r = infer.add_argument_group("scale-out on Ray (docs/scale-out.md)")
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="key on a Ray cluster: local (default: start one for this run), auto (join $RAY_ADDRESS) or "
        "ray://HOST:PORT; clips, outputs and checkpoint folder must be on storage every node sees",
    )
    r.add_argument(
        "--ray-workers",
        type=_positive_int,
        metavar="N",
        help="engine workers (default: one per GPU of the cluster, else 1)",
    )
    r.add_argument(
        "--ray-gpus-per-worker",
        type=_float,
        metavar="G",
        help="GPUs each worker reserves (default: 1 with CUDA, 0 on the CPU)",
    )
    _add_common(infer)

    demo = sub.add_parser(
        "demo",
        help="key a generated demo clip with the bundled model and measure the result",
        description="Write a short synthetic green-screen clip (blue with --screen-color blue; Input/, "
        "AlphaHint/, and the ground truth: "
        "GroundTruth/ alpha, GroundTruthFG/ colour) to FOLDER (default: a new temporary folder), key it with "
        "the small model shipped in the package (trained on green and blue screens) through the same "
        "pipeline as `infer`, and print where the outputs are, how close the matte is to the ground truth, "
        "and how far the delivered foreground's colour is from the true one on the subject. Works offline.",
    )
    demo.add_argument("folder", nargs="?", type=Path, metavar="FOLDER", help="where to write the demo clip")
    demo.add_argument("--frames", type=_positive_int, metavar="N", help="number of frames (8)")
    _add_screen_color(demo)
    demo.add_argument("--device", help=DEVICE_HELP)
    demo.add_argument(
        "--precision", type=_precision, help="float16, bfloat16 or float32 (CPU: always float32)"
    )
    demo.add_argument(
        "--checkpoint-dir", type=Path, metavar="DIR", help="use this checkpoint instead of the bundled one"
    )
    _add_choice_options(demo)
    demo.add_argument("--batch-size", type=_positive_int, default=1, metavar="N", help="frames per call")
    demo.set_defaults(img_size=None, compile=False, safe_only=None, io_threads=None)
    _add_common(demo)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ckpt-formats")
    except Exception:
        return "unknown"
