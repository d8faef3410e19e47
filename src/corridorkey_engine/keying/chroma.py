"""A rough built-in alpha hint: a simple green/blue difference key (``corridorkey infer --hint chroma``).

This is a starting point for clips that have no ``AlphaHint/``, not a finished key: it has no spill
handling, no edge detail and no garbage matting. CorridorKey refines it; a better hint (a roto, or a key
pulled in your compositor) gives a better result.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

SCREENS = ("auto", "green", "blue")
_CHANNEL = {"green": 1, "blue": 2}


def screen_difference(image: np.ndarray, screen: str) -> np.ndarray:
    """How much the screen channel exceeds the larger of the other two, per pixel ([H,W] float32)."""
    rgb = np.asarray(image, dtype=np.float32)[..., :3]
    c = _CHANNEL[screen]
    others = [i for i in range(3) if i != c]
    return rgb[..., c] - np.maximum(rgb[..., others[0]], rgb[..., others[1]])


def detect_screen(image: np.ndarray) -> str:
    """``"green"`` or ``"blue"``: whichever screen colour dominates more of the frame."""
    green = float(np.percentile(screen_difference(image, "green"), 75))
    blue = float(np.percentile(screen_difference(image, "blue"), 75))
    return "blue" if blue > green else "green"


def chroma_hint(
    image: np.ndarray, screen: str = "auto", *, softness: float = 0.5, blur: int = 5
) -> np.ndarray:
    """Rough alpha hint from a difference key: [H,W] float32 in 0-1, 1 = foreground.

    ``image`` is [H,W,3] RGB float 0-1 (sRGB or linear both work) or uint8. A pixel whose screen-channel
    excess reaches ``softness`` times the typical screen excess (95th percentile) is background; pixels
    with no excess are foreground; the rest ramps linearly. A ``blur``-pixel median + Gaussian smooths the
    result. A frame without a visible screen gives an all-foreground hint (and a log warning).
    """
    if screen not in SCREENS:
        raise ValueError(f"screen must be one of {SCREENS}, not {screen!r}")
    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    if screen == "auto":
        screen = detect_screen(img)
    diff = screen_difference(img, screen)
    ref = float(np.percentile(diff, 95))
    if ref <= 0.02:
        log.warning("chroma hint: no %s screen visible in the frame; using an all-foreground hint", screen)
        return np.ones(diff.shape, dtype=np.float32)
    alpha = 1.0 - np.clip(diff / (softness * ref), 0.0, 1.0)
    alpha = alpha.astype(np.float32)
    if blur > 1:
        k = blur | 1  # odd
        alpha = cv2.medianBlur(alpha, min(k, 5))
        alpha = cv2.GaussianBlur(alpha, (k, k), 0)
    return np.clip(alpha, 0.0, 1.0)
