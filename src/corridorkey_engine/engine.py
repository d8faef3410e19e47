"""CorridorKeyEngine: a loaded GreenFormer and the frame contract around it."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .device import resolve_device, resolve_dtype
from .errors import ConfigError
from .keying.frames import Array, PostProcessOptions, model_input, postprocess, to_batch, to_numpy
from .model.config import GreenFormerConfig
from .model.loading import LoadedModel, LoadReport, load_greenformer
from .model.network import GreenFormer
from .model.source import CheckpointSource

if TYPE_CHECKING:
    from ckpt_formats import ResolvedCheckpoint

logger = logging.getLogger(__name__)


class CorridorKeyEngine:
    """Keys green- or blue-screen frames with a GreenFormer.

    ``CorridorKeyEngine(checkpoint_dir)`` resolves the checkpoint through the ckpt_formats registry
    (fetching it from ``hub`` when the directory has none), builds the model on the meta device and assigns
    the weights on ``device`` in the precision's dtype. See :meth:`process_frame` for the frame contract.

    Args:
        checkpoint_dir: the directory holding the checkpoint (any registered format), or a
            :class:`CheckpointSource`; None: :meth:`CheckpointSource.default`, the published weights of the
            screen colour in :func:`default_checkpoint_dir`, fetched on first use (as ``corridorkey infer``).
        device: ``cuda``, ``cuda:N``, ``mps``, ``cpu`` or ``auto``; default ``$CORRIDORKEY_DEVICE``,
            else auto (cuda > mps > cpu).
        precision: ``float16`` (default on CUDA/MPS), ``bfloat16`` or ``float32``; the CPU always runs
            float32.
        img_size: the resolution the model runs at; default the checkpoint config's (2048 for v1.0).
        config: the architecture; default the checkpoint's metadata, else CorridorKey v1.0.
        strict: refuse a checkpoint with missing or unexpected keys (default); else log them.
        compile: wrap the model in ``torch.compile`` (the first frames are slow while it compiles): True for
            its default backend (``"inductor"``), or a backend's name (``"cudagraphs"``, ``"eager"``...).
        screen_color: ``"green"`` or ``"blue"``: the screen the frames are shot on. It chooses the checkpoint
            (file names containing ``blue`` are the blue-screen model: the only candidates for blue, never
            for green; without a folder, the published model of that colour) and is the default of the
            post-processing's ``screen_color`` (despill acts on that screen's channel). Default: the
            source's (green unless a :class:`CheckpointSource` says otherwise).
        source_options: :class:`CheckpointSource` fields to replace (``hub``, ``exclude``, ``select``,
            ``safe_only``, ``formats``, ``match_screen``, ``skip_mlx``), passed on to
            :func:`ckpt_formats.resolve`.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str] | CheckpointSource | None = None,
        *,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        img_size: int | None = None,
        config: GreenFormerConfig | None = None,
        strict: bool = True,
        compile: bool | str = False,
        screen_color: str | None = None,
        **source_options: Any,
    ) -> None:
        if screen_color is not None:
            source_options["screen_color"] = screen_color
        source = CheckpointSource.of(checkpoint_dir, **source_options)  # refuses a bad colour early
        self.post_defaults = PostProcessOptions(screen_color=source.screen_color)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, precision)
        backend = _compile_backend(compile)
        loaded = load_greenformer(
            source, device=self.device, dtype=self.dtype, config=config, img_size=img_size, strict=strict
        )
        self._setup(loaded, backend)

    @classmethod
    def from_model(
        cls,
        model: GreenFormer,
        *,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        compile: bool | str = False,
        screen_color: str = "green",
    ) -> CorridorKeyEngine:
        """An engine around a model already in memory (training, evaluation): moved to ``device``/dtype."""
        engine = cls.__new__(cls)
        engine.post_defaults = PostProcessOptions(screen_color=screen_color)
        engine.device = resolve_device(device)
        engine.dtype = resolve_dtype(engine.device, precision)
        model = model.to(device=engine.device, dtype=engine.dtype).eval().requires_grad_(False)
        engine._setup(LoadedModel(model, model.config, LoadReport()), _compile_backend(compile))
        return engine

    def _setup(self, loaded: LoadedModel, backend: str | None) -> None:
        self.model: GreenFormer = loaded.model
        self.config: GreenFormerConfig = loaded.config
        self.load_report: LoadReport = loaded.report
        self.checkpoint: ResolvedCheckpoint | None = loaded.checkpoint  # .path, .format.name, .metadata
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
        self._forward = torch.compile(self.model, backend=backend) if backend else self.model

    @property
    def screen_color(self) -> str:
        """The screen colour the engine keys by default (``"green"`` or ``"blue"``)."""
        return self.post_defaults.screen_color

    def describe(self) -> str:
        """One line: the device, the dtype and the checkpoint (file and format) the engine runs."""
        ckpt = self.checkpoint  # None for a model built in memory
        source = f"checkpoint {ckpt.path} ({ckpt.format.name})" if ckpt is not None else "model from memory"
        return f"device {self.device} ({str(self.dtype).replace('torch.', '')}), {source}"

    @property
    def img_size(self) -> int:
        """The square resolution the model runs at."""
        return self.config.img_size

    @torch.inference_mode()
    def predict(self, inputs: torch.Tensor, refiner_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The raw model on ``[B, 4, S, S]`` normalised inputs: ``alpha [B,1,S,S]``, ``fg [B,3,S,S]``."""
        return self._forward(inputs.to(self.device, self.dtype), refiner_scale=float(refiner_scale))

    @torch.inference_mode()
    def process_tensors(
        self,
        image: Array,
        mask: Array,
        options: PostProcessOptions | None = None,
        *,
        refiner_scale: float = 1.0,
        input_is_linear: bool = False,
        **overrides: Any,
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """:meth:`process_frame`, but the outputs stay ``[B, C, H, W]`` float32 tensors on the engine's
        device; also returns whether the input was batched."""
        options = options if options is not None else self.post_defaults
        options = replace(options, **overrides) if overrides else options
        rgb, hint, batched = to_batch(image, mask, self.device)
        height, width = rgb.shape[-2:]
        inputs = model_input(rgb, hint, self.img_size, input_is_linear=input_is_linear, dtype=self.dtype)
        del rgb, hint
        prediction = self.predict(inputs, refiner_scale)
        return postprocess(prediction["alpha"], prediction["fg"], height, width, options), batched

    def process_frame(
        self, image: Array, mask: Array, options: PostProcessOptions | None = None, **keywords: Any
    ) -> dict[str, np.ndarray]:
        """Key one frame ``[H,W,3]`` or a batch ``[B,H,W,3]`` with its alpha hint.

        ``image``: uint8, uint16 or float 0-1; sRGB, or linear with ``input_is_linear`` (it is then resized
        in linear light and converted to sRGB for the model). ``mask``: ``[H,W]`` or ``[H,W,1]`` (with a
        leading batch axis for a batch), linear 0-1, uint8 or float.

        Returns float32 arrays at the input resolution, ``[H,W,C]`` per frame (``[B,H,W,C]`` for a batch):

        - ``alpha`` ``[...,1]``: the predicted matte, linear;
        - ``fg`` ``[...,3]``: the predicted foreground, straight (un-premultiplied) sRGB;
        - ``processed`` ``[...,4]``: linear premultiplied RGBA after despeckle (``auto_despeckle``: alpha
          islands under ``despeckle_size`` px removed) and despill (``despill_strength`` 0-1, on the
          ``screen_color`` channel: ``"green"`` or ``"blue"``, default the engine's);
        - ``comp`` ``[...,3]``: sRGB preview over a 128-px 0.15/0.55 checkerboard (if ``generate_comp``).

        The defaults, and the post-processing itself, are upstream CorridorKey's ``run-inference``
        defaults (its OpenCV path; see docs/engine.md for the few differences).

        Keywords (those of :meth:`process_tensors`): ``refiner_scale`` multiplies the CNN refiner's
        corrections (0 = coarse prediction only, default 1); ``input_is_linear`` (default False); any field
        of :class:`PostProcessOptions`. The post-processing settings are that one value (``options``,
        default its defaults); keywords named like its fields replace them, so ``process_frame(image, hint,
        despill_strength=0.5)`` works as well.
        """
        outputs, batched = self.process_tensors(image, mask, options, **keywords)
        return to_numpy(outputs, batched)


def load_engine(
    checkpoint_dir: str | os.PathLike[str] | CheckpointSource | None = None, **kwargs: Any
) -> CorridorKeyEngine:
    """``CorridorKeyEngine(checkpoint_dir, **kwargs)``: the engine, ready to key frames."""
    return CorridorKeyEngine(checkpoint_dir, **kwargs)


def _compile_backend(compile: bool | str) -> str | None:
    """The ``torch.compile`` backend ``compile`` names (True: torch's default), checked before any loading.

    Raises:
        ConfigError: torch knows no such backend.
    """
    if not compile:
        return None
    backend = "inductor" if compile is True else str(compile)
    try:
        torch.compile(torch.nn.Identity(), backend=backend)  # lazy: only looks the backend up
    except torch._dynamo.exc.InvalidBackend as exc:
        known = ", ".join(torch._dynamo.list_backends(exclude_tags=()))
        raise ConfigError(f"unknown torch.compile backend {backend!r}: use one of {known}") from exc
    return backend
