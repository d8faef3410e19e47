"""`corridorkey infer` says what it did: a selection of no frame is a usage error, the counts add up (keyed,
already done, outside the selection, failed), every selected frame's header is checked before the first
output is written, and each documented exit status has its case."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_ckpt import TINY_IMG_SIZE, make_clip, run_cli

NAMES = ["f_1001", "f_1002", "f_1003", "f_1004"]
SIZE = (40, 56)
OUTPUTS = ("Matte", "FG", "Processed", "Comp")


def infer(clip: Path, ckpt: Path, *extra: str):
    return run_cli("infer", clip, "--checkpoint-dir", ckpt, "--img-size", TINY_IMG_SIZE, *extra)


def made(clip: Path) -> list[str]:
    return sorted(p.name for p in clip.iterdir() if p.name not in ("Input", "AlphaHint"))


def corrupt_pixels(path: Path) -> bytes:
    """Keep the PNG's header and end marker, damage its pixels: only reading the whole frame finds it."""
    good = path.read_bytes()
    start = good.index(b"IDAT") + 4
    path.write_bytes(good[:start] + bytes(8) + good[start + 8 :])
    return good


def test_frames_that_select_no_frame_are_a_usage_error_naming_the_clips_range(tmp_path, ckpt_dir):
    clip = make_clip(tmp_path / "shot", NAMES, SIZE)
    proc = infer(clip, ckpt_dir, "--frames", "1005-1006")
    assert proc.returncode == 2, proc
    assert proc.stderr.strip() == (
        f"corridorkey: error: {clip}: --frames 1005-1006 selects none of its frames (its first frame is "
        "1001, its last 1004)"
    )
    assert "nothing to do" not in proc.stdout and made(clip) == []


def test_the_counts_separate_keyed_done_outside_and_failed_and_add_up(tmp_path, ckpt_dir):
    clip = make_clip(tmp_path / "shot", NAMES, SIZE)
    bad = clip / "Input" / "f_1003.png"
    good = corrupt_pixels(bad)

    first = infer(clip, ckpt_dir, "--batch-size", "1", "--io-threads", "1")
    assert first.returncode == 1
    assert "shot: keyed 2 of 4 frames (0 already done, 0 outside the selection, 2 failed)" in first.stdout
    assert "keyed 2 frames (0 already done, 0 outside the selection, 2 failed) from 1 clip(s)" in first.stdout
    assert sorted(p.name for p in (clip / "Matte").iterdir()) == ["f_1001.exr", "f_1002.exr"]

    bad.write_bytes(good)
    chunk = infer(clip, ckpt_dir, "--frames", "1002-1004")
    assert chunk.returncode == 0, chunk
    line = "shot: keyed 2 of 4 frames (frames 1002-1004; 1 already done, 1 outside the selection, 0 failed)"
    assert line in chunk.stdout


@pytest.mark.parametrize("problem", ["hint size", "truncated input", "unreadable hint"])
def test_every_selected_frame_is_checked_before_the_first_output(tmp_path, ckpt_dir, problem):
    clip = make_clip(tmp_path / "shot", NAMES, SIZE)
    last = clip / ("AlphaHint" if problem != "truncated input" else "Input") / "f_1004.png"
    if problem == "hint size":
        assert cv2.imwrite(str(last), np.zeros((SIZE[0] * 2, SIZE[1] * 2), np.uint8))
        expected = f"{clip / 'Input' / 'f_1004.png'} is 56x40 but {last} is 112x80"
    elif problem == "truncated input":
        last.write_bytes(last.read_bytes()[:-20])
        expected = f"{last}: truncated PNG (no end marker)"
    else:
        last.write_bytes(b"not a png at all, but named like one")
        expected = f"{last}: unreadable or corrupt image (not a PNG)"
    proc = infer(clip, ckpt_dir)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"corridorkey: error: {expected}"), proc.stderr
    assert made(clip) == []  # no folder, no manifest, no frame: the first three frames were not keyed


