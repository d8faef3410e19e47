"""The pieces a synthetic scene is drawn with: smooth noise, foreground colours, curves, and the
foreground layers (shape coverage, texture, motion blur). :mod:`.synthetic` composes them into plates."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

SCREEN_HUE_DEG = {"green": 130.0, "blue": 222.0}


# --------------------------------------------------------------------------------------------- helpers


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]: a ``cells``-wide random grid upsampled bicubically."""
    cells = max(2, cells)
    ch = max(2, round(cells * h / max(h, w)))
    cw = max(2, round(cells * w / max(h, w)))
    grid = rng.uniform(-1.0, 1.0, size=(ch + 3, cw + 3)).astype(np.float32)
    big = cv2.resize(grid, (w + w * 3 // cw, h + h * 3 // ch), interpolation=cv2.INTER_CUBIC)
    oy, ox = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    out = big[oy : oy + h, ox : ox + w]
    return np.clip(out, -1.0, 1.0)


def gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def random_colour(rng: np.random.Generator, screen: str) -> np.ndarray:
    """A foreground colour (sRGB) whose hue stays away from the screen's, so keying is well posed."""
    kind = rng.random()
    if kind < 0.15:  # greys, whites, blacks
        v = rng.uniform(0.05, 0.95)
        return np.array([v, v, v], np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    if kind < 0.35:  # skin tones
        base = np.array([0.85, 0.62, 0.50], np.float32) * rng.uniform(0.35, 1.1)
        return np.clip(base * rng.uniform(0.9, 1.1, 3), 0, 1).astype(np.float32)
    screen_hue = SCREEN_HUE_DEG[screen]
    while True:
        hue = rng.uniform(0.0, 360.0)
        diff = abs((hue - screen_hue + 180.0) % 360.0 - 180.0)
        if diff > 55.0:
            break
    sat = rng.uniform(0.15, 0.95)
    val = rng.uniform(0.2, 1.0)
    hsv = np.array([[[hue / 2.0, sat * 255.0, val * 255.0]]], np.float32).astype(np.uint8)
    return (cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0).clip(0, 1)


def bezier(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, bend: float, n: int = 24):
    mid = (start + end) / 2 + rng.normal(0, bend, 2)
    mid2 = (start + 2 * end) / 3 + rng.normal(0, bend, 2)
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 3 * start + 3 * (1 - t) ** 2 * t * mid + 3 * (1 - t) * t**2 * mid2 + t**3 * end
    return pts


SHIFT = 4  # cv2 sub-pixel precision bits for anti-aliased drawing


def fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts) * (1 << SHIFT)).astype(np.int32)


# ---------------------------------------------------------------------------------------------- layers


@dataclass
class Layer:
    kind: str
    seed: int
    colour: np.ndarray
    texture_amp: float
    texture_cells: int
    stripes: float
    stripe_colour: np.ndarray
    defocus: float  # blur sigma as a fraction of the short side
    motion: np.ndarray  # motion-blur vector, fraction of the short side
    velocity: np.ndarray  # displacement per frame, fraction of the short side
    centre: np.ndarray  # fraction of (w, h)
    scale: float  # fraction of the short side
    hair: int  # number of strands growing out of a blob
    params: dict = field(default_factory=dict)


def draw_coverage(layer: Layer, h: int, w: int) -> np.ndarray:
    """Anti-aliased coverage of the layer's shape, 0-1, before blur and motion."""
    rng = np.random.default_rng(layer.seed)
    short = min(h, w)
    canvas = np.zeros((h, w), np.uint8)
    c = layer.centre * np.array([w, h])
    r = layer.scale * short
    outline = None
    if layer.kind in ("blob", "veil"):
        n = 96
        theta = np.linspace(0, 2 * math.pi, n, endpoint=False)
        radius = np.ones(n)
        for k in range(1, 6):
            radius += rng.uniform(0, 0.35 / k) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
        aspect = rng.uniform(0.6, 1.6)
        rot = rng.uniform(0, math.pi)
        x = r * radius * np.cos(theta) * aspect
        y = r * radius * np.sin(theta) / aspect
        outline = np.stack([x * math.cos(rot) - y * math.sin(rot), x * math.sin(rot) + y * math.cos(rot)], 1)
        outline = outline + c
        cv2.fillPoly(canvas, [fixed(outline)], 255, lineType=cv2.LINE_AA, shift=SHIFT)
    elif layer.kind == "ellipse":
        axes = (max(1, round(r * rng.uniform(0.5, 1.3))), max(1, round(r * rng.uniform(0.3, 1.0))))
        poly = (
            cv2.ellipse2Poly(
                (0, 0), (axes[0] * 16, axes[1] * 16), int(rng.uniform(0, 180)), 0, 360, 2
            ).astype(np.float64)
            / 16.0
        )
        outline = poly + c
        cv2.fillPoly(canvas, [fixed(outline)], 255, lineType=cv2.LINE_AA, shift=SHIFT)
    elif layer.kind == "box":
        hw, hh = r * rng.uniform(0.4, 1.2), r * rng.uniform(0.3, 1.0)
        rot = rng.uniform(0, math.pi)
        corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        rotm = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
        outline = corners @ rotm.T + c
        cv2.fillPoly(canvas, [fixed(outline)], 255, lineType=cv2.LINE_AA, shift=SHIFT)
    elif layer.kind == "stroke":
        start = c + rng.normal(0, r, 2)
        end = c + rng.normal(0, r, 2)
        pts = bezier(rng, start, end, r * 0.6)
        thick = max(1, round(short * rng.uniform(0.012, 0.06)))
        cv2.polylines(canvas, [fixed(pts)], False, 255, thick, lineType=cv2.LINE_AA, shift=SHIFT)
    else:  # pragma: no cover - guarded by the scene builder
        raise ValueError(layer.kind)
    cov = canvas.astype(np.float32) / 255.0

    if layer.hair and outline is not None:
        # Strands grow outwards from the outline: thin, curved, partly transparent (sub-pixel coverage).
        strands = np.zeros((h, w), np.float32)
        idx = rng.integers(0, len(outline), layer.hair)
        centroid = outline.mean(0)
        for i in idx:
            root = outline[i]
            out = root - centroid
            out = out / (np.linalg.norm(out) + 1e-6)
            length = short * rng.uniform(0.03, 0.12)
            tip = root + out * length + rng.normal(0, length * 0.3, 2)
            root_in = root - out * short * 0.01
            pts = bezier(rng, root_in, tip, length * 0.25, n=16)
            one = np.zeros((h, w), np.uint8)
            cv2.polylines(one, [fixed(pts)], False, 255, 1, lineType=cv2.LINE_AA, shift=SHIFT)
            strands = np.maximum(strands, one.astype(np.float32) / 255.0 * rng.uniform(0.45, 1.0))
        cov = np.maximum(cov, strands)

    if layer.kind == "veil":
        # Thin semi-transparent material (smoke, glass, gauze): coverage modulated by smooth noise and
        # kept below one half, so IoU(alpha > 0.5) measures solid subjects and MAE the soft detail.
        density = 0.5 + 0.5 * smooth_noise(rng, h, w, int(rng.integers(3, 8)))
        cov = cov * np.clip(0.06 + 0.34 * density, 0.0, 1.0)
    return cov


def layer_colour(layer: Layer, h: int, w: int) -> np.ndarray:
    """The layer's clean colour, sRGB [H, W, 3]: a base colour with a texture and shading."""
    rng = np.random.default_rng(layer.seed + 7_919)
    tex = smooth_noise(rng, h, w, layer.texture_cells)[..., None]
    fine = smooth_noise(rng, h, w, layer.texture_cells * 4)[..., None]
    tint = rng.uniform(-0.08, 0.08, 3).astype(np.float32)
    col = layer.colour[None, None, :] * (1.0 + layer.texture_amp * tex + 0.3 * layer.texture_amp * fine)
    col = col + tint * tex
    if layer.stripes > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ang = rng.uniform(0, math.pi)
        period = min(h, w) * rng.uniform(0.03, 0.12)
        wave = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
        mix = (0.5 + 0.5 * wave)[..., None] * layer.stripes
        col = col * (1 - mix) + layer.stripe_colour[None, None, :] * mix
    return np.clip(col, 0.0, 1.0).astype(np.float32)


def motion_kernel(vec: np.ndarray) -> np.ndarray | None:
    length = float(np.linalg.norm(vec))
    if length < 1.0:
        return None
    size = math.ceil(length) * 2 + 1
    k = np.zeros((size, size), np.uint8)
    centre = np.array([size // 2, size // 2], np.float64)
    half = vec / 2.0
    p0, p1 = centre - half, centre + half
    cv2.line(k, tuple(fixed(p0)), tuple(fixed(p1)), 255, 1, lineType=cv2.LINE_AA, shift=SHIFT)
    k = k.astype(np.float32)
    return k / k.sum()
