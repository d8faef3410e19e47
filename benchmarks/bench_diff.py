"""Memory of ``ckpt-formats diff`` on a 1 GiB pair: at most one tensor of each side beyond the memory maps.

Writes A (1 GiB of float32 in 16 tensors of 64 MiB, as ``.safetensors`` and as a torch ``.pth``) and B (A
with one element changed in every fourth tensor), then runs, each in a fresh process whose
``/proc/PID/status`` is sampled every 2 ms until it exits:

- ``diff A.safetensors B.safetensors`` and ``diff A.pth B.safetensors`` (the command);
- the same command on a pair of tiny files (the baseline: interpreter, torch, the registry).

It prints, per run, the peak anonymous memory (``RssAnon``: what the process allocated, not the file pages
it maps) above the baseline's, in MiB and in units of the largest tensor (64 MiB), the peak total RSS (file
pages included: the maps, reclaimable) and the seconds taken.

    .venv/bin/python benchmarks/bench_diff.py            # ~1-2 minutes, 3 GiB in a temporary folder
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
TENSOR_MIB = 64


def _status(pid: int) -> dict[str, int]:
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "VmRSS"):
                    values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def measure(argv: list[str]) -> dict[str, float]:
    """Peak RssAnon and VmRSS (bytes) of a child running ``argv``, sampled every 2 ms, and its seconds."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = {"RssAnon": 0, "VmRSS": 0}
    while child.poll() is None:
        for key, value in _status(child.pid).items():
            peak[key] = max(peak[key], value)
        time.sleep(0.002)
    seconds = time.perf_counter() - start
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode not in (0, 1):
        raise SystemExit(f"{argv}: exit {child.returncode}: {err}")
    return {"anon": peak["RssAnon"], "rss": peak["VmRSS"], "seconds": seconds, "status": child.returncode}


def write_pair(folder: Path, tensors: int) -> None:
    import torch
    from safetensors.torch import save_file

    elements = TENSOR_MIB * MIB // 4
    a = {f"layers.{i}.weight": torch.full((elements,), float(i)) for i in range(tensors)}
    save_file(a, str(folder / "A.safetensors"))
    torch.save(a, folder / "A.pth")
    for i in range(0, tensors, 4):
        a[f"layers.{i}.weight"][elements // 2] += 1.0
    save_file(a, str(folder / "B.safetensors"))
    save_file({"w": torch.zeros(4)}, str(folder / "tiny-a.safetensors"))
    save_file({"w": torch.ones(4)}, str(folder / "tiny-b.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=16, help="64 MiB tensors per checkpoint (16: 1 GiB)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "ckpt_formats.cli", "diff"]
    with tempfile.TemporaryDirectory(prefix="bench-diff-") as tmp:
        folder = Path(tmp)
        write_pair(folder, args.tensors)
        for name in ("A.safetensors", "A.pth", "B.safetensors"):  # in the page cache, as a re-run finds them
            (folder / name).read_bytes()
        size = (folder / "A.safetensors").stat().st_size / MIB
        print(f"pair: {size:.0f} MiB each, {args.tensors} tensors of {TENSOR_MIB} MiB; every 4th differs")
        base = measure([*cli, str(folder / "tiny-a.safetensors"), str(folder / "tiny-b.safetensors")])
        runs = {f"diff {a} B.safetensors": [*cli, str(folder / a), str(folder / "B.safetensors")]
                for a in ("A.safetensors", "A.pth")}  # fmt: skip
        print(f"baseline (tiny pair): RssAnon {base['anon'] / MIB:.0f} MiB, {base['seconds']:.1f} s")
        for label, argv in runs.items():
            got = measure(argv)
            above = (got["anon"] - base["anon"]) / MIB
            print(
                f"{label:<34} exit {got['status']}: RssAnon +{above:.0f} MiB above baseline "
                f"({above / TENSOR_MIB:.1f}x one tensor), peak RSS {got['rss'] / MIB:.0f} MiB, "
                f"{got['seconds']:.1f} s"
            )


if __name__ == "__main__":
    main()
