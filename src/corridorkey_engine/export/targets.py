"""``corridorkey export``: the engine's model as a self-contained graph file for a host application.

Three targets, one graph (:class:`~corridorkey_engine.export.graph.KeyerGraph`):

- ``onnx``: ONNX (TorchScript-based exporter, opset 17, dynamic height and width) for ONNX Runtime,
  TensorRT, DirectML and OFX hosts; the metadata in ``metadata_props``, and the mapping from each
  initializer back to its GreenFormer key (:data:`NAMES_KEY`), so the file is also a checkpoint;
- ``torchscript``: ``torch.jit.trace`` for libtorch hosts (Nuke's CatFileCreator with ``nuke=True``);
  the metadata in the extra file ``corridorkey.json``;
- ``exported-program``: ``torch.export`` (dynamic height and width), loaded with ``torch.export.load``;
  the metadata in the extra file ``corridorkey.json``.

Every target is serialised in memory, then written whole or not at all
(:func:`ckpt_formats.atomic.atomic_write`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .graph import KeyerGraph

logger = logging.getLogger(__name__)

TARGETS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
PRECISIONS = {"float32": torch.float32, "float16": torch.float16}
METADATA_FILE = "corridorkey.json"
"""The extra file holding the metadata in a TorchScript or exported-program archive."""
NAMES_KEY = "ckpt_formats.state_dict_names"
"""ONNX ``metadata_props`` key: JSON ``{initializer name: state-dict key}`` (read by the onnx plugin)."""
EXTRA_TENSORS_KEY = "ckpt_formats.extra_tensors"
"""ONNX ``metadata_props`` key: JSON ``{state-dict key: base64 TensorProto}``: the checkpoint's tensors the
graph does not use (BatchNorm's ``num_batches_tracked``), so the file holds the whole checkpoint."""
NUKE_CHANNELS = "rgba.red, rgba.green, rgba.blue, rgba.alpha"
"""The Nuke flavour's channels in and out (in this order): the plate's RGB with the hint in its alpha; the
premultiplied key."""
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "frame", "keyed"
EXPORT_EXTRA = "export"
"""The optional dependencies of the ONNX target: ``pip install 'ckpt-formats[export]'``."""


@dataclass(frozen=True)
class ExportOptions:
    """What ``corridorkey export`` writes.

    Attributes:
        target: one of :data:`TARGETS`.
        precision: ``float32`` or ``float16`` (the model's weights and arithmetic; input and output stay
            float32).
        despill_strength: 0-1, despill inside the graph on the engine's screen colour.
        nuke: TorchScript for Nuke's CatFileCreator: linear RGB + hint in, linear premultiplied RGBA out.
    """

    target: str
    precision: str = "float32"
    despill_strength: float = 0.0
    nuke: bool = False

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"unknown export target {self.target!r}: use one of {', '.join(TARGETS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"export precision must be float32 or float16, got {self.precision!r}")
        if self.nuke and self.target != "torchscript":
            raise ConfigError("--nuke is a TorchScript flavour: use it with --to torchscript")
        if not 0.0 <= self.despill_strength <= 1.0:
            raise ConfigError(f"despill strength must be between 0 and 1, got {self.despill_strength}")


@dataclass(frozen=True)
class ExportResult:
    """Where the file went, what it says about itself, and how long the export took."""

    path: Path
    metadata: dict[str, str]
    seconds: float


def build_graph(engine: Any, options: ExportOptions) -> KeyerGraph:
    """The :class:`KeyerGraph` of ``engine``'s model in the export's precision (a copy when it differs).

    The Nuke flavour's copy computes attention with timm's plain matrix products instead of PyTorch's
    ``scaled_dot_product_attention`` (PyTorch 2.0+), which the libtorch of older Nuke releases lacks."""
    model = engine.model
    dtype = PRECISIONS[options.precision]
    if next(model.parameters()).dtype != dtype or options.nuke:
        model = copy.deepcopy(model).to(dtype)
    if options.nuke:  # timm's plain attention: no aten::scaled_dot_product_attention for an older libtorch
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
    return KeyerGraph(
        model,
        despill_strength=options.despill_strength,
        screen_color=engine.screen_color,
        input_is_linear=options.nuke,
        premultiply=options.nuke,
    ).eval()


def export_metadata(engine: Any, options: ExportOptions) -> dict[str, str]:
    """The strings every exported file carries (``corridorkey.*``)."""
    from ..clips.fingerprint import program_version

    checkpoint = engine.checkpoint
    meta = {
        "corridorkey.export.target": options.target + ("-nuke" if options.nuke else ""),
        "corridorkey.img_size": str(engine.img_size),
        "corridorkey.screen_color": engine.screen_color,
        "corridorkey.despill_strength": repr(options.despill_strength),
        "corridorkey.precision": options.precision,
        "corridorkey.version": program_version(),
        "corridorkey.input": _describe_input(options.nuke),
        "corridorkey.output": _describe_output(options.nuke),
        "corridorkey.checkpoint": checkpoint.path.name if checkpoint is not None else "model from memory",
    }
    if options.nuke:  # what to type into CatFileCreator's Channels In / Channels Out knobs
        meta["corridorkey.nuke.channels_in"] = meta["corridorkey.nuke.channels_out"] = NUKE_CHANNELS
    if checkpoint is not None:
        meta["corridorkey.checkpoint_sha256"] = _sha256(checkpoint.path)
        if "corridorkey.config" in checkpoint.metadata:
            meta["corridorkey.config"] = checkpoint.metadata["corridorkey.config"]
    return meta


def _describe_input(nuke: bool) -> str:
    rgb = "linear RGB" if nuke else "sRGB RGB 0-1"
    return f"[1, 4, H, W] float32: {rgb}, then the linear alpha hint 0-1; any H and W"


def _describe_output(nuke: bool) -> str:
    if nuke:
        return "[1, 4, H, W] float32: linear premultiplied RGB (despilled), then the linear alpha"
    return "[1, 4, H, W] float32: straight sRGB foreground (despilled), then the linear alpha"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def example_frame(graph: KeyerGraph, device: torch.device) -> torch.Tensor:
    """The tracing example: an odd, non-square frame near the model's size (no size is special-cased)."""
    size = graph.img_size
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 4, size - 3, size + 5, generator=generator).to(device)


