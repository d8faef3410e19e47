"""What ``corridorkey infer --ray`` costs over a local run, and what a second worker buys.

One invocation keys the same generated clip(s) with the same checkpoint, device and settings, four ways,
each the real ``corridorkey infer`` console script in a subprocess (``--overwrite``):

- **local**: a plain run;
- **ray 1 (start)**: ``--ray`` with one worker, starting a Ray cluster for the run (as on a workstation);
- **ray 1 (joined)** and **ray 2 (joined)**: ``--ray ADDRESS`` with one and two workers, joining a cluster
  this script starts once (as on a farm, where the cluster is already up).

Each way keys a clip of ``--frames`` frames (48) and one of ``--short`` frames (8), so its wall time splits
into a fixed start-up (cluster, worker and model start) and a per-frame time (the slope between the two):

- **overhead**: ray 1 worker / local, on the whole command's wall time for the long clip (goal: at most 1.15
  on a 48-frame clip), and on the per-frame time (what remains once the start-up is paid);
- **scaling**: per-frame time of 1 worker / 2 workers (about 2 with two GPUs; on a CPU-only machine the
  two workers share its cores, so expect about 1).

The runs are repeated ``--repeats`` times, interleaved; the best (least disturbed) of each is used.

    .venv/bin/python benchmarks/bench_ray.py                                   # small model, CPU
    .venv/bin/python benchmarks/bench_ray.py --model v1 --img-size 2048 --size 1080x1920 --device cuda

Without ``--checkpoint-dir`` the checkpoint is random weights written to a temporary folder: ``--model
small`` (default: a small Hiera, a fraction of a second per frame on a CPU) or ``--model v1`` (the
published v1.0 shape, Hiera Base+: the real model's compute per frame).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import _size, write_checkpoint, write_clip

SMALL = {"encoder_kwargs": {"embed_dim": 16, "num_heads": 1, "stages": (1, 2, 2, 1)}, "decoder_dim": 32}


def write_small_checkpoint(folder: Path, img_size: int) -> None:
    """Random weights of a small GreenFormer (a 16-wide Hiera) at ``img_size``."""
    import torch
    from safetensors.torch import save_file

    from corridorkey_engine.model.config import GreenFormerConfig
    from corridorkey_engine.model.network import GreenFormer

    config = GreenFormerConfig(img_size=img_size, refiner_channels=16, **SMALL)
    torch.manual_seed(0)
    state = {k: v.detach().contiguous() for k, v in GreenFormer(config).state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata=config.to_metadata())


def transfer_ms(ray: object, size: tuple[int, int], repeats: int = 5) -> tuple[float, float]:
    """Per frame of ``size``, in ms: what the engine worker adds (unpack the decoded frame, pack the four
    outputs, as ``clips.ray_stages`` does), and the whole hand-over through the object store (that plus the
    read task's packing, the write task's unpacking, and a put/get of each)."""
    import numpy as np

    from corridorkey_engine.clips.ray_stages import _pack, _unpack

    h, w = size
    frame = [np.random.rand(h, w, 3).astype(np.float32), np.random.rand(h, w).astype(np.float32)]
    outputs = [np.random.rand(h, w, c).astype(np.float32) for c in (1, 3, 4, 3)]
    worker, whole = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        read = ray.get(ray.put(_pack(iter(frame))))  # type: ignore[attr-defined]
        t1 = time.perf_counter()
        _unpack(read, 2)
        keyed = _pack(iter(outputs))
        t2 = time.perf_counter()
        _unpack(ray.get(ray.put(keyed)), 4)  # type: ignore[attr-defined]
        t3 = time.perf_counter()
        worker.append(t2 - t1)
        whole.append(t3 - t0)
    return min(worker) * 1000, min(whole) * 1000


def run(args: argparse.Namespace, clips: list[Path], ckpt: Path, *extra: str) -> tuple[float, float, int]:
    """Run ``corridorkey infer`` once; returns (wall seconds, keying seconds, frames keyed)."""
    exe = Path(sys.executable).with_name("corridorkey")
    cmd = [str(exe), "infer", *map(str, clips), "--checkpoint-dir", str(ckpt), "--overwrite"]
    cmd += ["--img-size", str(args.img_size), *extra]
    if args.device:
        cmd += ["--device", args.device]
    if args.precision:
        cmd += ["--precision", args.precision]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    match = re.search(r"keyed (\d+) frames .* in ([\d.]+) s:", proc.stdout)
    if not match:
        raise SystemExit(f"no summary in the output:\n{proc.stdout}")
    return wall, float(match.group(2)), int(match.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=48, help="frames per clip (48)")
    p.add_argument("--short", type=int, default=8, help="frames per clip of the short run (8)")
    p.add_argument("--clips", type=int, default=1, help="clips (1)")
    p.add_argument("--size", type=_size, default=(270, 480), help="frame HxW (270x480)")
    p.add_argument("--model", choices=["small", "v1"], default="small")
    p.add_argument("--img-size", type=int, default=256, help="model resolution (256)")
    p.add_argument("--checkpoint-dir", type=Path, help="default: random weights of --model")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--precision", default=None)
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs of each (1)")
    args = p.parse_args()
    os.environ.setdefault("CORRIDORKEY_DEVICE", args.device)

    import ray

    lengths = (args.short, args.frames)
    with tempfile.TemporaryDirectory(prefix="ck-bench-ray-") as tmp:
        tmpdir = Path(tmp)
        clips = {n: [tmpdir / f"{n}f" / f"sh{(i + 1) * 10:03d}" for i in range(args.clips)] for n in lengths}
        for n, folders in clips.items():
            for clip in folders:
                write_clip(clip, n, args.size, exr_input=False)
        ckpt = args.checkpoint_dir or tmpdir / "ckpt"
        if args.checkpoint_dir is None:
            (write_small_checkpoint if args.model == "small" else write_checkpoint)(ckpt, args.img_size)
        cpus = (os.cpu_count() or 1) + 2  # room for the read and write tasks beside two workers
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)  # fmt: skip
        address = ray.get_runtime_context().gcs_address
        moved = {size: transfer_ms(ray, size) for size in (args.size, (1080, 2048), (2160, 3840))}
        ways = {
            "local": (),
            "ray 1 (start)": ("--ray", "--ray-workers", "1"),
            "ray 1 (joined)": ("--ray", address, "--ray-workers", "1"),
            "ray 2 (joined)": ("--ray", address, "--ray-workers", "2"),
        }
        walls: dict[tuple[str, int], list[float]] = {(w, n): [] for w in ways for n in lengths}
        try:
            for _ in range(args.repeats):
                for n in lengths:
                    for name, extra in ways.items():
                        walls[name, n].append(run(args, clips[n], ckpt, *extra)[0])
        finally:
            ray.shutdown()

    h, w = args.size
    long_frames, short_frames = args.frames * args.clips, args.short * args.clips
    print(
        f"{args.clips} clip(s) of {args.frames} and of {args.short} PNG frames {w}x{h}, model {args.model} "
        f"at img_size {args.img_size}, device {args.device}, {os.cpu_count()} CPUs, best of {args.repeats}"
    )
    print(
        f"{'run':16} {f'wall {long_frames}f s':>12} {f'wall {short_frames}f s':>11} "
        f"{'per frame s':>12} {'start-up s':>11}"
    )
    fit = {}
    for name in ways:
        t_long, t_short = min(walls[name, args.frames]), min(walls[name, args.short])
        per_frame = (t_long - t_short) / (long_frames - short_frames)
        fit[name] = (t_long, per_frame, t_short - per_frame * short_frames)
        print(f"{name:16} {t_long:12.2f} {t_short:11.2f} {per_frame:12.3f} {fit[name][2]:11.2f}")
    local = fit["local"]
    for name in ("ray 1 (start)", "ray 1 (joined)"):
        t_long, per_frame, startup = fit[name]
        print(
            f"overhead {name} / local: wall {t_long / local[0]:.2f}x on {long_frames} frames "
            f"(goal <= 1.15x), per frame {per_frame / local[1]:.2f}x "
            f"({(per_frame - local[1]) * 1000:+.0f} ms/frame), start-up {startup - local[2]:+.1f} s"
        )
    for (fh, fw), (worker, whole) in moved.items():
        print(
            f"data movement per {fw}x{fh} frame: {worker:.0f} ms in the engine worker, {whole:.0f} ms in all"
        )
    print(
        f"scaling 2 workers / 1 worker: {fit['ray 1 (joined)'][1] / fit['ray 2 (joined)'][1]:.2f}x frames/s"
    )


if __name__ == "__main__":
    main()
