"""End-to-end: the real ``corridorkey`` command in a subprocess, on small generated clips, with a tiny
random-weight checkpoint at a small ``img_size`` on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_ckpt import TINY_IMG_SIZE, make_clip, plate, run_cli

from ckpt_formats import atomic
from corridorkey_engine.clips import completeness, images, pixels, sequences

OUTPUT_FOLDERS = ("Matte", "FG", "Processed", "Comp")


def infer(clip: Path, ckpt: Path, *extra: str | os.PathLike, **kw) -> subprocess.CompletedProcess:
    return run_cli("infer", clip, "--checkpoint-dir", ckpt, "--img-size", TINY_IMG_SIZE, *extra, **kw)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    # Only the progress bar (an error in the middle of a run) may come before the one error line.
    assert lines and lines[-1].startswith("corridorkey: error: "), proc.stderr
    assert all("frame" in ln and "|" in ln for ln in lines[:-1]), proc.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    assert "Traceback" not in proc.stderr
    return lines[-1]


def expected(engine, image: np.ndarray, mask: np.ndarray, **kw) -> dict[str, np.ndarray]:
    return engine.process_frame(pixels.as_rgb(image), pixels.as_mask(mask), **kw)


def exr_channels(path: Path) -> dict[str, str]:
    """Channel name -> pixel type name ('HALF' / 'FLOAT') as stored in the file."""
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        return {name: ch.type().name for name, ch in f.channels().items()}


def all_output_files(root: Path) -> list[Path]:
    return sorted(
        p for folder in OUTPUT_FOLDERS if (root / folder).is_dir() for p in (root / folder).iterdir()
    )


# ------------------------------------------------------------------------------------ a normal keyed clip

NAMES = ["frame_10", "frame_2", "frame_1"]  # written in this order; natural order is 1, 2, 10
SIZE = (40, 56)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, ckpt_dir: Path):
    clip = make_clip(tmp_path_factory.mktemp("keyed") / "shot010", NAMES, SIZE)
    proc = infer(clip, ckpt_dir)
    assert_ok(proc)
    return clip, proc


def test_outputs_have_right_names_channels_depth_and_size(keyed) -> None:
    clip, _ = keyed
    h, w = SIZE
    for folder, ext in zip(OUTPUT_FOLDERS, (".exr", ".exr", ".exr", ".png"), strict=True):
        assert sorted(p.name for p in (clip / folder).iterdir()) == sorted(n + ext for n in NAMES), folder
    for name in NAMES:
        assert exr_channels(clip / "Matte" / f"{name}.exr") == {"Y": "HALF"}
        assert exr_channels(clip / "FG" / f"{name}.exr") == dict.fromkeys("RGB", "HALF")
        assert exr_channels(clip / "Processed" / f"{name}.exr") == dict.fromkeys("RGBA", "HALF")
        assert images.read_image(clip / "Matte" / f"{name}.exr").shape == (h, w)
        assert images.read_image(clip / "FG" / f"{name}.exr").shape == (h, w, 3)
        assert images.read_image(clip / "Processed" / f"{name}.exr").shape == (h, w, 4)
        comp = cv2.imread(str(clip / "Comp" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert comp.dtype == np.uint8 and comp.shape == (h, w, 3)


def test_outputs_equal_the_engine_frame_by_frame(keyed, engine) -> None:
    """Each output holds exactly what process_frame gives for *its* input/hint pair (natural pairing,
    values round-tripped through half-float EXR and 8-bit PNG)."""
    clip, _ = keyed
    for name in NAMES:
        ref = expected(
            engine,
            images.read_image(clip / "Input" / f"{name}.png"),
            images.read_image(clip / "AlphaHint" / f"{name}.png"),
        )
        half = {"atol": 2e-3, "rtol": 2e-3}
        np.testing.assert_allclose(
            images.read_image(clip / "Matte" / f"{name}.exr"), ref["alpha"][..., 0], **half
        )
        np.testing.assert_allclose(images.read_image(clip / "FG" / f"{name}.exr"), ref["fg"], **half)
        np.testing.assert_allclose(
            images.read_image(clip / "Processed" / f"{name}.exr"), ref["processed"], **half
        )
        comp = images.read_image(clip / "Comp" / f"{name}.png")
        # the preview may exceed 1 (despill is not clamped, as upstream); the 8-bit PNG clips it
        assert np.abs(comp - np.clip(ref["comp"], 0.0, 1.0)).max() <= 1.01 / 255


def test_frames_pair_in_natural_order_not_lexical(keyed) -> None:
    """frame_2's hint differs from frame_10's: a lexical pairing would key frame_2 with frame_10's hint."""
    clip, _ = keyed
    h2 = images.read_image(clip / "AlphaHint" / "frame_2.png")
    h10 = images.read_image(clip / "AlphaHint" / "frame_10.png")
    assert np.abs(h2 - h10).max() > 0.5  # the fixture's frames really differ
    seq = sequences.discover_frames(clip / "Input")
    assert seq.names == ["frame_1", "frame_2", "frame_10"]


