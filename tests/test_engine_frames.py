"""The frame contract users of upstream rely on, and the post-processing (CPU and GPU paths)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from engine_helpers import frame, tiny_engine, tiny_model

from corridorkey_engine import CorridorKeyEngine, save_checkpoint
from corridorkey_engine.keying import color as col
from corridorkey_engine.keying.despeckle import (
    blur_8bit,
    connected_components,
    despeckle,
    despeckle_opencv,
    despeckle_torch,
    dilate,
    remove_small_islands,
)
from corridorkey_engine.keying.frames import PostProcessOptions, model_input, postprocess, resize_lanczos

CHANNELS = {"alpha": 1, "fg": 3, "processed": 4, "comp": 3}


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> CorridorKeyEngine:
    return tiny_engine(tmp_path_factory.mktemp("ckpt"), seed=5)


def test_outputs_shapes_dtypes_ranges(engine) -> None:
    image, hint = frame(48, 80)
    out = engine.process_frame(image, hint)
    assert set(out) == set(CHANNELS)
    for name, array in out.items():
        assert isinstance(array, np.ndarray) and array.dtype == np.float32, name
        assert array.shape == (48, 80, CHANNELS[name]), name
        assert array.flags.c_contiguous, name
        assert np.isfinite(array).all(), name
    # Lanczos-4 back to the frame size rings a little past 0-1 (as upstream) ...
    for name in ("alpha", "fg"):
        assert out[name].min() >= -0.3 and out[name].max() <= 1.3, name
    assert out["comp"].min() >= 0.0  # ... and the preview is clamped below 0 by the transfer function
    at_model_size = engine.process_frame(*frame(64, 64))  # no resize: the model's sigmoids, within 0-1
    for name in ("alpha", "fg"):
        assert at_model_size[name].min() >= 0.0 and at_model_size[name].max() <= 1.0, name


def test_batched_equals_frame_by_frame(engine) -> None:
    frames = [frame(40, 56, seed=s) for s in range(3)]
    images = np.stack([f[0] for f in frames])
    hints = np.stack([f[1] for f in frames])
    batch = engine.process_frame(images, hints)
    for name, array in batch.items():
        assert array.shape == (3, 40, 56, CHANNELS[name])
    for i, (image, hint) in enumerate(frames):
        single = engine.process_frame(image, hint)
        for name in single:
            np.testing.assert_allclose(batch[name][i], single[name], atol=5e-5, err_msg=name)
    batch_4d_mask = engine.process_frame(images, hints[..., None])
    for name in batch:
        assert np.array_equal(batch[name], batch_4d_mask[name])


def test_2d_and_3d_masks_and_uint8_and_float_inputs_agree(engine) -> None:
    image, hint = frame()
    image8 = np.round(image * 255).astype(np.uint8)
    hint8 = np.round(hint * 255).astype(np.uint8)
    reference = engine.process_frame(image8.astype(np.float32) / 255, hint8.astype(np.float32) / 255)
    for img, msk in [(image8, hint8), (image8, hint8[..., None]), (image8.astype(np.float32) / 255, hint8)]:
        out = engine.process_frame(img, msk)
        for name in reference:
            np.testing.assert_allclose(out[name], reference[name], atol=1e-6, err_msg=name)
    image16 = (image8.astype(np.uint16) * 257).astype(np.uint16)  # 16-bit PNG/TIFF scale
    out16 = engine.process_frame(image16, torch.from_numpy(hint8))
    for name in reference:
        np.testing.assert_allclose(out16[name], reference[name], atol=1e-6, err_msg=name)


def test_bad_inputs_are_clear_errors(engine) -> None:
    image, hint = frame(48, 80)
    with pytest.raises(ValueError, match=r"image must be \[H, W, 3\]"):
        engine.process_frame(image[..., :2], hint)
    with pytest.raises(ValueError, match=r"mask must be \[48, 80\]"):
        engine.process_frame(image, hint[:40])
    with pytest.raises(ValueError, match=r"mask must be \[2, 48, 80\]"):
        engine.process_frame(np.stack([image, image]), hint)
    with pytest.raises(TypeError, match="image must be uint8, uint16 or float"):
        engine.process_frame(image.astype(np.int32), hint)
    with pytest.raises(ValueError, match="despill_strength must be between 0 and 1"):
        engine.process_frame(image, hint, despill_strength=1.5)
    with pytest.raises(ValueError, match="despeckle_size must be >= 0"):
        engine.process_frame(image, hint, despeckle_size=-1)
    with pytest.raises(ValueError, match="screen_color must be 'green' or 'blue', got 'red'"):
        engine.process_frame(image, hint, screen_color="red")
    with pytest.raises(ValueError, match="screen_color must be 'green' or 'blue'"):
        CorridorKeyEngine(Path("no-such-folder"), device="cpu", screen_color="magenta")  # before any loading


def test_options_generate_comp_despeckle_and_refiner(engine) -> None:
    image, hint = frame()
    plain = engine.process_frame(image, hint, auto_despeckle=False, despill_strength=0.0, generate_comp=False)
    assert "comp" not in plain
    # With neither despeckle nor despill, processed is exactly sRGB->linear(fg) premultiplied by alpha.
    fg_linear = col.srgb_to_linear(torch.from_numpy(plain["fg"])).numpy()
    np.testing.assert_allclose(plain["processed"][..., 3:], plain["alpha"], atol=0)
    np.testing.assert_allclose(plain["processed"][..., :3], fg_linear * plain["alpha"], atol=1e-6)
    coarse = engine.process_frame(image, hint, refiner_scale=0.0)
    assert np.abs(coarse["alpha"] - engine.process_frame(image, hint)["alpha"]).max() > 1e-3


def test_despill_lowers_green(engine) -> None:
    image, hint = frame()
    kept = engine.process_frame(image, hint, despill_strength=0.0, auto_despeckle=False)["processed"]
    half = engine.process_frame(image, hint, despill_strength=0.5, auto_despeckle=False)["processed"]
    full = engine.process_frame(image, hint, despill_strength=1.0, auto_despeckle=False)["processed"]
    assert np.all(full[..., 1] <= half[..., 1] + 1e-7) and np.all(half[..., 1] <= kept[..., 1] + 1e-7)
    assert (kept[..., 1] - full[..., 1]).max() > 1e-3
    np.testing.assert_array_equal(full[..., 3], kept[..., 3])  # alpha untouched


def test_blue_despill_lowers_blue_and_leaves_green_alone() -> None:
    """On a blue-screen frame, ``screen_color="blue"`` takes the blue excess over the average of red and
    green out of blue (half of it goes to each of them); green is never lowered. The green despill on the
    same frame does something else: it takes green out wherever green exceeds red and blue."""
    yy, xx = np.mgrid[0:64, 0:64]
    subject = np.hypot(yy - 32, xx - 32) < 18
    rgb = np.where(subject[..., None], [0.86, 0.62, 0.50], [0.10, 0.22, 0.72]).astype(np.float32)
    rgb[subject] += [0.0, 0.0, 0.15]  # blue spill on the subject
    rgb[:4] = [0.2, 0.7, 0.2]  # a green strip (no blue excess)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    blue = postprocess(
        torch.ones(1, 1, 64, 64), x, 64, 64, PostProcessOptions(1.0, False, screen_color="blue")
    )
    kept = postprocess(torch.ones(1, 1, 64, 64), x, 64, 64, PostProcessOptions(0.0, False))
    lin_b, lin_k = blue["processed"][0, :3], kept["processed"][0, :3]
    assert torch.all(lin_b[2] <= lin_k[2] + 1e-7) and (lin_k[2] - lin_b[2]).max() > 0.1  # blue lowered
    assert torch.all(lin_b[1] >= lin_k[1] - 1e-7)  # green never lowered
    torch.testing.assert_close(lin_b[:, :4], lin_k[:, :4], atol=0, rtol=0)  # no blue excess: untouched
    green = postprocess(torch.ones(1, 1, 64, 64), x, 64, 64, PostProcessOptions(1.0, False))["processed"][
        0, :3
    ]
    assert (lin_k[1] - green[1]).max() > 0.1 and torch.all(green[2] >= lin_k[2] - 1e-7)
    with pytest.raises(ValueError, match="screen_color must be 'green' or 'blue'"):
        PostProcessOptions(screen_color="red")


def test_despill_is_not_clamped() -> None:
    """As upstream: the red/blue despill adds may end above 1 and stay there (through sRGB->linear)."""
    rgb = torch.tensor([0.95, 1.0, 0.2]).view(1, 3, 1, 1)  # green excess 0.425: red gets 0.2125
    out = col.despill(rgb, 1.0)
    torch.testing.assert_close(out.flatten(), torch.tensor([1.1625, 0.575, 0.4125]))
    assert float(col.srgb_to_linear(out)[0, 0]) > 1.3


def test_despill_function() -> None:
    rgb = torch.tensor([[0.2, 0.9, 0.4], [0.6, 0.3, 0.5], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 3, 1)
    out = col.despill(rgb, 1.0)[0, :, :, 0].T
    # green 0.9 > (0.2+0.4)/2 = 0.3: excess 0.6 leaves green, half goes to red and half to blue
    torch.testing.assert_close(out[0], torch.tensor([0.5, 0.3, 0.7]))
    torch.testing.assert_close(out[1], torch.tensor([0.6, 0.3, 0.5]))  # no spill: untouched
    torch.testing.assert_close(out[2], torch.tensor([0.5, 0.5, 0.5]))  # grey: untouched
    torch.testing.assert_close(col.despill(rgb, 0.25), rgb + 0.25 * (col.despill(rgb, 1.0) - rgb))


def island_matte(height: int = 200, width: int = 240) -> np.ndarray:
    alpha = np.zeros((height, width), np.float32)
    cv2.circle(alpha, (150, 100), 45, 1.0, -1)  # large subject: ~6300 px
    alpha[20:26, 20:26] = 0.9  # 36-px tracking marker
    alpha[170:180, 30:34] = 0.8  # 40-px speck
    return alpha


@pytest.mark.parametrize("implementation", [despeckle_opencv, despeckle_torch])
def test_despeckle_removes_small_islands_and_keeps_large_ones(implementation) -> None:
    alpha = torch.from_numpy(island_matte())[None, None]
    out = implementation(alpha, 400, 25, 5)[0, 0].numpy()
    assert out[20:26, 20:26].max() < 1e-3 and out[170:180, 30:34].max() < 1e-3
    np.testing.assert_allclose(out[80:120, 130:170], 1.0, atol=1e-6)  # the subject's core is intact
    small = implementation(alpha, 30, 25, 5)[0, 0].numpy()  # threshold below the islands' sizes
    assert small[22, 22] > 0.85 and small[175, 32] > 0.75


def test_connected_components_match_opencv_on_random_mattes() -> None:
    rng = np.random.default_rng(0)
    for trial in range(25):
        height, width = rng.integers(1, 48, size=2)
        mask = rng.random((height, width)) < rng.uniform(0.2, 0.8)
        count, cv_labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        labels = connected_components(torch.from_numpy(mask)[None])[0].numpy()
        assert len(np.unique(labels[mask])) == count - 1, trial  # same number of components
        for component in range(1, count):  # and the same pixels in each
            members = cv_labels == component
            assert len(np.unique(labels[members])) == 1, trial
        for min_area in (2, 5, 17):
            areas = np.bincount(cv_labels.ravel())
            expected = mask & (areas[cv_labels] >= min_area)
            got = remove_small_islands(torch.from_numpy(mask)[None], min_area)[0].numpy()
            assert np.array_equal(got, expected), (trial, min_area)


def test_cpu_and_gpu_postprocessing_implementations_agree_on_the_cpu() -> None:
    """The GPU path's tensor implementation, run on CPU tensors, matches the CPU path's OpenCV one."""
    rng = np.random.default_rng(1)
    noise = cv2.GaussianBlur(rng.random((2, 150, 170)).astype(np.float32).transpose(1, 2, 0), (0, 0), 3)
    alpha = torch.from_numpy(np.clip((noise - 0.45) * 6, 0, 1).transpose(2, 0, 1))[:, None].contiguous()
    for min_area in (0, 50, 400):
        for dilation, blur in ((25, 5), (3, 2), (0, 0)):
            a = despeckle_opencv(alpha, min_area, dilation, blur)
            b = despeckle_torch(alpha, min_area, dilation, blur)
            assert torch.equal(a, b), (min_area, dilation, blur)  # bit for bit
    assert not torch.equal(despeckle(alpha, 400), alpha)  # something was removed
    assert torch.equal(despeckle(alpha, 400, tensor_path=True), despeckle(alpha, 400, tensor_path=False))


def test_tensor_dilation_and_8bit_blur_are_opencvs_bit_for_bit() -> None:
    """The tensor path's elliptic dilation and fixed-point Gaussian against cv2 on random masks, every
    radius up to 12 and 25 (the default), sizes down to 1 px (borders folded more than once)."""
    rng = np.random.default_rng(3)
    for radius in [*range(13), 25]:
        ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        for _ in range(4):
            height, width = (int(v) for v in rng.integers(1, 70, size=2))
            sparse = (rng.random((height, width)) < 0.02).astype(np.uint8)
            got = dilate(torch.from_numpy(sparse.astype(np.float32))[None, None], radius)[0, 0].numpy()
            assert np.array_equal(got, cv2.dilate(sparse, ellipse)), (radius, height, width)
            levels = rng.integers(0, 256, size=(height, width)).astype(np.uint8)
            blurred = blur_8bit(torch.from_numpy(levels.astype(np.float32))[None, None], radius)[0, 0].numpy()
            expected = cv2.GaussianBlur(levels, (2 * radius + 1, 2 * radius + 1), 0) if radius else levels
            assert np.array_equal(blurred, expected), (radius, height, width)


def test_tensor_lanczos_is_opencvs() -> None:
    """The tensor path's Lanczos-4 against ``cv2.resize(INTER_LANCZOS4)``: up, down, mixed, to 1 px; not
    clamped (it rings past the input's range, as OpenCV's does)."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.random((2, 3, 37, 53)).astype(np.float32))
    for height, width in ((128, 128), (20, 90), (1, 7), (37, 53), (300, 41)):
        ours = resize_lanczos(x, height, width, tensor_path=True)
        host = resize_lanczos(x, height, width, tensor_path=False)
        cv = np.stack(
            [
                cv2.resize(f, (width, height), interpolation=cv2.INTER_LANCZOS4)
                for f in x.permute(0, 2, 3, 1).numpy()
            ]
        )
        torch.testing.assert_close(host, torch.from_numpy(cv).permute(0, 3, 1, 2), atol=0, rtol=0)
        torch.testing.assert_close(ours, host, atol=2e-6, rtol=0)
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    rung = resize_lanczos(step, 32, 32, tensor_path=True)
    assert rung.max() > 1.01 and rung.min() < -0.01


