"""One frame keyed for the viewer: the model's prediction cached per frame and model setting, the
post-processing redone on each change, the views as 8-bit images.

A frame is keyed with the very calls :meth:`CorridorKeyEngine.process_frame` makes (``to_batch``,
``model_input``, :meth:`~CorridorKeyEngine.predict`, :func:`~corridorkey_engine.keying.frames.postprocess`),
split at the prediction: a change of despill, despeckle or screen-independent post-processing reuses it.

View transforms to 8 bits (rounded, clipped to 0-1): Input, FG and Comp are sRGB and shown as they are (a
linear input is converted to sRGB first); Hint and Matte are linear and shown as they are (grey);
Processed (linear, premultiplied) is composited over the chosen background (the comp's checkerboard, black
or white) in linear light and converted to sRGB.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..clips.pixels import as_mask, as_rgb, to_uint8
from ..clips.planning import Clip, KeyOptions
from ..clips.sequences import FrameReader
from ..keying.chroma import chroma_hint
from ..keying.frames import ENGINE_OUTPUTS, comp_background

VIEWS = ("input", "hint", "matte", "fg", "processed", "comp")
BACKGROUNDS = ("checker", "black", "white")


@dataclass
class Prediction:
    """A frame as read (``image`` sRGB or linear float RGB, ``mask`` linear) and the model's raw output."""

    image: np.ndarray
    mask: np.ndarray
    alpha: Any  # torch [1,1,S,S]
    fg: Any  # torch [1,3,S,S]


class LRU:
    """A small least-recently-used cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


def read_frame(clip: Clip, opts: KeyOptions, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of ``clip`` as the pipeline reads it: float RGB and its hint (the clip's, or the
    chroma key with ``opts.hint == "chroma"``, as :class:`~corridorkey_engine.clips.planning.Clip` says)."""
    with FrameReader(clip.input) as reader:
        image = as_rgb(reader.read(index))
    if clip.hint is None:
        return image, chroma_hint(image, opts.post.screen_color)
    with FrameReader(clip.hint) as reader:
        return image, as_mask(reader.read(index))


VIEW_OUTPUTS: dict[str, tuple[str, ...]] = {
    "input": (),
    "hint": (),
    "matte": ("alpha",),
    "fg": ("fg",),
    "processed": ("processed",),
    "comp": ("comp",),
}
"""The engine outputs each view is drawn from (only those are computed for it)."""
PIXEL_OUTPUTS = ("alpha", "fg", "processed")
"""The engine outputs the pixel readout shows."""


class FrameKeyer:
    """Keys frames for the viewer; thread-safe (one engine call at a time, shared with renders through
    ``lock``).

    Cached per frame and model setting: the prediction (``predictions`` frames), the prediction resized
    to the frame (the first stage of :func:`~corridorkey_engine.keying.frames.postprocess`) and the
    despeckled matte (two frames each); per post-processing setting, the outputs computed so far (two
    settings). A despill change redoes only the outputs the view shows, from the resized prediction.
    """

    def __init__(self, lock: threading.Lock, predictions: int = 6) -> None:
        self.lock = lock
        self._predictions = LRU(predictions)
        self._resized = LRU(2)
        self._mattes = LRU(2)
        self._outputs = LRU(2)

    def predict(
        self, engine: Any, model_key: Hashable, clip: Clip, opts: KeyOptions, index: int
    ) -> Prediction:
        """The cached prediction of frame ``index`` (made once per model setting, refiner scale and hint)."""
        from ..keying.frames import model_input, to_batch

        def make() -> Prediction:
            image, mask = read_frame(clip, opts, index)
            rgb, hint, _ = to_batch(image, mask, engine.device)
            inputs = model_input(
                rgb, hint, engine.img_size, input_is_linear=clip.input_is_linear, dtype=engine.dtype
            )
            out = engine.predict(inputs, opts.refiner_scale)
            return Prediction(image, mask, out["alpha"], out["fg"])

        with self.lock:
            return self._predictions.get(self._key(model_key, clip, opts, index), make)

    def outputs(
        self,
        engine: Any,
        model_key: Hashable,
        clip: Clip,
        opts: KeyOptions,
        index: int,
        names: Collection[str] = ENGINE_OUTPUTS,
    ) -> tuple[Prediction, dict[str, np.ndarray]]:
        """The prediction and the engine's outputs ``names`` of frame ``index`` (of ``alpha``, ``fg``,
        ``processed``, ``comp``) with ``opts``' post-processing, float32 ``[H,W,C]`` as ``process_frame``
        returns them, each computed once per setting by the calls ``postprocess`` makes."""
        from ..keying.frames import despeckled, finish_outputs, resize_lanczos, to_numpy

        pred = self.predict(engine, model_key, clip, opts, index)
        key = self._key(model_key, clip, opts, index)
        post = opts.post
        tensor_path = pred.alpha.device.type == "cuda"
        height, width = pred.image.shape[:2]

        def resized() -> tuple[Any, Any]:
            return tuple(
                resize_lanczos(x.float(), height, width, tensor_path=tensor_path)
                for x in (pred.alpha, pred.fg)
            )

        with self.lock:
            done = self._outputs.get((key, post), dict)
            missing = [name for name in names if name not in done]
            if missing:
                alpha, fg = self._resized.get(key, resized)
                matte = None
                if post.auto_despeckle and ("processed" in missing or "comp" in missing):
                    matte = self._mattes.get(
                        (key, post.despeckle_size), lambda: despeckled(alpha, post, tensor_path=tensor_path)
                    )
                computed = finish_outputs(
                    alpha, fg, post, tensor_path=tensor_path, outputs=missing, matte=matte
                )
                done.update(to_numpy(computed, batched=False))
            return pred, {name: done[name] for name in names}

    @staticmethod
    def _key(model_key: Hashable, clip: Clip, opts: KeyOptions, index: int) -> Hashable:
        return (str(clip.root), index, model_key, opts.refiner_scale, opts.hint, clip.input_is_linear)


