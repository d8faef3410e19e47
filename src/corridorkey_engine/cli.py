"""``corridorkey``: key whole green-screen clips from the command line.

Errors are printed as one line on stderr with a non-zero exit status (the traceback too with ``--verbose``).
Heavy imports (torch, the engine) happen only once a command runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("corridorkey_engine.cli")

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
  keyed 120 frames (0 skipped) from 1 clip(s) in 65.21 s: 1.84 frames/s (model load 3.1 s)
  device cuda (float16), checkpoint /home/me/models/corridorkey/CorridorKey_v1.0.safetensors (safetensors)
  outputs in /shots/shot010/: Matte/ FG/ Processed/ Comp/
  $ corridorkey infer shot010 --checkpoint-dir ~/models/corridorkey   # after Ctrl-C: resumes; now:
  nothing to do: all 120 frames of 1 clip(s) are done (--overwrite redoes them)

  $ corridorkey infer shot020 shot030 --hint chroma --outputs matte,comp --exr-dtype float --output /renders
  $ corridorkey demo            # a synthetic clip keyed with the bundled model, offline

A clip folder holds Input/ (PNG, JPEG, TIFF or EXR frames, or one video file) and AlphaHint/ (a coarse
matte, white = foreground, as a matching sequence or video). Outputs land beside them (or in
--output DIR/<clip name>/): Matte/ (linear alpha, 1-channel EXR), FG/ (straight sRGB foreground, EXR),
Processed/ (linear premultiplied RGBA, EXR), Comp/ (8-bit PNG preview), named after the input frames.
Without a checkpoint in the folder, the CorridorKey v1.0 weights are fetched from the hub on first run.
"""


DEFAULT_HUB_REPO = "nikopueringer/CorridorKey_v1.0"
"""Where the published CorridorKey v1.0 weights live; fetched into the checkpoint folder when it is empty."""
HUB_FILENAMES = {"safetensors": ["CorridorKey_v1.0.safetensors"], "pickle": ["CorridorKey_v1.0.pth"]}
CHECKPOINT_DIR_ENV = "CORRIDORKEY_CHECKPOINT_DIR"


