"""The demo training script stays working: a few steps of a tiny GreenFormer make the loss go down, and
what it saves loads back through the registry and the engine like any checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from corridorkey_engine.demo.synthetic import GENERATOR_VERSION, make_sample
from corridorkey_engine.demo.train import TrainOptions, main, matting_loss, save_trained, train
from corridorkey_engine.model.config import GreenFormerConfig

TINY = TrainOptions(
    img_size=32,
    embed_dim=8,
    num_heads=1,
    stages=(1, 1, 1, 1),
    decoder_dim=16,
    refiner_channels=8,
    steps=40,
    batch_size=4,
    lr=3e-3,
    warmup=0.1,
    seed=0,
    device="cpu",
    threads=1,
    log_every=1,
)


@pytest.fixture(scope="module")
def tiny_run():
    return train(TINY)


def test_a_short_run_lowers_the_loss(tiny_run):
    losses = [h["batch_loss"] for h in tiny_run.history]
    assert len(losses) == TINY.steps
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.7 * first, (first, last)
    assert all(np.isfinite(losses))


def test_the_run_is_reproducible():
    short = TrainOptions(**{**TINY.__dict__, "steps": 3})
    first, second = train(short), train(short)
    assert [h["batch_loss"] for h in first.history] == [h["batch_loss"] for h in second.history]
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_loss_is_zero_for_a_perfect_prediction_and_grows_with_error():
    s = make_sample(1, 32)
    alpha = torch.from_numpy(s.alpha)[None, None]
    fg = torch.from_numpy(s.fg).permute(2, 0, 1)[None]
    perfect, _ = matting_loss({"alpha": alpha, "fg": fg}, alpha, fg)
    assert perfect.item() == pytest.approx(0.0, abs=1e-7)
    off, parts = matting_loss({"alpha": (alpha + 0.1).clamp(0, 1), "fg": fg}, alpha, fg)
    assert off.item() > 0.01 and parts["alpha"] > 0.01 and parts["fg"] == pytest.approx(0.0, abs=1e-7)


def test_saved_checkpoint_carries_config_and_training_record(tiny_run, tmp_path):
    from ckpt_formats import resolve

    path = save_trained(tiny_run, tmp_path / "ckpt" / "tiny.safetensors")
    resolved = resolve(path.parent)
    assert resolved.format.name == "safetensors"
    meta = resolved.metadata
    config = GreenFormerConfig.from_metadata(meta)
    assert config == TINY.model_config()
    assert config.encoder_kwargs["embed_dim"] == 8 and config.img_size == 32
    assert meta["corridorkey.training_seed"] == "0"
    assert meta["corridorkey.generator_version"] == GENERATOR_VERSION
    assert meta["corridorkey.steps"] == str(TINY.steps)
    assert set(json.loads(meta["corridorkey.final_losses"])) == {"loss", "alpha", "grad", "fg"}
    # The engine builds this architecture from the metadata alone and reproduces the trained model.
    from corridorkey_engine.engine import load_engine
    from corridorkey_engine.keying.frames import model_input

    engine = load_engine(path.parent, device="cpu")
    s = make_sample(5, 32)
    out = engine.process_frame(s.image, s.hint)
    assert out["alpha"].shape == (32, 32, 1) and out["fg"].shape == (32, 32, 3)
    rgb = torch.from_numpy(s.image).permute(2, 0, 1)[None]
    x = model_input(rgb, torch.from_numpy(s.hint)[None, None], 32, input_is_linear=False, dtype=torch.float32)
    with torch.no_grad():
        direct = tiny_run.model.eval()(x)["alpha"][0, 0].numpy()
    np.testing.assert_allclose(out["alpha"][..., 0], direct, atol=1e-5)


def test_command_line_writes_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    args = ["--output", str(out), "--img-size", "32", "--embed-dim", "8", "--stages", "1,1,1,1"]
    args += ["--decoder-dim", "8", "--refiner-channels", "8", "--steps", "2", "--batch-size", "2"]
    assert main([*args, "--device", "cpu", "--log-every", "1"]) == 0
    assert out.is_file()
    assert "wrote" in capsys.readouterr().out
