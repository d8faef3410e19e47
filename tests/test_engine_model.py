"""GreenFormer's architecture: the published checkpoint's key layout, the config, the forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import TINY, tiny_model

from corridorkey_engine.model.config import CORRIDORKEY_V1, ConfigError, GreenFormerConfig
from corridorkey_engine.model.network import build_greenformer

MANIFEST = json.loads((Path(__file__).parent / "data" / "greenformer_keys_2048.json").read_text())


def test_layout_equals_the_published_checkpoint_at_2048() -> None:
    model = build_greenformer(CORRIDORKEY_V1)  # meta device: no memory, instant
    state = model.state_dict()
    expected = MANIFEST["tensors"]
    assert list(state) == list(expected)  # same names, same order
    for key, tensor in state.items():
        assert list(tensor.shape) == expected[key]["shape"], key
        assert str(tensor.dtype).removeprefix("torch.") == expected[key]["dtype"], key
    assert len(state) == MANIFEST["tensor_count"]
    assert sum(t.numel() for t in state.values()) == MANIFEST["parameter_count"]
    assert all(t.is_meta for t in state.values())


@pytest.mark.parametrize("img_size", [512, 1024, 1536])
def test_pos_embed_follows_img_size_and_nothing_else_does(img_size: int) -> None:
    state = build_greenformer(CORRIDORKEY_V1.with_img_size(img_size)).state_dict()
    assert list(state["encoder.model.pos_embed"].shape) == [1, (img_size // 4) ** 2, 112]
    for key, spec in MANIFEST["tensors"].items():
        if key != "encoder.model.pos_embed":
            assert list(state[key].shape) == spec["shape"], key


def test_attention_uses_pytorch_sdpa() -> None:
    model = build_greenformer(CORRIDORKEY_V1)
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    assert len(flags) == 24 and all(flags)


def test_config_round_trips_through_checkpoint_metadata() -> None:
    metadata = TINY.to_metadata()
    assert set(metadata) == {"corridorkey.config"}
    assert all(isinstance(v, str) for v in metadata.values())
    assert GreenFormerConfig.from_metadata(metadata) == TINY
    assert GreenFormerConfig.from_metadata({}) == CORRIDORKEY_V1
    assert GreenFormerConfig.from_metadata(None) == CORRIDORKEY_V1
    assert (
        CORRIDORKEY_V1.encoder == "hiera_base_plus_224.mae_in1k_ft_in1k" and CORRIDORKEY_V1.img_size == 2048
    )


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ('{"img_size": 100}', "multiple of 32"),
        ('{"img_size": 64, "colour": "green"}', "unknown fields ['colour']"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"encoder_kwargs": {"img_size": 64}}', "may not set ['img_size']"),
        ('{"refiner_channels": 12}', "multiple of 8"),
    ],
)
def test_bad_config_metadata_is_one_clear_error(metadata: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        GreenFormerConfig.from_metadata({"corridorkey.config": metadata})


def test_forward_shapes_and_ranges() -> None:
    model = tiny_model()
    x = torch.randn(2, 4, 64, 64)
    with torch.inference_mode():
        out = model(x)
    assert set(out) == {"alpha", "fg"}
    assert out["alpha"].shape == (2, 1, 64, 64) and out["fg"].shape == (2, 3, 64, 64)
    for t in out.values():
        assert t.dtype == torch.float32 and float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_refiner_scale_scales_the_refiners_logit_corrections() -> None:
    model = tiny_model()
    x = torch.randn(1, 4, 64, 64)
    with torch.inference_mode():
        # The coarse prediction, computed here from the parts: decoders at 1/4, bilinear to full size.
        features = model.encoder(x)
        coarse = torch.cat([model.alpha_decoder(features), model.fg_decoder(features)], dim=1)
        coarse = F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
        delta = model.refiner(x[:, :3], torch.sigmoid(coarse))
        for scale in (0.0, 0.5, 1.0, 2.0):
            out = model(x, refiner_scale=scale)
            expected = torch.sigmoid(coarse + scale * delta)
            torch.testing.assert_close(out["alpha"], expected[:, :1])
            torch.testing.assert_close(out["fg"], expected[:, 1:])
    assert float(delta.abs().max()) > 0.1  # the refiner does change the prediction