def test_linear_input_is_resized_in_linear_light() -> None:
    # A 1-px black/white linear checkerboard halved: linear average 0.5, which is sRGB 0.735 for the model.
    # Treated as sRGB it would average to 0.5.
    checker = (np.indices((128, 128)).sum(axis=0) % 2).astype(np.float32)
    rgb = torch.from_numpy(np.repeat(checker[None, None], 3, axis=1))
    hint = torch.zeros(1, 1, 128, 128)
    mean = torch.tensor(col.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(col.IMAGENET_STD).view(1, 3, 1, 1)
    for linear, expected in ((True, 0.7354), (False, 0.5)):
        x = model_input(rgb, hint, 64, input_is_linear=linear, dtype=torch.float32)
        seen = x[:, :3] * std + mean
        torch.testing.assert_close(
            seen[..., 8:-8, 8:-8], torch.full_like(seen[..., 8:-8, 8:-8], expected), atol=1e-3, rtol=0
        )


def test_linear_input_at_model_size_matches_the_srgb_frame(engine) -> None:
    image, hint = frame(64, 64)  # already img_size: no resize, so only the transfer function differs
    linear = col.srgb_to_linear(torch.from_numpy(image)).numpy()
    a = engine.process_frame(image, hint)
    b = engine.process_frame(linear, hint, input_is_linear=True)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=2e-3, err_msg=name)


