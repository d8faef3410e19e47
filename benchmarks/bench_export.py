"""``corridorkey export``: export time and file size per target and precision, and the time per frame of
each file in its own runtime beside the engine's ``process_frame`` in the same run (CPU), with the ratio.

    .venv/bin/python benchmarks/bench_export.py [--img-size 512] [--frame 512] [--runs 5]

Default: the bundled demo model at img_size 512 and a 512×512 frame. Times are medians of ``--runs`` after
one warm-up; the engine's figure is ``process_frame`` without despeckle or comp (what the graph does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def median_seconds(call, runs: int) -> float:
    for _ in range(3):  # warm-up (TorchScript's profiling executor optimises after its second run)
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--img-size", type=int, default=512)
    parser.add_argument("--frame", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="engine and tracing device (files run on the CPU)")
    args = parser.parse_args(argv)

    from corridorkey_engine.demo.clip import bundled_checkpoint_dir
    from corridorkey_engine.engine import CorridorKeyEngine
    from corridorkey_engine.export.targets import SUFFIXES, ExportOptions, export_keyer
    from corridorkey_engine.export.verify import generated_frame, load_runtime

    folder = args.checkpoint_dir or bundled_checkpoint_dir()
    engine = CorridorKeyEngine(
        folder, device=args.device, precision="float32", img_size=args.img_size, match_screen=False
    )
    image, hint = generated_frame(args.frame, args.frame)
    frame = np.ascontiguousarray(np.concatenate([image, hint[..., None]], -1).transpose(2, 0, 1)[None])
    engine_s = median_seconds(
        lambda: engine.process_frame(image, hint, auto_despeckle=False, generate_comp=False), args.runs
    )
    print(f"model img_size {engine.img_size}, frame {args.frame}x{args.frame}, device {engine.device}")
    print(f"{'target':18} {'precision':9} {'export s':>8} {'file MB':>8} {'ms/frame':>9} {'x engine':>8}")
    print(f"{'engine':18} {'float32':9} {'':>8} {'':>8} {engine_s * 1e3:9.1f} {1.0:8.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for target in ("onnx", "torchscript", "exported-program"):
            for precision in ("float32", "float16"):
                path = Path(tmp) / f"keyer-{precision}{SUFFIXES[target]}"
                result = export_keyer(engine, path, ExportOptions(target, precision))
                run = load_runtime(path, target)
                seconds = median_seconds(lambda run=run: run(frame), args.runs)
                size = path.stat().st_size / 1e6
                print(
                    f"{target:18} {precision:9} {result.seconds:8.1f} {size:8.1f} {seconds * 1e3:9.1f} "
                    f"{seconds / engine_s:8.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
