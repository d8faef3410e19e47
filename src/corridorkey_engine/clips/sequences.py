"""Clip folders as frame sequences: discovery (an image sequence or one video) and in-order readers."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import FrameIOError
from .images import read_image
from .pixels import bgr_to_rgb, to_float

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mxf", ".mpg", ".mpeg")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value: ``frame_2`` before ``frame_10``."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _visible_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


@dataclass
class FrameSequence:
    """The frames of one ``Input/`` or ``AlphaHint/`` folder: an image sequence or a single video file.

    ``names`` are the per-frame output stems: the image file stems, or ``<video stem>_<index>`` (1-based,
    zero-padded) for a video.
    """

    folder: Path
    paths: list[Path]
    video: Path | None = None
    frame_count: int = 0
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_video(self) -> bool:
        return self.video is not None

    def describe(self) -> str:
        if self.video is not None:
            return f"video {self.video} ({len(self)} frames)"
        return f"{len(self)} frames in {self.folder}"


def discover_frames(folder: Path) -> FrameSequence:
    """Find the frames in ``folder``: image files in natural order, or exactly one video file.

    Raises FrameIOError when the folder is missing, holds no frames, holds several videos, or mixes video
    and image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FrameIOError(f"{folder}: not a folder")
    files = _visible_files(folder)
    images = sorted(
        (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: natural_key(p.name)
    )
    videos = sorted(p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS)
    if videos and images:
        raise FrameIOError(
            f"{folder}: holds both image frames and video ({videos[0].name}); keep one or the other"
        )
    if len(videos) > 1:
        names = ", ".join(v.name for v in videos[:3])
        raise FrameIOError(f"{folder}: holds {len(videos)} videos ({names}); a clip folder takes one")
    if videos:
        count = video_frame_count(videos[0])
        width = max(5, len(str(count)))
        names = [f"{videos[0].stem}_{i:0{width}d}" for i in range(1, count + 1)]
        return FrameSequence(folder, [], video=videos[0], frame_count=count, names=names)
    if not images:
        exts = ", ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        raise FrameIOError(f"{folder}: no frames found (looked for {exts})")
    stems = [p.stem for p in images]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise FrameIOError(
            f"{folder}: several files share the frame name {dupes[0]!r} (e.g. .png and .exr); "
            "outputs are named after frames, so keep one"
        )
    return FrameSequence(folder, images, frame_count=len(images), names=stems)


def video_frame_count(path: Path) -> int:
    """Number of frames in a video, counting by decoding when the container does not say."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise FrameIOError(f"{path}: cannot open video (unsupported codec or corrupt file)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:
            count = 0
            while cap.grab():
                count += 1
        if count <= 0:
            raise FrameIOError(f"{path}: video has no frames")
        return count
    finally:
        cap.release()


class FrameReader:
    """Reads frame ``i`` of a sequence as float32 RGB/grey arrays. Thread-safe.

    Image sequences read any frame in any order; a video decodes forward only, so frames must be asked
    for in increasing order (skipped frames are grabbed without decoding).
    """

    def __init__(self, seq: FrameSequence) -> None:
        self.seq = seq
        self._lock = threading.Lock()
        self._cap: Any = None
        self._next = 0

    def read(self, index: int) -> np.ndarray:
        if not self.seq.is_video:
            return read_image(self.seq.paths[index])
        with self._lock:
            return self._read_video(index)

    def _read_video(self, index: int) -> np.ndarray:
        video = self.seq.video
        assert video is not None
        if self._cap is None:
            self._cap = cv2.VideoCapture(str(video))
            if not self._cap.isOpened():
                raise FrameIOError(f"{video}: cannot open video")
        if index < self._next:
            raise ValueError("video frames must be read in increasing order")
        while self._next < index:
            if not self._cap.grab():
                raise FrameIOError(f"{video}: ends at frame {self._next + 1}, expected {len(self.seq)}")
            self._next += 1
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise FrameIOError(f"{video}: cannot decode frame {index + 1} (corrupt or shorter than expected)")
        self._next += 1
        return to_float(bgr_to_rgb(frame), video)

    def close(self) -> None:
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_frames(seq: FrameSequence) -> Iterator[np.ndarray]:
    """Every frame of ``seq`` in order (a convenience for small clips and tests)."""
    with FrameReader(seq) as reader:
        for i in range(len(seq)):
            yield reader.read(i)
