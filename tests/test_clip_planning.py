"""The planning pieces of ``corridorkey infer``, in-process: frame selection, file types per output, clip
layouts, settings comparison and the comp movie's atomic write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_ckpt import make_clip

from ckpt_formats import atomic
from corridorkey_engine.clips import images, sequences
from corridorkey_engine.clips.comp_video import write_comp_video
from corridorkey_engine.clips.frameranges import FrameSelection, select_frames
from corridorkey_engine.clips.layout import HINT, INPUT, expand_clip_paths, find_part
from corridorkey_engine.clips.manifest import changed_settings
from corridorkey_engine.clips.outputs import FileType, parse_format_spec
from corridorkey_engine.errors import ClipError, FrameIOError


def test_frame_selection_by_file_number_with_ranges_and_a_cap(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c", [f"sh_{n}" for n in (1003, 1001, 1002, 1010, 1060)], (8, 8))
    seq = sequences.discover_frames(clip / "Input")  # natural order: 1001 1002 1003 1010 1060
    pick = FrameSelection.parse("1060, 1001-1002")
    assert [seq.names[i] for i in select_frames(seq, pick)] == ["sh_1001", "sh_1002", "sh_1060"]
    assert select_frames(seq, FrameSelection.parse("1002-1010", max_frames=2)) == [1, 2]
    assert select_frames(seq, FrameSelection.parse(None, max_frames=1)) == [0]
    assert select_frames(seq, FrameSelection.parse("2000-2100")) == []
    for bad in ("1050-1001", "a-b", "1-2-3", ",", "-5"):
        with pytest.raises(ValueError):
            FrameSelection.parse(bad)


def test_frame_ranges_need_numbers_in_the_names(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c", ["left", "right"], (8, 8))
    seq = sequences.discover_frames(clip / "Input")
    assert len(select_frames(seq, FrameSelection())) == 2  # no ranges: names need no numbers
    with pytest.raises(ClipError, match="no frame number in the file name"):
        select_frames(seq, FrameSelection.parse("1-2"))


def test_format_spec_per_output() -> None:
    spec = parse_format_spec("matte=png:16, fg=exr:float:piz,comp=exr", exr_depth="float")
    assert spec == {
        "matte": FileType("png", "16"),
        "fg": FileType("exr", "float", "piz"),
        "comp": FileType("exr", "float", "zip"),
    }
    assert set(parse_format_spec("all=png").values()) == {FileType("png", "8")}
    for bad, message in [
        ("matte", "OUTPUT=TYPE"),
        ("alpha=png", "unknown output"),
        ("matte=jpg", "unknown file type"),
        ("matte=png:12", "8 or 16"),
        ("fg=exr:lzw", "compression"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_format_spec(bad)


def test_clip_layouts_are_found_case_insensitively(tmp_path: Path) -> None:
    clip = tmp_path / "c"
    (clip / "INPUT").mkdir(parents=True)
    (clip / "alphahint.MOV").write_bytes(b"")
    (clip / "Input.png").write_bytes(b"")  # an image named Input is not a video source
    assert find_part(clip, INPUT) == clip / "INPUT" and find_part(clip, HINT) == clip / "alphahint.MOV"
    (clip / "input.mp4").write_bytes(b"")
    with pytest.raises(ClipError, match="several Input sources"):
        find_part(clip, INPUT)


def test_a_folder_of_clips_in_natural_order(tmp_path: Path) -> None:
    for name in ("sh10", "sh2", "sh1"):
        make_clip(tmp_path / "shots" / name, ["f_1"], (8, 8))
    (tmp_path / "shots" / "notes").mkdir()
    found = expand_clip_paths([tmp_path / "shots", tmp_path / "shots" / "sh2", tmp_path / "nowhere"])
    assert [c.path.name for c in found] == ["sh1", "sh2", "sh10", "sh2", "nowhere"]
    assert [c.error is None for c in found] == [True, True, True, True, False]


def test_changed_settings_name_each_difference() -> None:
    old = {"settings": {"keying": {"despill_strength": 0.5, "refiner_scale": 1.0}, "file": "exr:half:zip"}}
    new = {"keying": {"despill_strength": 0.2, "refiner_scale": 1.0}, "file": "png:8"}
    assert changed_settings(old, new) == ["file 'exr:half:zip' -> 'png:8'", "despill_strength 0.5 -> 0.2"]
    assert changed_settings(old, old["settings"]) == []
    assert changed_settings(None, new) == ["no manifest record"]


def test_comp_movie_is_whole_or_absent(tmp_path: Path) -> None:
    frames = []
    for i in range(3):
        path = tmp_path / "Comp" / f"c_{i}.png"
        path.parent.mkdir(exist_ok=True)
        images.write_png(path, np.full((9, 11, 3), i / 3, np.float32))  # odd size: padded for H.264
        frames.append(path)
    movie = tmp_path / "Comp.mp4"
    write_comp_video(movie, frames, fps=23.976)
    import av

    with av.open(str(movie)) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == 3
        assert abs(float(stream.average_rate) - 24000 / 1001) < 1e-6
        assert (stream.width, stream.height) == (12, 10)

    movie.unlink()
    frames[2].write_bytes(frames[2].read_bytes()[:40])  # a frame breaks in the middle of encoding
    with pytest.raises(FrameIOError, match="c_2.png"):
        write_comp_video(movie, frames, fps=24)
    assert not movie.exists()
    assert not [p for p in tmp_path.iterdir() if atomic.is_temp_file(p)]