def test_summary_reports_frames_speed_device_and_checkpoint(keyed, ckpt_dir: Path) -> None:
    _, proc = keyed
    out = proc.stdout
    assert "keyed 3 frames (0 already done, 0 outside the selection, 0 failed) from 1 clip(s)" in out
    assert "frames/s" in out
    assert "device cpu (float32)" in out
    assert f"checkpoint {ckpt_dir / 'model.safetensors'} (safetensors)" in out
    assert proc.stderr == ""  # stderr is not a terminal: no progress bar (--progress asks for one)


# ------------------------------------------------------------------------------------- options and inputs


def test_exr_input_float_outputs_subset_and_output_dir(tmp_path: Path, ckpt_dir: Path, engine) -> None:
    """Float EXR input (linear by default), --exr-dtype float, --outputs, --output DIR."""
    clip = tmp_path / "shot020"
    (clip / "Input").mkdir(parents=True)
    (clip / "AlphaHint").mkdir()
    for i in range(2):
        img, alpha = plate(36, 48, i)
        linear = (img.astype(np.float32) / 255.0) ** 2.2
        images.write_exr(clip / "Input" / f"p.{i + 1:04d}.exr", linear, "RGB", half=False)
        images.write_exr(clip / "AlphaHint" / f"p.{i + 1:04d}.exr", alpha, "Y", half=False)
    out = tmp_path / "renders"
    proc = infer(clip, ckpt_dir, "--exr-dtype", "float", "--outputs", "matte,processed", "--output", out)
    assert_ok(proc)
    dest = out / "shot020"
    assert sorted(p.name for p in dest.iterdir()) == ["Matte", "Processed", "corridorkey.json"]
    assert sorted(p.name for p in clip.iterdir()) == ["AlphaHint", "Input"]  # nothing written beside
    for i in range(2):
        name = f"p.{i + 1:04d}"
        assert exr_channels(dest / "Matte" / f"{name}.exr") == {"Y": "FLOAT"}
        assert exr_channels(dest / "Processed" / f"{name}.exr") == dict.fromkeys("RGBA", "FLOAT")
        ref = expected(
            engine,
            images.read_image(clip / "Input" / f"{name}.exr"),
            images.read_image(clip / "AlphaHint" / f"{name}.exr"),
            input_is_linear=True,
        )
        np.testing.assert_allclose(
            images.read_image(dest / "Matte" / f"{name}.exr"), ref["alpha"][..., 0], atol=1e-5
        )
        np.testing.assert_allclose(
            images.read_image(dest / "Processed" / f"{name}.exr"), ref["processed"], atol=1e-5
        )


def test_batches_give_the_same_result(tmp_path: Path, ckpt_dir: Path, engine) -> None:
    clip = make_clip(tmp_path / "b", ["a1", "a2", "a3"], SIZE)
    assert_ok(infer(clip, ckpt_dir, "--batch-size", "2", "--outputs", "matte", "--quiet"))
    for name in ("a1", "a2", "a3"):
        ref = expected(
            engine,
            images.read_image(clip / "Input" / f"{name}.png"),
            images.read_image(clip / "AlphaHint" / f"{name}.png"),
        )
        np.testing.assert_allclose(
            images.read_image(clip / "Matte" / f"{name}.exr"), ref["alpha"][..., 0], atol=2e-3, rtol=2e-3
        )


