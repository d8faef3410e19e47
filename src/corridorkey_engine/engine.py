"""CorridorKeyEngine: a loaded GreenFormer and the frame contract around it."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .device import resolve_device, resolve_dtype
from .errors import ConfigError, OutOfDeviceMemoryError
from .keying.frames import Array, PostProcessOptions, model_input, postprocess, to_batch
from .keying.transfer import PendingDownload, StageClock, start_download
from .model.compiling import check_compile_mode, compile_backend, compile_model
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
        low_memory: the low-memory mode (the same output in far less GPU memory, a little slower: the
            refiner runs in tiles, see :mod:`corridorkey_engine.model.refiner`): True, False, or ``"auto"``
            (default): on CUDA, on when the free memory is less than a frame's activations need (with a
            log line), else off.
        channels_last: run the refiner's convolutions in the ``channels_last`` memory layout: True, False or
            ``"auto"`` (default): on CUDA in half precision, where cuDNN's tensor-core convolutions are NHWC
            and a ``contiguous`` refiner pays a layout transpose around each of them.
        compile_mode: ``torch.compile``'s mode with ``compile`` (:data:`~.model.compiling.COMPILE_MODES`;
            default ``"default"``); inductor's compiled kernels are cached per user, so a second run starts
            fast (:mod:`corridorkey_engine.model.compiling`).
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
        low_memory: bool | str = "auto",
        channels_last: bool | str = "auto",
        compile_mode: str | None = None,
        **source_options: Any,
    ) -> None:
        if screen_color is not None:
            source_options["screen_color"] = screen_color
        source = CheckpointSource.of(checkpoint_dir, **source_options)  # refuses a bad colour early
        self.post_defaults = PostProcessOptions(screen_color=source.screen_color)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, precision)
        runtime = _Runtime.checked(compile, compile_mode, low_memory, channels_last)
        loaded = load_greenformer(
            source, device=self.device, dtype=self.dtype, config=config, img_size=img_size, strict=strict
        )
        self._setup(loaded, runtime)

    @classmethod
    def from_model(
        cls,
        model: GreenFormer,
        *,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        compile: bool | str = False,
        screen_color: str = "green",
        low_memory: bool | str = "auto",
        channels_last: bool | str = "auto",
        compile_mode: str | None = None,
    ) -> CorridorKeyEngine:
        """An engine around a model already in memory (training, evaluation): moved to ``device``/dtype."""
        engine = cls.__new__(cls)
        engine.post_defaults = PostProcessOptions(screen_color=screen_color)
        engine.device = resolve_device(device)
        engine.dtype = resolve_dtype(engine.device, precision)
        runtime = _Runtime.checked(compile, compile_mode, low_memory, channels_last)
        model = model.to(device=engine.device, dtype=engine.dtype).eval().requires_grad_(False)
        engine._setup(LoadedModel(model, model.config, LoadReport()), runtime)
        return engine

    def _setup(self, loaded: LoadedModel, runtime: _Runtime) -> None:
        self.model: GreenFormer = loaded.model
        self.config: GreenFormerConfig = loaded.config
        self.load_report: LoadReport = loaded.report
        self.checkpoint: ResolvedCheckpoint | None = loaded.checkpoint  # .path, .format.name, .metadata
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
        self.channels_last = runtime.channels_last
        if self.channels_last == "auto":
            self.channels_last = self.device.type == "cuda" and self.dtype != torch.float32
        if self.channels_last:
            self.model.refiner.to(memory_format=torch.channels_last)
        self.low_memory = _choose_low_memory(runtime.low_memory, self.device, self.config, self.dtype)
        self.model.refiner_tile = LOW_MEMORY_TILE if self.low_memory else None
        self._forward: Any = self.model
        if runtime.backend is not None:
            self._forward = compile_model(
                self.model,
                runtime.backend,
                runtime.mode,
                device=self.device,
                dtype=self.dtype,
                img_size=self.img_size,
            )

    @property
    def screen_color(self) -> str:
        """The screen colour the engine keys by default (``"green"`` or ``"blue"``)."""
        return self.post_defaults.screen_color

    def describe(self) -> str:
        """One line: the device, the dtype (and the low-memory / channels_last modes when on) and the
        checkpoint (file and format) the engine runs."""
        ckpt = self.checkpoint  # None for a model built in memory
        source = f"checkpoint {ckpt.path} ({ckpt.format.name})" if ckpt is not None else "model from memory"
        modes = [str(self.dtype).replace("torch.", "")]
        modes += ["low-memory"] if self.low_memory else []
        modes += ["channels_last"] if self.channels_last else []
        return f"device {self.device} ({', '.join(modes)}), {source}"

    @property
    def img_size(self) -> int:
        """The square resolution the model runs at."""
        return self.config.img_size

    @torch.inference_mode()
    def predict(self, inputs: torch.Tensor, refiner_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The raw model on ``[B, 4, S, S]`` normalised inputs: ``alpha [B,1,S,S]``, ``fg [B,3,S,S]``.

        Raises:
            OutOfDeviceMemoryError: the device ran out of memory (the message names what helps).
        """
        inputs = inputs.to(self.device, self.dtype)
        try:
            return self._forward(inputs, refiner_scale=float(refiner_scale))
        except torch.OutOfMemoryError as exc:
            raise self._out_of_memory(inputs.shape[0]) from exc

    def _out_of_memory(self, batch: int) -> OutOfDeviceMemoryError:
        helps = [] if self.low_memory else ["--low-vram (low_memory=True)"]
        if batch > 1:
            helps.append("--batch-size 1")
        helps.append(f"a smaller --img-size than {self.img_size}")
        return OutOfDeviceMemoryError(
            f"{self.device} ran out of memory keying {batch} frame(s) at {self.img_size} px: "
            f"use {' or '.join(helps)}"
        )

    @torch.inference_mode()
    def process_tensors(
        self,
        image: Array,
        mask: Array,
        options: PostProcessOptions | None = None,
        *,
        refiner_scale: float = 1.0,
        input_is_linear: bool = False,
        outputs: Collection[str] | None = None,
        clock: StageClock | None = None,
        **overrides: Any,
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """:meth:`process_frame`, but the outputs stay ``[B, C, H, W]`` float32 tensors on the engine's
        device; also returns whether the input was batched. ``clock`` gets a mark after each stage."""
        options = options if options is not None else self.post_defaults
        options = replace(options, **overrides) if overrides else options
        if clock is not None:
            clock.mark("start")
        rgb, hint, batched = to_batch(image, mask, self.device)
        height, width = rgb.shape[-2:]
        inputs = model_input(rgb, hint, self.img_size, input_is_linear=input_is_linear, dtype=self.dtype)
        del rgb, hint
        if clock is not None:
            clock.mark("upload")
        prediction = self.predict(inputs, refiner_scale)
        del inputs
        if clock is not None:
            clock.mark("model")
        alpha, fg = prediction["alpha"], prediction["fg"]
        try:
            result = postprocess(alpha, fg, height, width, options, outputs=outputs)
        except torch.OutOfMemoryError as exc:
            raise self._out_of_memory(alpha.shape[0]) from exc
        if clock is not None:
            clock.mark("post")
        return result, batched

    def submit(
        self,
        image: Array,
        mask: Array,
        options: PostProcessOptions | None = None,
        *,
        clock: StageClock | None = None,
        **keywords: Any,
    ) -> PendingDownload:
        """:meth:`process_frame` without waiting for the outputs to reach the host: on CUDA the copies run
        on a side stream while the caller submits the next frame; ``.result()`` returns the arrays."""
        outputs, batched = self.process_tensors(image, mask, options, clock=clock, **keywords)
        return start_download(outputs, batched, clock)

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
        corrections (0 = coarse prediction only, default 1); ``input_is_linear`` (default False);
        ``outputs``: the names of the outputs to compute (default all; only the work they need is done
        and only they are copied back); any field of :class:`PostProcessOptions`. The post-processing
        settings are that one value (``options``, default its defaults); keywords named like its fields
        replace them, so ``process_frame(image, hint, despill_strength=0.5)`` works as well.
        On CUDA the outputs come back through pinned memory (see :meth:`submit`).
        """
        return self.submit(image, mask, options, **keywords).result()


def load_engine(
    checkpoint_dir: str | os.PathLike[str] | CheckpointSource | None = None, **kwargs: Any
) -> CorridorKeyEngine:
    """``CorridorKeyEngine(checkpoint_dir, **kwargs)``: the engine, ready to key frames."""
    return CorridorKeyEngine(checkpoint_dir, **kwargs)


LOW_MEMORY_TILE = 256
"""The refiner's tile (pixels a side) in the low-memory mode."""
LOW_MEMORY_MARGIN = 1.25
"""``low_memory="auto"`` keeps the whole-image path when the free memory is at least this many times what a
frame's activations need (the rest is for cuDNN's workspaces and the allocator)."""


@dataclass(frozen=True)
class _Runtime:
    """How the loaded model runs (the engine's arguments beyond the checkpoint), checked before loading."""

    backend: str | None
    mode: str | None
    low_memory: bool | str
    channels_last: bool | str

    @classmethod
    def checked(
        cls, compile: bool | str, mode: str | None, low_memory: bool | str, channels_last: bool | str
    ) -> _Runtime:
        for name, value in (("low_memory", low_memory), ("channels_last", channels_last)):
            if not isinstance(value, bool) and value != "auto":
                raise ConfigError(f"{name} must be True, False or 'auto', got {value!r}")
        return cls(compile_backend(compile), check_compile_mode(mode), low_memory, channels_last)


def _choose_low_memory(
    low_memory: bool | str, device: torch.device, config: GreenFormerConfig, dtype: torch.dtype
) -> bool:
    """``low_memory`` as a decision: ``"auto"`` compares the free CUDA memory with one frame's activation
    peak (counted on the meta device, :func:`~corridorkey_engine.model.memory.activation_peak`)."""
    if low_memory != "auto":
        return bool(low_memory)
    if device.type != "cuda":
        return False
    from .model.memory import GIB, activation_peak

    free, _ = torch.cuda.mem_get_info(device)
    need = activation_peak(config, dtype=dtype) * LOW_MEMORY_MARGIN
    if free >= need:
        return False
    logger.warning(
        "low-memory mode: %.2f GiB free on %s, a frame at %d px needs about %.2f GiB (--low-vram is chosen "
        "for you; same output, the refiner runs in tiles)",
        free / GIB,
        device,
        config.img_size,
        need / GIB,
    )
    return True
