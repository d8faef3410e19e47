"""``corridorkey export``: load the engine, write the file, and with ``--verify`` prove it keys alike."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .errors import CliError, ConfigError


def run_export(args: argparse.Namespace, load_engine: Callable[[], Any]) -> int:
    """Export as the parsed arguments say; 1 when ``--verify`` finds a difference over the tolerance."""
    from .export.targets import ExportOptions, export_keyer

    try:
        options = ExportOptions(
            args.target, args.export_precision, despill_strength=args.despill_strength, nuke=args.nuke
        )
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    if options.target == "onnx":
        from .export.targets import require_onnx

        require_onnx()  # before loading anything
    engine = load_engine()
    result = export_keyer(engine, args.out, options)
    if not args.quiet:
        size = result.path.stat().st_size / 1e6
        print(
            f"wrote {result.path} ({options.target}{' for Nuke' if options.nuke else ''}, "
            f"{options.precision}, {size:.1f} MB) in {result.seconds:.1f} s from "
            f"{result.metadata['corridorkey.checkpoint']}"
        )
    if not args.verify:
        return 0
    return _verify(args, engine, options, result.path)


def _verify(args: argparse.Namespace, engine: Any, options: Any, path: Any) -> int:
    from .export.verify import compare, load_runtime

    size = engine.img_size
    sizes = [(size, size), (size * 3 // 4 + 1, size + size // 4 + 3)]  # the model's, and an odd one
    run = load_runtime(path, options.target)
    differences = compare(run, engine, sizes, despill_strength=options.despill_strength, nuke=options.nuke)
    good = all(d.within(options.precision) for d in differences)
    tolerance = "mean abs <= 2e-3" if options.precision == "float16" else "max abs <= 1e-4"
    for d in differences:
        if not args.quiet or not good:
            print(f"verify {d.line()}")
    if not good:
        print(f"corridorkey: error: {path} differs from the engine by more than {tolerance}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"verified: {path} keys like the engine ({options.target} runtime, {tolerance})")
    return 0
