"""Peak memory of resolving a checkpoint, single file against sharded, safetensors and pickle: x file size.

Each case runs in a fresh interpreter that imports torch and the registry first, then resolves the folder
and reads every tensor once (so memory-mapped pages are really brought in); the script prints the growth of
the peak RSS (Linux ``VmHWM``, reset after the imports) during that step divided by the checkpoint's bytes
on disk. Sharded loading
holds one state dict, not a copy per shard: its ratio should match the single file's, about 1.0.

    .venv/bin/python benchmarks/bench_shards.py [--size-mb 256] [--shards 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys
import torch
import ckpt_formats

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

registry = ckpt_formats.get_registry()
registry.all_formats()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak RSS (VmHWM) to the current RSS: the imports' peak is not counted
before = status("VmRSS")
got = registry.resolve(sys.argv[1])
total = sum(float(t.sum()) for t in got.state_dict.values())  # touch every page
print(status("VmHWM") - before, got.format.name)
"""


def save(kind: str, tensors: dict, path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    if kind == "safetensors":
        save_file(tensors, str(path))
    else:  # DEPRECATED: remove after .pth sunset
        torch.save(tensors, path)


def write_cases(root: Path, size_mb: int, shards: int) -> dict[str, Path]:
    import torch

    n = size_mb * 1024 * 1024 // 4 // shards
    parts = [{f"layer{i}.weight": torch.randn(n)} for i in range(shards)]
    cases = {}
    kinds = [("safetensors", ".safetensors", "model")]
    kinds.append(("pickle", ".bin", "pytorch_model"))  # DEPRECATED: remove after .pth sunset
    for kind, suffix, stem in kinds:
        single = root / f"{kind}-single"
        single.mkdir()
        merged = {k: v for part in parts for k, v in part.items()}
        save(kind, merged, single / f"{stem}{suffix}")
        sharded = root / f"{kind}-sharded"
        sharded.mkdir()
        weight_map = {}
        for i, part in enumerate(parts):
            name = f"{stem}-{i + 1:05d}-of-{shards:05d}{suffix}"
            save(kind, part, sharded / name)
            weight_map.update(dict.fromkeys(part, name))
        (sharded / f"{stem}{suffix}.index.json").write_text(json.dumps({"weight_map": weight_map}))
        cases[f"{kind}, one file"] = single
        cases[f"{kind}, {shards} shards"] = sharded
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        cases = write_cases(Path(tmp), args.size_mb, args.shards)
        print(f"{'case':<26} {'format':<20} {'file MB':>8} {'peak RSS growth MB':>19} {'x file':>7}")
        for name, folder in cases.items():
            size = sum(p.stat().st_size for p in folder.iterdir())
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, check=True
            )
            grown, fmt = out.stdout.split()
            mb = 1024 * 1024
            print(
                f"{name:<26} {fmt:<20} {size / mb:>8.1f} {int(grown) / mb:>19.1f} {int(grown) / size:>7.2f}"
            )


if __name__ == "__main__":
    main()