def test_colour_helpers() -> None:
    x = torch.linspace(0, 1, 101)
    torch.testing.assert_close(col.linear_to_srgb(col.srgb_to_linear(x)), x, atol=1e-5, rtol=0)
    assert abs(float(col.srgb_to_linear(torch.tensor(0.5))) - 0.214041) < 1e-5
    board = col.checkerboard(300, 300)[0, 0]
    assert float(board[0, 0]) == pytest.approx(0.15) and float(board[0, 128]) == pytest.approx(0.55)
    assert float(board[128, 0]) == pytest.approx(0.55) and float(board[130, 130]) == pytest.approx(0.15)


def test_comp_is_the_matte_over_the_checkerboard(engine) -> None:
    image, hint = frame(140, 150)
    out = engine.process_frame(image, hint)
    board = col.srgb_to_linear(col.checkerboard(140, 150))[0, 0].numpy()[..., None]
    fg_lin, a = out["processed"][..., :3], out["processed"][..., 3:]
    expected = col.linear_to_srgb(torch.from_numpy(fg_lin + board * (1 - a))).numpy()
    np.testing.assert_allclose(out["comp"], expected, atol=1e-5)


def test_the_finishing_stage_alone_is_postprocess_after_its_resize() -> None:
    """finish_outputs on frame-size tensors is postprocess's second stage: the same outputs, a matte given
    is the one used, and an output that needs the foreground refuses fg=None."""
    from corridorkey_engine.keying.frames import comp_background, despeckled, finish_outputs

    torch.manual_seed(3)
    alpha, fg = torch.rand(1, 1, 40, 40), torch.rand(1, 3, 40, 40)
    options = PostProcessOptions(despill_strength=0.4, despeckle_size=30)
    whole = postprocess(alpha, fg, 90, 70, options)
    big = [resize_lanczos(x, 90, 70) for x in (alpha, fg)]
    staged = finish_outputs(*big, options, tensor_path=False)
    assert list(staged) == list(whole) == ["alpha", "fg", "processed", "comp"]
    for name in whole:
        torch.testing.assert_close(staged[name], whole[name], atol=0, rtol=0)
    matte = despeckled(big[0], options, tensor_path=False)
    again = finish_outputs(*big, options, tensor_path=False, outputs=("comp",), matte=matte)
    torch.testing.assert_close(again["comp"], whole["comp"], atol=0, rtol=0)
    other = torch.full_like(big[0], 0.5)
    given = finish_outputs(*big, options, tensor_path=False, outputs=("processed",), matte=other)
    assert torch.equal(given["processed"][:, 3:], other)
    assert despeckled(big[0], replace(options, auto_despeckle=False), tensor_path=False) is big[0]
    assert list(finish_outputs(big[0], None, options, tensor_path=False, outputs=("alpha",))) == ["alpha"]
    with pytest.raises(ValueError, match=r"the outputs \['alpha', 'comp'\] need the foreground"):
        finish_outputs(big[0], None, options, tensor_path=False, outputs=("alpha", "comp"))
    background = comp_background(90, 70, 16, torch.device("cpu"))
    assert comp_background(90, 70, 16, torch.device("cpu")) is background  # made once per size
    assert torch.equal(background, col.srgb_to_linear(col.checkerboard(90, 70, 16)))


