"""The clip checks every ``corridorkey infer`` runner makes before keying (the local one in :mod:`.cli`, the
Ray one in :mod:`.cli_ray`), and the one-line report of what failed. Below both of them: it imports neither.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_args import PROG
from .errors import CorridorKeyError, UsageError

log = logging.getLogger("corridorkey_engine.cli")


def one_line(exc: BaseException | str) -> str:
    """An error (or its text) on one line: its whitespace runs, newlines included, become one space."""
    return " ".join(str(exc).split()) or type(exc).__name__


def report(args: argparse.Namespace, message: str, exc: BaseException | None = None) -> None:
    """One error line on stderr (the traceback first with --verbose); the run goes on."""
    if args.verbose and exc is not None:
        log.error("%s", message, exc_info=exc)
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)


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
            report(args, item.error)
            failed += 1
            continue
        try:
            clips.append(prepare_clip(item.path, opts, output))
        except (CorridorKeyError, OSError) as exc:
            report(args, str(exc), exc)
            if usage is not None and isinstance(exc, UsageError):
                usage.append(exc)
            else:
                failed += 1
    return clips, failed
