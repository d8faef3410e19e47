"""Train the small demo GreenFormer on synthetic green-screen plates.

``python -m corridorkey_engine.demo.train --output model.safetensors`` trains the GreenFormer class itself — a
much smaller Hiera (``--embed-dim``, ``--stages``), narrower heads and refiner, at a small ``--img-size`` —
on fresh samples from :mod:`corridorkey_engine.demo.synthetic` (seeds below ``HELDOUT_SEED_BASE``; evaluation
and the demo clip use seeds above it). Inputs go through the engine's own ``model_input`` so training and
inference see identical tensors. It uses CUDA when present, else the CPU (``--threads``: on a shared
machine, 1 thread is much faster than oversubscribed cores). Everything is seeded: the same command on the
same device and torch version reproduces the same weights.

The checkpoint is a ``.safetensors`` file whose metadata carries the model config (``corridorkey.config``),
the training seed, the generator version, the step count, the final losses and the training time.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..keying.frames import model_input
from ..model.config import GreenFormerConfig
from ..model.network import GreenFormer
from .synthetic import GENERATOR_VERSION, HELDOUT_SEED_BASE, make_batch

logger = logging.getLogger(__name__)

DEMO_ENCODER = "hiera_base_plus_224.mae_in1k_ft_in1k"


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run depends on (recorded in the checkpoint's metadata)."""

    img_size: int = 128
    embed_dim: int = 32
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 3, 1)
    decoder_dim: int = 64
    refiner_channels: int = 16
    steps: int = 1500
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05
    grad_weight: float = 1.0
    fg_weight: float = 0.5
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    log_every: int = 50

    def model_config(self) -> GreenFormerConfig:
        return GreenFormerConfig(
            encoder=DEMO_ENCODER,
            encoder_kwargs={
                "embed_dim": self.embed_dim,
                "num_heads": self.num_heads,
                "stages": list(self.stages),
            },
            img_size=self.img_size,
            decoder_dim=self.decoder_dim,
            refiner_channels=self.refiner_channels,
        )


@dataclass
class TrainResult:
    model: GreenFormer
    options: TrainOptions
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per logged step

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def batch_tensors(batch: dict[str, np.ndarray], img_size: int, device: torch.device):
    """Generator batch -> (model input ``[B,4,S,S]``, alpha ``[B,1,S,S]``, fg ``[B,3,S,S]``)."""
    rgb = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).to(device)
    hint = torch.from_numpy(batch["hint"])[:, None].to(device)
    x = model_input(rgb, hint, img_size, input_is_linear=False, dtype=torch.float32)
    alpha = torch.from_numpy(batch["alpha"])[:, None].to(device)
    fg = torch.from_numpy(batch["fg"]).permute(0, 3, 1, 2).to(device)
    if alpha.shape[-1] != img_size:  # the generator renders at img_size; keep targets aligned if not
        alpha = F.interpolate(alpha, size=(img_size, img_size), mode="bilinear", align_corners=False)
        fg = F.interpolate(fg, size=(img_size, img_size), mode="bilinear", align_corners=False)
    return x, alpha, fg


