"""Parity with upstream CorridorKey's own engine: ``../shared/upstream_parity/reference_128.npz``.

The reference holds what upstream's ``CorridorKeyEngine.process_frame`` returned (CPU, float32, img_size
128, deterministic synthetic weights from ``make_weights.py``) on four frames: green 128×128 (no resize),
green 96×160 and 200×120 (resized in and back), blue 128×128. Groups: ``cli.opencv`` (what upstream's
``run-inference`` does by default), ``plain.opencv`` (despill and despeckle off) and ``cli.torch``
(upstream's torch post-processing, which depends on the RNG: not a target). The folder lives beside the
repository (``../shared`` from its root); without it these tests are skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from corridorkey_engine import CorridorKeyEngine
from corridorkey_engine.keying.frames import PostProcessOptions, model_input, postprocess, to_batch

PARITY_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "upstream_parity"
REFERENCE = PARITY_DIR / "reference_128.npz"
OUTPUTS = ("alpha", "fg", "comp", "processed")
TARGET_GROUPS = ("cli.opencv", "plain.opencv")  # upstream's default CLI path, and with despill/despeckle off
CASES = ("a_green_128x128", "b_green_96x160", "c_green_200x120", "d_blue_128x128")
SCREEN_BY_CHANNEL = {1: "green", 2: "blue"}
CPU_TOLERANCE = 1e-4  # ours vs upstream on the CPU
PATHS_TOLERANCE = 2e-3  # the tensor (CUDA) path vs the OpenCV (CPU) path

pytestmark = pytest.mark.skipif(
    not REFERENCE.is_file(),
    reason=f"upstream parity reference not found: {REFERENCE} (../shared beside the repo)",
)


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


@pytest.fixture(scope="session")
def parity_checkpoint(tmp_path_factory) -> Path:
    """The reference's synthetic weights (282 MB at img_size 128), written once per session."""
    sys.path.insert(0, str(PARITY_DIR))
    try:
        import make_weights
    finally:
        sys.path.remove(str(PARITY_DIR))
    ref = np.load(REFERENCE)
    folder = tmp_path_factory.mktemp("parity_ckpt")
    _, sha = make_weights.write(folder, img_size=int(ref["img_size"]), seed=int(ref["weights_seed"]))
    assert sha == str(ref["weights_sha256"]), "make_weights.py drew other weights than the reference's"
    return folder


@pytest.fixture(scope="module")
def engine(parity_checkpoint) -> CorridorKeyEngine:
    return CorridorKeyEngine(parity_checkpoint, device="cpu", precision="float32", img_size=128)


def inputs(ref, case: str) -> tuple[np.ndarray, np.ndarray]:
    return tuple(ref[f"{case}.{k}"].astype(np.float32) / 255 for k in ("frame", "hint"))


def our_options(ref, case: str, group: str) -> dict:
    """Upstream's ``process_frame`` keywords for ``case``/``group`` as ours: ``screen_channel`` becomes
    ``screen_color``; ``fg_is_straight=True`` and ``post_process_on_gpu=False`` are what ours always does."""
    opts = json.loads(str(ref[f"{case}.{group}.options"]))
    assert opts.pop("fg_is_straight") is True and opts.pop("post_process_on_gpu") is (group == "cli.torch")
    opts["screen_color"] = SCREEN_BY_CHANNEL[opts.pop("screen_channel", 1)]
    return opts


def post_options(ref, case: str, group: str) -> PostProcessOptions:
    """:func:`our_options` less the two that are keywords of the call, as the post-processing value."""
    opts = our_options(ref, case, group)
    call_keywords = ("refiner_scale", "input_is_linear")
    return PostProcessOptions(**{k: v for k, v in opts.items() if k not in call_keywords})


def upstream(ref, case: str, group: str, name: str) -> np.ndarray:
    if name in ("alpha", "fg"):  # stored once per post-processing path
        return ref[f"{case}.{group.split('.')[1]}.{name}"]
    return ref[f"{case}.{group}.{name}"]


def test_reference_covers_what_we_check(reference) -> None:
    assert tuple(map(str, reference["cases"])) == CASES
    assert set(TARGET_GROUPS) <= set(map(str, reference["groups"]))
    assert int(reference["img_size"]) == 128


