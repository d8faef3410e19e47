"""``corridorkey infer`` as studios use it, end to end in real subprocesses: folders of shots, video clips,
frame-range chunks, the comp movie, settings-aware resume, per-output file types, and failures that leave
nothing behind. A tiny random-weight checkpoint on the CPU, as in test_cli.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_ckpt import TINY_IMG_SIZE, make_clip, plate, run_cli
from hub_testing import closed_port
from test_cli import all_output_files, assert_ok, assert_one_line_error, expected, exr_channels, infer

from corridorkey_engine.clips import images, sequences

SIZE = (40, 56)


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (folders too), relative."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """An H.264 video of uint8 RGB frames, written with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))


def decode_video(path: Path) -> tuple[int, float]:
    """(frames decoded, frame rate) of a video, through PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), float(stream.average_rate)


def manifest(out_dir: Path) -> dict:
    return json.loads((out_dir / "corridorkey.json").read_text())


# ------------------------------------------------------------------------------ inputs as studios have them


def test_folder_of_clips_keys_each_clip_and_reports_the_bad_one(tmp_path: Path, ckpt_dir: Path) -> None:
    shots = tmp_path / "shots"
    make_clip(shots / "sh10", ["a_1", "a_2"], SIZE)
    lower = make_clip(shots / "sh2", ["b_1"], SIZE)  # lowercase folder names, BMP frames
    (lower / "Input").rename(lower / "input")
    (lower / "AlphaHint").rename(lower / "alphahint")
    for sub in ("input", "alphahint"):
        png = lower / sub / "b_1.png"
        assert cv2.imwrite(str(png.with_suffix(".bmp")), cv2.imread(str(png), cv2.IMREAD_UNCHANGED))
        png.unlink()
    bad = make_clip(shots / "sh3", ["c_1", "c_2"], SIZE)
    (bad / "AlphaHint" / "c_2.png").unlink()
    (shots / "notes").mkdir()  # not a clip: ignored

    proc = infer(shots, ckpt_dir, "--outputs", "matte,comp")
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("corridorkey: error: ")]
    assert len(errors) == 1 and "sh3" in errors[0] and "has 2 frames but AlphaHint/ has 1" in errors[0]
    clip_lines = [ln for ln in proc.stdout.splitlines() if ": keyed " in ln and " of " in ln]
    assert [ln.split(":")[0] for ln in clip_lines] == ["sh2", "sh10"]  # natural order, one line each
    assert "keyed 3 frames (" in proc.stdout and "from 2 clip(s)" in proc.stdout
    assert "; 1 clip(s) failed" in proc.stdout
    assert sorted(p.name for p in (lower / "Matte").iterdir()) == ["b_1.exr"]
    assert sorted(p.name for p in (shots / "sh10" / "Comp").iterdir()) == ["a_1.png", "a_2.png"]
    assert sorted(p.name for p in bad.iterdir()) == ["AlphaHint", "Input"]  # nothing made for the bad clip

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    assert_one_line_error(infer(empty, ckpt_dir), "neither a clip", "nor a folder of clips")


def test_input_and_alphahint_video_files(tmp_path: Path, ckpt_dir: Path, engine) -> None:
    clip = tmp_path / "vidclip"
    clip.mkdir()
    shots = [plate(*SIZE, t) for t in range(3)]
    write_video(clip / "Input.mp4", [img for img, _ in shots], fps=30)
    hints = [np.repeat((a * 255).astype(np.uint8)[..., None], 3, axis=2) for _, a in shots]
    write_video(clip / "AlphaHint.mp4", hints, fps=30)

    first = infer(clip, ckpt_dir, "--outputs", "matte,comp", "--frames", "1-2", "--comp-video")
    assert_ok(first)
    assert sorted(p.stem for p in (clip / "Matte").iterdir()) == ["Input_00002", "Input_00003"]  # from 0
    assert not (clip / "Comp.mp4").exists() and "Comp.mp4 waits" in first.stdout
    rest = infer(clip, ckpt_dir, "--outputs", "matte,comp", "--comp-video")
    assert_ok(rest)
    assert "vidclip: keyed 1 of 3 frames" in rest.stdout
    assert decode_video(clip / "Comp.mp4") == (3, 30.0)  # the source's frame rate

    inputs = list(sequences.iter_frames(sequences.discover_frames(clip / "Input.mp4")))
    masks = list(sequences.iter_frames(sequences.discover_frames(clip / "AlphaHint.mp4")))
    for i in range(3):
        ref = expected(engine, inputs[i], masks[i])
        got = images.read_image(clip / "Matte" / f"Input_{i + 1:05d}.exr")
        np.testing.assert_allclose(got, ref["alpha"][..., 0], atol=2e-3, rtol=2e-3)


# ------------------------------------------------------------------------------------- render-farm chunks


@pytest.mark.slow
def test_chunks_on_two_processes_equal_one_whole_run_byte_for_byte(tmp_path: Path, ckpt_dir: Path) -> None:
    names = [f"shot_{n}" for n in range(1001, 1007)]
    clip = make_clip(tmp_path / "shot", names, SIZE)
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    assert_ok(infer(clip, ckpt_dir, "--output", whole, "-q"))

    exe = Path(sys.executable).with_name("corridorkey")
    base = [str(exe), "infer", str(clip), "--checkpoint-dir", str(ckpt_dir), "--img-size", str(TINY_IMG_SIZE)]
    base += ["--output", str(chunked), "--comp-video", "--fps", "12"]
    env = {**os.environ, "CORRIDORKEY_DEVICE": "cpu"}
    procs = [
        subprocess.Popen(
            [*base, "--frames", rng], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for rng in ("1001-1003", "1004,1005-1006")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "keyed 3 of 6 frames" in out

    a, b = whole / "shot", chunked / "shot"
    files = sorted(p.relative_to(a) for p in all_output_files(a))
    assert len(files) == 4 * len(names)
    assert sorted(p.relative_to(b) for p in all_output_files(b)) == files
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert decode_video(b / "Comp.mp4") == (6, 12.0)  # written once the last chunk completed the clip
    assert not (a / "Comp.mp4").exists()

    capped = infer(clip, ckpt_dir, "--output", tmp_path / "capped", "--outputs", "matte", "--max-frames", "2")
    assert_ok(capped)
    assert sorted(p.stem for p in (tmp_path / "capped" / "shot" / "Matte").iterdir()) == names[:2]


# ------------------------------------------------------------------------------------ settings-aware resume


def test_a_settings_change_redoes_the_frames(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "s", ["s_1", "s_2"], SIZE)
    assert_ok(infer(clip, ckpt_dir, "--outputs", "processed"))
    record = manifest(clip)["outputs"]["processed"]["settings"]
    assert record["keying"]["despill_strength"] == 0.5 and record["keying"]["refiner_scale"] == 1.0
    assert len(record["model"]["checkpoint_sha256"]) == 64 and record["model"]["img_size"] == TINY_IMG_SIZE
    assert record["model"]["precision"] == "float32" and record["file"] == "exr:half:zip"
    assert manifest(clip)["about"]["program"].startswith("ckpt-formats ")
    before = {p.name: p.read_bytes() for p in (clip / "Processed").iterdir()}

    changed = infer(clip, ckpt_dir, "--outputs", "processed", "--despill", "0.2", "--refiner-scale", "0")
    assert_ok(changed)
    assert "keyed 2 frames (0 already done, 0 outside the selection, 0 failed)" in changed.stdout
    after = {p.name: p.read_bytes() for p in (clip / "Processed").iterdir()}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    keying = manifest(clip)["outputs"]["processed"]["settings"]["keying"]
    assert keying["despill_strength"] == 0.2 and keying["refiner_scale"] == 0.0
    same = infer(clip, ckpt_dir, "--outputs", "processed", "--despill", "0.2", "--refiner-scale", "0")
    assert "nothing to do" in same.stdout


def test_an_interrupted_overwrite_is_finished_by_a_plain_rerun(tmp_path: Path, ckpt_dir: Path) -> None:
    names = [f"o_{i}" for i in range(1, 6)]
    clip = make_clip(tmp_path / "o", names, SIZE)
    assert_ok(infer(clip, ckpt_dir, "--outputs", "matte", "-q"))
    bad = clip / "Input" / "o_3.png"
    good = bad.read_bytes()
    bad.write_bytes(good[:33] + bytes(len(good) - 45) + good[-12:])  # header and end whole, pixels not:
    # the checks before the run pass, and the --overwrite run stops at frame 3, as if killed there
    assert_one_line_error(infer(clip, ckpt_dir, "--outputs", "matte", "--overwrite"), str(bad))
    bad.write_bytes(good)
    stamps = {p.stem: p.stat().st_mtime_ns for p in (clip / "Matte").iterdir()}

    rerun = infer(clip, ckpt_dir, "--outputs", "matte")
    assert_ok(rerun)
    assert "o: keyed 3 of 5 frames" in rerun.stdout  # frames 3-5 still held the old run's outputs
    now = {p.stem: p.stat().st_mtime_ns for p in (clip / "Matte").iterdir()}
    assert [n for n in names if now[n] != stamps[n]] == ["o_3", "o_4", "o_5"]
    assert "nothing to do" in infer(clip, ckpt_dir, "--outputs", "matte").stdout


def test_file_type_per_output(tmp_path: Path, ckpt_dir: Path, engine) -> None:
    import OpenEXR

    clip = make_clip(tmp_path / "f", ["f_1"], SIZE)
    spec = "matte=png:16,fg=exr:float:piz,comp=exr"
    assert_ok(infer(clip, ckpt_dir, "--outputs", "matte,fg,comp", "--format", spec))
    matte = cv2.imread(str(clip / "Matte" / "f_1.png"), cv2.IMREAD_UNCHANGED)
    assert matte.dtype == np.uint16 and matte.shape == SIZE
    ref = expected(
        engine,
        images.read_image(clip / "Input" / "f_1.png"),
        images.read_image(clip / "AlphaHint" / "f_1.png"),
    )
    np.testing.assert_allclose(matte / 65535.0, np.clip(ref["alpha"][..., 0], 0, 1), atol=1e-4)
    assert exr_channels(clip / "FG" / "f_1.exr") == dict.fromkeys("RGB", "FLOAT")
    with OpenEXR.File(str(clip / "FG" / "f_1.exr")) as f:
        assert f.header()["compression"] == OpenEXR.PIZ_COMPRESSION
    assert exr_channels(clip / "Comp" / "f_1.exr") == dict.fromkeys("RGB", "HALF")
    records = manifest(clip)["outputs"]
    assert {k: records[k]["settings"]["file"] for k in records} == {
        "matte": "png:16",
        "fg": "exr:float:piz",
        "comp": "exr:half:zip",
    }
    # Another type for one output redoes the frame; completeness is checked on each output's own type.
    assert "nothing to do" in infer(clip, ckpt_dir, "--outputs", "matte,fg,comp", "--format", spec).stdout
    again = infer(clip, ckpt_dir, "--outputs", "matte,fg,comp", "--format", "matte=png")
    assert_ok(again)
    assert "keyed 1 frames" in again.stdout
    assert cv2.imread(str(clip / "Matte" / "f_1.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert (clip / "Comp" / "f_1.png").is_file() and (clip / "FG" / "f_1.exr").is_file()
    bad = run_cli("infer", clip, "--format", "matte=tiff")
    assert bad.returncode == 2 and "unknown file type 'tiff'" in bad.stderr


# --------------------------------------------------------------------------- failures leave nothing behind


@pytest.mark.slow
def test_early_failures_leave_no_folders(tmp_path: Path, ckpt_dir: Path) -> None:
    import torch

    from corridorkey_engine.demo.clip import bundled_checkpoint_dir

    work = tmp_path / "work"
    one = make_clip(work / "one", ["x_1"], SIZE)
    two = make_clip(work / "two", ["y_1"], SIZE)
    empty = work / "models"
    empty.mkdir()
    blocker = work / "blocker"
    blocker.write_text("a file where the output folder should go")
    start = tree(work)

    no_hub = infer(one, empty, "--no-hub")
    line = assert_one_line_error(
        no_hub, f"no checkpoint found in {empty}", "--checkpoint-dir", "corridorkey demo"
    )
    assert str(bundled_checkpoint_dir()) in line and "hub" not in line.lower() and "fetch" not in line
    assert tree(work) == start

    offline = {
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "2",
    }
    line = assert_one_line_error(infer(one, empty, env=offline), "--checkpoint-dir", "corridorkey demo")
    assert "ckpt-formats fetch nikopueringer/CorridorKey_v1.0 DIR" in line
    # Nothing is made: the fetch lock lives in the Hugging Face cache, not in the checkpoint folder.
    assert tree(work) == start

    if not torch.cuda.is_available():
        build = "built for CUDA" if torch.version.cuda else "CPU-only build"
        line = assert_one_line_error(infer(one, ckpt_dir, "--device", "cuda"), build, "--device cpu")
        assert (torch.version.cuda or "CPU-only") in line
        assert tree(work) == start

    assert_one_line_error(infer(one, ckpt_dir, "--output", blocker / "renders"), "not writable")
    assert tree(work) == start

    shutil.rmtree(two / "AlphaHint")  # the later clip is invalid: checked before anything is made
    start = tree(work)
    both = run_cli("infer", one, two, "--checkpoint-dir", empty, "--no-hub")
    assert both.returncode == 1 and f"{two}: no AlphaHint/ folder" in both.stderr
    assert "no checkpoint found" in both.stderr
    assert tree(work) == start

    helptext = run_cli("infer", "--help").stdout
    assert "cuda, cuda:N, mps, cpu or auto" in " ".join(helptext.split())


@pytest.mark.slow
def test_the_documented_farm_loop_adds_up_to_the_whole_clip(tmp_path: Path, ckpt_dir: Path) -> None:
    """docs/cli.md's shell loop, run as written: chunks of 2 frames over 1001-1005, in parallel."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    assert len(blocks) == 1 and "--frames" in blocks[0]
    names = [f"farm_{n}" for n in range(1001, 1006)]
    clip = make_clip(tmp_path / "farm", names, SIZE)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SHOT": str(clip),
        "FIRST": "1001",
        "LAST": "1005",
        "CHUNK": "2",
        "CORRIDORKEY_CHECKPOINT_DIR": str(ckpt_dir),  # the tiny checkpoint carries its img_size
        "CORRIDORKEY_DEVICE": "cpu",
    }
    subprocess.run(["bash", "-eu", "-c", blocks[0]], env=env, timeout=600, check=True)
    for folder in ("Matte", "FG", "Processed", "Comp"):
        assert sorted(p.stem for p in (clip / folder).iterdir()) == names, folder
    assert decode_video(clip / "Comp.mp4") == (5, 24.0)
