"""Loading through the registry: cleanup, pos_embed resampling, strictness, no second copy."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_helpers import TINY, frame, state_dict_of, tiny_model, write_pth, write_safetensors

import ckpt_formats
from corridorkey_engine import CorridorKeyEngine
from corridorkey_engine.model.loading import (
    CheckpointMismatchError,
    load_greenformer,
    load_resolved,
    save_checkpoint,
)


def assert_model_holds(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


def test_safetensors_with_config_metadata_loads_exactly(tmp_path: Path) -> None:
    model = tiny_model()
    save_checkpoint(model, tmp_path / "tiny.safetensors", metadata={"seed": "7"})
    loaded = load_greenformer(tmp_path)
    assert loaded.config == TINY  # built from the metadata, no config passed
    assert loaded.report.missing == [] and loaded.report.unexpected == []
    assert loaded.checkpoint.format.name == "safetensors" and loaded.checkpoint.metadata["seed"] == "7"
    assert_model_holds(loaded.model, state_dict_of(model))
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_weights_are_assigned_not_copied(tmp_path: Path) -> None:
    """CPU float32: the model's tensors are the ones the registry loaded (memory-mapped), no copy."""
    write_safetensors(tmp_path, state_dict_of(tiny_model()), metadata=TINY.to_metadata())
    resolved = ckpt_formats.resolve(tmp_path)
    pointers = {k: v.data_ptr() for k, v in resolved.state_dict.items()}
    loaded = load_resolved(resolved, device=torch.device("cpu"), dtype=torch.float32)
    state = loaded.model.state_dict()
    assert {k: v.data_ptr() for k, v in state.items()} == pointers
    assert not any(t.is_meta for t in state.values())
    assert resolved.state_dict == {}  # the engine keeps no second reference


def test_compiled_prefixes_in_a_state_dict_wrapper_load_with_no_missing_or_unexpected(tmp_path: Path) -> None:
    state = state_dict_of(tiny_model(seed=1))
    wrapped = {
        "state_dict": {f"_orig_mod.{k}": v for k, v in state.items()},
        "epoch": 12,
        "optimizer": {"lr": 1e-4},
    }
    write_pth(tmp_path, wrapped)
    loaded = load_greenformer(tmp_path, config=TINY)
    assert loaded.checkpoint.format.name == "pickle"
    assert loaded.report.missing == [] and loaded.report.unexpected == []
    assert_model_holds(loaded.model, state)


def test_dataparallel_prefix_in_a_model_wrapper(tmp_path: Path) -> None:
    state = state_dict_of(tiny_model(seed=2))
    write_pth(tmp_path, {"model": {f"module.{k}": v for k, v in state.items()}})
    loaded = load_greenformer(tmp_path, config=TINY)
    assert loaded.report.missing == [] and loaded.report.unexpected == []
    assert_model_holds(loaded.model, state)