@pytest.mark.parametrize("case", CASES)
def test_process_frame_matches_upstream_run_inference(engine, reference, case) -> None:
    frame, hint = inputs(reference, case)
    for group in TARGET_GROUPS:
        ours = engine.process_frame(frame, hint, **our_options(reference, case, group))
        for name in OUTPUTS:
            theirs = upstream(reference, case, group, name)
            assert ours[name].shape == theirs.shape, (group, name)
            diff = float(np.abs(ours[name].astype(np.float64) - theirs).max())
            assert diff <= CPU_TOLERANCE, f"{case} {group} {name}: max |ours - upstream| = {diff:.2e}"


def test_defaults_are_upstream_cli_defaults(engine, reference) -> None:
    """No options at all gives upstream's ``run-inference`` defaults (despill 0.5, despeckle 400, comp)."""
    case = "b_green_96x160"
    ours = engine.process_frame(*inputs(reference, case))
    for name in OUTPUTS:
        diff = float(np.abs(ours[name] - upstream(reference, case, "cli.opencv", name)).max())
        assert diff <= CPU_TOLERANCE, (name, diff)


def test_blue_screen_needs_the_blue_despill(engine, parity_checkpoint, reference) -> None:
    """Case d matches only with ``screen_color="blue"``, given per call or as the engine's default."""
    case = "d_blue_128x128"
    frame, hint = inputs(reference, case)
    opts = our_options(reference, case, "cli.opencv")
    theirs = upstream(reference, case, "cli.opencv", "processed")
    as_green = engine.process_frame(frame, hint, **{**opts, "screen_color": "green"})["processed"]
    assert np.abs(as_green - theirs).max() > 0.1
    # The reference keys both screens with the same synthetic weights (named like the green model), so
    # the file names must not choose the model here: match_screen=False.
    blue_engine = CorridorKeyEngine(
        parity_checkpoint,
        device="cpu",
        precision="float32",
        img_size=128,
        screen_color="blue",
        match_screen=False,
    )
    opts.pop("screen_color")
    assert np.abs(blue_engine.process_frame(frame, hint, **opts)["processed"] - theirs).max() <= CPU_TOLERANCE


def predictions(engine, ref, case):
    frame, hint = inputs(ref, case)
    rgb, mask, _ = to_batch(frame, hint, engine.device)
    pred = engine.predict(model_input(rgb, mask, engine.img_size, input_is_linear=False, dtype=engine.dtype))
    return pred["alpha"], pred["fg"], frame.shape[0], frame.shape[1]


@pytest.mark.parametrize("case", CASES)
def test_tensor_path_matches_the_opencv_path_on_the_cpu(engine, reference, case) -> None:
    """The CUDA path's implementation (Lanczos gathers, union-find labels, elliptic max-pools, the 8-bit
    blur in exact integers), run on CPU tensors, against the OpenCV path and against upstream."""
    alpha, fg, height, width = predictions(engine, reference, case)
    for group in TARGET_GROUPS:
        options = post_options(reference, case, group)
        host = postprocess(alpha, fg, height, width, options, tensor_path=False)
        tensors = postprocess(alpha, fg, height, width, options, tensor_path=True)
        for name in OUTPUTS:
            torch.testing.assert_close(tensors[name], host[name], atol=PATHS_TOLERANCE, rtol=0, msg=name)
            theirs = torch.from_numpy(upstream(reference, case, group, name)).permute(2, 0, 1)[None]
            torch.testing.assert_close(tensors[name], theirs, atol=CPU_TOLERANCE, rtol=0, msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_cuda_post_processing_matches_upstream(engine, reference, case) -> None:
    """The same prediction post-processed on CUDA (the tensor path) agrees with upstream's OpenCV path."""
    alpha, fg, height, width = predictions(engine, reference, case)
    for group in TARGET_GROUPS:
        options = post_options(reference, case, group)
        gpu = postprocess(alpha.cuda(), fg.cuda(), height, width, options)
        for name in OUTPUTS:
            assert gpu[name].device.type == "cuda"
            theirs = torch.from_numpy(upstream(reference, case, group, name)).permute(2, 0, 1)[None]
            torch.testing.assert_close(gpu[name].cpu(), theirs, atol=PATHS_TOLERANCE, rtol=0, msg=name)
