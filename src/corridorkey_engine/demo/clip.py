"""The bundled demo: a synthetic clip on disk, where the bundled model lives, and how good a key is.

``corridorkey demo`` calls these pieces: :func:`write_demo_clip` writes a short clip in the layout
``corridorkey infer`` reads (``Input/``, ``AlphaHint/``) plus its ground truth (``GroundTruth/`` alpha,
``GroundTruthFG/`` foreground colour); :func:`bundled_checkpoint_dir` is the folder holding the small
trained GreenFormer shipped in the package (trained on green and blue screens); :func:`matte_quality`
compares the ``Matte/`` the engine wrote with the ground truth (and, for comparison, the hint with the same
ground truth); :func:`foreground_quality` compares the colour of the ``Processed/`` foreground with the
true one on the subject. The targets both must meet are :data:`TARGETS` (docs/demo-model.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .synthetic import DEMO_SEED, linear_to_srgb, make_clip

logger = logging.getLogger(__name__)

DEMO_CHECKPOINT_NAME = "corridorkey_demo.safetensors"
DEFAULT_FRAMES = 8
DEFAULT_SIZE = (128, 128)
SUBJECT_ALPHA = 0.95
"""Pixels whose true alpha exceeds this are the subject, where :func:`foreground_quality` measures colour."""

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
    screen: str = "green"
    fg_truth_dir: Path | None = None


def write_demo_clip(
    folder: str | Path,
    frames: int = DEFAULT_FRAMES,
    seed: int = DEMO_SEED,
    size: int | tuple[int, int] = DEFAULT_SIZE,
    screen: str | None = "green",
) -> DemoClip:
    """Write a moving synthetic green- (or blue-) screen clip into ``folder``.

    ``Input/frame_NNNN.png`` is the 8-bit sRGB plate, ``AlphaHint/frame_NNNN.png`` the coarse 8-bit hint,
    ``GroundTruth/frame_NNNN.png`` the true alpha and ``GroundTruthFG/frame_NNNN.png`` the true straight
    foreground colour (sRGB, before screen spill), both 16-bit PNG. ``size`` is ``(height, width)`` or an
    int for square frames; ``screen`` is ``"green"``, ``"blue"`` or None (the seed's own draw). The default
    seed is held out from training.
    """
    import cv2

    folder = Path(folder)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    dirs = {name: folder / name for name in ("Input", "AlphaHint", "GroundTruth", "GroundTruthFG")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    samples = make_clip(seed, frames=frames, size=(h, w), screen=screen)
    for i, sample in enumerate(samples):
        name = f"frame_{i:04d}.png"
        rgb8 = np.round(sample.image * 255.0).astype(np.uint8)
        fg16 = np.round(np.clip(sample.fg, 0.0, 1.0) * 65535.0).astype(np.uint16)
        _imwrite(cv2, dirs["Input"] / name, cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
        _imwrite(cv2, dirs["AlphaHint"] / name, np.round(sample.hint * 255.0).astype(np.uint8))
        _imwrite(cv2, dirs["GroundTruth"] / name, np.round(sample.alpha * 65535.0).astype(np.uint16))
        _imwrite(cv2, dirs["GroundTruthFG"] / name, cv2.cvtColor(fg16, cv2.COLOR_RGB2BGR))
    drawn = samples[0].screen
    logger.info(
        "wrote a %d-frame %dx%d %s-screen demo clip (seed %d) to %s",
        frames,
        w,
        h,
        drawn,
        seed,
        folder,
    )
    return DemoClip(
        folder,
        dirs["Input"],
        dirs["AlphaHint"],
        dirs["GroundTruth"],
        frames,
        (h, w),
        seed,
        drawn,
        dirs["GroundTruthFG"],
    )


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


def _pairs(found_dir: Path, truth_dir: Path) -> list[tuple[Path, Path]]:
    """Frames of ``found_dir`` and ``truth_dir`` paired by stem ; one missing on either side is an error."""
    found = {p.stem: p for p in _frames(found_dir)}
    truths = {p.stem: p for p in _frames(truth_dir)}
    if not truths:
        raise FileNotFoundError(f"no ground-truth frames in {truth_dir}")
    if set(found) != set(truths):
        missing = sorted(set(truths) ^ set(found))
        raise FileNotFoundError(f"{found_dir} and {truth_dir} hold different frames: {missing[:5]}")
    return [(found[stem], truths[stem]) for stem in sorted(truths)]


def matte_quality(matte_dir: str | Path, truth_dir: str | Path) -> AlphaQuality:
    """Compare every frame in ``matte_dir`` (e.g. ``Matte/`` or ``AlphaHint/``) with ``truth_dir``.

    Frames pair by file stem (``frame_0003.exr`` with ``frame_0003.png``); a frame missing on either side
    is an error.
    """
    acc = AlphaAccumulator()
    for matte, truth in _pairs(Path(matte_dir), Path(truth_dir)):
        acc.add(read_alpha(matte), read_alpha(truth))
    return acc.result()


@dataclass(frozen=True)
class ColourQuality:
    """Mean absolute RGB error of the foreground on the subject (true alpha > :data:`SUBJECT_ALPHA`), sRGB
    0-1, pooled over the subject's pixels of every frame, and per channel."""

    frames: int
    pixels: int
    mae: float
    per_channel: tuple[float, float, float]

    @property
    def mae_8bit(self) -> float:
        """:attr:`mae` in 8-bit code values (0-255)."""
        return self.mae * 255.0


def foreground_quality(
    processed_dir: str | Path, fg_truth_dir: str | Path, alpha_truth_dir: str | Path
) -> ColourQuality:
    """How far the delivered foreground's colour is from the truth, where the subject is solid.

    Each ``Processed/`` frame (linear premultiplied RGBA EXR: despilled, what a compositor uses) is
    un-premultiplied by its own alpha and converted to sRGB, then compared with ``GroundTruthFG/`` on the
    pixels whose ``GroundTruth/`` alpha exceeds :data:`SUBJECT_ALPHA`. A colour shift (the wrong screen's
    despill, a tinted subject) shows here; the matte's error does not.

    Raises:
        FileNotFoundError: no ground truth, or the folders hold different frames.
    """
    from ..clips.images import read_image

    truths = dict(_pairs(Path(fg_truth_dir), Path(alpha_truth_dir)))
    total = np.zeros(3)
    pixels = 0
    pairs = _pairs(Path(processed_dir), Path(fg_truth_dir))
    for processed_path, fg_path in pairs:
        rgba = np.asarray(read_image(processed_path), np.float64)
        alpha = rgba[..., 3:]
        straight = np.divide(rgba[..., :3], alpha, out=np.zeros_like(rgba[..., :3]), where=alpha > 1e-6)
        found = np.clip(linear_to_srgb(straight), 0.0, 1.0)
        truth = np.asarray(read_image(fg_path), np.float64)
        subject = read_alpha(truths[fg_path]) > SUBJECT_ALPHA
        total += np.abs(found[subject] - truth[subject]).sum(axis=0)
        pixels += int(subject.sum())
    if not pixels:
        raise ValueError(f"no subject pixels (true alpha > {SUBJECT_ALPHA}) in {alpha_truth_dir}")
    per_channel = total / pixels
    return ColourQuality(len(pairs), pixels, float(per_channel.mean()), tuple(float(c) for c in per_channel))


@dataclass(frozen=True)
class DemoTargets:
    """What ``corridorkey demo`` measures with the bundled model, on either screen (docs/demo-model.md)."""

    matte_mae: float = 0.03
    matte_iou: float = 0.95
    fg_error_8bit: float = 10.0

    def met(self, matte: AlphaQuality, colour: ColourQuality) -> bool:
        return matte.meets(self.matte_mae, self.matte_iou) and colour.mae_8bit <= self.fg_error_8bit

    def __str__(self) -> str:
        return (
            f"matte error <= {self.matte_mae:g}, IoU >= {self.matte_iou:g}, "
            f"colour error <= {self.fg_error_8bit:g}/255"
        )


TARGETS = DemoTargets()