def test_pos_embed_of_another_img_size_is_resampled_bicubically(tmp_path: Path, caplog) -> None:
    state = state_dict_of(tiny_model())
    write_safetensors(tmp_path, state, metadata=TINY.to_metadata())  # trained at 64: a 16×16 token grid
    caplog.set_level(logging.INFO, logger="corridorkey_engine")
    loaded = load_greenformer(tmp_path, img_size=96)
    pos = loaded.model.state_dict()["encoder.model.pos_embed"]
    assert pos.shape == (1, 24 * 24, 8)
    assert loaded.report.resized == {"encoder.model.pos_embed": ((1, 256, 8), (1, 576, 8))}
    old = state["encoder.model.pos_embed"].reshape(1, 16, 16, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(old, size=(24, 24), mode="bicubic", align_corners=False)
    torch.testing.assert_close(pos, expected.permute(0, 2, 3, 1).reshape(1, 576, 8))
    assert "resampled encoder.model.pos_embed from 256 to 576 tokens" in caplog.text
    with torch.inference_mode():
        out = loaded.model(torch.randn(1, 4, 96, 96))
    assert out["alpha"].shape == (1, 1, 96, 96)


def test_safetensors_and_pth_of_the_same_weights_give_bit_identical_outputs(tmp_path: Path) -> None:
    state = state_dict_of(tiny_model(seed=3))
    write_safetensors(tmp_path / "st", state, metadata=TINY.to_metadata())
    write_pth(tmp_path / "pth", state)
    image, hint = frame()
    by_st = CorridorKeyEngine(tmp_path / "st", device="cpu").process_frame(image, hint)
    engine_pth = CorridorKeyEngine(tmp_path / "pth", device="cpu", config=TINY)
    assert engine_pth.checkpoint.format.name == "pickle"
    by_pth = engine_pth.process_frame(image, hint)
    assert set(by_st) == set(by_pth) == {"alpha", "fg", "processed", "comp"}
    for key in by_st:
        assert np.array_equal(by_st[key], by_pth[key]), key


def test_missing_key_is_refused_in_strict_mode_naming_the_file(tmp_path: Path) -> None:
    state = state_dict_of(tiny_model())
    del state["refiner.final.weight"]
    write_safetensors(tmp_path, state, metadata=TINY.to_metadata())
    with pytest.raises(CheckpointMismatchError) as info:
        load_greenformer(tmp_path)
    message = str(info.value)
    assert "model.safetensors" in message and "1 (refiner.final.weight) missing" in message
    assert "strict=False" in message


def test_non_strict_loads_logs_and_initialises_what_is_missing(tmp_path: Path, caplog) -> None:
    state = state_dict_of(tiny_model())
    del state["refiner.final.weight"]
    del state["encoder.model.pos_embed"]
    state["extra.head.weight"] = torch.ones(3)
    write_safetensors(tmp_path, state, metadata=TINY.to_metadata())
    caplog.set_level(logging.WARNING, logger="corridorkey_engine")
    loaded = load_greenformer(tmp_path, strict=False)
    assert sorted(loaded.report.missing) == ["encoder.model.pos_embed", "refiner.final.weight"]
    assert loaded.report.unexpected == ["extra.head.weight"]
    assert "2 (encoder.model.pos_embed, refiner.final.weight) missing" in caplog.text
    assert "1 (extra.head.weight) unexpected" in caplog.text
    model_state = loaded.model.state_dict()
    assert not any(t.is_meta for t in model_state.values())
    assert float(model_state["refiner.final.weight"].abs().sum()) > 0  # Conv2d's default init, not zeros
    assert torch.equal(model_state["refiner.final.bias"], state["refiner.final.bias"])  # loaded one kept
    with torch.inference_mode():
        loaded.model(torch.randn(1, 4, 64, 64))


def test_unexpected_key_is_refused_in_strict_mode(tmp_path: Path) -> None:
    state = state_dict_of(tiny_model())
    state["alpha_decoder.extra"] = torch.zeros(2)
    write_safetensors(tmp_path, state, metadata=TINY.to_metadata())
    with pytest.raises(CheckpointMismatchError, match=r"1 \(alpha_decoder.extra\) unexpected"):
        load_greenformer(tmp_path)


def test_checkpoint_for_another_architecture_is_one_clear_error(tmp_path: Path) -> None:
    write_pth(tmp_path, state_dict_of(tiny_model()))  # no metadata: taken for CorridorKey v1.0
    with pytest.raises(CheckpointMismatchError) as info:
        load_greenformer(tmp_path)
    message = str(info.value)
    assert "model.pth (pickle)" in message and "wrong shape" in message and "config" in message
    assert isinstance(info.value, ckpt_formats.CheckpointLoadError)  # one family for every load failure


def test_weights_land_in_the_target_dtype(tmp_path: Path) -> None:
    model = tiny_model()
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_greenformer(tmp_path, dtype=torch.bfloat16)
    state = loaded.model.state_dict()
    assert state["refiner.final.weight"].dtype == torch.bfloat16
    assert state["alpha_decoder.bn.num_batches_tracked"].dtype == torch.int64  # not a float: untouched
    torch.testing.assert_close(
        state["refiner.final.weight"], model.state_dict()["refiner.final.weight"].to(torch.bfloat16)
    )


def test_registry_policy_and_errors_pass_through(tmp_path: Path) -> None:
    write_pth(tmp_path, state_dict_of(tiny_model()))
    with pytest.raises(ckpt_formats.CheckpointNotFoundError):
        load_greenformer(tmp_path, config=TINY, safe_only=True)
    with pytest.raises(ckpt_formats.CheckpointNotFoundError):
        load_greenformer(tmp_path / "empty", config=TINY)


def test_save_checkpoint_is_atomic_and_only_writes_safetensors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(tiny_model(), tmp_path / "m.pth")
    save_checkpoint(tiny_model(), tmp_path / "m.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
