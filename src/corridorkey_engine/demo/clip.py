"""The bundled demo: a synthetic clip on disk, where the bundled model lives, and how good a matte is.

``corridorkey demo`` calls these three pieces: :func:`write_demo_clip` writes a short clip in the layout
``corridorkey infer`` reads (``Input/``, ``AlphaHint/``) plus its ground truth (``GroundTruth/``);
:func:`bundled_checkpoint_dir` is the folder holding the small trained GreenFormer shipped in the package;
:func:`matte_quality` compares the ``Matte/`` the engine wrote with the ground truth (and, for comparison,
the hint with the same ground truth).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .synthetic import DEMO_SEED, make_clip

logger = logging.getLogger(__name__)

DEMO_CHECKPOINT_NAME = "corridorkey_demo.safetensors"
DEFAULT_FRAMES = 8
DEFAULT_SIZE = (128, 128)

_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".exr", ".jpg", ".jpeg")


def bundled_checkpoint_dir() -> Path:
    """The package folder holding the bundled demo checkpoint (resolve it like any checkpoint folder)."""
    return Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class DemoClip:
    """Where :func:`write_demo_clip` put things."""

    folder: Path
    input_dir: Path
    hint_dir: Path
    truth_dir: Path
    frames: int
    size: tuple[int, int]
    seed: int


def write_demo_clip(
    folder: str | Path,
    frames: int = DEFAULT_FRAMES,
    seed: int = DEMO_SEED,
    size: int | tuple[int, int] = DEFAULT_SIZE,
) -> DemoClip:
    """Write a moving synthetic green-screen clip into ``folder``.

    ``Input/frame_NNNN.png`` is the 8-bit sRGB plate, ``AlphaHint/frame_NNNN.png`` the coarse 8-bit hint,
    ``GroundTruth/frame_NNNN.png`` the true alpha as 16-bit PNG. ``size`` is ``(height, width)`` or an int
    for square frames. The default seed is held out from training.
    """
    import cv2

    folder = Path(folder)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    dirs = {name: folder / name for name in ("Input", "AlphaHint", "GroundTruth")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(make_clip(seed, frames=frames, size=(h, w))):
        name = f"frame_{i:04d}.png"
        rgb8 = np.round(sample.image * 255.0).astype(np.uint8)
        _imwrite(cv2, dirs["Input"] / name, cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
        _imwrite(cv2, dirs["AlphaHint"] / name, np.round(sample.hint * 255.0).astype(np.uint8))
        _imwrite(cv2, dirs["GroundTruth"] / name, np.round(sample.alpha * 65535.0).astype(np.uint16))
    logger.info("wrote a %d-frame %dx%d demo clip (seed %d) to %s", frames, w, h, seed, folder)
    return DemoClip(folder, dirs["Input"], dirs["AlphaHint"], dirs["GroundTruth"], frames, (h, w), seed)


def _imwrite(cv2, path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


# ------------------------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class AlphaQuality:
    """Alpha mean absolute error and IoU of ``alpha > 0.5``, pooled over all pixels of all frames."""

    frames: int
    mae: float
    iou: float

    def meets(self, max_mae: float = 0.03, min_iou: float = 0.95) -> bool:
        return self.mae <= max_mae and self.iou >= min_iou


class AlphaAccumulator:
    """Running alpha MAE and IoU(alpha > 0.5) over frames, pooled over pixels."""

    def __init__(self) -> None:
        self.frames = 0
        self._abs = 0.0
        self._pixels = 0
        self._inter = 0
        self._union = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        pred = np.asarray(pred, np.float64).reshape(np.asarray(truth).shape[:2])
        truth = np.asarray(truth, np.float64).reshape(pred.shape)
        self.frames += 1
        self._abs += float(np.abs(pred - truth).sum())
        self._pixels += truth.size
        p, t = pred > 0.5, truth > 0.5
        self._inter += int(np.count_nonzero(p & t))
        self._union += int(np.count_nonzero(p | t))

    def result(self) -> AlphaQuality:
        if not self.frames:
            raise ValueError("no frames to measure")
        iou = self._inter / self._union if self._union else 1.0
        return AlphaQuality(self.frames, self._abs / self._pixels, iou)


def alpha_quality(preds, truths) -> AlphaQuality:
    """:class:`AlphaQuality` of matching sequences of ``[H, W]`` (or ``[H, W, 1]``) alphas in 0-1."""
    acc = AlphaAccumulator()
    for p, t in zip(preds, truths, strict=True):
        acc.add(p, t)
    return acc.result()


def read_alpha(path: str | Path) -> np.ndarray:
    """A matte or hint file as float32 ``[H, W]`` in 0-1 (8/16-bit PNG/TIFF, EXR: the CLI's reader)."""
    from ..clips.images import read_image
    from ..clips.pixels import as_mask

    return as_mask(read_image(Path(path)))


def _frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def matte_quality(matte_dir: str | Path, truth_dir: str | Path) -> AlphaQuality:
    """Compare every frame in ``matte_dir`` (e.g. ``Matte/`` or ``AlphaHint/``) with ``truth_dir``.

    Frames pair by file stem (``frame_0003.exr`` with ``frame_0003.png``); a frame missing on either side
    is an error.
    """
    matte_dir, truth_dir = Path(matte_dir), Path(truth_dir)
    mattes = {p.stem: p for p in _frames(matte_dir)}
    truths = {p.stem: p for p in _frames(truth_dir)}
    if not truths:
        raise FileNotFoundError(f"no ground-truth frames in {truth_dir}")
    if set(mattes) != set(truths):
        missing = sorted(set(truths) ^ set(mattes))
        raise FileNotFoundError(f"{matte_dir} and {truth_dir} hold different frames: {missing[:5]}")
    acc = AlphaAccumulator()
    for stem in sorted(truths):
        acc.add(read_alpha(mattes[stem]), read_alpha(truths[stem]))
    return acc.result()
