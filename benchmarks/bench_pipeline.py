"""End-to-end figure: frames/s of ``corridorkey infer`` vs the engine's bare ``process_frame`` loop.

Both run in the same invocation on the same generated clip with the same checkpoint, device and settings:

- **bare**: the frames are decoded into memory first, then timed: ``engine.process_frame`` on each, results
  dropped (no reading, no writing);
- **pipeline**: the real ``corridorkey infer`` console script in a subprocess (``--overwrite``), reading the
  frames from disk and writing every output; its frames/s is frames keyed / keying time from its summary
  (model load excluded, first-frame warm-up included, as in the bare loop).

The ratio pipeline / bare says what I/O costs once it is overlapped with the model (target: >= 0.90). The
two are run alternately ``--repeats`` times; on a shared machine other processes slow some runs down, so the
ratio of the best runs (the least disturbed) is the headline, with the medians and every run printed too.

    .venv/bin/python benchmarks/bench_pipeline.py                       # CPU defaults
    .venv/bin/python benchmarks/bench_pipeline.py --device cuda --img-size 2048 --size 2160x3840 --exr-input

Without ``--checkpoint-dir`` the checkpoint is a random-weight GreenFormer of the published v1.0 shape
(Hiera Base+), written to a temporary folder: the compute per frame is the real model's.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def write_clip(folder: Path, frames: int, size: tuple[int, int], exr_input: bool) -> None:
    """A moving synthetic green-screen shot: ``Input/`` (PNG or float EXR) and ``AlphaHint/`` (PNG)."""
    from corridorkey_engine.clips import images
    from corridorkey_engine.demo.synthetic import Scene, srgb_to_linear

    scene = Scene.from_seed(7)
    (folder / "Input").mkdir(parents=True)
    (folder / "AlphaHint").mkdir()
    # Rendering is slow at 4K: render at most 480 px high and upscale.
    render = (min(size[0], 480), round(min(size[0], 480) * size[1] / size[0]))
    import cv2

    for i in range(frames):
        s = scene.render(render, t=float(i))
        image = cv2.resize(s.image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        hint = cv2.resize(s.hint, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        name = f"shot_{i + 1:04d}"
        if exr_input:
            images.write_exr(folder / "Input" / f"{name}.exr", srgb_to_linear(image), "RGB", half=True)
        else:
            images.write_png(folder / "Input" / f"{name}.png", image)
        images.write_png(folder / "AlphaHint" / f"{name}.png", hint)


def write_checkpoint(folder: Path, img_size: int) -> None:
    """A random-weight GreenFormer of the v1.0 architecture at ``img_size``."""
    import torch
    from safetensors.torch import save_file

    from corridorkey_engine.model.config import CORRIDORKEY_V1
    from corridorkey_engine.model.network import GreenFormer

    config = CORRIDORKEY_V1.with_img_size(img_size)
    torch.manual_seed(0)
    model = GreenFormer(config)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata=config.to_metadata())


def bare_loop(args: argparse.Namespace, clip: Path, ckpt: Path) -> float:
    """Frames/s of ``process_frame`` over the clip's frames, already decoded in memory."""
    from corridorkey_engine.clips.pixels import as_mask, as_rgb
    from corridorkey_engine.clips.sequences import discover_frames, iter_frames
    from corridorkey_engine.engine import load_engine

    engine = load_engine(ckpt, device=args.device, precision=args.precision, img_size=args.img_size)
    images = [as_rgb(f) for f in iter_frames(discover_frames(clip / "Input"))]
    masks = [as_mask(f) for f in iter_frames(discover_frames(clip / "AlphaHint"))]
    linear = args.exr_input
    sync = _sync(engine)
    start = time.perf_counter()
    for image, mask in zip(images, masks, strict=True):
        engine.process_frame(image, mask, input_is_linear=linear)
    sync()
    return len(images) / (time.perf_counter() - start)


def _sync(engine: object):
    import torch

    if str(getattr(engine, "device", "cpu")).startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def pipeline_run(args: argparse.Namespace, clip: Path, ckpt: Path) -> tuple[float, str]:
    """Frames/s that ``corridorkey infer`` reports for the clip (all outputs rewritten)."""
    exe = Path(sys.executable).with_name("corridorkey")
    cmd = [str(exe), "infer", str(clip), "--checkpoint-dir", str(ckpt), "--overwrite"]
    cmd += ["--img-size", str(args.img_size), "--io-threads", str(args.io_threads)]
    if args.device:
        cmd += ["--device", args.device]
    if args.precision:
        cmd += ["--precision", args.precision]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"corridorkey infer failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    # "keyed N frames (...) in S s: F frames/s": N / S is more precise than the rounded F.
    match = re.search(r"keyed (\d+) frames .* in ([\d.]+) s:", proc.stdout)
    if not match:
        raise SystemExit(f"no summary in the output:\n{proc.stdout}")
    return int(match.group(1)) / float(match.group(2)), proc.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=_size, default=(540, 960), help="frame HxW (540x960)")
    p.add_argument("--img-size", type=int, default=256, help="model resolution (256)")
    p.add_argument("--checkpoint-dir", type=Path, help="default: random v1.0-shaped weights")
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default=None)
    p.add_argument("--io-threads", type=int, default=2)
    p.add_argument("--exr-input", action="store_true", help="16-bit float EXR input frames (else PNG)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each (3)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="ck-bench-") as tmp:
        tmpdir = Path(tmp)
        clip = tmpdir / "shot"
        write_clip(clip, args.frames, args.size, args.exr_input)
        ckpt = args.checkpoint_dir or tmpdir / "ckpt"
        if args.checkpoint_dir is None:
            write_checkpoint(ckpt, args.img_size)
        bare, piped = [], []
        summary = ""
        for _ in range(args.repeats):
            fps, summary = pipeline_run(args, clip, ckpt)
            piped.append(fps)
            bare.append(bare_loop(args, clip, ckpt))
        b, q = max(bare), max(piped)
        mb, mq = statistics.median(bare), statistics.median(piped)
        h, w = args.size
        kind = "EXR" if args.exr_input else "PNG"
        print(f"clip: {args.frames} {kind} frames {w}x{h}, img_size {args.img_size}, cpus {os.cpu_count()}")
        print(next((ln for ln in summary.splitlines() if ln.startswith("device ")), summary))
        runs_b = ", ".join(f"{x:.3f}" for x in bare)
        runs_q = ", ".join(f"{x:.3f}" for x in piped)
        print(f"bare process_frame loop : best {b:7.3f} frames/s, median {mb:7.3f}  (runs: {runs_b})")
        print(f"corridorkey infer       : best {q:7.3f} frames/s, median {mq:7.3f}  (runs: {runs_q})")
        print(f"ratio pipeline/bare     : best {q / b:7.3f}, median {mq / mb:7.3f}  (target >= 0.90)")


if __name__ == "__main__":
    main()
