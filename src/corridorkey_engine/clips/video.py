"""Video files as frame sources: frame count, frame rate and forward decoding.

PyAV (FFmpeg's libraries, the ``av`` package of the ``engine`` extra) reads the file when it can; OpenCV is
the fallback for a container PyAV cannot open (or when ``av`` is not installed). Frames come out as RGB
arrays (uint8, or uint16 for a video of more than 8 bits per channel when PyAV reads it).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import FrameIOError
from .pixels import bgr_to_rgb

log = logging.getLogger(__name__)


def _av() -> Any | None:
    try:
        import av
    except ImportError:
        return None
    return av


def _open_av(path: Path) -> Any | None:
    av = _av()
    if av is None:
        return None
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises its own error types per FFmpeg error code
        log.debug("%s: PyAV cannot open it (%s); trying OpenCV", path, exc)
        return None
    if not container.streams.video:
        container.close()
        return None
    return container


def video_info(path: Path) -> tuple[int, float | None]:
    """The number of frames of a video and its frame rate (None when the file does not say).

    Raises:
        FrameIOError: neither PyAV nor OpenCV can open it, or it has no frames.
    """
    container = _open_av(path)
    if container is not None:
        with container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            count = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            fps = float(Fraction(rate)) if rate else None
    else:
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise FrameIOError(f"{path}: cannot open video (unsupported codec or corrupt file)")
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if count <= 0:
                count = 0
                while cap.grab():
                    count += 1
            fps = cap.get(cv2.CAP_PROP_FPS) or None
        finally:
            cap.release()
    if count <= 0:
        raise FrameIOError(f"{path}: video has no frames")
    return count, fps


class VideoDecoder:
    """Decodes one video forward: :meth:`read` frame ``index`` (at or after the last one read)."""

    def __init__(self, path: Path, length: int) -> None:
        self.path = path
        self.length = length
        self._next = 0
        self._container = _open_av(path)
        self._frames: Any = None
        self._cap: Any = None
        if self._container is not None:
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            deep = any(tag in (stream.codec_context.pix_fmt or "") for tag in ("10", "12", "16"))
            self._format = "rgb48le" if deep else "rgb24"
            self._frames = self._container.decode(stream)
        else:
            self._cap = cv2.VideoCapture(str(path))
            if not self._cap.isOpened():
                raise FrameIOError(f"{path}: cannot open video")

    def _next_frame(self, decode: bool) -> np.ndarray | None:
        if self._frames is not None:
            try:
                frame = next(self._frames, None)
            except Exception as exc:  # PyAV's decoding errors (InvalidDataError, ...)
                raise FrameIOError(f"{self.path}: cannot decode frame {self._next + 1} ({exc})") from exc
            if frame is None:
                raise FrameIOError(f"{self.path}: ends at frame {self._next + 1}, expected {self.length}")
            return frame.to_ndarray(format=self._format) if decode else None
        if not decode:
            if not self._cap.grab():
                raise FrameIOError(f"{self.path}: ends at frame {self._next + 1}, expected {self.length}")
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise FrameIOError(f"{self.path}: cannot decode frame {self._next + 1} (corrupt or shorter)")
        return bgr_to_rgb(frame)

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as an RGB array; frames before it are skipped without conversion.

        Raises:
            ValueError: ``index`` is before a frame already read.
            FrameIOError: the video ends or fails to decode before it.
        """
        if index < self._next:
            raise ValueError("video frames must be read in increasing order")
        while self._next < index:
            self._next_frame(decode=False)
            self._next += 1
        frame = self._next_frame(decode=True)
        self._next += 1
        assert frame is not None
        return frame

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
