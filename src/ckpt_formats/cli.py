"""``ckpt-formats``: list formats, show which file a directory resolves to, inspect and convert files."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._terminal import configure_logging, echo, echo_json
from .errors import CheckpointError
from .registry import get_registry

CHOICE_ADVICE = "--select NAME or --exclude GLOB"
"""What the ambiguity error tells a user of this command (its own flags)."""

logger = logging.getLogger("ckpt_formats.cli")


def _cmd_list(args: argparse.Namespace) -> int:
    registry = get_registry()
    allowed = {f.name for f in registry.formats(safe_only=args.safe_only)}
    rows = [
        {
            "name": f.name,
            "priority": f.priority,
            "globs": list(f.globs),
            "exclude_globs": list(f.exclude_globs),
            "executes_code": f.executes_code,
            "enabled": f.name in allowed,
            "plugin": f.plugin,
            "distribution": f.distribution,
            "can_save": f.save is not None,
            "description": f.description,
        }
        for f in registry.all_formats()
    ]
    broken = [b.__dict__ for b in registry.broken_plugins]
    if args.json:
        echo_json({"formats": rows, "broken_plugins": broken})
        return 0
    echo(f"{'FORMAT':<22} {'PRIO':>5}  {'CODE':<4} {'STATE':<8} {'PLUGIN (DISTRIBUTION)':<34} GLOBS")
    for r in rows:
        code = "yes" if r["executes_code"] else "no"
        state = "enabled" if r["enabled"] else "disabled"
        origin = f"{r['plugin']} ({r['distribution'] or 'runtime'})"
        globs = " ".join(r["globs"]) + "".join(f" !{g}" for g in r["exclude_globs"])
        echo(f"{r['name']:<22} {r['priority']:>5}  {code:<4} {state:<8} {origin:<34} {globs}")
    for b in broken:
        echo(f"BROKEN plugin {b['name']} ({b['distribution'] or '?'}): {b['error']}")
    return 0


def _cmd_resolve(args: argparse.Namespace) -> int:
    registry = get_registry()
    options = {
        "formats": args.format or None,
        "exclude": args.exclude,
        "select": args.select,
        "safe_only": args.safe_only,
    }
    found = registry.discover(args.directory, **options)
    for fmt in found.formats:
        names = ", ".join(c.path.name for c in found.candidates.get(fmt.name, [])) or "-"
        echo(f"  {fmt.name:<22} priority {fmt.priority:>4}: {names}")
    if args.load:
        resolved = registry.resolve(args.directory, device=args.device, advice=CHOICE_ADVICE, **options)
        echo(
            f"loaded {resolved.path.name} ({resolved.format.name}): {len(resolved.state_dict)} entries "
            f"on {args.device}"
        )
        return 0
    fmt, candidate, shadowed = found.choose(args.select, advice=CHOICE_ADVICE)
    files = ", ".join(p.name for p in candidate.paths)
    echo(f"winner: {candidate.path.name} ({fmt.name}, highest priority with a candidate) [{files}]")
    if shadowed:
        echo(f"shadowed: {', '.join(f'{c.path.name} ({c.format})' for c in shadowed)}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ._inspection import inspect_checkpoint

    info = inspect_checkpoint(args.file, safe_only=args.safe_only)
    if args.json:
        echo_json(info.to_dict())
        return 0
    echo(f"file:        {info.path}")
    echo(f"format:      {info.format}{' (can execute code)' if info.executes_code else ''}")
    echo(f"tensors:     {info.tensors}")
    echo(f"parameters:  {info.parameters:,}")
    echo(f"bytes:       {info.bytes:,}")
    echo(f"dtypes:      {', '.join(f'{k} x{v}' for k, v in info.dtypes.items())}")
    if info.non_tensor_entries:
        echo(f"non-tensor:  {info.non_tensor_entries} entries")
    for key, value in sorted(info.metadata.items()):
        echo(f"metadata:    {key} = {value if len(value) <= 200 else value[:200] + '…'}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    report = convert(args.source, args.output, force=args.force, safe_only=args.safe_only)
    echo(
        f"wrote {report.output} from {report.source.name} ({report.source_format}): "
        f"{report.tensors} tensors, {report.bytes:,} bytes, verified bit for bit"
    )
    if report.skipped:
        echo(f"skipped non-tensor entries: {', '.join(report.skipped)}")
    if report.unshared:
        echo(f"copied tensors that shared storage: {', '.join(report.unshared)}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .hub import HubSource, fetch

    filenames: dict[str, list[str]] = {}
    for item in args.filename:
        fmt, sep, name = item.partition("=")
        if not sep or not fmt or not name:
            raise CheckpointError(
                f"--filename {item!r}: expected FORMAT=REMOTE_NAME, e.g. safetensors=model.safetensors"
            )
        filenames.setdefault(fmt, []).append(name)
    try:
        source = HubSource(
            args.repo_id,
            revision=args.revision,
            filenames=filenames or None,
            progress=False if args.no_progress else None,
        )
    except ValueError as exc:
        raise CheckpointError(f"{args.repo_id}: {exc}") from exc
    logging.getLogger("ckpt_formats.hub").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    registry = get_registry()
    placed = fetch(source, args.directory, registry.formats(safe_only=args.safe_only))
    fmt = registry.format_for_file(placed[0])
    echo(f"{placed[0]} ({fmt.name})")
    for path in placed[1:]:
        echo(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckpt-formats",
        description="Discover, inspect and convert checkpoints through pluggable formats.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
    parser.add_argument(
        "--safe-only",
        action="store_true",
        default=None,
        help="refuse every format whose loading can execute code (also CKPT_FORMATS_SAFE_ONLY=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered formats, their priority and plugin, and broken plugins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("resolve", help="which checkpoint in DIR wins, and why")
    p.add_argument("directory")
    p.add_argument("--load", action="store_true", help="also load it")
    p.add_argument("--device", default="cpu")
    p.add_argument("--format", action="append", help="only consider this format (repeatable)")
    p.add_argument("--exclude", action="append", default=[], help="ignore files matching this glob")
    p.add_argument("--select", help="choose among several candidates by name or glob")
    p.set_defaults(func=_cmd_resolve)

    p = sub.add_parser("inspect", help="format, tensors, parameters, dtypes, bytes and metadata of FILE")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("convert", help="convert SRC (any loadable format) to DST.safetensors")
    p.add_argument("source")
    p.add_argument("output")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "fetch",
        help="download the best available format of REPO_ID from the Hugging Face Hub into DIR",
        description="Asks the Hub for each format's file names, highest priority first; falls back to the "
        "next only when a file is absent from the repository, never on a network error. Uses HF_ENDPOINT, "
        "HF_HOME, HF_TOKEN and HF_HUB_OFFLINE like every huggingface_hub client.",
    )
    p.add_argument("repo_id")
    p.add_argument("directory")
    p.add_argument("--revision", help="branch, tag or commit hash (a commit hash pins it); default: main")
    p.add_argument(
        "--filename",
        action="append",
        default=[],
        metavar="FMT=NAME",
        help="remote file name for a format, replacing its default names (repeatable); "
        "when given, only the formats named are asked for",
    )
    p.add_argument("--safe-only", action="store_true", default=argparse.SUPPRESS, help="never fetch pickle")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: only on a terminal)")
    p.set_defaults(func=_cmd_fetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.func(args)
    except (CheckpointError, OSError) as exc:
        if args.verbose:
            logger.exception("failed")
        echo(f"ckpt-formats: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        echo("ckpt-formats: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
