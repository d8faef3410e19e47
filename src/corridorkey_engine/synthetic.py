"""Synthetic green-screen plates with exact ground truth, for training and checking the demo model.

A *scene* is drawn from a seed: a green or blue screen with uneven lighting, fabric texture and tracking
markers, and one to four foreground layers (blobs, ellipses, boxes, thick strokes, hair-like strands,
semi-transparent veils), each with its own colour, texture, soft or defocused edge, and motion. Rendering
the scene at a time ``t`` gives one :class:`Sample`:

- ``image``: the plate the camera saw, sRGB 0-1: the foreground, lit with green/blue spill near its edges,
  composited in linear light over the screen, plus sensor noise;
- ``alpha``: the ground-truth coverage, 0-1;
- ``fg``: the clean straight (un-premultiplied) foreground colour in sRGB, without the spill;
- ``hint``: a coarse alpha hint as CorridorKey expects one (a thresholded, eroded or dilated, wobbly and
  blurred version of the truth; sometimes blocky, with holes or stray blobs), linear 0-1.

Everything is a function of the seed (and the output size), so a seed fully identifies a sample; training
and evaluation use disjoint seed ranges. Bump :data:`GENERATOR_VERSION` whenever the output for a given seed
changes, so a checkpoint's metadata says which data it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

GENERATOR_VERSION = "3"
_VERSION_SALT = int(GENERATOR_VERSION)

# Seed ranges. Training draws sample seeds below HELDOUT_SEED_BASE; evaluation uses seeds from
# HELDOUT_SEED_BASE up, and the demo clip is DEMO_SEED: neither is ever seen in training.
HELDOUT_SEED_BASE = 1_000_000_000
DEMO_SEED = 2_000_000_000

SCREEN_COLOURS_SRGB = {
    "green": (0.17, 0.62, 0.26),
    "blue": (0.10, 0.24, 0.70),
}
_SCREEN_HUE_DEG = {"green": 130.0, "blue": 222.0}


@dataclass(frozen=True)
class Sample:
    """One rendered frame: the plate, its ground truth and a coarse hint (all float32)."""

    image: np.ndarray  # [H, W, 3] sRGB 0-1
    alpha: np.ndarray  # [H, W] 0-1
    fg: np.ndarray  # [H, W, 3] straight sRGB 0-1 (meaningful where alpha > 0)
    hint: np.ndarray  # [H, W] linear 0-1
    screen: str  # "green" or "blue"


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


# --------------------------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]: a ``cells``-wide random grid upsampled bicubically."""
    cells = max(2, cells)
    ch = max(2, round(cells * h / max(h, w)))
    cw = max(2, round(cells * w / max(h, w)))
    grid = rng.uniform(-1.0, 1.0, size=(ch + 3, cw + 3)).astype(np.float32)
    big = cv2.resize(grid, (w + w * 3 // cw, h + h * 3 // ch), interpolation=cv2.INTER_CUBIC)
    oy, ox = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    out = big[oy : oy + h, ox : ox + w]
    return np.clip(out, -1.0, 1.0)


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _random_colour(rng: np.random.Generator, screen: str) -> np.ndarray:
    """A foreground colour (sRGB) whose hue stays away from the screen's, so keying is well posed."""
    kind = rng.random()
    if kind < 0.15:  # greys, whites, blacks
        v = rng.uniform(0.05, 0.95)
        return np.array([v, v, v], np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    if kind < 0.35:  # skin tones
        base = np.array([0.85, 0.62, 0.50], np.float32) * rng.uniform(0.35, 1.1)
        return np.clip(base * rng.uniform(0.9, 1.1, 3), 0, 1).astype(np.float32)
    screen_hue = _SCREEN_HUE_DEG[screen]
    while True:
        hue = rng.uniform(0.0, 360.0)
        diff = abs((hue - screen_hue + 180.0) % 360.0 - 180.0)
        if diff > 55.0:
            break
    sat = rng.uniform(0.15, 0.95)
    val = rng.uniform(0.2, 1.0)
    hsv = np.array([[[hue / 2.0, sat * 255.0, val * 255.0]]], np.float32).astype(np.uint8)
    return (cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0).clip(0, 1)


def _bezier(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, bend: float, n: int = 24):
    mid = (start + end) / 2 + rng.normal(0, bend, 2)
    mid2 = (start + 2 * end) / 3 + rng.normal(0, bend, 2)
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 3 * start + 3 * (1 - t) ** 2 * t * mid + 3 * (1 - t) * t**2 * mid2 + t**3 * end
    return pts


_SHIFT = 4  # cv2 sub-pixel precision bits for anti-aliased drawing


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts) * (1 << _SHIFT)).astype(np.int32)


# ---------------------------------------------------------------------------------------------- layers


@dataclass
class _Layer:
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


def _draw_coverage(layer: _Layer, h: int, w: int) -> np.ndarray:
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
        cv2.fillPoly(canvas, [_fixed(outline)], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    elif layer.kind == "ellipse":
        axes = (max(1, round(r * rng.uniform(0.5, 1.3))), max(1, round(r * rng.uniform(0.3, 1.0))))
        poly = (
            cv2.ellipse2Poly(
                (0, 0), (axes[0] * 16, axes[1] * 16), int(rng.uniform(0, 180)), 0, 360, 2
            ).astype(np.float64)
            / 16.0
        )
        outline = poly + c
        cv2.fillPoly(canvas, [_fixed(outline)], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    elif layer.kind == "box":
        hw, hh = r * rng.uniform(0.4, 1.2), r * rng.uniform(0.3, 1.0)
        rot = rng.uniform(0, math.pi)
        corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        rotm = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
        outline = corners @ rotm.T + c
        cv2.fillPoly(canvas, [_fixed(outline)], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    elif layer.kind == "stroke":
        start = c + rng.normal(0, r, 2)
        end = c + rng.normal(0, r, 2)
        pts = _bezier(rng, start, end, r * 0.6)
        thick = max(1, round(short * rng.uniform(0.012, 0.06)))
        cv2.polylines(canvas, [_fixed(pts)], False, 255, thick, lineType=cv2.LINE_AA, shift=_SHIFT)
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
            pts = _bezier(rng, root_in, tip, length * 0.25, n=16)
            one = np.zeros((h, w), np.uint8)
            cv2.polylines(one, [_fixed(pts)], False, 255, 1, lineType=cv2.LINE_AA, shift=_SHIFT)
            strands = np.maximum(strands, one.astype(np.float32) / 255.0 * rng.uniform(0.45, 1.0))
        cov = np.maximum(cov, strands)

    if layer.kind == "veil":
        # Thin semi-transparent material (smoke, glass, gauze): coverage modulated by smooth noise and
        # kept below one half, so IoU(alpha > 0.5) measures solid subjects and MAE the soft detail.
        density = 0.5 + 0.5 * _smooth_noise(rng, h, w, int(rng.integers(3, 8)))
        cov = cov * np.clip(0.06 + 0.34 * density, 0.0, 1.0)
    return cov


def _layer_colour(layer: _Layer, h: int, w: int) -> np.ndarray:
    """The layer's clean colour, sRGB [H, W, 3]: a base colour with a texture and shading."""
    rng = np.random.default_rng(layer.seed + 7_919)
    tex = _smooth_noise(rng, h, w, layer.texture_cells)[..., None]
    fine = _smooth_noise(rng, h, w, layer.texture_cells * 4)[..., None]
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


def _motion_kernel(vec: np.ndarray) -> np.ndarray | None:
    length = float(np.linalg.norm(vec))
    if length < 1.0:
        return None
    size = math.ceil(length) * 2 + 1
    k = np.zeros((size, size), np.uint8)
    centre = np.array([size // 2, size // 2], np.float64)
    half = vec / 2.0
    p0, p1 = centre - half, centre + half
    cv2.line(k, tuple(_fixed(p0)), tuple(_fixed(p1)), 255, 1, lineType=cv2.LINE_AA, shift=_SHIFT)
    k = k.astype(np.float32)
    return k / k.sum()


# ----------------------------------------------------------------------------------------------- scene


@dataclass
class Scene:
    """The random choices behind a sample or a clip; :meth:`render` turns them into pixels."""

    seed: int
    screen: str
    screen_colour: np.ndarray  # sRGB
    light_amp: float
    light_cells: int
    gradient: np.ndarray
    vignette: float
    wrinkle_amp: float
    markers: int
    spill: float
    spill_width: float  # fraction of the short side
    noise: float
    exposure: float
    layers: list[_Layer]
    hint_params: dict

    @classmethod
    def from_seed(cls, seed: int, screen: str | None = None) -> Scene:
        rng = np.random.default_rng([_VERSION_SALT, seed])
        if screen is None:
            screen = "green" if rng.random() < 0.75 else "blue"
        base = np.array(SCREEN_COLOURS_SRGB[screen], np.float32)
        screen_colour = np.clip(base * rng.uniform(0.75, 1.2) + rng.normal(0, 0.04, 3), 0.02, 0.98)
        n_layers = int(rng.choice([1, 1, 2, 2, 3, 4]))
        layers = []
        for i in range(n_layers):
            main = i == 0
            kinds = ["blob", "ellipse", "box", "stroke", "veil"]
            kind = "blob" if main else str(rng.choice(kinds, p=[0.3, 0.2, 0.2, 0.2, 0.1]))
            if main and rng.random() < 0.08:
                kind = "veil"
            if kind == "veil" and any(layer.kind == "veil" for layer in layers):
                kind = "blob"  # one veil at most: two overlapping would add up past one half
            hair = 0
            if kind == "blob" and rng.random() < (0.6 if main else 0.3):
                hair = int(rng.integers(10, 70))
            defocus = rng.uniform(0.001, 0.008) if rng.random() < 0.3 else 0.0
            motion = rng.normal(0, 0.025, 2) if rng.random() < 0.25 else np.zeros(2)
            layers.append(
                _Layer(
                    kind=kind,
                    seed=int(rng.integers(0, 2**31)),
                    colour=_random_colour(rng, screen),
                    texture_amp=float(rng.uniform(0.0, 0.5)),
                    texture_cells=int(rng.integers(3, 14)),
                    stripes=float(rng.uniform(0.3, 0.9)) if rng.random() < 0.15 else 0.0,
                    stripe_colour=_random_colour(rng, screen),
                    defocus=float(defocus),
                    motion=motion,
                    velocity=rng.normal(0, 0.012, 2),
                    centre=rng.uniform(0.3, 0.7, 2) if main else rng.uniform(0.1, 0.9, 2),
                    scale=float(rng.uniform(0.18, 0.32) if main else rng.uniform(0.06, 0.2)),
                    hair=hair,
                )
            )
        hint_params = {
            "threshold": float(rng.uniform(0.15, 0.6)),
            "grow": float(rng.uniform(-0.025, 0.03)),
            "wobble": float(rng.uniform(0.0, 0.02)),
            "wobble_cells": int(rng.integers(4, 14)),
            "blur": float(rng.uniform(0.004, 0.025)),
            "blocky": int(rng.choice([1, 1, 1, 4, 8])),
            "holes": int(rng.choice([0, 0, 0, 1, 2])),
            "strays": int(rng.choice([0, 0, 0, 1, 2])),
            "seed": int(rng.integers(0, 2**31)),
        }
        return cls(
            seed=seed,
            screen=screen,
            screen_colour=screen_colour.astype(np.float32),
            light_amp=float(rng.uniform(0.05, 0.3)),
            light_cells=int(rng.integers(2, 6)),
            gradient=rng.uniform(-0.25, 0.25, 2),
            vignette=float(rng.uniform(0.0, 0.35)),
            wrinkle_amp=float(rng.uniform(0.0, 0.06)),
            markers=int(rng.choice([0, 0, 0, 4, 9])),
            spill=float(rng.uniform(0.0, 0.35)),
            spill_width=float(rng.uniform(0.01, 0.05)),
            noise=float(rng.uniform(0.002, 0.02)),
            exposure=float(rng.uniform(0.85, 1.15)),
            layers=layers,
            hint_params=hint_params,
        )

    # -------------------------------------------------------------------------------- rendering

    def _background(self, h: int, w: int, t: float) -> np.ndarray:
        """The lit screen in linear light [H, W, 3] (static: the camera does not move)."""
        rng = np.random.default_rng([self.seed, 1])
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u, v = xx / max(w - 1, 1) - 0.5, yy / max(h - 1, 1) - 0.5
        light = 1.0 + self.light_amp * _smooth_noise(rng, h, w, self.light_cells)
        light = light + self.gradient[0] * u + self.gradient[1] * v
        light = light - self.vignette * (u**2 + v**2) * 2.0
        wrinkles = self.wrinkle_amp * _smooth_noise(rng, h, w, 24)
        bg = (
            srgb_to_linear(self.screen_colour)[None, None, :] * np.clip(light + wrinkles, 0.3, 1.4)[..., None]
        )
        short = min(h, w)
        for k in range(self.markers):  # tracking crosses on the screen
            gy, gx = divmod(k, 3)
            cx = (gx + 0.5) / 3 * w + rng.normal(0, 0.03) * w
            cy = (gy + 0.5) / 3 * h + rng.normal(0, 0.03) * h
            arm = short * rng.uniform(0.015, 0.03)
            shade = rng.uniform(0.5, 1.4)
            mark = np.zeros((h, w), np.uint8)
            th = max(1, round(short * 0.006))
            for a, b in (((cx - arm, cy), (cx + arm, cy)), ((cx, cy - arm), (cx, cy + arm))):
                cv2.line(mark, tuple(_fixed(a)), tuple(_fixed(b)), 255, th, cv2.LINE_AA, _SHIFT)
            m = (mark.astype(np.float32) / 255.0)[..., None]
            bg = bg * (1 - m) + bg * shade * m
        return bg.astype(np.float32)

    def _layer_pixels(self, layer: _Layer, h: int, w: int, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Coverage [H, W] and clean colour [H, W, 3] (sRGB) of one layer at time ``t``."""
        short = min(h, w)
        cov = _draw_coverage(layer, h, w)
        col = _layer_colour(layer, h, w)
        shift = layer.velocity * t * short
        if t and np.any(np.abs(shift) > 1e-3):
            m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
            cov = cv2.warpAffine(cov, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            col = cv2.warpAffine(col, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        premult = srgb_to_linear(col) * cov[..., None]
        if layer.defocus > 0:
            sigma = layer.defocus * short
            cov, premult = _gaussian(cov, sigma), _gaussian(premult, sigma)
        kernel = _motion_kernel(layer.motion * short)
        if kernel is not None:
            cov = cv2.filter2D(cov, -1, kernel, borderType=cv2.BORDER_CONSTANT)
            premult = cv2.filter2D(premult, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        return np.clip(cov, 0, 1).astype(np.float32), premult.astype(np.float32)

    def _hint(self, alpha: np.ndarray) -> np.ndarray:
        p = self.hint_params
        h, w = alpha.shape
        short = min(h, w)
        rng = np.random.default_rng(p["seed"])
        binary = (alpha > p["threshold"]).astype(np.uint8)
        # Signed distance to the thresholded matte's edge, so growing/shrinking and wobble are smooth.
        inside = cv2.distanceTransform(binary, cv2.DIST_L2, 5)
        outside = cv2.distanceTransform(1 - binary, cv2.DIST_L2, 5)
        sdist = inside - outside
        offset = p["grow"] * short + p["wobble"] * short * _smooth_noise(rng, h, w, p["wobble_cells"])
        hint = (sdist + offset > 0).astype(np.float32)
        for _ in range(p["holes"]):  # a chunk the rough key missed
            c = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
            cv2.circle(hint, c, max(1, int(short * rng.uniform(0.02, 0.06))), 0.0, -1)
        for _ in range(p["strays"]):  # a blob of screen the rough key let through
            c = (int(rng.uniform(0, 1) * w), int(rng.uniform(0, 1) * h))
            cv2.circle(hint, c, max(1, int(short * rng.uniform(0.01, 0.04))), 1.0, -1)
        if p["blocky"] > 1:
            small = cv2.resize(hint, (max(1, w // p["blocky"]), max(1, h // p["blocky"])), cv2.INTER_AREA)
            hint = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        hint = _gaussian(hint, p["blur"] * short)
        return np.clip(hint, 0.0, 1.0).astype(np.float32)

    def render(self, size: int | tuple[int, int] = 256, t: float = 0.0) -> Sample:
        """Render the scene at ``size`` (an int for square, or ``(height, width)``) and time ``t``."""
        h, w = (size, size) if isinstance(size, int) else size
        short = min(h, w)
        bg = self._background(h, w, t)
        # Composite the foreground layers back to front ("over"), in linear light, premultiplied.
        fg_alpha = np.zeros((h, w), np.float32)
        fg_premult = np.zeros((h, w, 3), np.float32)
        for layer in self.layers:
            cov, premult = self._layer_pixels(layer, h, w, t)
            fg_premult = premult + fg_premult * (1 - cov[..., None])
            fg_alpha = cov + fg_alpha * (1 - cov)
        alpha = np.clip(fg_alpha, 0.0, 1.0)
        # Straight foreground: divide out alpha; where alpha is ~0, extend nearby colours (push-pull).
        straight = fg_premult / np.maximum(alpha[..., None], 1e-6)
        spread = max(1.0, short * 0.03)
        num = _gaussian(fg_premult, spread)
        den = _gaussian(alpha, spread)[..., None]
        filled = num / np.maximum(den, 1e-6)
        weight = np.clip(alpha * 20.0, 0.0, 1.0)[..., None]
        fg_linear = np.clip(straight * weight + filled * (1 - weight), 0.0, 1.0)
        fg_linear = np.where(den > 1e-4, fg_linear, 0.0).astype(np.float32)
        # Spill: light bouncing off the screen tints the foreground near its edges.
        edge = _gaussian((1.0 - (alpha > 0.5).astype(np.float32)), max(0.5, self.spill_width * short))
        spill = np.clip(self.spill * (0.3 + edge * 1.5), 0.0, 0.6)[..., None]
        screen_lin = srgb_to_linear(self.screen_colour)[None, None, :]
        lit = fg_linear * (1 - spill) + screen_lin * spill * 1.2
        comp = lit * alpha[..., None] + bg * (1 - alpha[..., None])
        comp = comp * self.exposure
        image = linear_to_srgb(comp)
        rng = np.random.default_rng([self.seed, 2, round(t * 1000)])
        image = image + rng.normal(0, self.noise, image.shape).astype(np.float32)
        return Sample(
            image=np.clip(image, 0.0, 1.0).astype(np.float32),
            alpha=alpha.astype(np.float32),
            fg=linear_to_srgb(fg_linear),
            hint=self._hint(alpha),
            screen=self.screen,
        )


def make_sample(seed: int, size: int | tuple[int, int] = 256, screen: str | None = None) -> Sample:
    """The sample for ``seed``: a fresh scene rendered at time 0."""
    return Scene.from_seed(seed, screen=screen).render(size)


def make_clip(seed: int, frames: int = 8, size: int | tuple[int, int] = 256) -> list[Sample]:
    """``frames`` consecutive frames of one moving scene (layers drift, the screen stays put)."""
    scene = Scene.from_seed(seed)
    return [scene.render(size, t=float(i)) for i in range(frames)]


def make_batch(seeds, size: int | tuple[int, int] = 256) -> dict[str, np.ndarray]:
    """Stack the samples for ``seeds``: ``image`` [N,H,W,3], ``alpha`` [N,H,W], ``fg``, ``hint``."""
    samples = [make_sample(int(s), size) for s in seeds]
    return {
        "image": np.stack([s.image for s in samples]),
        "alpha": np.stack([s.alpha for s in samples]),
        "fg": np.stack([s.fg for s in samples]),
        "hint": np.stack([s.hint for s in samples]),
    }
