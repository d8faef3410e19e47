"""Engine-ready time and peak memory: the classic load path versus ours, from .safetensors and .pth.

Builds a checkpoint with the real CorridorKey v1.0 layout (random weights, ~400 MB) as ``.safetensors`` and
``.pth``, reads both once so they are in the page cache, then measures in fresh processes, side by side:

- classic: ``GreenFormer(config)`` (random initialisation) + ``torch.load`` / ``safetensors.load_file`` +
  ``load_state_dict`` (a copy into the initialised tensors) — upstream CorridorKey's way;
- ours: ``CorridorKeyEngine(dir)``: registry ``resolve`` + meta-device model +
  ``load_state_dict(assign=True)``.

Each process reports the seconds from "imports done" to "model ready", and its peak RSS above its RSS
after the imports (the memory loading costs), also as a ratio to the checkpoint's size. Then the forward
pass on the CPU in float32 at a small ``img_size``: the classic eager model, given the engine's weights,
versus the engine's model, their runs interleaved (best and median of each, and the ratio).
With ``--device cuda`` it also times the engine at ``--gpu-img-size`` (default 2048) in float16.

    .venv/bin/python benchmarks/bench_engine.py                 # CPU figures, ~2-3 minutes
    .venv/bin/python benchmarks/bench_engine.py --device cuda   # plus GPU frames/s and peak memory
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("classic-pth", "classic-safetensors", "ours-safetensors", "ours-pth")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(mode: str, folder: Path) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    import timm  # noqa: F401  (both paths need it: not part of the load)
    import torch

    import ckpt_formats  # noqa: F401
    from corridorkey_engine import CORRIDORKEY_V1, CorridorKeyEngine
    from corridorkey_engine.model.network import GreenFormer

    torch.set_num_threads(os.cpu_count() or 1)
    baseline = _status_kib("VmRSS")
    start = time.perf_counter()
    if mode.startswith("classic"):
        model = GreenFormer(CORRIDORKEY_V1)
        if mode == "classic-pth":
            state = torch.load(folder / "model.pth", map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            state = load_file(folder / "model.safetensors")
        state = {k.removeprefix("_orig_mod."): v for k, v in state.get("state_dict", state).items()}
        model.load_state_dict(state, strict=True)
        del state
        model.eval()
    else:
        model = CorridorKeyEngine(folder, device="cpu").model
    ready = time.perf_counter() - start
    assert not any(p.is_meta for p in model.parameters())
    peak = _status_kib("VmHWM")
    # Memory-mapped weights count in RSS only once read: read every one (as a first forward would).
    checksum = sum(float(t.sum()) for t in model.state_dict().values())
    resident = _status_kib("VmHWM")
    print(
        json.dumps({"seconds": ready, "peak_kib": peak, "resident_kib": resident, "baseline_kib": baseline})
    )
    del checksum


def build_checkpoint(workdir: Path) -> tuple[Path, Path, int]:
    import torch
    from safetensors.torch import save_file

    from corridorkey_engine import CORRIDORKEY_V1
    from corridorkey_engine.model.network import build_greenformer

    st_dir, pth_dir = workdir / "st", workdir / "pth"
    st_dir.mkdir(exist_ok=True)
    pth_dir.mkdir(exist_ok=True)
    st, pth = st_dir / "model.safetensors", pth_dir / "model.pth"
    if not (st.exists() and pth.exists()):
        generator = torch.Generator().manual_seed(0)
        state = {}
        for key, meta in build_greenformer(CORRIDORKEY_V1).state_dict().items():
            if key.endswith("running_var"):  # a variance: positive, or every output is NaN
                state[key] = torch.rand(meta.shape, generator=generator) + 0.5
            elif meta.is_floating_point():
                state[key] = torch.randn(meta.shape, generator=generator) * 0.02
            else:
                state[key] = torch.zeros(meta.shape, dtype=meta.dtype)
        save_file(state, str(st), metadata=CORRIDORKEY_V1.to_metadata())
        torch.save({"state_dict": {f"_orig_mod.{k}": v for k, v in state.items()}}, pth)
    for path in (st, pth):  # into the page cache
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    return st_dir, pth_dir, st.stat().st_size


def measure_loads(st_dir: Path, pth_dir: Path, size: int, repeats: int) -> dict[str, dict[str, float]]:
    results = {}
    for mode in MODES:
        folder = pth_dir if mode.endswith("pth") else st_dir
        runs = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(folder)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        delta = max(r["peak_kib"] - r["baseline_kib"] for r in runs) * 1024
        resident = max(r["resident_kib"] - r["baseline_kib"] for r in runs) * 1024
        results[mode] = {
            "seconds": statistics.median(r["seconds"] for r in runs),
            "delta_mb": delta / 2**20,
            "resident_mb": resident / 2**20,
            "resident_ratio": resident / size,
            "baseline_mb": max(r["baseline_kib"] for r in runs) / 1024,
        }
    return results


def measure_forward(st_dir: Path, img_size: int, repeats: int) -> tuple[dict[str, dict[str, float]], float]:
    """Best and median seconds per forward of each model, the same weights in both, runs interleaved.

    The classic model is built eagerly and gets the engine's weights through ``load_state_dict``, so both
    compute the same thing; the runs alternate (classic, ours, classic, ours, ...) after one warm-up each,
    so a busy machine slows both alike instead of whichever ran second. Also returns the largest difference
    between the two models' alpha on the same input (float rounding only: the weights are the same).
    """
    import torch

    from corridorkey_engine import CORRIDORKEY_V1, CorridorKeyEngine
    from corridorkey_engine.model.network import GreenFormer

    x = torch.randn(1, 4, img_size, img_size)
    engine = CorridorKeyEngine(st_dir, device="cpu", img_size=img_size)
    classic = GreenFormer(CORRIDORKEY_V1.with_img_size(img_size)).eval()
    classic.load_state_dict(engine.model.state_dict(), strict=True)

    def classic_forward() -> torch.Tensor:
        with torch.no_grad():
            return classic(x)["alpha"]

    def ours_forward() -> torch.Tensor:
        return engine.predict(x)["alpha"]

    forwards = {"classic": classic_forward, "ours": ours_forward}
    difference = float((classic_forward() - ours_forward()).abs().max())  # also the warm-up
    runs: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(repeats):
        for name, fn in forwards.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {name: {"best": min(r), "median": statistics.median(r)} for name, r in runs.items()}, difference


def measure_gpu(st_dir: Path, img_size: int, batch_sizes: list[int], frames: int) -> list[dict[str, float]]:
    import numpy as np
    import torch

    from corridorkey_engine import CorridorKeyEngine

    engine = CorridorKeyEngine(st_dir, device="cuda", img_size=img_size)
    rows = []
    rng = np.random.default_rng(0)
    for batch in batch_sizes:
        image = rng.random((batch, img_size, img_size, 3), dtype=np.float32)
        hint = rng.random((batch, img_size, img_size), dtype=np.float32)
        inputs = torch.randn(batch, 4, img_size, img_size, device="cuda", dtype=engine.dtype)
        engine.predict(inputs)  # warm-up (cuDNN autotuning)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        steps = max(1, frames // batch)
        start = time.perf_counter()
        for _ in range(steps):
            engine.predict(inputs)
        torch.cuda.synchronize()
        model_fps = steps * batch / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(steps):
            engine.process_frame(image, hint)
        full_fps = steps * batch / (time.perf_counter() - start)
        rows.append(
            {
                "batch": batch,
                "model_fps": model_fps,
                "frame_fps": full_fps,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--workdir", type=Path, help="where to keep the ~800 MB of checkpoints (default: tmp)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="processes per load path (median reported)")
    parser.add_argument("--forward-size", type=int, default=256, help="img_size of the CPU forward timing")
    parser.add_argument(
        "--forward-repeats", type=int, default=7, help="interleaved forward runs per model (best, median)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--gpu-img-size", type=int, default=2048)
    parser.add_argument("--gpu-batch", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--gpu-frames", type=int, default=16)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        st_dir, pth_dir, size = build_checkpoint(workdir)
        print(f"checkpoint: CorridorKey v1.0 layout, random weights, {size / 2**20:.0f} MiB (.safetensors)")
        print(f"CPU threads: {os.cpu_count()}; each load in a fresh process, median of {args.repeats}\n")
        loads = measure_loads(st_dir, pth_dir, size, args.repeats)
        print(
            f"{'path':<22}{'ready s':>9}{'vs classic':>12}{'RSS at ready':>15}{'weights read':>14}"
            f"{'/ ckpt':>8}"
        )
        for mode, r in loads.items():
            classic = loads["classic-" + mode.split("-", 1)[1]]["seconds"]
            print(
                f"{mode:<22}{r['seconds']:>9.3f}{r['seconds'] / classic:>11.3f}x{r['delta_mb']:>11.0f} MiB"
                f"{r['resident_mb']:>10.0f} MiB{r['resident_ratio']:>7.2f}x"
            )
        baseline = max(r["baseline_mb"] for r in loads.values())
        print(
            "\nMemory columns: peak RSS above the RSS after importing torch, timm and the engine "
            f"(~{baseline:.0f} MiB), when the model is ready and after every weight has been read once "
            "(memory-mapped pages count from then on); '/ ckpt' divides the latter by the checkpoint's size."
        )

        times, difference = measure_forward(st_dir, args.forward_size, args.forward_repeats)
        print(
            f"\nCPU forward, float32, img_size {args.forward_size}, batch 1, {args.forward_repeats} "
            f"interleaved runs each (same weights; largest alpha difference {difference:.1e}):"
        )
        for name, label in (("classic", "classic eager model:"), ("ours", "engine model:")):
            best, median = times[name]["best"], times[name]["median"]
            print(f"  {label:<21}best {best:.3f} s, median {median:.3f} s")
        print(
            f"  engine / classic:    best {times['ours']['best'] / times['classic']['best']:.3f}x, "
            f"median {times['ours']['median'] / times['classic']['median']:.3f}x"
        )

        if args.device == "cuda":
            import torch

            print(f"\nGPU ({torch.cuda.get_device_name()}), float16, img_size {args.gpu_img_size}:")
            for row in measure_gpu(st_dir, args.gpu_img_size, args.gpu_batch, args.gpu_frames):
                print(
                    f"  batch {row['batch']}: model {row['model_fps']:.2f} frames/s, "
                    f"process_frame {row['frame_fps']:.2f} frames/s, peak {row['peak_gib']:.2f} GiB"
                )


if __name__ == "__main__":
    main()
