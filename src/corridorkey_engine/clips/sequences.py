"""Clip folders as frame sequences: discovery (an image sequence or one video) and in-order readers."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FrameIOError
from .images import read_image
from .pixels import to_float
from .video import VideoDecoder, video_info

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp")
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
    fps: float | None = None  # a video's frame rate, when its container says

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_video(self) -> bool:
        return self.video is not None

    def describe(self) -> str:
        if self.video is not None:
            return f"video {self.video} ({len(self)} frames)"
        return f"{len(self)} frames in {self.folder}"


def video_sequence(video: Path) -> FrameSequence:
    """The frames of one video file, named ``<video stem>_<number from 1>``.

    Raises:
        FrameIOError: the video cannot be opened or has no frames.
    """
    count, fps = video_info(video)
    width = max(5, len(str(count)))
    names = [f"{video.stem}_{i:0{width}d}" for i in range(1, count + 1)]
    return FrameSequence(video.parent, [], video=video, frame_count=count, names=names, fps=fps)


def discover_frames(folder: Path) -> FrameSequence:
    """Find the frames in ``folder``: image files in natural order, or exactly one video file; ``folder``
    may also be a video file itself (a clip's ``Input.mp4``).

    Raises FrameIOError when the folder is missing, holds no frames, holds several videos, or mixes video
    and image files.
    """
    folder = Path(folder)
    if folder.is_file():
        if folder.suffix.lower() in IMAGE_EXTENSIONS:
            raise FrameIOError(f"{folder}: a single image, not a video; put image frames in a folder")
        return video_sequence(folder)
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
        return video_sequence(videos[0])
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


class FrameReader:
    """Reads frame ``i`` of a sequence as float32 RGB/grey arrays. Thread-safe.

    Image sequences read any frame in any order; a video decodes forward only, so frames must be asked
    for in increasing order (skipped frames are grabbed without decoding).
    """

    def __init__(self, seq: FrameSequence) -> None:
        self.seq = seq
        self._lock = threading.Lock()
        self._video: VideoDecoder | None = None

    def read(self, index: int) -> np.ndarray:
        if not self.seq.is_video:
            return read_image(self.seq.paths[index])
        with self._lock:
            if self._video is None:
                assert self.seq.video is not None
                self._video = VideoDecoder(self.seq.video, len(self.seq))
            return to_float(self._video.read(index), self.seq.video)

    def close(self) -> None:
        with self._lock:
            if self._video is not None:
                self._video.close()
                self._video = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_frames(seq: FrameSequence) -> Iterator[np.ndarray]:
    """Every frame of ``seq`` in order (a convenience for small clips and tests)."""
    with FrameReader(seq) as reader:
        for i in range(len(seq)):
            yield reader.read(i)
