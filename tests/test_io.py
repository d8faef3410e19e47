"""corridorkey_engine.clips: discovery, natural sort, readers, EXR/PNG writers, atomic writes, completeness"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_ckpt import plate

from ckpt_formats import atomic
from corridorkey_engine import errors
from corridorkey_engine.clips import completeness, exr, images, pixels, sequences
from corridorkey_engine.keying.chroma import chroma_hint, detect_screen

pytestmark = pytest.mark.skipif(
    exr._openexr_module() is None and not cv2.haveImageWriter(".exr"), reason="no EXR support here"
)


def test_natural_sort_orders_numbers_by_value(tmp_path: Path) -> None:
    names = ["frame_10.png", "frame_2.png", "frame_1.png", "Frame_3.png", "frame_0100.png", "frame_20.png"]
    for n in names:
        cv2.imwrite(str(tmp_path / n), np.zeros((2, 2), np.uint8))
    seq = sequences.discover_frames(tmp_path)
    assert seq.names == ["frame_1", "frame_2", "Frame_3", "frame_10", "frame_20", "frame_0100"]


def test_discovery_ignores_hidden_and_temp_files_and_rejects_bad_folders(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a_1.png"), np.zeros((2, 2), np.uint8))
    (tmp_path / ".a_2.png.0123456789ab.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    assert atomic.is_temp_file(tmp_path / ".a_2.png.0123456789ab.tmp")
    assert not atomic.is_temp_file(tmp_path / "a_1.png")
    assert sequences.discover_frames(tmp_path).names == ["a_1"]

    cv2.imwrite(str(tmp_path / "a_1.jpg"), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(errors.FrameIOError, match="share the frame name 'a_1'"):
        sequences.discover_frames(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.FrameIOError, match="no frames found"):
        sequences.discover_frames(empty)
    with pytest.raises(errors.FrameIOError, match="not a folder"):
        sequences.discover_frames(tmp_path / "missing")


@pytest.mark.parametrize("half", [True, False])
@pytest.mark.parametrize("channels", ["Y", "RGB", "RGBA"])
def test_exr_round_trip(tmp_path: Path, channels: str, half: bool) -> None:
    rng = np.random.default_rng(0)
    shape = (13, 17) if channels == "Y" else (13, 17, len(channels))
    data = rng.uniform(-0.5, 4.0, size=shape).astype(np.float32)
    path = tmp_path / "x.exr"
    images.write_exr(path, data, channels, half=half)
    back = images.read_image(path)
    assert back.shape == data.shape and back.dtype == np.float32
    expected = data.astype(np.float16).astype(np.float32) if half else data
    np.testing.assert_array_equal(back, expected)
    assert completeness.output_complete(path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.exr"]  # no temp left behind


def test_exr_pixel_type_on_disk(tmp_path: Path) -> None:
    openexr = exr._openexr_module()
    if openexr is None:
        pytest.skip("OpenEXR package not installed")
    images.write_exr(tmp_path / "h.exr", np.zeros((4, 4)), "Y", half=True)
    images.write_exr(tmp_path / "f.exr", np.zeros((4, 4, 3)), "RGB", half=False)
    with openexr.File(str(tmp_path / "h.exr"), separate_channels=True) as f:
        assert {k: v.type() for k, v in f.channels().items()} == {"Y": openexr.HALF}
    with openexr.File(str(tmp_path / "f.exr"), separate_channels=True) as f:
        assert {k: v.type() for k, v in f.channels().items()} == dict.fromkeys("RGB", openexr.FLOAT)


def test_truncated_outputs_are_detected_at_every_cut(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    exr = tmp_path / "a.exr"
    images.write_exr(exr, rng.random((70, 50, 4)).astype(np.float32), "RGBA")
    png = tmp_path / "a.png"
    images.write_png(png, rng.random((30, 20, 3)))
    for good in (exr, png):
        raw = good.read_bytes()
        assert completeness.output_complete(good)
        cut = tmp_path / f"cut{good.suffix}"
        for n in sorted({0, 1, 8, 50, len(raw) // 3, len(raw) // 2, len(raw) - 13, len(raw) - 1}):
            cut.write_bytes(raw[:n])
            assert not completeness.output_complete(cut), (good.name, n)
            with pytest.raises(errors.FrameIOError, match=str(cut.name)):
                images.read_image(cut)
    assert not completeness.output_complete(tmp_path / "missing.exr")


def test_atomic_write_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_remove_stale_temps_only_removes_temps(tmp_path: Path) -> None:
    (tmp_path / ".f_1.exr.aaaaaaaaaaaa.tmp").write_bytes(b"x")
    (tmp_path / "f_1.exr").write_bytes(b"x")
    (tmp_path / ".keep").write_bytes(b"x")
    assert atomic.sweep_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "f_1.exr"]


def test_readers_scale_and_order_channels(tmp_path: Path) -> None:
    rgb16 = np.zeros((3, 4, 3), np.uint16)
    rgb16[..., 0] = 65535  # red
    cv2.imwrite(str(tmp_path / "a.png"), rgb16[..., ::-1])
    img = images.read_image(tmp_path / "a.png")
    assert img.dtype == np.float32 and img.shape == (3, 4, 3)
    np.testing.assert_array_equal(img[0, 0], [1.0, 0.0, 0.0])
    grey = np.full((3, 4), 51, np.uint8)
    cv2.imwrite(str(tmp_path / "g.tif"), grey)
    g = images.read_image(tmp_path / "g.tif")
    assert g.shape == (3, 4) and np.allclose(g, 0.2)
    assert pixels.as_rgb(g).shape == (3, 4, 3)
    assert pixels.as_mask(pixels.as_rgb(g)).shape == (3, 4)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(errors.FrameIOError, match=r"bad\.jpg: unreadable or corrupt"):
        images.read_image(tmp_path / "bad.jpg")


def test_video_sequence_discovery_and_reading(tmp_path: Path) -> None:
    writer = cv2.VideoWriter(str(tmp_path / "plate.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 24, (32, 24))
    if not writer.isOpened():
        pytest.skip("OpenCV here cannot write FFV1 video")
    for i in range(5):
        writer.write(np.full((24, 32, 3), i * 50, np.uint8))
    writer.release()
    seq = sequences.discover_frames(tmp_path)
    assert seq.is_video and len(seq) == 5 and seq.names[0] == "plate_00001"
    with sequences.FrameReader(seq) as reader:
        first = reader.read(0)
        fourth = reader.read(3)  # skips a frame forward
        with pytest.raises(ValueError):
            reader.read(1)
    assert first.shape == (24, 32, 3)
    assert np.allclose(first, 0.0) and np.allclose(fourth, 150 / 255)
    cv2.imwrite(str(tmp_path / "f.png"), np.zeros((2, 2), np.uint8))
    with pytest.raises(errors.FrameIOError, match="both image frames and video"):
        sequences.discover_frames(tmp_path)


def test_exr_backend_cv2_without_codec_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    if cv2.haveImageWriter(".exr"):
        pytest.skip("this OpenCV has EXR support")
    monkeypatch.setenv("CORRIDORKEY_EXR_BACKEND", "cv2")
    with pytest.raises(errors.ExrSupportError, match="OPENCV_IO_ENABLE_OPENEXR=1") as info:
        exr.exr_backend()
    assert "pip install OpenEXR" in str(info.value)


@pytest.mark.parametrize("screen", ["green", "blue"])
def test_chroma_hint_separates_disc_from_screen(screen: str) -> None:
    img, alpha = plate(64, 80, 1, screen)
    assert detect_screen(img) == screen
    hint = chroma_hint(img)
    assert hint.shape == alpha.shape and hint.dtype == np.float32
    assert hint[alpha > 0.99].mean() > 0.9
    assert hint[alpha < 0.01].mean() < 0.1


def test_check_writable_creates_nothing(tmp_path: Path) -> None:
    images.check_writable(tmp_path / "a" / "b")  # probed in the nearest existing folder, then removed
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(errors.FrameIOError, match="not writable"):
        images.check_writable(tmp_path / "file" / "Matte")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(errors.FrameIOError, match="not writable"):
            images.check_writable(ro)
