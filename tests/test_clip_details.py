"""Clip-handling details written against surviving mutants: EXR completeness at every cut and with a foreign
magic, frame selections and numbering, file-type options, hint clipping, a luminance EXR, hidden clips."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from corridorkey_engine.clips import completeness, images
from corridorkey_engine.clips.frameranges import FrameSelection, frame_numbers
from corridorkey_engine.clips.outputs import FileType
from corridorkey_engine.clips.pixels import as_mask
from corridorkey_engine.clips.sequences import discover_frames
from corridorkey_engine.errors import ClipError, FrameIOError


@pytest.mark.parametrize("channels", ["RGBA", "Y"])
def test_an_exr_is_complete_only_at_its_full_length(tmp_path: Path, channels: str) -> None:
    exr = tmp_path / "a.exr"
    shape = (9, 7, 4) if channels == "RGBA" else (9, 7)
    images.write_exr(exr, np.random.default_rng(2).random(shape).astype(np.float32), channels)
    raw = exr.read_bytes()
    assert completeness.exr_complete(exr, len(raw))
    cut = tmp_path / "cut.exr"
    for n in range(len(raw)):  # every cut: the header, the offset table, every chunk
        cut.write_bytes(raw[:n])
        assert not completeness.exr_complete(cut, n), n
    cut.write_bytes(raw + b"\0")  # one byte too many is not what was written either
    assert not completeness.exr_complete(cut, len(raw) + 1)


def test_a_file_with_another_magic_is_no_exr(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    images.write_png(png, np.zeros((4, 4, 3)))
    fake = tmp_path / "fake.exr"
    fake.write_bytes(png.read_bytes())
    assert not completeness.exr_complete(fake, fake.stat().st_size)


def test_a_luminance_exr_reads_as_one_channel(tmp_path: Path) -> None:
    path = tmp_path / "y.exr"
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    images.write_exr(path, values, "Y", half=False)
    got = images.read_image(path)
    assert got.shape == (3, 4)
    np.testing.assert_array_equal(got, values)


def test_reading_a_missing_exr_names_it(tmp_path: Path) -> None:
    with pytest.raises(FrameIOError) as err:
        images.read_image(tmp_path / "gone.exr")
    assert str(err.value).startswith(f"{tmp_path / 'gone.exr'}: cannot read")


def test_frame_selection_limits_and_descriptions() -> None:
    with pytest.raises(ValueError) as err:
        FrameSelection.parse("1-3", max_frames=0)
    assert str(err.value) == "--max-frames must be at least 1"
    assert FrameSelection.parse("1001-1010,1020", max_frames=4).describe() == "1001-1010,1020 at most 4"
    assert FrameSelection.parse(None, max_frames=2).describe() == "at most 2"
    assert FrameSelection.parse("7").describe() == "7"
    assert FrameSelection.parse(None).describe() == "all"


def _sequence(folder: Path, names: list[str]):
    folder.mkdir()
    for name in names:
        images.write_png(folder / name, np.zeros((2, 2, 3)))
    return discover_frames(folder)


def test_two_frames_with_one_number_cannot_be_selected_by_number(tmp_path: Path) -> None:
    seq = _sequence(tmp_path / "Input", ["a_1001.png", "b_1001.png", "c_1002.png"])
    with pytest.raises(ClipError) as err:
        frame_numbers(seq)
    assert str(err.value) == (
        f"{tmp_path / 'Input'}: several frames carry the number 1001; --frames cannot tell them apart"
    )


def test_a_frame_without_a_number(tmp_path: Path) -> None:
    seq = _sequence(tmp_path / "Input", ["plate.png"])
    with pytest.raises(ClipError) as err:
        frame_numbers(seq)
    assert str(err.value) == (
        f"{tmp_path / 'Input' / 'plate'}: no frame number in the file name, so --frames cannot select by "
        "it; name frames like shot_1001.exr"
    )


@pytest.mark.parametrize(
    ("text", "depth", "compression"),
    [("exr", "half", "zip"), ("EXR:Half", "half", "zip"), ("exr:float:piz", "float", "piz"),
     ("exr:dwaa:half", "half", "dwaa")],
)  # fmt: skip
def test_exr_file_type_options(text: str, depth: str, compression: str) -> None:
    filetype = FileType.parse(text)
    assert (filetype.kind, filetype.depth, filetype.compression) == ("exr", depth, compression)
    assert FileType.parse("exr", exr_depth="float").depth == "float"


def test_a_hint_outside_0_1_is_clipped() -> None:
    hint = np.array([[-0.5, 0.25], [1.0, 3.0]], np.float64)
    got = as_mask(hint)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([[0.0, 0.25], [1.0, 1.0]], np.float32))
    rgb = np.stack([hint, hint * 0, hint * 0], axis=-1)  # the red channel carries an RGB hint
    np.testing.assert_array_equal(as_mask(rgb), got)


def test_hidden_folders_are_not_clips(tmp_path: Path, caplog) -> None:
    from corridorkey_engine.clips.layout import expand_clip_paths

    for name in (".cache", "shot010"):
        (tmp_path / name / "Input").mkdir(parents=True)
        images.write_png(tmp_path / name / "Input" / "f_1.png", np.zeros((2, 2, 3)))
        (tmp_path / name / "AlphaHint").mkdir()
    with caplog.at_level(logging.INFO):
        found = expand_clip_paths([tmp_path])
    assert [getattr(item, "path", item).name for item in found] == ["shot010"]


def test_odd_frames_are_padded_with_their_edge_for_the_movie() -> None:
    from corridorkey_engine.clips.comp_video import _even

    frame = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    even = _even(frame)
    assert even.shape == (4, 6, 3)
    np.testing.assert_array_equal(even[:3, :5], frame)
    np.testing.assert_array_equal(even[3, :5], frame[2])  # the last row again, not black
    np.testing.assert_array_equal(even[:3, 5], frame[:, 4])
    square = np.zeros((4, 6, 3), np.uint8)
    assert _even(square) is square


def test_an_output_folder_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FrameIOError) as err:
        images.check_writable(blocker / "out")
    assert "Not a directory" in str(err.value) and str(blocker) in str(err.value)


def test_a_clip_folder_with_several_videos(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mov", "c.mp4", "d.mkv"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(FrameIOError) as err:
        discover_frames(tmp_path)
    assert str(err.value) == f"{tmp_path}: holds 4 videos (a.mp4, b.mov, c.mp4); a clip folder takes one"


def test_what_a_verbose_run_logs_about_a_clip(tmp_path: Path, ckpt_dir: Path) -> None:
    """-v shows the clip's log lines: the hint ignored for --hint chroma, outputs redone when their settings
    changed, what was keyed and skipped; an unreadable manifest is a warning and its outputs are redone."""
    from helpers_ckpt import TINY_IMG_SIZE, make_clip, run_cli

    clip = make_clip(tmp_path / "shot", ["f_1", "f_2"], (24, 32))
    common = ["infer", clip, "--checkpoint-dir", ckpt_dir, "--img-size", TINY_IMG_SIZE, "--outputs", "matte"]
    first = run_cli(*common, "--hint", "chroma", "-v")
    assert first.returncode == 0, first.stderr
    assert f"shot: --hint chroma: ignoring {clip / 'AlphaHint'}" in first.stderr
    assert "shot: keyed 2, skipped 0, in " in first.stderr
    import json

    record = json.loads((clip / "corridorkey.json").read_text())["outputs"]["matte"]["settings"]["keying"]
    assert record["input_is_linear"] is False and record["hint"] == "chroma"  # PNG plates: sRGB

    again = run_cli(*common, "-v")  # the hint changed: the mattes are redone
    changed = "hint 'chroma' -> 'alphahint'; screen 'auto' -> None"
    assert f"shot: matte made with other settings ({changed}): redoing them" in again.stderr

    (clip / "corridorkey.json").write_text("{not json")
    broken = run_cli(*common)
    assert broken.returncode == 0
    assert f"{clip / 'corridorkey.json'}: unreadable manifest (" in broken.stderr
    assert "its outputs will be redone" in broken.stderr


def test_a_comp_movie_needs_the_comp_output() -> None:
    from corridorkey_engine.clips.planning import KeyOptions

    with pytest.raises(ValueError) as err:
        KeyOptions(outputs=("matte",), comp_video=True)
    assert str(err.value) == "the comp movie is made of the comp output: add comp to the outputs"


def test_exr_writing_details(tmp_path: Path) -> None:
    from corridorkey_engine.clips.exr import encode_exr, exr_backend

    assert exr_backend() == "openexr"
    with pytest.raises(ValueError) as err:
        encode_exr(tmp_path / "x.exr", np.zeros((2, 2, 3)), "RGBA", half=True)
    assert str(err.value) == "4 channel names for an array with 3 channels"
    values = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 4, 3)
    encode_exr(tmp_path / "plain.exr", values, "RGB", half=False, compression="none")
    np.testing.assert_array_equal(images.read_image(tmp_path / "plain.exr"), values)
    assert (tmp_path / "plain.exr").stat().st_size > values.nbytes  # stored uncompressed


@pytest.mark.parametrize("backend", ["cv2", "nonsense"])
def test_the_exr_backend_asked_for(monkeypatch, backend: str) -> None:
    import cv2

    from corridorkey_engine.clips.exr import exr_backend
    from corridorkey_engine.errors import ExrSupportError

    monkeypatch.setenv("CORRIDORKEY_EXR_BACKEND", backend)
    if backend == "nonsense":
        with pytest.raises(FrameIOError) as err:
            exr_backend()
        assert str(err.value) == "CORRIDORKEY_EXR_BACKEND='nonsense': use auto, openexr or cv2"
    elif cv2.haveImageWriter(".exr"):
        assert exr_backend() == "cv2"
    else:
        with pytest.raises(ExrSupportError) as err:
            exr_backend()
        assert "the OpenEXR package is not installed (or not selected) and this OpenCV" in str(err.value)


def test_two_files_of_one_frame_name(tmp_path: Path) -> None:
    for name in ("f_1.png", "f_1.exr", "f_2.png"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(FrameIOError) as err:
        discover_frames(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: several files share the frame name 'f_1' (e.g. .png and .exr); outputs are named after "
        "frames, so keep one"
    )
