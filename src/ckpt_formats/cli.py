"""``ckpt-formats``: list formats, show which file a directory resolves to, inspect, convert, fetch, diff.

Global options (``--verbose``, ``--safe-only``, ``--json``, ``--device``) are accepted before or after the
subcommand. Every command prints one line of error and exits 1 on failure; a closed pipe (``| head``) ends
quietly with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import _commands as commands
from ._terminal import configure_logging, echo
from .atomic import interrupt_on_sigterm
from .errors import CheckpointError

logger = logging.getLogger("ckpt_formats.cli")

PROG = "ckpt-formats"
GLOBAL_DEFAULTS: dict[str, Any] = {"verbose": False, "safe_only": None, "json": False, "device": "cpu"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ckpt-formats")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _global_options() -> argparse.ArgumentParser:
    """The options every command accepts, before or after its name (defaults filled in by :func:`main`)."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("global options (before or after the command)")
    s = argparse.SUPPRESS  # unset here: a value given before the command is not overwritten after it
    g.add_argument("-v", "--verbose", action="store_true", default=s, help="log details and show tracebacks")
    g.add_argument(
        "--safe-only",
        action="store_true",
        default=s,
        help="refuse every format whose loading can execute code (also CKPT_FORMATS_SAFE_ONLY=1)",
    )
    g.add_argument("--json", action="store_true", default=s, help="print the result as JSON")
    g.add_argument(
        "--device",
        default=s,
        metavar="DEV",
        help="where `resolve --load` and `inspect` put the tensors: cpu, cuda, cuda:1, mps (default: cpu)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``ckpt-formats`` argument parser (every argument has a help text)."""
    from .convert import DTYPES

    common = _global_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Discover, inspect, convert and fetch checkpoints through pluggable formats.",
        parents=[common],
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=kwargs.pop("description", help), parents=[common], **kwargs
        )

    p = command("list", "registered formats, their priority and plugin, and broken plugins")
    p.set_defaults(func=commands.cmd_list)

    p = command("resolve", "which checkpoint in DIR wins, and why")
    p.add_argument("directory", metavar="DIR", help="the folder to search (not recursive)")
    p.add_argument("--load", action="store_true", help="also load it (onto --device)")
    p.add_argument("--format", action="append", metavar="NAME", help="only consider this format (repeatable)")
    p.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="ignore files matching this glob"
    )
    p.add_argument("--select", metavar="NAME", help="choose among several candidates by name or glob")
    p.set_defaults(func=commands.cmd_resolve)

    p = command(
        "inspect",
        "every tensor (name, dtype, shape, bytes, file) and a summary of FILE (or of a Hub checkpoint)",
        description="List the tensors of a local checkpoint file, sorted by name, with its format, counts, "
        "dtypes and metadata; or with --hub those of a safetensors checkpoint on the Hugging Face Hub, from "
        "its headers alone (HTTP range requests: the tensor data is never downloaded). A safetensors file "
        "(single or sharded) is listed from its headers; other formats are loaded (onto --device).",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="the checkpoint file (omit with --hub)")
    p.add_argument("--hub", metavar="REPO_ID", help="inspect this Hub repository's safetensors checkpoint")
    p.add_argument(
        "--filename",
        metavar="NAME",
        help="with --hub: the remote file (a .safetensors file or a sharded index; default: the sharded "
        "index, else model.safetensors)",
    )
    p.add_argument("--revision", metavar="REV", help="with --hub: branch, tag or commit hash (default: main)")
    p.add_argument(
        "--tensors",
        action="append",
        metavar="GLOB",
        help="only the tensors whose name matches GLOB (e.g. 'encoder.*'; repeatable): listed and counted",
    )
    p.add_argument(
        "--summary", action="store_true", help="only the summary (counts, dtypes, metadata), no tensor list"
    )
    p.set_defaults(func=commands.cmd_inspect)

    p = command(
        "convert",
        "convert SRC (any loadable format) to DST, in the format DST's name says",
        description="Load SRC through its format, clean it (wrappers, prefixes, non-tensors) and write DST "
        "in the registered format with a save whose globs match DST's name (safetensors, npz, ...). The "
        "result is reloaded and checked bit for bit before it is placed; nothing is left on failure.",
    )
    p.add_argument("source", metavar="SRC", help="the checkpoint file to read")
    p.add_argument("output", metavar="DST", help="the file to write; its name picks the target format")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--dtype", choices=DTYPES, help="cast floating-point tensors to this dtype")
    p.add_argument(
        "--max-shard-size",
        metavar="SIZE",
        help="write a sharded safetensors set (DST must end in .safetensors): shards of at most SIZE "
        "(e.g. 2GB, 500MB, 1GiB) named like DIR/model-00001-of-00003.safetensors, plus DST.index.json",
    )
    p.set_defaults(func=commands.cmd_convert)

    p = command(
        "fetch",
        "download the best available format of REPO_ID from the Hugging Face Hub into DIR",
        description="Asks the Hub for each format's file names, highest priority first; falls back to the "
        "next only when a file is absent from the repository, never on a network error. A DIR that already "
        "holds a checkpoint is left as it is (--force fetches anyway). Uses HF_ENDPOINT, HF_HOME, HF_TOKEN "
        "and HF_HUB_OFFLINE like every huggingface_hub client.",
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="owner/name of the model repository")
    p.add_argument("directory", metavar="DIR", help="where the files land (created if needed)")
    p.add_argument("--revision", help="branch, tag or commit hash (a commit hash pins it); default: main")
    p.add_argument(
        "--filename",
        action="append",
        default=[],
        metavar="FMT=NAME",
        help="remote file name for a format, replacing its default names (repeatable); "
        "when given, only the formats named are asked for",
    )
    p.add_argument("--force", action="store_true", help="fetch even when DIR already holds a checkpoint")
    p.add_argument(
        "--stall-timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="give up when a download receives no bytes for S seconds (default: 30)",
    )
    p.add_argument(
        "--deadline",
        type=_positive_float,
        metavar="S",
        help="give up when a download takes longer than S seconds overall (default: no limit)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: only on a terminal)")
    p.set_defaults(func=commands.cmd_fetch)

    p = command(
        "diff",
        "compare two checkpoints tensor by tensor (exit 0: equal, 1: different, 2: error)",
        description="Compare A and B (files, sharded sets or folders, in any loadable formats) tensor by "
        "tensor: tensors only in A or only in B, shapes or dtypes that differ, values that differ (the "
        "largest absolute and relative difference, and how many elements). Equal means bit for bit unless "
        "--atol/--rtol are given. One tensor of each side is read at a time (memory maps where the format "
        "has them). Exit status: 0 equal, 1 different, 2 error.",
    )
    p.add_argument("a", metavar="A", help="a checkpoint file, a sharded set's index, or a folder")
    p.add_argument("b", metavar="B", help="the checkpoint to compare it with (any loadable format)")
    p.add_argument(
        "--atol",
        type=_tolerance,
        default=0.0,
        metavar="X",
        help="absolute tolerance: elements differ when |a - b| > atol + rtol * |b| (default 0: bit for bit)",
    )
    p.add_argument("--rtol", type=_tolerance, default=0.0, metavar="X", help="relative tolerance (default 0)")
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out the tensors whose name matches GLOB (repeatable)",
    )
    p.add_argument(
        "--strip-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="remove this leading prefix from the tensor names of both sides before matching them, as the "
        "engine's key cleanup does: _orig_mod. (torch.compile), module. (DataParallel); repeatable",
    )
    p.set_defaults(func=commands.cmd_diff, error_status=2)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; global options left out get their defaults.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The namespace, with ``verbose``, ``safe_only``, ``json`` and ``device`` always set.
    """
    args = build_parser().parse_args(argv)
    for name, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    return args


def _quiet_stdout() -> None:
    """The reader of our stdout went away (``| head``): send what is left to /dev/null, exit quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ckpt-formats``.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success (also when stdout is a closed pipe), 1 on an error (``diff``: 1 when
        the checkpoints differ, 2 on an error), 2 on a usage error, 130 on Ctrl-C.
    """
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        with interrupt_on_sigterm():  # SIGTERM cleans up as Ctrl-C does
            status: int = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
        return status
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except (CheckpointError, OSError) as exc:
        if args.verbose:
            logger.exception("failed")
        echo(f"{PROG}: error: {exc}", file=sys.stderr)
        return int(getattr(args, "error_status", 1))  # diff: 1 means "different", so an error is 2
    except KeyboardInterrupt:
        echo(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