def test_postprocess_resizes_on_the_path_asked_and_a_matte_alone_once(monkeypatch) -> None:
    """``tensor_path`` reaches both resizes (the two paths differ in the last bits, so each is told apart)
    and a matte alone resizes the matte only."""
    from corridorkey_engine.keying import frames

    torch.manual_seed(5)
    alpha, fg = torch.rand(1, 1, 40, 40), torch.rand(1, 3, 40, 40)
    options = PostProcessOptions(auto_despeckle=False)
    for tensor_path in (True, False):
        out = postprocess(alpha, fg, 90, 70, options, tensor_path=tensor_path, outputs=("alpha", "fg"))
        assert torch.equal(out["alpha"], resize_lanczos(alpha, 90, 70, tensor_path=tensor_path))
        assert torch.equal(out["fg"], resize_lanczos(fg, 90, 70, tensor_path=tensor_path))
    assert not torch.equal(*(resize_lanczos(alpha, 90, 70, tensor_path=t) for t in (True, False)))
    sizes = []
    real = frames.resize_lanczos
    monkeypatch.setattr(
        frames, "resize_lanczos", lambda x, *a, **k: sizes.append(x.shape[1]) or real(x, *a, **k)
    )
    postprocess(alpha, fg, 90, 70, options, outputs=("alpha",))
    assert sizes == [1]