def export_keyer(engine: Any, path: str | os.PathLike[str], options: ExportOptions) -> ExportResult:
    """Write ``engine``'s keyer to ``path`` as ``options.target``.

    Args:
        engine: a :class:`~corridorkey_engine.engine.CorridorKeyEngine` (its model and device are traced;
            its checkpoint is described in the metadata).
        path: the file to write (replaced whole if it exists).
        options: target, precision, despill, Nuke flavour.

    Returns:
        the :class:`ExportResult`.

    Raises:
        ConfigError: the ``export`` extra is missing for the ONNX target.
        OSError: the file could not be written (nothing is left under ``path``).
    """
    import time

    from ckpt_formats.atomic import atomic_write

    start = time.perf_counter()
    graph = build_graph(engine, options)
    meta = export_metadata(engine, options)
    frame = example_frame(graph, engine.device)
    writer = _WRITERS[options.target]
    with torch.no_grad(), _quiet_exporters():
        data = writer(graph, frame, meta)  # every target is serialised in memory first
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return ExportResult(Path(path), meta, time.perf_counter() - start)


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The exporters' own deprecation and tracer notices are not the user's business."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        yield


@contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """The ONNX exporter's C++ notices ("In-place op on output of tensor.shape", about timm's Hiera;
    harmless here, the equality is checked) go to the debug log instead of the terminal."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                logger.debug("onnx exporter: %s", line)


def _torchscript(graph: KeyerGraph, frame: torch.Tensor, meta: dict[str, str]) -> bytes:
    traced = torch.jit.trace(graph, (frame,), check_trace=False)
    extra = {METADATA_FILE: json.dumps(meta, indent=1, sort_keys=True)}
    buffer = io.BytesIO()  # not to a file: libtorch's own file writer aborts the process on EFBIG
    torch.jit.save(traced, buffer, _extra_files=extra)
    return buffer.getvalue()


def _exported_program(graph: KeyerGraph, frame: torch.Tensor, meta: dict[str, str]) -> bytes:
    from torch.export import Dim

    dims = {"frame": {2: Dim("height", min=2, max=32768), 3: Dim("width", min=2, max=32768)}}
    program = torch.export.export(graph, (frame,), dynamic_shapes=dims)
    extra = {METADATA_FILE: json.dumps(meta, indent=1, sort_keys=True)}
    buffer = io.BytesIO()  # not to a file: torch.export.save warns about a name not ending in .pt2
    torch.export.save(program, buffer, extra_files=extra)
    return buffer.getvalue()


def _onnx(graph: KeyerGraph, frame: torch.Tensor, meta: dict[str, str]) -> bytes:
    onnx = require_onnx()
    buffer = io.BytesIO()
    dynamic = {2: "height", 3: "width"}
    with _native_stderr_to_log():
        _onnx_export(graph, frame, buffer, dynamic)
    proto = onnx.load_from_string(buffer.getvalue())
    state = graph.model.state_dict()
    names = state_dict_names(proto, state, prefix="model.")
    extra = unused_tensors(state, set(names.values()))
    props = {**meta, NAMES_KEY: json.dumps(names, sort_keys=True), EXTRA_TENSORS_KEY: json.dumps(extra)}
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()  # one protobuf: up to 2 GB (CorridorKey v1.0 float32: about 0.4 GB)


def _onnx_export(graph: KeyerGraph, frame: torch.Tensor, buffer: io.BytesIO, dynamic: dict[int, str]) -> None:
    torch.onnx.export(
        graph,
        (frame,),
        buffer,
        dynamo=False,  # the dynamo exporter stops at timm Hiera's 5-D attention
        opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
        do_constant_folding=False,  # keep every weight as it is in the checkpoint (no folded transposes)
        training=torch.onnx.TrainingMode.PRESERVE,  # no Conv-BatchNorm fusion: the weights stay the model's
    )


def state_dict_names(proto: Any, state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, str]:
    """``{initializer name: state-dict key}`` for each initializer that is, bit for bit, the tensor of the
    key it is named after (``prefix`` + key: the model's attribute name in the graph module)."""
    from onnx import numpy_helper

    names = {}
    for init in proto.graph.initializer:
        key = init.name.removeprefix(prefix)
        tensor = state_dict.get(key) if init.name.startswith(prefix) else None
        if tensor is None:
            continue
        array = numpy_helper.to_array(init)
        same = tuple(array.shape) == tuple(tensor.shape) and array.tobytes() == (
            tensor.detach().cpu().contiguous().numpy().tobytes()
        )
        if same:
            names[init.name] = key
        else:
            logger.warning("%s: the exported initializer differs from the weight; not mapped", init.name)
    return names


def unused_tensors(state_dict: dict[str, torch.Tensor], used: set[str]) -> dict[str, str]:
    """``{key: base64 of its TensorProto}`` for the state dict's tensors that are no initializer."""
    import base64

    from onnx import numpy_helper

    def encode(tensor: torch.Tensor) -> str:
        proto = numpy_helper.from_array(tensor.detach().cpu().numpy())
        return base64.b64encode(proto.SerializeToString()).decode()

    return {key: encode(tensor) for key, tensor in state_dict.items() if key not in used}


def require_onnx() -> Any:
    """``import onnx``, or a one-line error naming the extra to install."""
    try:
        import onnx
    except ImportError as exc:
        raise ConfigError(
            f"the ONNX target needs the '{EXPORT_EXTRA}' extra: pip install 'ckpt-formats[{EXPORT_EXTRA}]'"
        ) from exc
    return onnx


_WRITERS: dict[str, Callable[[KeyerGraph, torch.Tensor, dict[str, str]], bytes]] = {
    "onnx": _onnx,
    "torchscript": _torchscript,
    "exported-program": _exported_program,
}