def view_image(
    view: str,
    pred: Prediction,
    outputs: dict[str, np.ndarray],
    input_is_linear: bool,
    background: str,
    checker_size: int | None,
) -> np.ndarray:
    """The 8-bit RGB image ``[H,W,3]`` the viewer shows for ``view`` (see the module's transforms)."""
    import torch

    from ..keying import color

    if view == "input":
        image = pred.image
        if input_is_linear:
            image = color.linear_to_srgb(torch.from_numpy(np.clip(image, 0.0, None))).numpy()
        return to_uint8(image)
    if view in ("hint", "matte"):
        grey = pred.mask if view == "hint" else outputs["alpha"][..., 0]
        return np.repeat(to_uint8(grey)[..., None], 3, axis=2)
    if view in ("fg", "comp"):
        return to_uint8(outputs[view])
    if view != "processed":
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    rgba = torch.from_numpy(outputs["processed"])
    height, width = rgba.shape[:2]
    if background == "checker":
        bg = comp_background(height, width, checker_size, rgba.device)[0].permute(1, 2, 0)
    else:
        bg = torch.full((height, width, 1), 0.0 if background == "black" else 1.0)
    over = rgba[..., :3] + bg * (1.0 - rgba[..., 3:])
    return to_uint8(color.linear_to_srgb(over.clamp(min=0.0)).numpy())


def encode_png(image: np.ndarray, compress: bool = False) -> bytes:
    """``[H,W,3]`` uint8 RGB as PNG bytes. By default uncompressed (stored deflate blocks, no row filter):
    on the same machine a 6 MB 1080p frame crosses the loopback in milliseconds, while compressing it took
    longer than the post-processing (165 ms for grainy footage at level 1, 6 ms stored). ``compress``: zlib
    level 1 with the Sub filter and run-length matching (about 45 ms, a half to a twentieth of the bytes),
    for a viewer on another machine."""
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1 if compress else 0]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11; earlier ones choose filters themselves
        params += [
            cv2.IMWRITE_PNG_FILTER,
            cv2.IMWRITE_PNG_FILTER_SUB if compress else cv2.IMWRITE_PNG_FILTER_NONE,
        ]
    if compress:
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]), params)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def pixel(pred: Prediction, outputs: dict[str, np.ndarray], x: int, y: int) -> dict[str, list[float]]:
    """The values under pixel ``(x, y)``: input RGB, hint, matte, FG RGB, Processed RGBA (floats as the
    engine holds them; input as read: sRGB, or linear for a linear input)."""
    height, width = pred.image.shape[:2]
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"pixel {x},{y} is outside the {width}x{height} frame")

    def at(array: np.ndarray) -> list[float]:
        value = np.atleast_1d(array[y, x])
        return [round(float(v), 5) for v in value]

    return {
        "input": at(pred.image),
        "hint": at(pred.mask),
        "matte": at(outputs["alpha"]),
        "fg": at(outputs["fg"]),
        "processed": at(outputs["processed"]),
    }
