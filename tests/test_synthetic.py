"""The synthetic green-screen generator: deterministic per seed, shapes and ranges the engine takes."""

from __future__ import annotations

import numpy as np
import pytest

from corridorkey_engine.demo.synthetic import GENERATOR_VERSION, Scene, make_batch, make_clip, make_sample


@pytest.mark.parametrize("size", [64, (48, 80)])
def test_sample_shapes_dtypes_and_ranges(size):
    s = make_sample(3, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert s.image.shape == (h, w, 3)
    assert s.fg.shape == (h, w, 3)
    assert s.alpha.shape == (h, w)
    assert s.hint.shape == (h, w)
    for arr in (s.image, s.fg, s.alpha, s.hint):
        assert arr.dtype == np.float32
        assert np.isfinite(arr).all()
        assert arr.min() >= 0.0 and arr.max() <= 1.0
    assert s.screen in ("green", "blue")


def test_same_seed_same_pixels_and_different_seeds_differ():
    a, b, c = make_sample(11, 64), make_sample(11, 64), make_sample(12, 64)
    for name in ("image", "alpha", "fg", "hint"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.alpha, c.alpha)


def test_alpha_has_foreground_background_and_soft_edges():
    # Over many seeds: there is always some subject and some screen, and real partial coverage.
    for seed in range(12):
        s = make_sample(seed, 96)
        assert (s.alpha > 0.99).mean() > 0.01 or (s.alpha > 0.2).mean() > 0.02, seed
        assert (s.alpha < 0.01).mean() > 0.2, seed
        assert ((s.alpha > 0.05) & (s.alpha < 0.95)).sum() > 10, seed


def test_plate_is_a_screen_where_alpha_is_zero():
    s = make_sample(5, 96, screen="green")
    bg = s.image[s.alpha < 0.001]
    assert bg[:, 1].mean() > bg[:, 0].mean() + 0.15  # green dominates the bare screen
    s = make_sample(5, 96, screen="blue")
    bg = s.image[s.alpha < 0.001]
    assert bg[:, 2].mean() > bg[:, 0].mean() + 0.15


def test_hint_is_coarse_but_related_to_the_truth():
    errs, corrs = [], []
    for seed in range(8):
        s = make_sample(seed, 96)
        errs.append(np.abs(s.hint - s.alpha).mean())
        corrs.append(np.corrcoef(s.hint.ravel(), s.alpha.ravel())[0, 1])
    assert np.mean(errs) > 0.01  # imprecise: the model has something to improve
    assert np.mean(corrs) > 0.6  # yet it points at the subject


def test_clip_moves_but_keeps_the_screen():
    frames = make_clip(7, frames=3, size=64)
    assert len(frames) == 3
    assert not np.array_equal(frames[0].alpha, frames[2].alpha)
    assert len({f.screen for f in frames}) == 1
    np.testing.assert_array_equal(make_clip(7, frames=3, size=64)[2].image, frames[2].image)


def test_batch_stacks_samples():
    b = make_batch([1, 2, 3], 32)
    assert b["image"].shape == (3, 32, 32, 3)
    assert b["alpha"].shape == (3, 32, 32)
    np.testing.assert_array_equal(b["alpha"][1], make_sample(2, 32).alpha)


def test_scene_and_version_are_exposed():
    assert GENERATOR_VERSION
    scene = Scene.from_seed(4)
    assert 1 <= len(scene.layers) <= 4
