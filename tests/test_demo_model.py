"""The bundled demo checkpoint: found by the registry, architecture from its metadata, and it really keys.

These run the real engine path (registry -> safetensors plugin -> metadata-built GreenFormer -> forward ->
post-processing) on held-out synthetic frames, so they check that loading and inference are numerically
right, not just that they run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from corridorkey_engine.demo.clip import (
    DEMO_CHECKPOINT_NAME,
    TARGETS,
    bundled_checkpoint_dir,
    foreground_quality,
    matte_quality,
    read_alpha,
    write_demo_clip,
)
from corridorkey_engine.demo.evaluate import TARGET_IOU, TARGET_MAE, evaluate
from corridorkey_engine.demo.synthetic import GENERATOR_VERSION, HELDOUT_SEED_BASE, make_clip
from corridorkey_engine.model.config import GreenFormerConfig

MAX_BYTES = 15 * 1024 * 1024


@pytest.fixture(scope="module")
def engine():
    from corridorkey_engine.engine import load_engine

    return load_engine(bundled_checkpoint_dir(), device="cpu")


def test_bundled_file_is_small_and_resolves_through_the_registry():
    from ckpt_formats import resolve

    path = bundled_checkpoint_dir() / DEMO_CHECKPOINT_NAME
    assert path.is_file()
    assert path.stat().st_size <= MAX_BYTES
    resolved = resolve(bundled_checkpoint_dir())
    assert resolved.format.name == "safetensors"
    assert resolved.path.name == DEMO_CHECKPOINT_NAME
    meta = resolved.metadata
    config = GreenFormerConfig.from_metadata(meta)
    assert config.encoder.startswith("hiera_")
    assert {"embed_dim", "stages"} <= set(config.encoder_kwargs)
    assert config.img_size <= 256
    assert int(meta["corridorkey.training_seed"]) >= 0
    # Trained on the data the generator makes today (retrain when GENERATOR_VERSION changes).
    assert meta["corridorkey.generator_version"] == GENERATOR_VERSION
    assert set(json.loads(meta["corridorkey.final_losses"])) >= {"alpha", "fg"}


def test_engine_builds_the_architecture_from_the_metadata(engine):
    assert (
        engine.config.encoder_kwargs
        == GreenFormerConfig.from_metadata(engine.checkpoint.metadata).encoder_kwargs
    )
    assert engine.load_report.missing == [] and engine.load_report.unexpected == []
    pos_embed = engine.model.state_dict()["encoder.model.pos_embed"]
    assert pos_embed.shape[1] == (engine.img_size // 4) ** 2


def test_keys_held_out_frames_within_the_targets_and_beats_the_hint(engine):
    result = evaluate(engine, frames=12, first_seed=HELDOUT_SEED_BASE + 500)
    assert result.model.mae <= TARGET_MAE, result.table()
    assert result.model.iou >= TARGET_IOU, result.table()
    assert result.model.mae < 0.6 * result.hint.mae, result.table()
    assert result.model.iou > result.hint.iou + 0.05, result.table()


def test_refiner_and_weights_matter(engine):
    # The same frames keyed with the refiner off are worse: the full network is doing the work.
    full = evaluate(engine, frames=4, first_seed=HELDOUT_SEED_BASE + 900)
    coarse = evaluate(engine, frames=4, first_seed=HELDOUT_SEED_BASE + 900, refiner_scale=0.0)
    assert full.model.mae < coarse.model.mae


def test_demo_clip_on_disk_and_quality_of_a_matte_folder(engine, tmp_path):
    import cv2

    clip = write_demo_clip(tmp_path / "clip", frames=3, size=engine.img_size)
    names = sorted(p.name for p in clip.input_dir.iterdir())
    assert names == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    assert sorted(p.name for p in clip.hint_dir.iterdir()) == names
    assert sorted(p.name for p in clip.truth_dir.iterdir()) == names
    truth = read_alpha(clip.truth_dir / names[1])
    np.testing.assert_allclose(
        truth, make_clip(clip.seed, frames=3, size=engine.img_size, screen="green")[1].alpha, atol=1e-4
    )

    # Key the files as the CLI would (8-bit plates and hints from disk) and write a 16-bit matte.
    matte_dir = tmp_path / "clip" / "Matte"
    matte_dir.mkdir()
    for name in names:
        image = cv2.cvtColor(cv2.imread(str(clip.input_dir / name)), cv2.COLOR_BGR2RGB)
        hint = cv2.imread(str(clip.hint_dir / name), cv2.IMREAD_GRAYSCALE)
        alpha = engine.process_frame(image, hint)["alpha"][..., 0]
        cv2.imwrite(str(matte_dir / name), np.round(alpha * 65535).astype(np.uint16))
    model = matte_quality(matte_dir, clip.truth_dir)
    hint = matte_quality(clip.hint_dir, clip.truth_dir)
    assert model.frames == hint.frames == 3
    assert model.meets(TARGET_MAE, TARGET_IOU), (model, hint)
    assert model.mae < hint.mae and model.iou > hint.iou


def test_matte_quality_refuses_mismatched_folders(tmp_path):
    clip = write_demo_clip(tmp_path / "clip", frames=2, size=32)
    (clip.hint_dir / "frame_0001.png").unlink()
    with pytest.raises(FileNotFoundError, match="frame_0001"):
        matte_quality(clip.hint_dir, clip.truth_dir)
    perfect = matte_quality(clip.truth_dir, clip.truth_dir)
    assert perfect.mae == 0.0 and perfect.iou == 1.0


def _key_to_processed(engine, clip, folder, **options) -> None:
    """Key the clip's PNGs as the CLI does and write Processed/ EXRs (linear premultiplied RGBA)."""
    import cv2

    from corridorkey_engine.clips.images import write_exr

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(clip.input_dir.iterdir()):
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        hint = cv2.imread(str(clip.hint_dir / path.name), cv2.IMREAD_GRAYSCALE)
        write_exr(
            folder / f"{path.stem}.exr", engine.process_frame(image, hint, **options)["processed"], "RGBA"
        )