def test_comp_video_on_a_complete_clip_says_nothing_to_do(tmp_path, ckpt_dir):
    clip = make_clip(tmp_path / "shot", NAMES[:2], SIZE)
    assert infer(clip, ckpt_dir, "--comp-video").returncode == 0
    movie = (clip / "Comp.mp4").stat().st_mtime_ns
    again = infer(clip, ckpt_dir, "--comp-video", "-v")
    assert again.returncode == 0
    assert again.stdout == "nothing to do: all 2 frames of 1 clip(s) are done (--overwrite redoes them)\n"
    assert "engine ready" not in again.stderr and "loaded safetensors checkpoint" not in again.stderr
    assert (clip / "Comp.mp4").stat().st_mtime_ns == movie

    (clip / "Comp.mp4").unlink()  # complete, but its movie missing: made again, still without the model
    third = infer(clip, ckpt_dir, "--comp-video", "-v")
    assert third.stdout.endswith("; 1 Comp.mp4 written\n") and (clip / "Comp.mp4").is_file()
    assert "engine ready" not in third.stderr

    other = infer(clip, ckpt_dir, "--comp-video", "-v", "--despill", "0.2")  # other settings: keyed again
    assert "engine ready" in other.stderr and "keyed 2 of 2 frames" in other.stdout


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (["--img-size", "100"], 2, "argument --img-size: must be a multiple of 32"),
        (["--precision", "fp8"], 2, "argument --precision: precision must be one of"),
        (["--ray-workers", "2"], 2, "--ray-workers and --ray-gpus-per-worker need --ray"),
        (["--outputs", "matte", "--comp-video"], 2, "--comp-video is made from the comp output"),
        (["--frames", "9-1"], 2, "the range ends before it starts"),
        (["--frames", "2000"], 2, "selects none of its frames"),
        (["--checkpoint-dir", "EMPTY", "--no-hub"], 1, "no checkpoint found in"),
    ],
)
def test_each_documented_exit_status(tmp_path, ckpt_dir, extra, status, message):
    clip = make_clip(tmp_path / "shot", NAMES[:1], SIZE)
    (tmp_path / "EMPTY").mkdir()
    extra = [str(tmp_path / "EMPTY") if e == "EMPTY" else e for e in extra]
    try:
        proc = infer(clip, ckpt_dir, *extra)
        code, err = proc.returncode, proc.stderr
    except SystemExit as exc:  # argparse's own usage errors, in this process
        code, err = exc.code, ""
    assert code == status
    if err:  # argparse prints its usage first; the error is the last line
        assert message in err.strip().splitlines()[-1], err
    assert made(clip) == []


def test_one_named_progress_bar_per_clip_only_when_asked(tmp_path, ckpt_dir):
    a = make_clip(tmp_path / "a", NAMES[:2], SIZE)
    b = make_clip(tmp_path / "b", NAMES[:1], SIZE)
    quiet = run_cli("infer", a, b, "--checkpoint-dir", ckpt_dir, "--img-size", TINY_IMG_SIZE)
    assert quiet.returncode == 0 and quiet.stderr == ""  # stderr is not a terminal: no bar
    shown = run_cli("infer", a, b, "--checkpoint-dir", ckpt_dir, "--img-size", TINY_IMG_SIZE, "--overwrite",
                    "--progress")  # fmt: skip
    bars = [seg for seg in shown.stderr.replace("\r", "\n").splitlines() if seg.strip()]
    assert bars and all(seg.startswith(("a: ", "b: ")) for seg in bars), bars  # never an unnamed bar
    assert any(seg.startswith("a: 100%") and "2/2" in seg for seg in bars)
    assert any(seg.startswith("b: 100%") and "1/1" in seg for seg in bars)


def test_a_corrupt_png_is_one_line_and_the_decoder_prints_nothing(tmp_path, ckpt_dir, capfd):
    clip = make_clip(tmp_path / "shot", NAMES[:2], SIZE)
    bad = clip / "Input" / "f_1002.png"
    corrupt_pixels(bad)
    proc = infer(clip, ckpt_dir)
    assert proc.returncode == 1
    why = "unreadable or corrupt image (CRC error in its 'IDAT' chunk)"
    assert proc.stderr.strip() == f"corridorkey: error: {bad}: {why}"
    assert "libpng" not in capfd.readouterr().err  # what the C library would print straight to the terminal


def test_a_plate_much_larger_than_the_model_is_said_once(tmp_path, ckpt_dir):
    big = [make_clip(tmp_path / name, NAMES[:1], (256, 320)) for name in ("a", "b")]
    proc = run_cli("infer", *big, "--checkpoint-dir", ckpt_dir, "--img-size", TINY_IMG_SIZE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (  # once for the run, naming the first such clip
        "WARNING corridorkey_engine.cli: a: the plate (320x256) is 5x the model's 64 px resolution, so edges "
        "come out soft and stair-stepped; --img-size 128 (a multiple of 32; more memory and time) keys it "
        "sharper"
    )
    small = make_clip(tmp_path / "small", NAMES[:1], SIZE)
    assert infer(small, ckpt_dir).stderr == ""  # a plate near the model's size: nothing to say
