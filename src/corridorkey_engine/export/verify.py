"""Proof of equality: run an exported file with its own runtime and compare it with the engine.

Each target is run by the runtime a host uses (:func:`load_runtime`): ONNX Runtime's CPU provider for
``onnx``, ``torch.jit.load`` for ``torchscript``, ``torch.export.load`` for ``exported-program``. The
reference is :meth:`CorridorKeyEngine.process_frame` on the same frame, with despeckle off (the host's
job) and the export's despill.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, CorridorKeyError
from ..keying import color

Runner = Callable[[np.ndarray], np.ndarray]
"""``run(frame [1, 4, H, W] float32) -> keyed [1, 4, H, W] float32``."""

MAX_ABS_FLOAT32 = 1e-4
"""Float32 exports agree with the engine within this, at any size (the resizes are the engine's kernels)."""
MEAN_ABS_FLOAT16 = 2e-3
"""Float16 exports agree with the (float32) engine within this mean absolute difference."""


def load_runtime(path: str | Path, target: str) -> Runner:
    """The exported file, loaded by its target's own runtime, on the CPU.

    Raises:
        ConfigError: ``onnxruntime`` is missing (the ``export`` extra).
    """
    path = str(path)
    if target == "onnx":
        try:
            import onnxruntime
        except ImportError as exc:
            raise ConfigError(
                "running an ONNX export needs the 'export' extra: pip install 'ckpt-formats[export]'"
            ) from exc
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: not its notices about float16 constant folding
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda frame: session.run(None, {name: frame})[0]
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(path, map_location="cpu") if target == "torchscript" else None
    if module is None:  # from a buffer: torch.export.load warns about a name not ending in .pt2
        module = torch.export.load(io.BytesIO(Path(path).read_bytes())).module()

    def run(frame: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(frame)).numpy()

    return run


def generated_frame(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A generated frame: a smooth subject (a soft disc of warm colour) over a noisy green screen, and a
    rough hint of the disc. ``(image [H, W, 3], hint [H, W])``, float32 0-1."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = 0.3 * min(height, width)
    distance = np.hypot(ys - height / 2, xs - width / 2)
    subject = np.clip((radius - distance) / 3.0, 0.0, 1.0)
    screen = np.array([0.1, 0.7, 0.15], np.float32) + rng.normal(0, 0.03, (height, width, 3))
    warm = np.array([0.8, 0.5, 0.35], np.float32)
    image = screen * (1 - subject[..., None]) + warm * subject[..., None]
    hint = (distance < radius * 1.1).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), hint


@dataclass(frozen=True)
class Difference:
    """Exported file vs engine on one frame size: max and mean absolute differences of fg and alpha."""

    height: int
    width: int
    fg_max: float
    fg_mean: float
    alpha_max: float
    alpha_mean: float

    def line(self) -> str:
        return (
            f"{self.height}x{self.width}: fg max {self.fg_max:.2e} mean {self.fg_mean:.2e}, "
            f"alpha max {self.alpha_max:.2e} mean {self.alpha_mean:.2e}"
        )

    def within(self, precision: str) -> bool:
        """Inside the tolerance of ``precision``'s exports."""
        if precision == "float16":
            return max(self.fg_mean, self.alpha_mean) <= MEAN_ABS_FLOAT16
        return max(self.fg_max, self.alpha_max) <= MAX_ABS_FLOAT32


def reference(
    engine: Any, image: np.ndarray, hint: np.ndarray, *, despill_strength: float, nuke: bool
) -> np.ndarray:
    """What the engine makes of the frame, as the export's ``[1, 4, H, W]``: straight sRGB fg (despilled)
    and alpha; for the Nuke flavour (linear input) the premultiplied linear ``processed`` output without
    despeckle."""
    out = engine.process_frame(
        image,
        hint,
        auto_despeckle=False,
        generate_comp=False,
        despill_strength=despill_strength,
        input_is_linear=nuke,
    )
    if nuke:
        rgba = out["processed"]
    else:
        fg = torch.from_numpy(out["fg"]).permute(2, 0, 1)[None]
        fg = color.despill(fg, despill_strength, engine.screen_color)[0].permute(1, 2, 0).numpy()
        rgba = np.concatenate([fg, out["alpha"]], axis=-1)
    return np.ascontiguousarray(rgba.transpose(2, 0, 1)[None])


def compare(
    run: Runner,
    engine: Any,
    sizes: Sequence[tuple[int, int]],
    *,
    despill_strength: float = 0.0,
    nuke: bool = False,
) -> list[Difference]:
    """Run the file and the engine on a generated frame of each size; the differences."""
    results = []
    for height, width in sizes:
        image, hint = generated_frame(height, width)
        if nuke:  # Nuke hands the model linear light
            image = color.srgb_to_linear(torch.from_numpy(image)).numpy()
        expected = reference(engine, image, hint, despill_strength=despill_strength, nuke=nuke)
        frame = np.ascontiguousarray(np.concatenate([image, hint[..., None]], -1).transpose(2, 0, 1)[None])
        got = run(frame)
        if got.shape != expected.shape:
            raise CorridorKeyError(f"the exported file's output has shape {got.shape}, not {expected.shape}")
        fg, alpha = np.abs(got[:, :3] - expected[:, :3]), np.abs(got[:, 3:] - expected[:, 3:])
        stats = (float(fg.max()), float(fg.mean()), float(alpha.max()), float(alpha.mean()))
        results.append(Difference(height, width, *stats))
    return results