@pytest.mark.parametrize(("screen", "other"), [("green", "blue"), ("blue", "green")])
def test_the_colour_figure_is_within_target_and_catches_the_wrong_despill(engine, tmp_path, screen, other):
    """The bundled model keys both screens within the colour target; despilling the other screen's channel
    (the salmon-subject bug of issue 11) shows up as a figure far over it."""
    clip = write_demo_clip(tmp_path / screen, frames=2, size=engine.img_size, screen=screen)
    assert clip.screen == screen
    sample = make_clip(clip.seed, frames=2, size=engine.img_size, screen=screen)[1]
    import cv2

    stored = cv2.imread(str(clip.fg_truth_dir / "frame_0001.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(stored[..., ::-1] / 65535.0, sample.fg, atol=1e-4)  # 16-bit RGB on disk
    _key_to_processed(engine, clip, tmp_path / screen / "Processed", screen_color=screen)
    right = foreground_quality(tmp_path / screen / "Processed", clip.fg_truth_dir, clip.truth_dir)
    _key_to_processed(engine, clip, tmp_path / screen / "Wrong", screen_color=other, despill_strength=1.0)
    wrong = foreground_quality(tmp_path / screen / "Wrong", clip.fg_truth_dir, clip.truth_dir)
    assert right.frames == wrong.frames == 2 and right.pixels == wrong.pixels > 500
    assert right.mae_8bit <= TARGETS.fg_error_8bit, right
    assert wrong.mae_8bit > 1.5 * TARGETS.fg_error_8bit, wrong
    assert right.mae_8bit == pytest.approx(255 * right.mae)


def test_foreground_quality_is_zero_for_the_truth_itself(tmp_path):
    """Processed/ made from the ground truth itself (premultiplied, linear) measures (almost) nothing."""
    from corridorkey_engine.clips.images import read_image, write_exr
    from corridorkey_engine.demo.synthetic import srgb_to_linear

    clip = write_demo_clip(tmp_path / "clip", frames=2, size=48)
    out = tmp_path / "clip" / "Processed"
    out.mkdir()
    for path in sorted(clip.fg_truth_dir.iterdir()):
        fg, alpha = read_image(path), read_alpha(clip.truth_dir / path.name)[..., None]
        write_exr(
            out / f"{path.stem}.exr",
            np.concatenate([srgb_to_linear(fg) * alpha, alpha], -1),
            "RGBA",
            half=False,
        )
    perfect = foreground_quality(out, clip.fg_truth_dir, clip.truth_dir)
    assert perfect.mae_8bit < 0.05 and perfect.pixels > 0
    (out / "frame_0001.exr").unlink()
    with pytest.raises(FileNotFoundError, match="frame_0001"):
        foreground_quality(out, clip.fg_truth_dir, clip.truth_dir)
