"""The ``ckpt-formats`` commands: each takes the parsed arguments, prints its result, returns the status.

The parser and ``main`` are in :mod:`ckpt_formats.cli`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._terminal import aligned, echo, echo_json
from .errors import CheckpointError
from .registry import get_registry

if TYPE_CHECKING:
    from .tensors import TensorInfo

CHOICE_ADVICE = "--select NAME or --exclude GLOB"
"""What the ambiguity error tells a user of this command (its own flags)."""


def _emit(args: argparse.Namespace, data: dict[str, Any], text: Callable[[], list[str]]) -> int:
    """Print ``data`` as JSON under ``--json``, else the human lines ``text()`` returns."""
    if args.json:
        echo_json(data)
    else:
        for line in text():
            echo(line)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = get_registry()
    allowed = {f.name for f in registry.formats(safe_only=args.safe_only)}
    rows: list[dict[str, Any]] = [
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

    def text() -> list[str]:
        lines = [f"{'FORMAT':<22} {'PRIO':>5}  {'CODE':<4} {'STATE':<8} {'PLUGIN (DISTRIBUTION)':<34} GLOBS"]
        for r in rows:
            code = "yes" if r["executes_code"] else "no"
            state = "enabled" if r["enabled"] else "disabled"
            origin = f"{r['plugin']} ({r['distribution'] or 'runtime'})"
            globs = " ".join(r["globs"]) + "".join(f" !{g}" for g in r["exclude_globs"])
            lines.append(f"{r['name']:<22} {r['priority']:>5}  {code:<4} {state:<8} {origin:<34} {globs}")
        lines += [f"BROKEN plugin {b['name']} ({b['distribution'] or '?'}): {b['error']}" for b in broken]
        return lines

    return _emit(args, {"formats": rows, "broken_plugins": broken}, text)


def cmd_resolve(args: argparse.Namespace) -> int:
    registry = get_registry()
    options = {
        "formats": args.format or None,
        "exclude": args.exclude,
        "select": args.select,
        "safe_only": args.safe_only,
    }
    found = registry.discover(args.directory, **options)
    lines = []
    per_format = {}
    for fmt in found.formats:
        names = [c.path.name for c in found.candidates.get(fmt.name, [])]
        per_format[fmt.name] = names
        lines.append(f"  {fmt.name:<22} priority {fmt.priority:>4}: {', '.join(names) or '-'}")
    data: dict[str, Any] = {"directory": str(args.directory), "candidates": per_format}
    if args.load:
        resolved = registry.resolve(args.directory, device=args.device, advice=CHOICE_ADVICE, **options)
        data.update(
            winner=resolved.path.name,
            format=resolved.format.name,
            files=[p.name for p in resolved.paths],
            entries=len(resolved.state_dict),
            device=args.device,
        )
        lines.append(
            f"loaded {resolved.path.name} ({resolved.format.name}): {len(resolved.state_dict)} entries "
            f"on {args.device}"
        )
        return _emit(args, data, lambda: lines)
    fmt, candidate, shadowed = found.choose(args.select, advice=CHOICE_ADVICE)
    files = [p.name for p in candidate.paths]
    data.update(
        winner=candidate.path.name,
        format=fmt.name,
        files=files,
        shadowed=[{"file": c.path.name, "format": c.format} for c in shadowed],
    )
    lines.append(
        f"winner: {candidate.path.name} ({fmt.name}, highest priority with a candidate) [{', '.join(files)}]"
    )
    if shadowed:
        lines.append(f"shadowed: {', '.join(f'{c.path.name} ({c.format})' for c in shadowed)}")
    return _emit(args, data, lambda: lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.hub is not None:
        from .hub import inspect_remote

        if args.file is not None:
            raise CheckpointError("inspect: give either FILE or --hub REPO_ID, not both")
        try:
            info = inspect_remote(args.hub, filename=args.filename, revision=args.revision)
        except ValueError as exc:  # a bad repository id or file name
            raise CheckpointError(f"{args.hub}: {exc}") from exc
    else:
        from ._inspection import inspect_checkpoint

        if args.file is None:
            raise CheckpointError("inspect: give a FILE, or --hub REPO_ID for a checkpoint on the Hub")
        if args.filename is not None or args.revision is not None:
            raise CheckpointError("inspect: --filename and --revision only apply with --hub REPO_ID")
        info = inspect_checkpoint(args.file, safe_only=args.safe_only, device=args.device)
    if args.tensors:
        info = info.only(args.tensors)
    data = info.to_dict()
    if args.summary:
        del data["tensor_list"]

    def text() -> list[str]:
        matching = ""
        if info.selected_from is not None:
            matching = f" of {info.selected_from}, matching {' or '.join(info.tensor_globs or [])}"
        lines = [
            f"file:        {info.path}",
            f"format:      {info.format}{' (can execute code)' if info.executes_code else ''}",
            f"tensors:     {info.tensors}{matching}",
            f"parameters:  {info.parameters:,}",
            f"bytes:       {info.bytes:,}",
            f"dtypes:      {', '.join(f'{k} x{v}' for k, v in info.dtypes.items())}",
        ]
        if info.non_tensor_entries:
            lines.append(f"non-tensor:  {info.non_tensor_entries} entries")
        for key, value in sorted(info.metadata.items()):
            lines.append(f"metadata:    {key} = {value if len(value) <= 200 else value[:200] + '…'}")
        if not args.summary and info.tensor_list:
            lines += ["", *tensor_table(info.tensor_list)]
        return lines

    return _emit(args, data, text)


def tensor_table(infos: Sequence[TensorInfo]) -> list[str]:
    """NAME, DTYPE, SHAPE, BYTES (and FILE when the tensors are spread over several files), aligned."""
    files = any(t.file for t in infos)
    rows: list[list[object]] = [["TENSOR", "DTYPE", "SHAPE", "BYTES", *(["FILE"] if files else [])]]
    for t in infos:
        file = [t.file or ""] if files else []
        rows.append([t.name, t.dtype, shape_text(t.shape), f"{t.bytes:,}", *file])
    return aligned(rows, right={3})


def shape_text(shape: Sequence[int]) -> str:
    """``[4, 3]``; ``[]`` for a scalar."""
    return f"[{', '.join(map(str, shape))}]"


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert, parse_size

    shard_size = parse_size(args.max_shard_size) if args.max_shard_size is not None else None
    report = convert(
        args.source,
        args.output,
        force=args.force,
        safe_only=args.safe_only,
        dtype=args.dtype,
        max_shard_size=shard_size,
    )

    def text() -> list[str]:
        cast = f", cast to {report.dtype}" if report.dtype else ""
        files = f" ({len(report.files)} files)" if len(report.files) > 1 else ""
        lines = [
            f"wrote {report.output}{files} as {report.target_format} from {report.source.name} "
            f"({report.source_format}): {report.tensors} tensors, {report.bytes:,} bytes{cast}, "
            "verified bit for bit"
        ]
        if report.skipped:
            lines.append(f"skipped non-tensor entries: {', '.join(report.skipped)}")
        if report.unshared:
            lines.append(f"copied tensors that shared storage: {', '.join(report.unshared)}")
        return lines

    return _emit(args, report.to_dict(), text)


def cmd_fetch(args: argparse.Namespace) -> int:
    from .hub import HubSource, fetch, present

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
            stall_timeout=args.stall_timeout,
            deadline=args.deadline,
        )
    except ValueError as exc:
        raise CheckpointError(f"{args.repo_id}: {exc}") from exc
    logging.getLogger("ckpt_formats.hub").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    registry = get_registry()
    formats = registry.formats(safe_only=args.safe_only)
    existing = None if args.force else present(args.directory, formats)
    placed = existing or fetch(source, args.directory, formats, force=args.force)
    fmt = registry.format_for_file(placed[0])
    data = {"files": [str(p) for p in placed], "format": fmt.name, "downloaded": existing is None}
    if existing:
        return _emit(
            args,
            data,
            lambda: [
                f"{placed[0]} ({fmt.name}) is already there: nothing downloaded (--force fetches anyway)",
                *map(str, placed[1:]),
            ],
        )
    return _emit(args, data, lambda: [f"{placed[0]} ({fmt.name})", *map(str, placed[1:])])


def cmd_diff(args: argparse.Namespace) -> int:
    from .diff import KINDS, diff_checkpoints, format_number

    report = diff_checkpoints(
        args.a,
        args.b,
        atol=args.atol,
        rtol=args.rtol,
        ignore=args.ignore,
        strip_prefix=args.strip_prefix,
        safe_only=args.safe_only,
    )
    labels = {"only_in_a": "only in A", "only_in_b": "only in B", "shape": "shape differs",
              "dtype": "dtype differs", "values": "values differ"}  # fmt: skip

    def text() -> list[str]:
        lines = [f"{label}: {s.file} ({s.format}, {s.tensors} tensors)" for label, s in (("A", report.a),
                 ("B", report.b))]  # fmt: skip
        rows: list[list[object]] = [["", "TENSOR", "A", "B", "DIFFERING", "MAX ABS", "MAX REL"]]
        for d in report.differences:
            differing = "" if d.count is None or d.a is None else f"{d.count:,} of {d.a.numel:,}"
            rows.append([labels[d.kind], d.name, _typed(d.a), _typed(d.b), differing,
                         "" if d.max_abs is None else format_number(d.max_abs),
                         "" if d.max_rel is None else format_number(d.max_rel)])  # fmt: skip
        if report.differences:
            lines += aligned(rows, right={4, 5, 6})
        tolerance = f"atol={args.atol:g}, rtol={args.rtol:g}" if args.atol or args.rtol else "bit for bit"
        counts = ", ".join(f"{report.count(k)} {labels[k]}" for k in KINDS if report.count(k))
        verdict = "equal" if report.equal else f"different: {counts}"
        ignored = f"; {len(report.ignored)} ignored" if report.ignored else ""
        lines.append(f"{verdict} ({report.equal_tensors} equal tensors, {tolerance}{ignored})")
        return lines

    _emit(args, report.to_dict(), text)
    return 0 if report.equal else 1


def _typed(info: TensorInfo | None) -> str:
    return "-" if info is None else f"{info.dtype} {shape_text(info.shape)}"