def default_checkpoint_dir() -> Path:
    """``$CORRIDORKEY_CHECKPOINT_DIR``, else ``$XDG_CACHE_HOME/corridorkey/CorridorKey_v1.0`` (~/.cache)."""
    explicit = os.environ.get(CHECKPOINT_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "corridorkey" / "CorridorKey_v1.0"


def default_io_threads() -> int:
    """Reader (and writer) threads: half the CPU cores, at least 2, at most 8. Writing a 4K frame's four
    outputs takes about a CPU-second, so a fast GPU needs several writers to never wait."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


class CliError(Exception):
    """An error the CLI reports as one line (bad option combination, unusable device...)."""


def _outputs_arg(text: str) -> tuple[str, ...]:
    from .pipeline import OUTPUTS  # light: no torch

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log details; show tracebacks on errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary; errors only")


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and device")
    g.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="folder holding the checkpoint (any registered format); fetched from the hub on first run "
        f"when empty (default: ${CHECKPOINT_DIR_ENV}, else ~/.cache/corridorkey/CorridorKey_v1.0)",
    )
    hub = g.add_mutually_exclusive_group()
    hub.add_argument(
        "--hub",
        default=DEFAULT_HUB_REPO,
        metavar="REPO_ID",
        help=f"Hugging Face repository to fetch from when the folder is empty ({DEFAULT_HUB_REPO})",
    )
    hub.add_argument("--no-hub", dest="hub", action="store_const", const=None, help="never download")
    g.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when available, else cpu)")
    g.add_argument(
        "--precision", help="inference precision, e.g. fp16, bf16, fp32 (default: the engine's choice)"
    )
    g.add_argument("--img-size", type=_positive_int, metavar="N", help="model resolution (multiple of 32)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first frame)")
    g.add_argument(
        "--safe-only",
        action="store_true",
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
        help="key one or more clip folders",
        description="Key every frame of each CLIP_DIR (Input/ + AlphaHint/) and write VFX-ready outputs. "
        "Finished frames are skipped, so an interrupted run resumes where it stopped.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    infer.add_argument("clips", nargs="+", type=Path, metavar="CLIP_DIR", help="clip folder(s)")
    _add_engine_options(infer)
    k = infer.add_argument_group("keying")
    gamma = k.add_mutually_exclusive_group()
    gamma.add_argument(
        "--linear",
        dest="linear",
        action="store_const",
        const=True,
        help="input frames are linear light (default: EXR is linear, everything else sRGB)",
    )
    gamma.add_argument(
        "--srgb", dest="linear", action="store_const", const=False, help="input frames are sRGB"
    )
    k.add_argument("--despill", type=_unit_float, default=1.0, metavar="0-1", help="despill strength (1.0)")
    k.add_argument(
        "--despeckle",
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
        help="alphahint: read AlphaHint/ (default); chroma: a rough built-in green/blue difference key",
    )
    k.add_argument(
        "--screen", choices=["auto", "green", "blue"], default="auto", help="screen colour for --hint chroma"
    )
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
        description="Write a short synthetic green-screen clip (Input/, AlphaHint/, GroundTruth/) to FOLDER "
        "(default: a new temporary folder), key it with the small model shipped in the package through the "
        "same pipeline as `infer`, and print where the outputs are and how close the matte is to the "
        "ground truth. Works offline.",
    )
    demo.add_argument("folder", nargs="?", type=Path, metavar="FOLDER", help="where to write the demo clip")
    demo.add_argument("--frames", type=_positive_int, metavar="N", help="number of frames (8)")
    demo.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when available, else cpu)")
    demo.add_argument("--precision", help="float16, bfloat16 or float32 (CPU: always float32)")
    demo.add_argument(
        "--checkpoint-dir", type=Path, metavar="DIR", help="use this checkpoint instead of the bundled one"
    )
    demo.add_argument("--batch-size", type=_positive_int, default=1, metavar="N", help="frames per call")
    demo.set_defaults(img_size=None, compile=False, safe_only=False, io_threads=None)
    _add_common(demo)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ckpt-formats")
    except Exception:
        return "unknown"


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not quiet and not verbose:  # a first-run checkpoint download is worth announcing
        logging.getLogger("ckpt_formats.hub").setLevel(logging.INFO)


def _hub_source(repo_id: str | None) -> Any:
    if repo_id is None:
        return None
    from ckpt_formats import HubSource

    filenames = HUB_FILENAMES if repo_id == DEFAULT_HUB_REPO else None
    try:
        return HubSource(repo_id, filenames=filenames)
    except ValueError as exc:
        raise CliError(f"--hub {repo_id!r}: {exc}") from exc


def _describe_engine(engine: Any) -> str:
    ckpt = engine.checkpoint  # None for a model built in memory
    source = f"checkpoint {ckpt.path} ({ckpt.format.name})" if ckpt is not None else "model from memory"
    dtype = str(engine.dtype).replace("torch.", "")
    return f"device {engine.device} ({dtype}), {source}"


def _key_options(args: argparse.Namespace) -> Any:
    from .pipeline import KeyOptions

    return KeyOptions(
        outputs=args.outputs,
        exr_half=args.exr_dtype == "half",
        input_is_linear=args.linear,
        despill_strength=args.despill,
        auto_despeckle=args.despeckle,
        despeckle_size=args.despeckle_size,
        refiner_scale=args.refiner_scale,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        hint=args.hint,
        screen=args.screen,
        read_threads=args.io_threads or default_io_threads(),
        write_threads=args.io_threads or default_io_threads(),
    )


def _cmd_infer(args: argparse.Namespace) -> int:
    roots = [c.resolve() for c in args.clips]
    names = [r.name for r in roots]
    if args.output is not None and len(set(names)) != len(names):
        raise CliError("two clips share a folder name; with --output their outputs would collide")
    checkpoint_dir = args.checkpoint_dir or default_checkpoint_dir()
    if args.ray is None and (args.ray_workers or args.ray_gpus_per_worker is not None):
        raise CliError("--ray-workers and --ray-gpus-per-worker need --ray")
    if args.ray is not None:
        from .ray_pipeline import run_infer

        return run_infer(args, roots, _key_options(args), checkpoint_dir, _hub_source(args.hub), args.output)
    return _key_clips(args, roots, _key_options(args), checkpoint_dir, _hub_source(args.hub), args.output)


def _key_clips(
    args: argparse.Namespace,
    roots: Sequence[Path],
    opts: Any,
    checkpoint_dir: Path,
    hub: Any,
    output: Path | None = None,
) -> int:
    """Check every clip, load the engine, key what is left with a progress bar, print the summary."""
    from .pipeline import key_clip, plan_frames, prepare_clip

    clips = [prepare_clip(c, opts, output) for c in roots]
    plans = [plan_frames(c, opts) for c in clips]
    total = sum(len(p) for p in plans)
    frames = sum(len(c) for c in clips)
    if total == 0:
        if not args.quiet:
            print(
                f"nothing to do: all {frames} frames of {len(clips)} clip(s) are done "
                "(--overwrite redoes them)"
            )
        return 0
    from .device import resolve_device

    device = resolve_device(args.device)  # fails fast (before loading) when e.g. CUDA is missing
    from .engine import load_engine

    t0 = time.perf_counter()
    engine = load_engine(
        checkpoint_dir,
        device=device,
        hub=hub,
        precision=args.precision,
        img_size=args.img_size,
        compile=args.compile,
        safe_only=args.safe_only or None,
    )
    load_s = time.perf_counter() - t0
    log.info("engine ready in %.1f s: %s", load_s, _describe_engine(engine))
    if engine.device.type == "cuda":
        from dataclasses import replace

        opts = replace(opts, pin_memory=True)

    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", disable=args.quiet, dynamic_ncols=True, file=sys.stderr)
    keyed = 0
    start = time.perf_counter()
    try:
        for clip, todo in zip(clips, plans, strict=True):
            bar.set_description(clip.name)
            if not args.quiet and len(todo) < len(clip):
                bar.write(
                    f"{clip.name}: {len(clip) - len(todo)} of {len(clip)} frames already done, skipping them"
                )
            keyed += key_clip(engine, clip, opts, frames=todo, on_frame=bar.update).keyed
    except KeyboardInterrupt:
        bar.close()
        print(
            f"{PROG}: interrupted after {bar.n} frame(s); every written file is whole. "
            "Rerun the same command to finish the rest.",
            file=sys.stderr,
        )
        return 130
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if not args.quiet:
        skipped = frames - keyed
        fps = keyed / seconds if seconds > 0 else float("inf")
        print(
            f"keyed {keyed} frames ({skipped} skipped) from {len(clips)} clip(s) in {seconds:.2f} s: "
            f"{fps:.2f} frames/s (model load {load_s:.1f} s)"
        )
        print(_describe_engine(engine))
        for clip in clips:
            folders = " ".join(f"{k}/" for k in _output_folders(opts.outputs))
            print(f"outputs in {clip.out_dir}/: {folders}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from .demo import DEFAULT_FRAMES, bundled_checkpoint_dir, matte_quality, write_demo_clip
    from .pipeline import KeyOptions

    folder = (args.folder or Path(tempfile.mkdtemp(prefix="corridorkey-demo-"))).resolve()
    if not args.quiet:
        print(f"demo clip: {folder}")
    clip = write_demo_clip(folder, frames=args.frames or DEFAULT_FRAMES)
    threads = default_io_threads()
    opts = KeyOptions(overwrite=True, batch_size=args.batch_size, read_threads=threads, write_threads=threads)
    checkpoint_dir = args.checkpoint_dir or bundled_checkpoint_dir()
    status = _key_clips(args, [folder], opts, checkpoint_dir, hub=None)
    if status:
        return status
    matte = matte_quality(folder / "Matte", clip.truth_dir)
    hint = matte_quality(clip.hint_dir, clip.truth_dir)
    if not args.quiet:
        print(
            f"matte vs ground truth ({matte.frames} frames): mean abs error {matte.mae:.4f}, "
            f"IoU(alpha>0.5) {matte.iou:.3f}; the hint it started from: {hint.mae:.4f}, {hint.iou:.3f}"
        )
    return 0


def _output_folders(outputs: Sequence[str]) -> list[str]:
    from .pipeline import OUTPUTS

    return [OUTPUTS[o].folder for o in outputs]


def _error_line(exc: BaseException) -> str:
    from .pipeline import ClipError

    known: tuple[type[BaseException], ...] = (CliError, ClipError, OSError)
    try:
        from .io import FrameIOError

        known += (FrameIOError,)
        from ckpt_formats.errors import CheckpointError

        known += (CheckpointError,)
    except ImportError:  # pragma: no cover
        pass
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, known) or type(exc).__module__.startswith(("corridorkey_engine", "ckpt_formats")):
        return text
    return f"{type(exc).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corridorkey`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    handlers = {"infer": _cmd_infer, "demo": _cmd_demo}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            log.exception("%s failed", args.command)
        print(f"{PROG}: error: {_error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