def test_checker_size_scales_the_preview_only_when_asked(engine) -> None:
    """Upstream's 128-px squares by default: a 120x100 frame is then one dark square (no checkerboard at
    all); checker_size=None scales them to the frame (1/16 of the shorter side: 6 px) and 16 sets them."""
    image, hint = frame(120, 100)
    plain = dict(auto_despeckle=False, despill_strength=0.0)
    default = engine.process_frame(image, hint, **plain)
    scaled = engine.process_frame(image, hint, checker_size=None, **plain)
    sixteen = engine.process_frame(image, hint, checker_size=16, **plain)
    for name in ("alpha", "fg", "processed"):  # the preview is all it changes
        np.testing.assert_array_equal(default[name], scaled[name])
    assert col.checker_size_for(120, 100) == 6 and col.checker_size_for(2160, 3840) == 135
    assert col.checker_size_for(20, 30) == 4
    for out, square in ((default, 128), (scaled, 6), (sixteen, 16)):
        board = col.srgb_to_linear(col.checkerboard(120, 100, square))[0, 0].numpy()[..., None]
        fg_lin, a = out["processed"][..., :3], out["processed"][..., 3:]
        want = col.linear_to_srgb(torch.from_numpy(fg_lin + board * (1 - a))).numpy()
        np.testing.assert_allclose(out["comp"], want, atol=1e-5)
    assert not np.allclose(default["comp"], scaled["comp"], atol=1e-3)
    board = col.checkerboard(120, 100, 6)[0, 0]
    assert float(board[0, 5]) == pytest.approx(0.15) and float(board[0, 6]) == pytest.approx(0.55)
    assert len(torch.unique(col.checkerboard(120, 100)[0, 0])) == 1  # upstream's: one square
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="checker_size"):
            PostProcessOptions(checker_size=bad)


