"""The ``corridorkey`` command line's parser.

A flag's ``dest`` is the name of the field it sets: :func:`corridorkey_engine.cli_values.post_options`,
:func:`~corridorkey_engine.cli_values.checkpoint_source` and :func:`~.cli_values.key_options` copy every
parsed argument named like a field of :class:`PostProcessOptions`, :class:`CheckpointSource` or
:class:`KeyOptions` into that value. A new setting is therefore its field and its flag, nothing else. The
shared option groups are in :mod:`.cli_options`, the tool commands' parsers in :mod:`.cli_tool_args`. This
module imports no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_options import (
    CHOICE_ADVICE,
    DEVICE_HELP,
    PUBLISHED,
    _add_choice_options,
    _add_common,
    _add_engine_options,
    _add_screen_color,
    _float,
    _format_arg,
    _frames_arg,
    _number,
    _outputs_arg,
    _positive_int,
    _precision,
    _unit_float,
    default_io_threads,
    default_write_threads,
)
from .cli_tool_args import _add_export_parser, _add_preview

__all__ = [
    "CHOICE_ADVICE",
    "DEVICE_HELP",
    "PROG",
    "PUBLISHED",
    "build_parser",
    "default_io_threads",
    "default_write_threads",
]

PROG = "corridorkey"
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


def build_parser() -> argparse.ArgumentParser:
    """The ``corridorkey`` argument parser (subcommands ``infer``, ``demo`` and ``preview``)."""
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
    demo.set_defaults(
        img_size=None,
        compile=False,
        compile_mode=None,
        low_memory="auto",
        channels_last="auto",
        safe_only=None,
        io_threads=None,
    )
    _add_common(demo)
    _add_export_parser(sub)
    _add_preview(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ckpt-formats")
    except Exception:
        return "unknown"
