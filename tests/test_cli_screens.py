"""``corridorkey`` and the checkpoint it keys with: ``--screen-color`` (the model, the despill channel, the
chroma key), ``--select``/``--exclude`` (and the advice that names them), MLX weights beside the Torch ones,
the blue model fetched into its own folder, and the demo's colour figure on green and blue screens."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_ckpt import TINY_IMG_SIZE, make_clip, run_cli, write_tiny_checkpoint

from corridorkey_engine.clips import images, pixels

SIZE = (40, 56)


def _checkpoint(folder: Path, name: str, seed: int) -> Path:
    """A tiny real checkpoint (config in its metadata) saved as ``folder/name``."""
    scratch = folder / f".scratch-{seed}"
    write_tiny_checkpoint(scratch, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    (scratch / "model.safetensors").rename(folder / name)
    shutil.rmtree(scratch)
    return folder / name


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Green, blue and MLX weights in one folder, each a different model."""
    folder = tmp_path_factory.mktemp("models")
    _checkpoint(folder, "CorridorKey_v1.0.safetensors", seed=1)
    _checkpoint(folder, "CorridorKeyBlue_1.0.safetensors", seed=2)
    _checkpoint(folder, "corridorkey_mlx.safetensors", seed=3)
    _checkpoint(folder, "CorridorKey_v1.0.mlx.safetensors", seed=4)
    return folder


def infer(clip: Path, ckpt: Path, *extra, **kw):
    return run_cli("infer", clip, "--checkpoint-dir", ckpt, "--img-size", TINY_IMG_SIZE, *extra, **kw)


def assert_ok(proc) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def one_line_error(proc) -> str:
    assert proc.returncode == 1, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("corridorkey: error: "), proc.stderr
    return lines[0]


def reference(model_file: Path, clip: Path, name: str, screen_color: str) -> dict[str, np.ndarray]:
    """What the engine loaded from exactly that file gives for one frame of the clip."""
    from corridorkey_engine import CheckpointSource, CorridorKeyEngine

    source = CheckpointSource(model_file.parent, select=model_file.name, match_screen=False)
    engine = CorridorKeyEngine(source, device="cpu", img_size=TINY_IMG_SIZE, screen_color=screen_color)
    assert engine.checkpoint.path == model_file
    image = pixels.as_rgb(images.read_image(clip / "Input" / f"{name}.png"))
    hint = pixels.as_mask(images.read_image(clip / "AlphaHint" / f"{name}.png"))
    return engine.process_frame(image, hint)


def test_screen_color_chooses_the_model_and_the_despill(tmp_path: Path, models: Path) -> None:
    green_clip = make_clip(tmp_path / "g", ["f1"], SIZE)
    blue_clip = make_clip(tmp_path / "b", ["f1"], SIZE, screen="blue")
    green = infer(green_clip, models)
    blue = infer(blue_clip, models, "--screen-color", "blue")
    assert_ok(green)
    assert_ok(blue)
    assert f"checkpoint {models / 'CorridorKey_v1.0.safetensors'} (safetensors)" in green.stdout
    assert f"checkpoint {models / 'CorridorKeyBlue_1.0.safetensors'} (safetensors)" in blue.stdout
    for clip, file, screen in (
        (green_clip, "CorridorKey_v1.0.safetensors", "green"),
        (blue_clip, "CorridorKeyBlue_1.0.safetensors", "blue"),
    ):
        want = reference(models / file, clip, "f1", screen)
        got = images.read_image(clip / "Processed" / "f1.exr")
        np.testing.assert_allclose(got, want["processed"], atol=2e-3, rtol=2e-3)
        matte = images.read_image(clip / "Matte" / "f1.exr")
        np.testing.assert_allclose(matte, want["alpha"][..., 0], atol=2e-3)
    # On the blue clip, the same model with green despill writes other colours: the flag reaches despill.
    as_green = reference(models / "CorridorKeyBlue_1.0.safetensors", blue_clip, "f1", "green")["processed"]
    got = images.read_image(blue_clip / "Processed" / "f1.exr")
    assert np.abs(got[..., :3] - as_green[..., :3]).max() > 0.01


def test_screen_color_keys_that_screen_for_the_chroma_hint(tmp_path: Path, models: Path) -> None:
    """--hint chroma keys the --screen-color screen: on a blue plate a blue key finds the subject; a green
    key sees no green screen (and says so)."""
    from corridorkey_engine import CheckpointSource, CorridorKeyEngine
    from corridorkey_engine.keying.chroma import chroma_hint

    blue = make_clip(tmp_path / "blue", ["c1"], SIZE, hint=False, screen="blue")
    wrong = make_clip(tmp_path / "wrong", ["c1"], SIZE, hint=False, screen="blue")
    assert_ok(infer(blue, models, "--hint", "chroma", "--screen-color", "blue", "--outputs", "matte"))
    proc = infer(wrong, models, "--hint", "chroma", "--outputs", "matte")
    assert_ok(proc)
    assert "no green screen visible" in proc.stderr
    image = pixels.as_rgb(images.read_image(blue / "Input" / "c1.png"))
    source = CheckpointSource(models, screen_color="blue")
    engine = CorridorKeyEngine(source, device="cpu", img_size=TINY_IMG_SIZE)
    expected = engine.process_frame(image, chroma_hint(image, "blue"))["alpha"][..., 0]
    np.testing.assert_allclose(images.read_image(blue / "Matte" / "c1.exr"), expected, atol=2e-3)
    assert np.abs(images.read_image(wrong / "Matte" / "c1.exr") - expected).max() > 0.05


