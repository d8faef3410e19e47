"""``corridorkey preview``: the command's set-up, and the two functions that make the preview's settings
do exactly what ``corridorkey infer`` does: an infer command line -> its ``KeyOptions`` and its engine
(the same parser and the same functions as ``infer``). The web framework is imported only when the command
runs (:mod:`corridorkey_engine.preview.server`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Any

from .cli_args import PROG, PUBLISHED, build_parser
from .errors import CliError

log = logging.getLogger("corridorkey_engine.cli")


def run_preview(args: argparse.Namespace) -> int:
    """Check the clips, load the engine, print the URL and serve until Ctrl-C; 1 when no clip is usable."""
    from .cli_clips import report as _report
    from .device import resolve_device, resolve_dtype
    from .preview.session import PreviewSession
    from .preview.settings import Settings

    try:
        from .preview.server import PreviewServer
    except ImportError as exc:
        raise CliError(
            f"corridorkey preview needs the ui extra ({exc.name} is missing): pip install 'ckpt-formats[ui]'"
        ) from exc

    precision = None
    if args.precision is not None:
        precision = str(resolve_dtype(resolve_device(args.device), args.precision)).removeprefix("torch.")
    base = Settings(screen_color=args.screen_color, img_size=args.img_size, precision=precision)
    session = PreviewSession(args.clips, base, preview_engine_args(args), infer_options, infer_engine)
    for entry in session.clips.values():
        if entry.error is not None:
            _report(args, entry.error)
    usable = [e for e in session.clips.values() if e.error is None]
    if not usable:
        return 1
    resolve_device(args.device)  # fails fast when e.g. CUDA is missing
    engine, _ = session.engine(usable[0])  # loaded once, before the URL: a checkpoint error is one line here
    log.info("engine ready: %s", engine.describe())
    server = PreviewServer(session, args.host, args.port)
    if args.host != "127.0.0.1":
        print(
            f"{PROG}: warning: listening on {args.host}, not 127.0.0.1: where other machines reach that "
            "address, anyone with the URL (its token) can view the clips and render into their folders",
            file=sys.stderr,
        )
    print(f"corridorkey preview of {len(session.clips)} clip(s): {server.url}", flush=True)
    if not args.quiet:
        print("press Ctrl-C to stop", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()  # until Ctrl-C: uvicorn stops serving, then passes the interrupt on
    if not args.quiet:
        print("preview stopped")
    return 0


def preview_engine_args(args: argparse.Namespace) -> list[str]:
    """The ``infer`` flags for the checkpoint options ``corridorkey preview`` was given (the model settings
    the page changes, screen colour, image size and precision, are the page's)."""
    out: list[str] = []
    if args.checkpoint_dir is not None:
        out += ["--checkpoint-dir", str(args.checkpoint_dir.absolute())]
    if args.select is not None:
        out += ["--select", args.select]
    for glob in args.exclude:
        out += ["--exclude", glob]
    if args.hub is None:
        out.append("--no-hub")
    elif args.hub != PUBLISHED:
        out += ["--hub", args.hub]
    if args.device is not None:
        out += ["--device", args.device]
    if args.compile:
        out += ["--compile"] if args.compile is True else ["--compile-backend", args.compile]
    if args.safe_only:
        out.append("--safe-only")
    return out


def parse_infer(argv: list[str]) -> argparse.Namespace:
    """``corridorkey ARGV``'s parsed arguments (the preview's settings are checked before they become
    one, so the parse succeeds)."""
    return build_parser().parse_args(argv)


def infer_options(argv: list[str]) -> Any:
    """The ``KeyOptions`` ``corridorkey ARGV`` (an infer command line) keys with."""
    from .cli_values import key_options

    return key_options(parse_infer(argv))


def infer_engine(argv: list[str]) -> Any:
    """The engine ``corridorkey ARGV`` (an infer command line) loads."""
    from .cli_values import checkpoint_source
    from .cli_values import load_engine_from as _load_engine

    args = parse_infer(argv)
    return _load_engine(args, checkpoint_source(args))
