"""The comp movie: a clip's ``Comp/`` frames as one H.264 ``Comp.mp4``, encoded in-process with PyAV.

Written through :func:`ckpt_formats.atomic.atomic_write`, so the movie is whole or absent; frames of odd
width or height are padded by one edge pixel (H.264's 4:2:0 chroma needs even sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from ckpt_formats.atomic import atomic_write

from ..errors import FrameIOError
from .images import read_image
from .pixels import as_rgb, to_uint8

COMP_VIDEO_NAME = "Comp.mp4"


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


def video_rate(fps: float) -> Fraction:
    """``fps`` as an exact rate: NTSC rates (23.976, 29.97, 59.94) as N*1000/1001, others as they are."""
    ntsc = fps * 1.001
    if abs(ntsc - round(ntsc)) < 0.005 and abs(fps - round(fps)) > 0.005:
        return Fraction(round(ntsc) * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def write_comp_video(path: Path, frames: Sequence[Path], fps: float, crf: int = 18) -> Path:
    """Encode ``frames`` (image files, in order) as an H.264 MP4 at ``fps``, atomically.

    Args:
        path: the movie to write (``<clip>/Comp.mp4``).
        frames: the comp frames, in clip order.
        fps: frames per second (a video source's rate, or ``--fps``).
        crf: x264 quality (18: visually lossless).

    Returns:
        ``path``.

    Raises:
        FrameIOError: PyAV is missing, or a frame cannot be read or encoded.
    """
    try:
        import av
    except ImportError as exc:
        raise FrameIOError(
            f"{path}: --comp-video needs PyAV; `pip install av` (part of the `engine` extra)"
        ) from exc
    rate = video_rate(fps)

    def encode(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for i, frame_path in enumerate(frames):
                rgb = _even(to_uint8(as_rgb(read_image(frame_path))))
                if i == 0:
                    stream.height, stream.width = rgb.shape[:2]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))

    try:
        return atomic_write(path, encode)
    except (av.FFmpegError, ValueError) as exc:
        raise FrameIOError(f"{path}: cannot encode the comp movie ({exc})") from exc