def test_ambiguity_names_the_flags_and_select_or_exclude_resolve_it(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    _checkpoint(folder, "a.safetensors", seed=1)
    _checkpoint(folder, "b.safetensors", seed=2)
    _checkpoint(folder, "corridorkey_mlx.safetensors", seed=3)  # never a candidate: not in the message
    clip = make_clip(tmp_path / "clip", ["f1"], SIZE)
    line = one_line_error(infer(clip, folder, "--outputs", "matte"))
    assert "2 safetensors checkpoints (a.safetensors, b.safetensors)" in line, line
    assert line.endswith("keep exactly one, or choose one with --select NAME or --exclude GLOB"), line
    assert "mlx" not in line and "select=" not in line
    chosen = infer(clip, folder, "--outputs", "matte", "--select", "b.safetensors", "--overwrite")
    assert_ok(chosen)
    assert f"checkpoint {folder / 'b.safetensors'} (safetensors)" in chosen.stdout
    b_matte = images.read_image(clip / "Matte" / "f1.exr")
    excluded = infer(clip, folder, "--outputs", "matte", "--exclude", "b*", "--exclude", "x*", "--overwrite")
    assert_ok(excluded)
    assert f"checkpoint {folder / 'a.safetensors'} (safetensors)" in excluded.stdout
    assert np.abs(images.read_image(clip / "Matte" / "f1.exr") - b_matte).max() > 1e-3  # another model
    nothing = infer(clip, folder, "--outputs", "fg", "--exclude", "*.safetensors", "--no-hub")
    line = one_line_error(nothing)
    assert "excluded by pattern: a.safetensors, b.safetensors" in line, line
    # The demo command has the same flags, so its advice holds there too.
    line = one_line_error(run_cli("demo", tmp_path / "demo", "--frames", "1", "--checkpoint-dir", folder))
    assert line.endswith("--select NAME or --exclude GLOB"), line
    demo = run_cli("demo", tmp_path / "demo", "--frames", "1", "--checkpoint-dir", folder, "--select", "a*")
    assert_ok(demo)
    assert f"checkpoint {folder / 'a.safetensors'}" in demo.stdout


@pytest.mark.slow
def test_blue_model_is_fetched_into_its_own_default_folder(tmp_path: Path) -> None:
    from fakehub import FakeHub
    from hub_testing import child_env

    blue_bytes = _checkpoint(tmp_path / "src", "blue.safetensors", seed=2).read_bytes()
    clip = make_clip(tmp_path / "clip", ["f1"], SIZE, screen="blue")
    cache = tmp_path / "cache"
    with FakeHub() as hub:
        hub.add_repo("nikopueringer/CorridorKeyBlue_1.0", {"CorridorKeyBlue_1.0.safetensors": blue_bytes})
        env = child_env(hub, tmp_path / "hf", XDG_CACHE_HOME=str(cache))
        env.pop("CORRIDORKEY_CHECKPOINT_DIR", None)
        proc = run_cli(
            "infer",
            clip,
            "--screen-color",
            "blue",
            "--img-size",
            TINY_IMG_SIZE,
            "--outputs",
            "matte",
            env=env,
        )
        assert_ok(proc)
        assert ("hub", "HEAD", "CorridorKeyBlue_1.0.safetensors") in hub.seen()
    fetched = cache / "corridorkey" / "CorridorKeyBlue_1.0" / "CorridorKeyBlue_1.0.safetensors"
    assert fetched.read_bytes() == blue_bytes
    assert not (cache / "corridorkey" / "CorridorKey_v1.0").exists()  # green's folder is not touched
    assert f"checkpoint {fetched} (safetensors)" in proc.stdout


# --------------------------------------------------------------------------------------------------- demo

FIGURE = re.compile(r"mean abs RGB error ([0-9.]+)/255")
MATTE = re.compile(
    r"matte vs ground truth \(2 frames\): mean abs error ([0-9.]+), IoU\(alpha>0.5\) ([0-9.]+)"
)


@pytest.mark.parametrize("screen", ["green", "blue"])
def test_demo_keys_either_screen_within_its_targets(tmp_path: Path, screen: str) -> None:
    from corridorkey_engine.demo.clip import TARGETS, bundled_checkpoint_dir

    if not any(bundled_checkpoint_dir().glob("*.safetensors")):
        pytest.skip("no bundled demo checkpoint in this checkout")
    folder = tmp_path / screen
    args = ["demo", folder, "--frames", "2"] + (["--screen-color", "blue"] if screen == "blue" else [])
    proc = run_cli(*args)
    assert_ok(proc)
    plate = images.read_image(folder / "Input" / "frame_0000.png")
    corner = plate[:4, :4].reshape(-1, 3).mean(axis=0)  # the screen, in the frame's corner
    assert corner.argmax() == (1 if screen == "green" else 2), corner
    colour = float(FIGURE.search(proc.stdout).group(1))
    mae, iou = map(float, MATTE.search(proc.stdout).groups())
    assert colour <= TARGETS.fg_error_8bit and mae <= TARGETS.matte_mae and iou >= TARGETS.matte_iou
    assert f"targets for the {screen}-screen demo (" in proc.stdout and proc.stdout.rstrip().endswith("met")
    assert len(list((folder / "GroundTruthFG").iterdir())) == 2
