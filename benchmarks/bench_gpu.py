"""Where a frame's time and memory go, ours beside today's path, in one run (GPU or CPU).

Every figure is printed for **ours** (spatial GroupNorm in place, pinned asynchronous downloads, one frame
in flight in ``infer``, only the asked outputs computed) and for **today's path** (torch's stock GroupNorm
kernel, ``.cpu()`` into pageable memory, no overlap: the engine as it was), measured alternately in the same
process on the same random weights in the published v1.0 layout, with the ratio:

- ``forward`` (the model alone, batch 1 and 4), ``process_tensors``, ``process_frame`` (medians);
- ``infer``: frames/s of the clip pipeline on a generated clip with all four outputs (EXR/PNG written);
- peak memory of a frame over the weights (CUDA: ``max_memory_allocated``; both: the activation peak
  counted on the meta device, ``corridorkey_engine.model.memory``), the low-memory mode too;
- ``--compile``: the first frame's time in a fresh process with an empty cache and again with the cache
  the first run left (ours keeps inductor's cache per user; today's path had none);
- the FLOP count of a frame and the share of the card's dense half-precision peak it reaches.

    .venv/bin/python benchmarks/bench_gpu.py                                  # CPU, small sizes
    python benchmarks/bench_gpu.py --device cuda --img-size 2048 --size 1080x1920 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}
"""Dense float16/bfloat16 tensor-core peaks (TFLOP/s, NVIDIA's data sheets, SXM parts) by name fragment."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, runs: int, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


@contextlib.contextmanager
def todays_path(engine):
    """The engine as it was: stock GroupNorm kernels, pageable ``.cpu()`` copies, no ``submit``."""
    from corridorkey_engine.model.norm import SpatialGroupNorm

    norms = [m for m in engine.model.modules() if isinstance(m, SpatialGroupNorm)]
    for m in norms:
        m.kernel = "native"
    yield
    for m in norms:
        m.kernel = "auto"


def pageable_frame(engine, image, hint, **kw):
    outputs, _ = engine.process_tensors(image, hint, **kw)
    return {k: v[0].permute(1, 2, 0).contiguous().cpu().numpy() for k, v in outputs.items()}


class _NoSubmit:
    """An engine seen through the FrameEngine protocol only (``process_frame``, pageable): no overlap."""

    def __init__(self, engine):
        self.engine = engine
        self.device = engine.device

    def process_frame(self, image, mask, options=None, **kw):
        kw.pop("outputs", None)  # today's path computed every output
        return pageable_frame(self.engine, image, mask, options=options, **kw)


def write_checkpoint(folder: Path, img_size: int) -> Path:
    from dataclasses import replace

    from corridorkey_engine import CORRIDORKEY_V1, save_checkpoint
    from corridorkey_engine.model.network import GreenFormer

    torch.manual_seed(1)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(GreenFormer(replace(CORRIDORKEY_V1, img_size=img_size)), folder / "model.safetensors")
    return folder


def plate(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 1] = 170
    image[height // 5 : height * 4 // 5, width // 3 : width * 2 // 3] = (180, 120, 90)
    hint = np.zeros((height, width), np.float32)
    hint[height // 5 : height * 4 // 5, width // 3 : width * 2 // 3] = 1.0
    return image, hint


def infer_fps(engine, folder: Path, frames: int, size: tuple[int, int]) -> float:
    """Frames/s of ``key_clip`` on a generated clip, all four outputs written."""
    import cv2

    from corridorkey_engine.clips import pipeline
    from corridorkey_engine.clips.planning import KeyOptions

    clip_dir = folder / "clip"
    if not clip_dir.exists():
        (clip_dir / "Input").mkdir(parents=True)
        (clip_dir / "AlphaHint").mkdir()
        image, hint = plate(*size)
        for i in range(frames):
            cv2.imwrite(str(clip_dir / "Input" / f"f{i:04d}.png"), np.roll(image, i * 8, axis=1)[..., ::-1])
            matte = np.roll(hint * 255, i * 8, axis=1).astype(np.uint8)
            cv2.imwrite(str(clip_dir / "AlphaHint" / f"f{i:04d}.png"), matte)
    cores = os.cpu_count() or 2
    opts = KeyOptions(
        overwrite=True,
        read_threads=max(2, cores // 2),
        write_threads=max(2, cores),
        pin_memory=engine.device.type == "cuda",
    )
    clip = pipeline.prepare_clip(clip_dir, opts, folder / f"out{time.monotonic_ns()}")
    todo = pipeline.plan_frames(clip, opts)
    pipeline.begin_clip(clip, opts, todo)
    result = pipeline.key_clip(engine, clip, opts, frames=todo)
    return result.keyed / result.seconds


def first_frame_seconds(ckpt: Path, args, cache: Path | None) -> float:
    """Seconds from engine creation to the first keyed frame with ``--compile``, in a fresh process."""
    code = f"""
import time, numpy as np, torch
t = time.perf_counter()
from corridorkey_engine import CorridorKeyEngine
e = CorridorKeyEngine({str(ckpt)!r}, device={args.device!r}, compile=True)
img = np.zeros(({args.size[0]}, {args.size[1]}, 3), np.uint8); hint = np.zeros(img.shape[:2], np.float32)
e.process_frame(img, hint)
print(time.perf_counter() - t)
"""
    env = dict(os.environ)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    if cache is None:  # today's path: nothing kept between runs (a fresh inductor cache each time)
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()
    else:
        env["CORRIDORKEY_COMPILE_CACHE"] = str(cache)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def peak_tflops(device: torch.device, given: float | None) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", given
    name = torch.cuda.get_device_name(device)
    if given is not None:
        return name, given
    return name, next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def row(label: str, ours: float, today: float, unit: str) -> str:
    ratio = today / ours if unit in ("ms", "MiB", "s") and ours > 0 else ours / today if today > 0 else 0.0
    better = "x faster" if unit in ("ms", "s") else "x less" if unit == "MiB" else "x"
    return f"{label:<38} {ours:>10.1f} {today:>10.1f} {unit:<8} {ratio:>6.2f}{better}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--size", default="270x480", help="frame HxW (default 270x480; on a GPU 1080x1920)")
    p.add_argument("--precision", default=None)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--clip-frames", type=int, default=8)
    p.add_argument("--compile", action="store_true", help="also time --compile's first frame, cold and warm")
    p.add_argument("--peak-tflops", type=float, help="the card's dense fp16 peak (default: a table)")
    args = p.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)

    from corridorkey_engine import CORRIDORKEY_V1, CorridorKeyEngine
    from corridorkey_engine.model.memory import activation_peak

    folder = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    ckpt = write_checkpoint(folder / "ckpt", args.img_size)
    engine = CorridorKeyEngine(ckpt, device=args.device, precision=args.precision, low_memory=False)
    card, peak = peak_tflops(device, args.peak_tflops)
    frames = f"{args.size[0]}x{args.size[1]}"
    print(f"device: {card}; dtype {engine.dtype}; img_size {args.img_size}; frames {frames}")
    size = engine.img_size
    x1 = torch.randn(1, 4, size, size, device=device, dtype=engine.dtype)
    x4 = torch.randn(4, 4, size, size, device=device, dtype=engine.dtype)
    image, hint = plate(*args.size)
    results: dict[str, tuple[float, float]] = {}

    def both(name, fn, runs=args.runs, today_fn=None):
        ours = median_ms(fn, device, runs)
        with todays_path(engine):
            today = median_ms(today_fn or fn, device, runs)
        results[name] = (ours, today)

    both("forward, batch 1 (ms)", lambda: engine.predict(x1))
    both("forward, batch 4 (ms per frame)", lambda: engine.predict(x4), max(2, args.runs // 2))
    batch4 = results["forward, batch 4 (ms per frame)"]
    results["forward, batch 4 (ms per frame)"] = (batch4[0] / 4, batch4[1] / 4)
    both("process_tensors (ms)", lambda: engine.process_tensors(image, hint))
    both(
        "process_frame (ms)",
        lambda: engine.process_frame(image, hint),
        today_fn=lambda: pageable_frame(engine, image, hint),
    )
    print(f"{'figure':<38} {'ours':>10} {'today':>10} {'unit':<8} ratio")
    for name, (ours, today) in results.items():
        print(row(name, ours, today, "ms"))
    ours_gap = results["process_frame (ms)"][0] - results["process_tensors (ms)"][0]
    today_gap = results["process_frame (ms)"][1] - results["process_tensors (ms)"][1]
    print(f"{'process_frame - process_tensors (ms)':<38} {ours_gap:>10.1f} {today_gap:>10.1f}")

    fps_ours = infer_fps(engine, folder, args.clip_frames, args.size)
    with todays_path(engine):
        fps_today = infer_fps(_NoSubmit(engine), folder, args.clip_frames, args.size)
    print(row("infer, four outputs (frames/s)", fps_ours, fps_today, "frames/s"))

    mib = 1024**2
    meta_whole = activation_peak(CORRIDORKEY_V1, dtype=engine.dtype, img_size=size) / mib
    meta_low = activation_peak(CORRIDORKEY_V1, dtype=engine.dtype, img_size=size, refiner_tile=256) / mib
    print(f"activation peak counted on meta (MiB): whole image {meta_whole:.0f}, low-memory {meta_low:.0f}")
    if device.type == "cuda":
        peaks = {}
        cases = (
            ("ours", contextlib.nullcontext(), None),
            ("today", todays_path(engine), None),
            ("low-memory", contextlib.nullcontext(), 256),
        )
        for label, ctx, low in cases:
            engine.model.refiner_tile = low
            with ctx:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                engine.predict(x1)
                torch.cuda.synchronize()
                peaks[label] = (torch.cuda.max_memory_allocated() - base) / mib
        engine.model.refiner_tile = None
        print(row("peak GPU memory over weights (MiB)", peaks["ours"], peaks["today"], "MiB"))
        print(f"{'low-memory mode peak (MiB)':<38} {peaks['low-memory']:>10.1f}")

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        engine.predict(x1)
    tflop = counter.get_total_flops() / 1e12
    ms = results["forward, batch 1 (ms)"][0]
    share = f", {tflop / (ms / 1000.0) / peak:.1%} of the card's {peak:.0f} TFLOP/s" if peak else ""
    print(f"FLOPs per frame: {tflop:.3f} TFLOP; ours reaches {tflop / (ms / 1000.0):.1f} TFLOP/s{share}")

    if args.compile:
        cache = folder / "compile-cache"
        cold = first_frame_seconds(ckpt, args, cache)
        warm = first_frame_seconds(ckpt, args, cache)
        today = first_frame_seconds(ckpt, args, None)
        print(f"--compile first frame (s): ours cold {cold:.1f}, warm {warm:.1f}; today {today:.1f} each run")
    print(json.dumps({k: [round(v, 2) for v in pair] for k, pair in results.items()}))


if __name__ == "__main__":
    main()
