"""Measure a checkpoint on held-out synthetic frames, through the real engine, against the hint alone.

``python -m corridorkey_engine.demo.evaluate`` loads the bundled demo checkpoint (or ``--checkpoint-dir``)
with :func:`load_engine` — registry, safetensors plugin, metadata-built model — keys ``--frames`` synthetic
plates whose seeds training never draws (``HELDOUT_SEED_BASE`` and up) with ``process_frame``, and prints the
alpha mean absolute error and the IoU of ``alpha > 0.5`` for the model and for the hint, side by side, with
the demo model's targets. Exit status 1 when ``--check`` is given and a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .clip import AlphaAccumulator, AlphaQuality, bundled_checkpoint_dir
from .synthetic import HELDOUT_SEED_BASE, make_sample

logger = logging.getLogger(__name__)

TARGET_MAE = 0.03
TARGET_IOU = 0.95


@dataclass(frozen=True)
class Evaluation:
    """Model and hint quality on the same held-out frames."""

    model: AlphaQuality
    hint: AlphaQuality
    seeds: tuple[int, int]  # first seed, one past the last
    size: tuple[int, int]
    checkpoint: str
    seconds: float

    def meets_targets(self, max_mae: float = TARGET_MAE, min_iou: float = TARGET_IOU) -> bool:
        """Within the targets, and better than the hint on both measures."""
        return (
            self.model.meets(max_mae, min_iou)
            and self.model.mae < self.hint.mae
            and self.model.iou > self.hint.iou
        )

    def table(self) -> str:
        first, stop = self.seeds
        h, w = self.size
        lines = [
            f"checkpoint: {self.checkpoint}",
            f"held-out frames: {self.model.frames} at {w}x{h} (seeds {first}..{stop - 1}), "
            f"{self.seconds:.1f}s",
            "",
            f"{'metric':<18}{'model':>10}{'hint':>10}{'target':>10}",
            f"{'alpha MAE':<18}{self.model.mae:>10.4f}{self.hint.mae:>10.4f}{f'<= {TARGET_MAE}':>10}",
            f"{'IoU(alpha>0.5)':<18}{self.model.iou:>10.4f}{self.hint.iou:>10.4f}{f'>= {TARGET_IOU}':>10}",
        ]
        return "\n".join(lines)


def evaluate(
    engine,
    frames: int = 32,
    size: int | tuple[int, int] | None = None,
    first_seed: int = HELDOUT_SEED_BASE,
    **process_options,
) -> Evaluation:
    """Key ``frames`` held-out samples with ``engine.process_frame``; compare model and hint to the truth.

    ``size`` defaults to the engine's ``img_size`` (square). ``process_options`` go to ``process_frame``
    (despeckle, despill...); only ``alpha`` is measured.
    """
    if first_seed < HELDOUT_SEED_BASE:
        raise ValueError(f"seeds below {HELDOUT_SEED_BASE} are training seeds; evaluate on held-out ones")
    size = size or engine.img_size
    h, w = (size, size) if isinstance(size, int) else size
    model_acc, hint_acc = AlphaAccumulator(), AlphaAccumulator()
    start = time.perf_counter()
    for seed in range(first_seed, first_seed + frames):
        sample = make_sample(seed, (h, w))
        out = engine.process_frame(sample.image, sample.hint, generate_comp=False, **process_options)
        model_acc.add(out["alpha"][..., 0], sample.alpha)
        hint_acc.add(sample.hint, sample.alpha)
    checkpoint = getattr(engine, "checkpoint", None)
    name = str(checkpoint.path) if checkpoint is not None else "(in memory)"
    return Evaluation(
        model_acc.result(),
        hint_acc.result(),
        (first_seed, first_seed + frames),
        (h, w),
        name,
        time.perf_counter() - start,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m corridorkey_engine.demo.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default: the bundled demo model")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, default=None, help="square frame size (default: the model's img_size)")
    p.add_argument("--first-seed", type=int, default=HELDOUT_SEED_BASE)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    p.add_argument("--check", action="store_true", help="exit 1 if the targets are not met")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from ..engine import load_engine

    engine = load_engine(a.checkpoint_dir or bundled_checkpoint_dir(), device=a.device)
    result = evaluate(engine, frames=a.frames, size=a.size, first_seed=a.first_seed)
    if a.json:
        print(json.dumps({**asdict(result), "meets_targets": result.meets_targets()}, indent=2))
    else:
        print(result.table())
        print("targets met" if result.meets_targets() else "targets NOT met")
    return 1 if a.check and not result.meets_targets() else 0


if __name__ == "__main__":
    raise SystemExit(main())
