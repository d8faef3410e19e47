"""Start-up cost of the registry: `import ckpt_formats` and `ckpt-formats list`, against a bare interpreter.

Each command runs N times in fresh interpreters, interleaved, in this one invocation; the script prints the
median wall time of each and its ratio to `python -c pass` (the floor any Python CLI pays), plus the same
for `import torch` as a reference for what the registry avoids importing.

    .venv/bin/python benchmarks/bench_registry.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "import ckpt_formats": [sys.executable, "-c", "import ckpt_formats"],
    "import + load entry points": [
        sys.executable,
        "-c",
        "import ckpt_formats; ckpt_formats.get_registry().all_formats()",
    ],
    "ckpt-formats list": [str(Path(sys.executable).with_name("ckpt-formats")), "list"],
    "import torch (reference)": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{'command':<30} {'median ms':>10} {'x baseline':>11} {'over baseline ms':>17}")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:<30} {med * 1000:>10.1f} {med / base:>11.2f} {(med - base) * 1000:>17.1f}")


if __name__ == "__main__":
    main()