def matting_loss(
    pred: dict[str, torch.Tensor],
    alpha: torch.Tensor,
    fg: torch.Tensor,
    grad_weight: float = 1.0,
    fg_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 on alpha, L1 on alpha's spatial gradients (sharp edges, fine strands), and L1 on the foreground
    colour weighted by the true alpha (the colour behind a transparent pixel is undefined)."""
    a = pred["alpha"]
    l_alpha = (a - alpha).abs().mean()
    l_grad = (a.diff(dim=-1) - alpha.diff(dim=-1)).abs().mean() + (
        a.diff(dim=-2) - alpha.diff(dim=-2)
    ).abs().mean()
    l_fg = ((pred["fg"] - fg).abs() * alpha).sum() / (alpha.sum() * 3.0 + 1.0)
    total = l_alpha + grad_weight * l_grad + fg_weight * l_fg
    parts = {"loss": total.item(), "alpha": l_alpha.item(), "grad": l_grad.item(), "fg": l_fg.item()}
    return total, parts


def train(options: TrainOptions) -> TrainResult:
    """Train a demo GreenFormer from scratch; returns the model (eval mode, CPU) and the loss history."""
    threads_before = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _train(options)
    finally:
        torch.set_num_threads(threads_before)


def _train(options: TrainOptions) -> TrainResult:
    device = pick_device(options.device)
    seed_everything(options.seed)
    config = options.model_config()
    model = GreenFormer(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("demo GreenFormer: %d parameters, img_size %d, device %s", n_params, config.img_size, device)
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=options.lr, total_steps=options.steps, pct_start=options.warmup
    )
    # Sample seeds come from their own stream, always below the held-out range.
    seed_stream = np.random.default_rng([options.seed, 6])
    history: list[dict[str, float]] = []
    running: dict[str, float] = {}
    start = time.perf_counter()
    model.train()
    for step in range(1, options.steps + 1):
        seeds = seed_stream.integers(0, HELDOUT_SEED_BASE, options.batch_size)
        x, alpha, fg = batch_tensors(make_batch(seeds, options.img_size), options.img_size, device)
        pred = model(x)
        loss, parts = matting_loss(pred, alpha, fg, options.grad_weight, options.fg_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        # Exponential moving average of the losses: a readable trend despite per-batch noise.
        running = {k: v if not running else 0.95 * running[k] + 0.05 * v for k, v in parts.items()}
        if step % options.log_every == 0 or step == options.steps:
            elapsed = time.perf_counter() - start
            history.append(
                {
                    "step": step,
                    "seconds": round(elapsed, 1),
                    **running,
                    **{f"batch_{k}": v for k, v in parts.items()},
                }
            )
            logger.info(
                "step %d/%d  %.0fs  loss %.4f  alpha %.4f  grad %.4f  fg %.4f",
                step,
                options.steps,
                elapsed,
                running["loss"],
                running["alpha"],
                running["grad"],
                running["fg"],
            )
    seconds = time.perf_counter() - start
    model.eval().cpu()
    return TrainResult(model, options, seconds, history)


def checkpoint_metadata(result: TrainResult) -> dict[str, str]:
    """The training record saved beside the config in the checkpoint's metadata (all strings)."""
    opts = asdict(result.options)
    opts["stages"] = list(result.options.stages)
    final = {k: round(v, 5) for k, v in result.final.items() if k in ("loss", "alpha", "grad", "fg")}
    return {
        "corridorkey.screens": "green,blue",  # the synthetic plates have both screens
        "corridorkey.training_seed": str(result.options.seed),
        "corridorkey.generator_version": GENERATOR_VERSION,
        "corridorkey.steps": str(result.options.steps),
        "corridorkey.final_losses": json.dumps(final, sort_keys=True),
        "corridorkey.train_seconds": str(round(result.seconds, 1)),
        "corridorkey.train_options": json.dumps(opts, sort_keys=True),
        "corridorkey.torch_version": torch.__version__,
    }


def save_trained(result: TrainResult, path: str | Path) -> Path:
    """Write the trained model as ``.safetensors`` with its config and training record in the metadata."""
    from ..model.loading import save_checkpoint

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(result.model, path, metadata=checkpoint_metadata(result))


def _parse(argv: Sequence[str] | None) -> tuple[TrainOptions, Path]:
    d = TrainOptions()
    p = argparse.ArgumentParser(
        prog="python -m corridorkey_engine.demo.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--output", type=Path, required=True, help="the .safetensors file to write")
    p.add_argument("--img-size", type=int, default=d.img_size)
    p.add_argument("--embed-dim", type=int, default=d.embed_dim, help="Hiera's first-stage width")
    p.add_argument("--num-heads", type=int, default=d.num_heads)
    p.add_argument(
        "--stages", default=",".join(map(str, d.stages)), help="Hiera blocks per stage, e.g. 1,2,3,1"
    )
    p.add_argument("--decoder-dim", type=int, default=d.decoder_dim)
    p.add_argument("--refiner-channels", type=int, default=d.refiner_channels)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto (cuda if present, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-every", type=int, default=d.log_every)
    a = p.parse_args(argv)
    options = TrainOptions(
        img_size=a.img_size,
        embed_dim=a.embed_dim,
        num_heads=a.num_heads,
        stages=tuple(int(s) for s in a.stages.split(",")),
        decoder_dim=a.decoder_dim,
        refiner_channels=a.refiner_channels,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        device=a.device,
        threads=a.threads,
        log_every=a.log_every,
    )
    return options, a.output


def main(argv: Sequence[str] | None = None) -> int:
    options, output = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train(options)
    path = save_trained(result, output)
    size_mb = path.stat().st_size / 1e6
    print(f"trained {options.steps} steps in {result.seconds:.0f}s; final losses {json.dumps(result.final)}")
    print(f"wrote {path} ({size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