def test_video_input(tmp_path: Path, ckpt_dir: Path, engine) -> None:
    clip = tmp_path / "vid"
    (clip / "Input").mkdir(parents=True)
    writer = cv2.VideoWriter(str(clip / "Input" / "plate.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 24, (56, 40))
    if not writer.isOpened():
        pytest.skip("OpenCV here cannot write FFV1 video")
    (clip / "AlphaHint").mkdir()
    for i in range(3):
        img, alpha = plate(40, 56, i)
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(clip / "AlphaHint" / f"h_{i + 1}.png"), (alpha * 255).astype(np.uint8))
    writer.release()
    assert_ok(infer(clip, ckpt_dir, "--outputs", "matte,comp", "-q"))
    names = [f"plate_{i:05d}" for i in (1, 2, 3)]
    assert sorted(p.stem for p in (clip / "Matte").iterdir()) == names
    frames = list(sequences.iter_frames(sequences.discover_frames(clip / "Input")))
    for i, name in enumerate(names):
        ref = expected(engine, frames[i], images.read_image(clip / "AlphaHint" / f"h_{i + 1}.png"))
        np.testing.assert_allclose(
            images.read_image(clip / "Matte" / f"{name}.exr"), ref["alpha"][..., 0], atol=2e-3, rtol=2e-3
        )


def test_chroma_hint_without_alphahint(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "nohint", ["c_1", "c_2"], SIZE, hint=False)  # blue: test_cli_screens.py
    assert_ok(infer(clip, ckpt_dir, "--hint", "chroma", "--outputs", "matte", "-q"))
    assert sorted(p.name for p in (clip / "Matte").iterdir()) == ["c_1.exr", "c_2.exr"]


@pytest.mark.slow
def test_empty_checkpoint_dir_is_fetched_from_the_hub_on_first_run(tmp_path: Path, ckpt_dir: Path) -> None:
    """The default hub source (CorridorKey v1.0's repository and file names), served by a local fake hub."""
    from fakehub import FakeHub
    from hub_testing import REPO, ST, child_env

    clip = make_clip(tmp_path / "hubclip", ["h1"], SIZE)
    empty = tmp_path / "models"
    with FakeHub() as hub:
        hub.add_repo(REPO, {ST: (ckpt_dir / "model.safetensors").read_bytes()})
        proc = infer(clip, empty, "--outputs", "matte", env=child_env(hub, tmp_path / "hf"))
        assert_ok(proc)
        assert ("hub", "HEAD", ST) in hub.seen()
    assert f"Downloading {ST}" in proc.stderr  # the first-run download is announced
    assert (empty / ST).read_bytes() == (ckpt_dir / "model.safetensors").read_bytes()
    assert f"checkpoint {empty / ST} (safetensors)" in proc.stdout
    assert completeness.output_complete(clip / "Matte" / "h1.exr")

    nothing = tmp_path / "offline"
    nothing.mkdir()
    assert_one_line_error(infer(clip, nothing, "--no-hub", "--overwrite"), str(nothing))


# ------------------------------------------------------------------------------------------------- resume


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_resume_skips_finished_frames_and_redoes_broken_ones(tmp_path: Path, ckpt_dir: Path) -> None:
    names = [f"s_{i}" for i in range(1, 5)]
    clip = make_clip(tmp_path / "resume", names, SIZE)
    assert_ok(infer(clip, ckpt_dir))
    before = {p: _stamp(p) for p in all_output_files(clip)}
    assert len(before) == 16
    truncated = clip / "Matte" / "s_2.exr"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    (clip / "Comp" / "s_3.png").unlink()
    stale = clip / "FG" / ".s_4.exr.0123456789ab.tmp"  # what a killed run could leave
    stale.write_bytes(b"partial")

    proc = infer(clip, ckpt_dir)
    assert_ok(proc)
    assert "keyed 2 frames (2 already done, 0 outside the selection, 0 failed)" in proc.stdout
    assert not stale.exists()
    assert completeness.output_complete(truncated)
    for p, stamp in before.items():
        if p.stem in ("s_1", "s_4"):
            assert _stamp(p) == stamp, f"{p} was rewritten"
    assert len(all_output_files(clip)) == 16

    again = infer(clip, ckpt_dir)
    assert_ok(again)
    assert "nothing to do: all 4 frames" in again.stdout
    redo = infer(clip, ckpt_dir, "--overwrite", "--outputs", "comp")
    assert_ok(redo)
    assert "keyed 4 frames (0 already done, 0 outside the selection, 0 failed)" in redo.stdout


@pytest.mark.slow
def test_interrupted_run_leaves_only_whole_files_and_resumes(tmp_path: Path, ckpt_dir: Path) -> None:
    names = [f"i_{i:03d}" for i in range(1, 61)]
    clip = make_clip(tmp_path / "interrupt", names, (96, 128))
    exe = Path(sys.executable).with_name("corridorkey")
    cmd = [str(exe), "infer", str(clip), "--checkpoint-dir", str(ckpt_dir), "--img-size", str(TINY_IMG_SIZE)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CORRIDORKEY_DEVICE": "cpu"},
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            matte = clip / "Matte"
            if matte.is_dir() and len([p for p in matte.iterdir() if p.suffix == ".exr"]) >= 3:
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be interrupted")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Rerun the same command" in err
    files = all_output_files(clip)
    assert files, "nothing was written before the interrupt"
    assert not [p for p in files if atomic.is_temp_file(p)], "temporary files left behind"
    for p in files:
        assert completeness.output_complete(p), f"{p} is not whole"
        images.read_image(p)
    done = {p.stem for p in (clip / "Matte").iterdir()}
    assert len(done) < len(names)

    resumed = infer(clip, ckpt_dir, "-q")
    assert_ok(resumed)
    assert len(all_output_files(clip)) == 4 * len(names)


# ------------------------------------------------------------------------------------------------- errors


def test_error_frame_count_mismatch(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "count", ["f1", "f2", "f3"], SIZE)
    (clip / "AlphaHint" / "f3.png").unlink()
    assert_one_line_error(infer(clip, ckpt_dir), "Input/ has 3 frames but AlphaHint/ has 2")
    assert not (clip / "Matte").exists()


def test_error_size_mismatch(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "size", ["f1", "f2"], SIZE)
    cv2.imwrite(str(clip / "AlphaHint" / "f1.png"), np.zeros((20, 28), np.uint8))
    assert_one_line_error(infer(clip, ckpt_dir), "f1.png is 56x40 but", "f1.png is 28x20")
    assert not all_output_files(clip)


def test_error_size_mismatch_mid_clip_names_the_frame(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "size2", ["f1", "f2", "f3"], SIZE)
    cv2.imwrite(str(clip / "AlphaHint" / "f3.png"), np.zeros((20, 28), np.uint8))
    assert_one_line_error(infer(clip, ckpt_dir), "f3.png is 56x40 but", "AlphaHint/f3.png is 28x20")
    for p in all_output_files(clip):
        assert completeness.output_complete(p) and not atomic.is_temp_file(p)


def test_error_corrupt_frame_names_the_file_and_keeps_finished_frames_whole(
    tmp_path: Path, ckpt_dir: Path
) -> None:
    clip = make_clip(tmp_path / "corrupt", ["f1", "f2", "f3"], SIZE)
    bad = clip / "Input" / "f2.png"
    bad.write_bytes(bad.read_bytes()[:60])
    assert_one_line_error(infer(clip, ckpt_dir), str(bad))
    files = all_output_files(clip)
    assert {p.stem for p in files} <= {"f1", "f3"}
    for p in files:
        assert completeness.output_complete(p) and not atomic.is_temp_file(p)


def test_error_no_alphahint_says_what_to_provide(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "nohint", ["f1"], SIZE, hint=False)
    assert_one_line_error(infer(clip, ckpt_dir), "no AlphaHint/ folder", "--hint chroma")


@pytest.mark.slow
def test_error_exr_support_missing_says_how_to_enable(tmp_path: Path, ckpt_dir: Path) -> None:
    if cv2.haveImageWriter(".exr"):
        pytest.skip("this OpenCV has its EXR codec; the error cannot happen here")
    clip = make_clip(tmp_path / "exr", ["f1"], SIZE)
    proc = infer(clip, ckpt_dir, env={"CORRIDORKEY_EXR_BACKEND": "cv2"})
    assert_one_line_error(proc, "EXR support missing", "pip install OpenEXR", "OPENCV_IO_ENABLE_OPENEXR=1")
    assert not all_output_files(clip)
    # PNG-only outputs need no EXR support at all.
    assert_ok(infer(clip, ckpt_dir, "--outputs", "comp", "-q", env={"CORRIDORKEY_EXR_BACKEND": "cv2"}))


def test_error_output_not_writable(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "clip", ["f1"], SIZE)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should go")
    assert_one_line_error(infer(clip, ckpt_dir, "--output", blocker), "not writable", str(blocker))
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert_one_line_error(infer(clip, ckpt_dir, "--output", ro), "not writable")


def test_error_cuda_requested_but_unavailable(tmp_path: Path, ckpt_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    clip = make_clip(tmp_path / "clip", ["f1"], SIZE)
    assert_one_line_error(infer(clip, ckpt_dir, "--device", "cuda"), "CUDA", "not available", "--device cpu")
    assert not all_output_files(clip)


def test_verbose_error_shows_the_traceback(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "count", ["f1", "f2"], SIZE)
    (clip / "AlphaHint" / "f2.png").unlink()
    proc = infer(clip, ckpt_dir, "--verbose")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "corridorkey: error: " in proc.stderr


def test_help_shows_an_example_session() -> None:
    proc = run_cli("infer", "--help")
    assert_ok(proc)
    for option in (
        "--checkpoint-dir",
        "--hint",
        "--outputs",
        "--exr-dtype",
        "--overwrite",
        "example session",
    ):
        assert option in proc.stdout
    missing = run_cli("infer", "/nonexistent/clip")
    assert_one_line_error(missing, "clip folder not found")


@pytest.mark.gpu
def test_cuda_run_matches_the_cpu_reference(tmp_path: Path, ckpt_dir: Path, engine) -> None:
    """On CUDA (pinned memory, non-blocking uploads, float16): the CPU outputs within half precision."""
    clip = make_clip(tmp_path / "gpu", ["g_1", "g_2", "g_3"], SIZE)
    proc = infer(clip, ckpt_dir, "--device", "cuda", "--batch-size", "2")
    assert_ok(proc)
    assert "device cuda" in proc.stdout
    for name in ("g_1", "g_2", "g_3"):
        ref = expected(
            engine,
            images.read_image(clip / "Input" / f"{name}.png"),
            images.read_image(clip / "AlphaHint" / f"{name}.png"),
        )
        matte = images.read_image(clip / "Matte" / f"{name}.exr")
        assert np.abs(matte - ref["alpha"][..., 0]).mean() < 0.02


@pytest.mark.gpu
def test_cuda_compile_keys_like_the_uncompiled_model(tmp_path: Path, ckpt_dir: Path) -> None:
    """``--compile`` (torch.compile with inductor) on CUDA: the same mattes as without, within float16."""
    plain, compiled = (make_clip(tmp_path / name, ["c_1", "c_2"], SIZE) for name in ("plain", "compiled"))
    assert_ok(infer(plain, ckpt_dir, "--device", "cuda"))
    assert_ok(infer(compiled, ckpt_dir, "--device", "cuda", "--compile"))
    for name in ("c_1", "c_2"):
        want = images.read_image(plain / "Matte" / f"{name}.exr")
        got = images.read_image(compiled / "Matte" / f"{name}.exr")
        assert np.abs(got - want).max() < 0.02


# --------------------------------------------------------------------------------------------------- demo


def test_demo_writes_keys_and_measures_a_clip(tmp_path: Path, ckpt_dir: Path) -> None:
    folder = tmp_path / "demo"
    proc = run_cli("demo", folder, "--frames", "2", "--checkpoint-dir", ckpt_dir)
    assert_ok(proc)
    assert f"demo clip: {folder}" in proc.stdout
    assert f"outputs in {folder}/: Matte/ FG/ Processed/ Comp/" in proc.stdout
    assert "matte vs ground truth (2 frames): mean abs error" in proc.stdout
    assert "foreground colour vs ground truth on the subject (Processed/" in proc.stdout
    for sub in ("Input", "AlphaHint", "GroundTruth", "GroundTruthFG", *OUTPUT_FOLDERS):
        assert len(list((folder / sub).iterdir())) == 2, sub
    again = run_cli("demo", folder, "--frames", "2", "--checkpoint-dir", ckpt_dir, "-q")  # reruns in place
    assert_ok(again)
    assert again.stdout == ""


def test_demo_with_the_bundled_model_in_a_temporary_folder() -> None:
    from corridorkey_engine.demo.clip import bundled_checkpoint_dir

    if not any(bundled_checkpoint_dir().glob("*.safetensors")):
        pytest.skip("no bundled demo checkpoint in this checkout")
    proc = run_cli("demo", "--frames", "2")
    assert_ok(proc)
    folder = Path(proc.stdout.splitlines()[0].removeprefix("demo clip: "))
    try:
        assert folder.is_dir() and len(list((folder / "Matte").iterdir())) == 2
        assert "corridorkey_demo.safetensors (safetensors)" in proc.stdout
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
