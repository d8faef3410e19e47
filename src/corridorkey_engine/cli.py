"""``corridorkey``: key whole green-screen clips from the command line.

Errors are printed as one line on stderr with a non-zero exit status (the traceback too with ``--verbose``).
Heavy imports (torch, the engine) happen only once a command runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ckpt_formats import CheckpointError

from .cli_args import PROG, build_parser, default_io_threads
from .cli_clips import one_line as _one_line
from .cli_clips import prepare_clips
from .cli_clips import report as _report
from .cli_values import checkpoint_source, key_options
from .cli_values import load_engine_from as _load_engine
from .errors import CliError, CorridorKeyError
from .model.source import CheckpointSource

log = logging.getLogger("corridorkey_engine.cli")


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not quiet and not verbose:  # a first-run checkpoint download is worth announcing
        logging.getLogger("ckpt_formats.hub").setLevel(logging.INFO)


def _cmd_infer(args: argparse.Namespace) -> int:
    from .clips.layout import expand_clip_paths

    found = expand_clip_paths(args.clips)
    names = [c.path.name for c in found if c.error is None]
    if args.output is not None and len(set(names)) != len(names):
        raise CliError("two clips share a folder name; with --output their outputs would collide")
    if args.ray is None and (args.ray_workers or args.ray_gpus_per_worker is not None):
        raise CliError("--ray-workers and --ray-gpus-per-worker need --ray")
    if args.ray is not None:
        from .cli_ray import run_infer

        return run_infer(args, found, key_options(args), checkpoint_source(args), args.output)
    return _key_clips(args, found, key_options(args), checkpoint_source(args), args.output)


def _key_clips(
    args: argparse.Namespace,
    roots: Sequence[Path | Any],
    opts: Any,
    source: CheckpointSource,
    output: Path | None = None,
) -> int:
    """Check every clip (reporting the bad ones), check the device and load the engine, then key what is
    left of each clip with a progress bar; a summary line per clip. Nothing is created before the first
    frame is keyed. Returns 1 when any clip failed."""
    from .clips.fingerprint import model_settings, program_version
    from .clips.pipeline import begin_clip, finish_clip, key_clip, plan_frames
    from .clips.stages import StageTimes
    from .device import resolve_device

    clips, failed = prepare_clips(args, roots, opts, output)
    if not clips:
        return 1
    resolve_device(args.device)  # fails fast (before loading) when e.g. CUDA is missing
    t0 = time.perf_counter()
    engine = _load_engine(args, source)
    load_s = time.perf_counter() - t0
    log.info("engine ready in %.1f s: %s", load_s, engine.describe())
    settings, about = model_settings(engine)
    opts = replace(opts, model=settings, about={**about, "program": program_version()})
    if engine.device.type == "cuda":
        opts = replace(opts, pin_memory=True)
    plans = [plan_frames(c, opts) for c in clips]
    total = sum(len(p) for p in plans)
    frames = sum(len(c) for c in clips)
    if total == 0 and not failed and not opts.comp_video:
        if not args.quiet:
            print(
                f"nothing to do: all {frames} frames of {len(clips)} clip(s) are done "
                "(--overwrite redoes them)"
            )
        return 0

    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", disable=args.quiet, dynamic_ncols=True, file=sys.stderr)
    keyed = 0
    stages = StageTimes(device=str(engine.device))
    lines: list[str] = []
    errors: list[BaseException] = []
    start = time.perf_counter()
    try:
        for clip, todo in zip(clips, plans, strict=True):
            bar.set_description(clip.name)
            try:
                result = None
                if todo:
                    begin_clip(clip, opts, todo)
                    result = key_clip(engine, clip, opts, frames=todo, on_frame=bar.update)
                    keyed += result.keyed
                    stages.merge(result.stages)
                movie = finish_clip(clip, opts)
            except (CorridorKeyError, OSError) as exc:
                errors.append(exc)  # reported under the progress bar, once it is closed
                continue
            lines.append(_clip_line(clip, opts, todo, result.seconds if result else 0.0, movie))
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
    for exc in errors:
        _report(args, str(exc), exc)
    failed += len(errors)
    if not args.quiet:
        for line in lines:
            print(line)
        fps = keyed / seconds if seconds > 0 else float("inf")
        print(
            f"keyed {keyed} frames ({frames - keyed} skipped) from {len(clips)} clip(s) in {seconds:.2f} s: "
            f"{fps:.2f} frames/s (model load {load_s:.1f} s)" + (f"; {failed} failed" if failed else "")
        )
        print(engine.describe())
        if args.verbose:
            print(stages.line())
        for clip in clips:
            folders = " ".join(f"{k}/" for k in _output_folders(opts.outputs))
            print(f"outputs in {clip.out_dir}/: {folders}")
    return 1 if failed else 0


def _clip_line(clip: Any, opts: Any, todo: Sequence[int], seconds: float, movie: Path | None) -> str:
    """``shot010: keyed 12 of 120 frames (frames 1001-1012) in 8.1 s; Comp.mp4 written``."""
    selected = f" (frames {opts.frames.describe()})" if not opts.frames.everything else ""
    text = f"{clip.name}: keyed {len(todo)} of {len(clip)} frames{selected} in {seconds:.1f} s"
    if movie is not None:
        text += f"; {movie.name} written"
    elif opts.comp_video:
        text += (
            "; Comp.mp4 up to date"
            if (clip.out_dir / "Comp.mp4").is_file()
            else "; Comp.mp4 waits for the rest"
        )
    return text


def _cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from .clips.pipeline import KeyOptions
    from .demo.clip import (
        DEFAULT_FRAMES,
        SUBJECT_ALPHA,
        TARGETS,
        bundled_checkpoint_dir,
        foreground_quality,
        matte_quality,
        write_demo_clip,
    )
    from .keying.frames import PostProcessOptions

    folder = (args.folder or Path(tempfile.mkdtemp(prefix="corridorkey-demo-"))).resolve()
    if not args.quiet:
        print(f"demo clip: {folder}")
    clip = write_demo_clip(folder, frames=args.frames or DEFAULT_FRAMES, screen=args.screen_color)
    threads = default_io_threads()
    # The checkerboard scales with the frame (upstream's 128-px squares would hide it on 128-px frames).
    post = PostProcessOptions(screen_color=args.screen_color, checker_size=None)
    opts = KeyOptions(
        overwrite=True, batch_size=args.batch_size, read_threads=threads, write_threads=threads, post=post
    )
    if args.checkpoint_dir is not None:
        source = checkpoint_source(args)
    else:  # the bundled model keys both screens (docs/demo-model.md): its file name does not choose
        source = checkpoint_source(args, checkpoint_dir=bundled_checkpoint_dir(), match_screen=False)
    status = _key_clips(args, [folder], opts, source)
    if status:
        return status
    matte = matte_quality(folder / "Matte", clip.truth_dir)
    hint = matte_quality(clip.hint_dir, clip.truth_dir)
    colour = foreground_quality(folder / "Processed", clip.fg_truth_dir, clip.truth_dir)
    if not args.quiet:
        print(
            f"matte vs ground truth ({matte.frames} frames): mean abs error {matte.mae:.4f}, "
            f"IoU(alpha>0.5) {matte.iou:.3f}; the hint it started from: {hint.mae:.4f}, {hint.iou:.3f}"
        )
        r, g, b = (c * 255.0 for c in colour.per_channel)
        print(
            f"foreground colour vs ground truth on the subject (Processed/, true alpha > {SUBJECT_ALPHA}, "
            f"{colour.pixels} px): mean abs RGB error {colour.mae_8bit:.1f}/255 "
            f"(R {r:.1f}, G {g:.1f}, B {b:.1f})"
        )
        verdict = "met" if TARGETS.met(matte, colour) else "MISSED"
        print(f"targets for the {args.screen_color}-screen demo ({TARGETS}): {verdict}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .cli_export import run_export

    source = checkpoint_source(args)
    return run_export(args, lambda: _load_engine(args, source))


def _cmd_preview(args: argparse.Namespace) -> int:
    from .cli_preview import run_preview

    return run_preview(args)


def _output_folders(outputs: Sequence[str]) -> list[str]:
    from .clips.pipeline import OUTPUTS

    return [OUTPUTS[o].folder for o in outputs]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corridorkey`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    handlers = {"infer": _cmd_infer, "demo": _cmd_demo, "export": _cmd_export, "preview": _cmd_preview}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CorridorKeyError, CheckpointError, OSError) as exc:  # raised on purpose: the message says it all
        if args.verbose:
            log.exception("%s failed", args.command)
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unforeseen failure: name its type
        if args.verbose:
            log.exception("%s failed", args.command)
        print(f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
