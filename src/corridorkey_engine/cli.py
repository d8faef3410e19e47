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
from ckpt_formats.atomic import interrupt_on_sigterm

from .cli_args import PROG, build_parser, default_io_threads
from .cli_clips import one_line as _one_line
from .cli_clips import prepare_clips
from .cli_clips import report as _report
from .cli_values import checkpoint_source, key_options
from .cli_values import load_engine_from as _load_engine
from .errors import CorridorKeyError, UsageError
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
        raise UsageError("two clips share a folder name; with --output their outputs would collide")
    if args.ray is None and (args.ray_workers or args.ray_gpus_per_worker is not None):
        raise UsageError("--ray-workers and --ray-gpus-per-worker need --ray")
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
    frame is keyed, and the model is not loaded when there is nothing to key. Returns 2 when a clip's
    selection is a usage error, else 1 when any clip failed."""
    from .cli_plan import nothing_to_do
    from .cli_report import ClipTally, clip_line, progress_bar, resolution_note, total_line
    from .clips.fingerprint import model_settings, program_version
    from .clips.frameranges import select_frames
    from .clips.pipeline import begin_clip, finish_clip, key_clip, plan_frames
    from .clips.stages import StageTimes
    from .device import resolve_device

    usage: list[BaseException] = []
    clips, failed = prepare_clips(args, roots, opts, output, usage)
    if not clips:
        return 2 if usage else 1
    resolve_device(args.device)  # fails fast (before loading) when e.g. CUDA is missing
    if not failed and (movies := nothing_to_do(args, source, clips, opts)) is not None:  # no model needed
        _say_nothing_to_do(args, clips, opts, movies)
        return 2 if usage else 0
    t0 = time.perf_counter()
    engine = _load_engine(args, source)
    load_s = time.perf_counter() - t0
    log.info("engine ready in %.1f s: %s", load_s, engine.describe())
    if (note := resolution_note(clips, engine.img_size)) is not None:
        log.warning("%s", note)
    settings, about = model_settings(engine)
    opts = replace(opts, model=settings, about={**about, "program": program_version()})
    if engine.device.type == "cuda":
        opts = replace(opts, pin_memory=True)
    plans = [plan_frames(c, opts) for c in clips]
    tallies = [
        ClipTally(c.name, len(c), len(select_frames(c.input, opts.frames)), len(todo))
        for c, todo in zip(clips, plans, strict=True)
    ]
    if not any(plans) and not failed:
        _say_nothing_to_do(args, clips, opts, [m for m in (finish_clip(c, opts) for c in clips) if m])
        return 2 if usage else 0

    stages = StageTimes(device=str(engine.device))
    lines: list[str] = []
    errors: list[BaseException] = []
    start = time.perf_counter()
    selection = None if opts.frames.everything else opts.frames.describe()
    for clip, todo, tally in zip(clips, plans, tallies, strict=True):
        bar = progress_bar(clip.name, len(todo), args)
        began = time.perf_counter()

        def counted(n: int, tally: ClipTally = tally, bar: Any = bar) -> None:
            tally.keyed += n  # the frames of an engine call are written whole even if a later one fails
            bar.update(n)

        try:
            if todo:
                begin_clip(clip, opts, todo)
                result = key_clip(engine, clip, opts, frames=todo, on_frame=counted)
                stages.merge(result.stages)
            movie = finish_clip(clip, opts)
        except KeyboardInterrupt:
            bar.close()
            keyed = sum(t.keyed for t in tallies)
            print(
                f"{PROG}: interrupted after {keyed} frame(s); every written file is whole. "
                "Rerun the same command to finish the rest.",
                file=sys.stderr,
            )
            return 130
        except (CorridorKeyError, OSError) as exc:
            errors.append(exc)  # reported under the progress bars, once they are closed
            tally.failed, movie = True, None
        finally:
            bar.close()
            tally.seconds = time.perf_counter() - began
        lines.append(clip_line(tally, selection, _movie_note(clip, opts, movie, tally.failed)))
    seconds = time.perf_counter() - start
    for exc in errors:
        _report(args, str(exc), exc)
    failed += len(errors)
    if not args.quiet:
        for line in lines:
            print(line)
        print(total_line(tallies, seconds, load_s, failed))
        print(engine.describe())
        if args.verbose:
            print(stages.line())
        for clip in clips:
            folders = " ".join(f"{k}/" for k in _output_folders(opts.outputs))
            print(f"outputs in {clip.out_dir}/: {folders}")
    return 2 if usage else 1 if failed else 0


def _say_nothing_to_do(args: argparse.Namespace, clips: Sequence[Any], opts: Any, movies: list[Path]) -> None:
    """``nothing to do: all 120 frames of 1 clip(s) are done (--overwrite redoes them)``."""
    from .clips.frameranges import select_frames

    if args.quiet:
        return
    frames = sum(len(c) for c in clips)
    chosen = sum(len(select_frames(c.input, opts.frames)) for c in clips)
    which = f"{frames}" if chosen == frames else f"{chosen} selected"  # the others: outside it
    made = f"; {len(movies)} {movies[0].name} written" if movies else ""
    done = f"all {which} frames of {len(clips)} clip(s) are done (--overwrite redoes them)"
    print(f"nothing to do: {done}{made}")


def _movie_note(clip: Any, opts: Any, movie: Path | None, failed: bool) -> str | None:
    """What became of ``Comp.mp4`` (with ``--comp-video``): written, up to date, or waiting."""
    if movie is not None:
        return f"{movie.name} written"
    if not opts.comp_video or failed:
        return None
    return "Comp.mp4 up to date" if (clip.out_dir / "Comp.mp4").is_file() else "Comp.mp4 waits for the rest"


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
        with interrupt_on_sigterm():  # SIGTERM stops a run as Ctrl-C does: every written file whole
            return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:  # as argparse does for a bad option: status 2
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":  # `python -m corridorkey_engine.cli`: last, once every function above exists
    sys.exit(main())
