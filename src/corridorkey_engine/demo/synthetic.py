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

from dataclasses import dataclass

import cv2
import numpy as np

from .layers import (
    SHIFT,
    Layer,
    draw_coverage,
    fixed,
    gaussian,
    layer_colour,
    motion_kernel,
    random_colour,
    smooth_noise,
)

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
    layers: list[Layer]
    hint_params: dict

    @classmethod
    def from_seed(cls, seed: int, screen: str | None = None) -> Scene:
        rng = np.random.default_rng([_VERSION_SALT, seed])
        drawn = "green" if rng.random() < 0.75 else "blue"  # drawn even when given: the rest stays the same
        screen = drawn if screen is None else screen
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
                Layer(
                    kind=kind,
                    seed=int(rng.integers(0, 2**31)),
                    colour=random_colour(rng, screen),
                    texture_amp=float(rng.uniform(0.0, 0.5)),
                    texture_cells=int(rng.integers(3, 14)),
                    stripes=float(rng.uniform(0.3, 0.9)) if rng.random() < 0.15 else 0.0,
                    stripe_colour=random_colour(rng, screen),
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
        light = 1.0 + self.light_amp * smooth_noise(rng, h, w, self.light_cells)
        light = light + self.gradient[0] * u + self.gradient[1] * v
        light = light - self.vignette * (u**2 + v**2) * 2.0
        wrinkles = self.wrinkle_amp * smooth_noise(rng, h, w, 24)
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
                cv2.line(mark, tuple(fixed(a)), tuple(fixed(b)), 255, th, cv2.LINE_AA, SHIFT)
            m = (mark.astype(np.float32) / 255.0)[..., None]
            bg = bg * (1 - m) + bg * shade * m
        return bg.astype(np.float32)

    def _layer_pixels(self, layer: Layer, h: int, w: int, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Coverage [H, W] and clean colour [H, W, 3] (sRGB) of one layer at time ``t``."""
        short = min(h, w)
        cov = draw_coverage(layer, h, w)
        col = layer_colour(layer, h, w)
        shift = layer.velocity * t * short
        if t and np.any(np.abs(shift) > 1e-3):
            m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
            cov = cv2.warpAffine(cov, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            col = cv2.warpAffine(col, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        premult = srgb_to_linear(col) * cov[..., None]
        if layer.defocus > 0:
            sigma = layer.defocus * short
            cov, premult = gaussian(cov, sigma), gaussian(premult, sigma)
        kernel = motion_kernel(layer.motion * short)
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
        offset = p["grow"] * short + p["wobble"] * short * smooth_noise(rng, h, w, p["wobble_cells"])
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
        hint = gaussian(hint, p["blur"] * short)
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
        num = gaussian(fg_premult, spread)
        den = gaussian(alpha, spread)[..., None]
        filled = num / np.maximum(den, 1e-6)
        weight = np.clip(alpha * 20.0, 0.0, 1.0)[..., None]
        fg_linear = np.clip(straight * weight + filled * (1 - weight), 0.0, 1.0)
        fg_linear = np.where(den > 1e-4, fg_linear, 0.0).astype(np.float32)
        # Spill: light bouncing off the screen tints the foreground near its edges.
        edge = gaussian((1.0 - (alpha > 0.5).astype(np.float32)), max(0.5, self.spill_width * short))
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


def make_clip(
    seed: int, frames: int = 8, size: int | tuple[int, int] = 256, screen: str | None = None
) -> list[Sample]:
    """``frames`` consecutive frames of one moving scene (layers drift, the screen stays put); ``screen``
    forces a green or blue screen (default: the seed's draw)."""
    scene = Scene.from_seed(seed, screen=screen)
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
