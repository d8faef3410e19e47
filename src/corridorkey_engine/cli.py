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
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ckpt_formats import CheckpointDownloadError, CheckpointError, CheckpointNotFoundError
from ckpt_formats.atomic import interrupt_on_sigterm

from .cli_args import CHOICE_ADVICE, PROG, PUBLISHED, build_parser, default_io_threads
from .errors import CliError, CorridorKeyError, UsageError
from .model.source import PUBLISHED_MODELS, CheckpointSource

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


def _report(args: argparse.Namespace, message: str, exc: BaseException | None = None) -> None:
    """One error line on stderr (the traceback first with --verbose); the run goes on."""
    if args.verbose and exc is not None:
        log.error("%s", message, exc_info=exc)
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)


def _load_engine(args: argparse.Namespace, source: CheckpointSource) -> Any:
    """The engine, or a one-line error that says where a checkpoint can come from."""
    from .engine import load_engine

    try:
        return load_engine(
            source, device=args.device, precision=args.precision, img_size=args.img_size, compile=args.compile
        )
    except (CheckpointNotFoundError, CheckpointDownloadError) as exc:
        raise CliError(_checkpoint_advice(str(exc), source)) from exc


def _checkpoint_advice(message: str, source: CheckpointSource) -> str:
    """The registry's message, followed by every way to get a checkpoint (no hub advice with --no-hub)."""
    from .demo.clip import bundled_checkpoint_dir

    demo = f"or try corridorkey with its bundled demo model: `corridorkey demo` ({bundled_checkpoint_dir()})"
    folder = source.directory
    if source.hub is None:
        message = message.removesuffix("; place a checkpoint there or configure a hub source")
        return f"{message}; put a checkpoint in {folder} or pass --checkpoint-dir DIR, {demo}"
    repo = getattr(source.hub, "repo_id", None) or source.hub
    return (
        f"{message.rstrip('. ')}. To key offline: fetch the weights on a connected machine with "
        f"`ckpt-formats fetch {repo} DIR` and pass --checkpoint-dir DIR (or copy it into {folder}), {demo}"
    )


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
                key_clip(engine, clip, opts, frames=todo, on_frame=counted)
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


def prepare_clips(
    args: argparse.Namespace,
    roots: Sequence[Path | Any],
    opts: Any,
    output: Path | None,
    usage: list[BaseException] | None = None,
) -> tuple[list[Any], int]:
    """Check every clip (creating nothing), reporting each bad one on a line; the good clips and how many
    failed. A clip whose failure is a usage error (``--frames`` selecting none of its frames) goes to
    ``usage`` when given, instead of the count."""
    from .clips.layout import ClipPath
    from .clips.pipeline import prepare_clip

    failed = 0
    clips = []
    for item in roots:
        item = item if isinstance(item, ClipPath) else ClipPath(Path(item))
        if item.error is not None:
            _report(args, item.error)
            failed += 1
            continue
        try:
            clips.append(prepare_clip(item.path, opts, output))
        except (CorridorKeyError, OSError) as exc:
            _report(args, str(exc), exc)
            if usage is not None and isinstance(exc, UsageError):
                usage.append(exc)
            else:
                failed += 1
    return clips, failed


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


def _output_folders(outputs: Sequence[str]) -> list[str]:
    from .clips.pipeline import OUTPUTS

    return [OUTPUTS[o].folder for o in outputs]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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


def _fields_from(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """``cls(...)`` from the parsed arguments named like its fields (``overrides`` win)."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **overrides})


def post_options(args: argparse.Namespace) -> Any:
    """The :class:`PostProcessOptions` the ``keying`` flags describe."""
    from .keying.frames import PostProcessOptions

    return _fields_from(PostProcessOptions, args)


def checkpoint_source(args: argparse.Namespace, **overrides: Any) -> CheckpointSource:
    """The :class:`CheckpointSource` the ``model and device`` flags describe, its hub checked; the
    ambiguity error names ``--select``/``--exclude``.

    Raises:
        CliError: ``--hub`` is not a valid repository id.
    """
    source = _fields_from(CheckpointSource, args, advice=CHOICE_ADVICE, **overrides)
    if source.hub == PUBLISHED:
        source = replace(source, hub=PUBLISHED_MODELS[source.screen_color].repo_id)
    try:
        return replace(source, hub=source.hub_source())
    except ValueError as exc:
        raise CliError(f"--hub {source.hub!r}: {exc}") from exc


def key_options(args: argparse.Namespace) -> Any:
    """The clip pipeline's :class:`KeyOptions` for ``corridorkey infer``."""
    from .clips.frameranges import FrameSelection
    from .clips.outputs import parse_format_spec
    from .clips.pipeline import KeyOptions

    threads = args.io_threads or default_io_threads()
    formats = parse_format_spec(args.format, args.exr_dtype) if args.format else {}
    if args.comp_video and "comp" not in args.outputs:
        raise UsageError("--comp-video is made from the comp output: add comp to --outputs")
    return _fields_from(
        KeyOptions,
        args,
        post=post_options(args),
        exr_half=args.exr_dtype == "half",
        read_threads=threads,
        write_threads=threads,
        formats={k: v for k, v in formats.items() if k in args.outputs},
        frames=FrameSelection.parse(args.frames, args.max_frames),
    )


if __name__ == "__main__":  # `python -m corridorkey_engine.cli`: last, once every function above exists
    sys.exit(main())
