"""Builtin plugin: the weights inside an ONNX model (``*.onnx``), so an exported graph is a checkpoint too.

Reading is protobuf parsing only (``onnx.load`` with ``load_external_data=False``): nothing in the file is
executed. Each initializer becomes a tensor. Initializers stored as external data (models over 2 GB) are
read here from the files they name, each name checked to stay inside the model's folder first. When the
model's ``metadata_props`` hold :data:`NAMES_KEY` (``corridorkey export`` writes it), the state dict is
those initializers under the names they had in the checkpoint; otherwise every initializer under its graph
name. The ``onnx`` package comes with the ``export`` extra and is imported only when a file is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ckpt_formats import Candidate, CheckpointFormat, CheckpointLoadError, FormatRegistrar, hookimpl
from ckpt_formats.sniff import read_head

NAMES_KEY = "ckpt_formats.state_dict_names"
"""``metadata_props`` key: JSON ``{initializer name: state-dict key}``."""
EXTRA_TENSORS_KEY = "ckpt_formats.extra_tensors"
"""``metadata_props`` key: JSON ``{state-dict key: base64 of a serialized TensorProto}``, the checkpoint's
tensors the graph does not use (BatchNorm's ``num_batches_tracked`` counters): as initializers they would be
dropped, with a warning, by ONNX Runtime."""
EXTRA = "export"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise CheckpointLoadError(
            f"reading ONNX files needs the '{EXTRA}' extra: pip install 'ckpt-formats[{EXTRA}]'"
        ) from exc
    return onnx


def looks_like_onnx(path: Path) -> bool:
    """A serialized ``ModelProto``: its first field is ``ir_version`` (field 1, a varint: byte ``0x08``)
    followed by a small version number."""
    head = read_head(path, 2)
    return len(head) == 2 and head[0] == 0x08 and 0 < head[1] < 0x80


def _read_model(path: Path) -> Any:
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise CheckpointLoadError(f"{path}: not a valid ONNX model ({exc}): re-export it") from exc


def _external_location(path: Path, location: str) -> Path:
    """The data file an initializer names, refused unless it is a plain relative path inside ``path``'s
    folder."""
    folder = path.parent.resolve()
    target = (folder / location).resolve()
    if (
        not location
        or os.path.isabs(location)
        or ".." in Path(location).parts
        or not target.is_relative_to(folder)
    ):
        raise CheckpointLoadError(
            f"{path}: an initializer's external data location {location!r} is outside the model's folder; "
            "refusing to read it"
        )
    return target


def _inline_external(path: Path, tensor: Any) -> None:
    """Read an external initializer's bytes into the tensor (as ``raw_data``)."""
    onnx = _onnx()
    info = {entry.key: entry.value for entry in tensor.external_data}
    data_file = _external_location(path, info.get("location", ""))
    offset, length = int(info.get("offset", 0)), info.get("length")
    try:
        with open(data_file, "rb") as f:
            f.seek(offset)
            raw = f.read(int(length)) if length is not None else f.read()
    except FileNotFoundError as exc:
        raise CheckpointLoadError(
            f"{path}: the external data file {data_file.name} of initializer {tensor.name} is missing"
        ) from exc
    if length is not None and len(raw) != int(length):
        raise CheckpointLoadError(
            f"{path}: the external data file {data_file.name} is truncated ({tensor.name} needs {length} "
            f"bytes at offset {offset}, found {len(raw)})"
        )
    tensor.raw_data = raw
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


def _metadata_of(model: Any) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def load(candidate: Candidate, device: str) -> dict[str, Any]:
    """The initializers of an ONNX model as tensors on ``device`` (named back to the checkpoint's keys
    when the model carries the mapping).

    Raises:
        CheckpointLoadError: the file is not ONNX, external data is missing, truncated or outside the
            model's folder, or the ``export`` extra is not installed.
    """
    import torch

    onnx = _onnx()  # first: a missing extra is named, not reported as a plugin fault
    from onnx import numpy_helper

    path = candidate.path
    model = _read_model(path)
    metadata = _metadata_of(model)
    names = _names(path, metadata)
    state: dict[str, Any] = {}
    for init in model.graph.initializer:
        if names is not None and init.name not in names:
            continue  # a constant of the graph, not a weight of the checkpoint
        if init.data_location == onnx.TensorProto.EXTERNAL:
            _inline_external(path, init)
        key = names[init.name] if names is not None else init.name
        state[key] = torch.from_numpy(numpy_helper.to_array(init).copy()).to(device)
    for key, array in _extra_tensors(path, metadata).items():
        state[key] = torch.from_numpy(array).to(device)
    return state


def _extra_tensors(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The arrays kept in :data:`EXTRA_TENSORS_KEY` (protobuf ``TensorProto`` messages, no code)."""
    if EXTRA_TENSORS_KEY not in metadata:
        return {}
    import base64

    from google.protobuf.message import DecodeError
    from onnx import TensorProto, numpy_helper

    try:
        entries = json.loads(metadata[EXTRA_TENSORS_KEY])
        return {
            key: numpy_helper.to_array(TensorProto.FromString(base64.b64decode(blob))).copy()
            for key, blob in entries.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError, DecodeError) as exc:
        raise CheckpointLoadError(f"{path}: metadata {EXTRA_TENSORS_KEY} is corrupt ({exc})") from exc


def _names(path: Path, metadata: dict[str, str]) -> dict[str, str] | None:
    if NAMES_KEY not in metadata:
        return None
    try:
        names = json.loads(metadata[NAMES_KEY])
    except ValueError as exc:
        raise CheckpointLoadError(f"{path}: metadata {NAMES_KEY} is not valid JSON ({exc})") from exc
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise CheckpointLoadError(f"{path}: metadata {NAMES_KEY} is not a JSON object of names")
    return names


def read_metadata(candidate: Candidate) -> dict[str, str]:
    """The model's ``metadata_props`` (without the name mapping, which is the loader's business)."""
    metadata = _metadata_of(_read_model(candidate.path))
    metadata.pop(NAMES_KEY, None)
    metadata.pop(EXTRA_TENSORS_KEY, None)
    return metadata


ONNX = CheckpointFormat(
    name="onnx",
    priority=40,  # below safetensors (100) and npz (50): a graph file is rarely the checkpoint meant
    globs=("*.onnx",),
    load=load,
    matches=looks_like_onnx,
    read_metadata=read_metadata,
    description="ONNX model: its initializers as a state dict (protobuf only; cannot run code)",
)


@hookimpl
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    register(ONNX)
