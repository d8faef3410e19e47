"""Engine details written against surviving mutants: the preview checkerboard, the chroma hint's ramp, the
post-processing options' limits, the frame upload's dtypes and refusals, the mismatch message."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from helpers_ckpt import tiny_config, write_tiny_checkpoint

from corridorkey_engine.keying.chroma import chroma_hint
from corridorkey_engine.keying.color import CHECKER_COLOURS, checkerboard
from corridorkey_engine.keying.frames import PostProcessOptions, to_batch


def test_the_checkerboard_has_squares_of_the_size_asked_dark_first():
    board = checkerboard(5, 7, size=2)[0, 0]
    dark, light = CHECKER_COLOURS
    rows, cols = np.indices((5, 7))
    expected = np.where((rows // 2 + cols // 2) % 2 == 1, light, dark).astype(np.float32)
    assert board.dtype == torch.float32 and tuple(board.shape) == (5, 7)
    np.testing.assert_array_equal(board.numpy(), expected)
    assert board[0, 0] == dark and board[0, 2] == light and board[2, 2] == dark


def test_the_chroma_hint_ramps_from_no_excess_to_half_the_typical_excess():
    excess = np.linspace(0.0, 1.0, 101, dtype=np.float32)  # screen-channel excess, one pixel each
    image = np.zeros((1, 101, 3), np.float32)
    image[0, :, 1] = excess  # green over black: the excess is the green value itself
    hint = chroma_hint(image, "green", softness=0.5, blur=0)
    typical = np.percentile(excess, 95)  # 0.95
    expected = 1.0 - np.clip(excess / (0.5 * typical), 0.0, 1.0)
    assert hint.dtype == np.float32 and hint.shape == (1, 101)
    np.testing.assert_allclose(hint[0], expected, atol=1e-6)
    assert hint[0, 0] == 1.0 and hint[0, 48] == 0.0 and 0.0 < hint[0, 47] < 0.02


def test_a_frame_without_a_screen_gets_an_all_foreground_hint(caplog):
    grey = np.full((4, 5, 3), 0.5, np.float32)
    with caplog.at_level(logging.WARNING):
        hint = chroma_hint(grey, "blue")
    assert hint.dtype == np.float32 and hint.shape == (4, 5) and (hint == 1.0).all()
    assert [r.getMessage() for r in caplog.records] == [
        "chroma hint: no blue screen visible in the frame; using an all-foreground hint"
    ]


def test_post_processing_limits():
    assert PostProcessOptions(despeckle_size=0).despeckle_size == 0  # 0: no island is small enough
    assert PostProcessOptions(checker_size=1).checker_size == 1
    with pytest.raises(ValueError, match=r"^despeckle_size must be >= 0, got -1$"):
        PostProcessOptions(despeckle_size=-1)
    with pytest.raises(ValueError, match=r"^checker_size must be a positive whole number of pixels or None"):
        PostProcessOptions(checker_size=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.uint8])
def test_every_frame_dtype_is_uploaded_as_float32(dtype):
    image = torch.ones(2, 3, 3, dtype=dtype)
    mask = torch.ones(2, 3, dtype=dtype)
    rgb, alpha, batched = to_batch(image, mask, torch.device("cpu"))
    assert rgb.dtype == alpha.dtype == torch.float32 and not batched
    scale = 255.0 if dtype == torch.uint8 else 1.0
    assert torch.equal(rgb, torch.full((1, 3, 2, 3), 1.0 / scale))


def test_an_integer_frame_type_is_refused_by_name():
    with pytest.raises(TypeError) as err:
        to_batch(np.zeros((2, 2, 3), np.int32), np.zeros((2, 2), np.float32), torch.device("cpu"))
    assert str(err.value) == "image must be uint8, uint16 or float, got int32"
    with pytest.raises(TypeError) as err:
        to_batch(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2), np.int64), torch.device("cpu"))
    assert str(err.value) == "mask must be uint8, uint16 or float, got int64"


@pytest.mark.parametrize("missing", [3, 4])
def test_a_checkpoint_missing_keys_names_the_first_three(tmp_path, missing):
    from safetensors.torch import load_file, save_file

    from corridorkey_engine.errors import CheckpointMismatchError
    from corridorkey_engine.model.loading import load_greenformer
    from corridorkey_engine.model.network import GreenFormer

    folder = write_tiny_checkpoint(tmp_path / "ckpt")
    path = folder / "model.safetensors"
    state = load_file(str(path))
    dropped = list(GreenFormer(tiny_config()).state_dict())[:missing]  # the model's order, as reported
    for key in dropped:
        del state[key]
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointMismatchError) as err:
        load_greenformer(folder, device="cpu")
    shown = ", ".join(dropped[:3]) + (" …" if missing > 3 else "")
    assert f": does not match the GreenFormer: {missing} ({shown}) missing, 0 unexpected. " in str(err.value)


def _tiny_state():
    from corridorkey_engine.model.network import GreenFormer

    model = GreenFormer(tiny_config())
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_prepare_state_dict_refuses_what_is_not_a_state_dict():
    from corridorkey_engine.errors import CheckpointMismatchError
    from corridorkey_engine.model.loading import prepare_state_dict

    model, _ = _tiny_state()
    with pytest.raises(CheckpointMismatchError) as err:
        prepare_state_dict([1, 2], model, source="weights.pth")
    assert str(err.value).startswith("weights.pth: not a GreenFormer state dict: ")


def test_prepare_state_dict_logs_what_it_ignores(caplog):
    from corridorkey_engine.model.loading import prepare_state_dict

    model, state = _tiny_state()
    state.update(epoch=3, note="trained on plates")
    with caplog.at_level(logging.INFO, logger="corridorkey_engine"):
        tensors, report = prepare_state_dict(state, model, source="w")
    assert sorted(report.skipped) == ["epoch", "note"] and "epoch" not in tensors
    logged = [r.getMessage() for r in caplog.records]
    assert f"w: ignoring 2 non-tensor entries ({', '.join(report.skipped)})" in logged


@pytest.mark.parametrize("count", [1, 3, 4])
def test_wrong_shapes_after_matching_keys_are_found_and_the_first_three_named(count):
    from corridorkey_engine.errors import CheckpointMismatchError
    from corridorkey_engine.model.loading import prepare_state_dict

    model, state = _tiny_state()
    changed = [k for k, v in state.items() if v.ndim >= 1 and not k.endswith("pos_embed")][-count:]
    for key in changed:
        state[key] = torch.zeros(*[n + 1 for n in state[key].shape])
    with pytest.raises(CheckpointMismatchError) as err:
        prepare_state_dict(state, model, source="w")
    want = model.state_dict()
    shapes = [f"{k}: checkpoint {list(state[k].shape)}, model {list(want[k].shape)}" for k in changed]
    listed = "; ".join(shapes[:3]) + (" …" if count > 3 else "")
    assert str(err.value).startswith(
        f"w: {count} tensors have the wrong shape for this GreenFormer config ({listed}); the checkpoint"
    )


def test_loading_logs_where_the_model_is_ready(tmp_path, caplog):
    from corridorkey_engine.model.loading import load_greenformer

    folder = write_tiny_checkpoint(tmp_path / "ckpt")
    with caplog.at_level(logging.INFO, logger="corridorkey_engine"):
        load_greenformer(folder, device="cpu")
    assert any(
        m.startswith("GreenFormer ready from ") and m.endswith(" on cpu (torch.float32, img_size 64)")
        for m in (r.getMessage() for r in caplog.records)
    ), [r.getMessage() for r in caplog.records]


def test_an_integer_tensor_is_refused_by_name():
    with pytest.raises(TypeError) as err:
        to_batch(torch.zeros(2, 2, 3, dtype=torch.int32), torch.zeros(2, 2), torch.device("cpu"))
    assert str(err.value) == "image must be uint8, uint16 or float, got torch.int32"


def test_excess_beyond_the_ramp_changes_nothing_even_blurred():
    """Past softness x the typical excess a pixel is screen: how much more green it has must not matter,
    also after the median and Gaussian smoothing (the ramp saturates before the blur)."""
    hints = []
    for background in (0.6, 0.9):
        image = np.zeros((20, 20, 3), np.float32)
        image[..., 1] = background
        image[:2, :] = (0.0, 1.0, 0.0)  # 10% of the frame: the typical excess is 1.0
        image[8:14, 8:14] = (0.8, 0.5, 0.3)  # an orange subject, no excess
        hints.append(chroma_hint(image, "green", softness=0.5, blur=5))
    np.testing.assert_array_equal(hints[0], hints[1])
    assert hints[0][11, 11] > 0.9 and hints[0][4, 2] == 0.0


def test_a_missing_tensor_without_a_default_initialisation_is_zeros_and_said(tmp_path, caplog):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from corridorkey_engine.model.loading import load_greenformer

    folder = write_tiny_checkpoint(tmp_path / "ckpt")
    path = folder / "model.safetensors"
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("pos_embed"))
    del state[key]
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    save_file(state, str(path), metadata=metadata)
    with caplog.at_level(logging.WARNING, logger="corridorkey_engine"):
        loaded = load_greenformer(folder, device="cpu", strict=False)
    owner = key.rpartition(".")[0]
    assert f"{owner}: no default initialisation; its missing tensors are zeros" in [
        r.getMessage() for r in caplog.records
    ]
    assert torch.count_nonzero(loaded.model.get_parameter(key)) == 0