# --------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_and_cpu_postprocessing_agree() -> None:
    rng = np.random.default_rng(2)
    noise = cv2.GaussianBlur(rng.random((256, 320)).astype(np.float32), (0, 0), 4)
    alpha = torch.from_numpy(np.clip((noise - noise.mean()) * 8 + 0.5, 0, 1))[None, None]
    fg = torch.rand(1, 3, 256, 320)
    options = PostProcessOptions(despill_strength=0.7, despeckle_size=200)
    cpu = postprocess(alpha, fg, 512, 600, options)
    gpu = postprocess(alpha.cuda(), fg.cuda(), 512, 600, options)
    for name in cpu:
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], atol=2e-3, rtol=0, msg=name)


@pytest.mark.gpu
def test_cuda_engine_float16_matches_cpu_float32(tmp_path: Path) -> None:
    save_checkpoint(tiny_model(seed=6), tmp_path / "tiny.safetensors")
    gpu = CorridorKeyEngine(tmp_path, device="cuda")
    assert gpu.dtype == torch.float16 and next(gpu.model.parameters()).device.type == "cuda"
    cpu = CorridorKeyEngine(tmp_path, device="cpu")
    images = np.stack([frame(96, 128, seed=s)[0] for s in range(4)])
    hints = np.stack([frame(96, 128, seed=s)[1] for s in range(4)])
    a, b = gpu.process_frame(images, hints), cpu.process_frame(images, hints)
    for name in a:
        assert a[name].shape == b[name].shape and a[name].dtype == np.float32
        assert np.mean(np.abs(a[name] - b[name])) < 0.02, name
