"""Builtin plugin: PyTorch distributed checkpoints (``torch.distributed.checkpoint``, "DCP").

FSDP and DTensor training save a folder holding ``.metadata`` (written last, by the coordinator rank) and
one or more ``__RANK_N.distcp`` data files. This plugin turns such a folder into one plain state dict on
one process, without a process group, through torch's public API (``FileSystemReader.read_metadata``, then
``torch.distributed.checkpoint.load`` into tensors allocated from that metadata): what ``accelerate
merge-weights`` does, so ``ckpt-formats convert DCP_DIR model.safetensors`` is the merge.

DCP's ``.metadata`` is a pickle that torch unpickles without restriction: the format is marked
``executes_code``, so ``safe_only`` removes it, and it ranks below safetensors (and above the legacy
pickle formats). Non-tensor entries (an optimizer's learning rate, a step counter) are stored as pickled
bytes too: they are never read.

Nested state is flattened the way ``accelerate merge-weights`` does: when every tensor sits under one
top-level key (``{"model": model.state_dict()}``), that key is dropped; when there are several and one is
``model`` (``{"model": ..., "optimizer": ...}``), only the model's tensors are kept (model weights only,
the default); otherwise every tensor is kept under its flattened name (``optimizer.state.0.exp_avg``).
:func:`load_directory` with ``model_only=False`` keeps everything.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_formats import Candidate, CheckpointFormat, CheckpointLoadError, FormatRegistrar, hookimpl
from ckpt_formats.sniff import looks_like_pickle

if TYPE_CHECKING:
    import torch

__all__ = ["DCP", "METADATA_NAME", "flattened_names", "load_directory", "read_metadata"]

METADATA_NAME = ".metadata"
SHARD_GLOB = "*.distcp"
MODEL_KEY = "model"
_SINGLE_PROCESS_WARNING = "torch.distributed is disabled, unavailable or uninitialized"


def read_metadata(directory: Path) -> Any:
    """The checkpoint's ``Metadata`` (``torch.distributed.checkpoint.metadata.Metadata``).

    This unpickles ``.metadata`` the way torch does: only for checkpoints whose source you trust.

    Raises:
        CheckpointLoadError: ``.metadata`` is missing, truncated or not DCP metadata.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import Metadata

    path = Path(directory) / METADATA_NAME
    try:
        metadata = FileSystemReader(str(directory)).read_metadata()
    except FileNotFoundError as exc:
        raise CheckpointLoadError(
            f"{path}: missing; a distributed checkpoint's .metadata is written last, so the save was "
            "interrupted or the folder is incomplete: copy or save it again"
        ) from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        raise CheckpointLoadError(
            f"{path}: not readable distributed-checkpoint metadata ({type(exc).__name__}: {exc}); it may "
            "be truncated or written by another torch version"
        ) from exc
    if not isinstance(metadata, Metadata):
        raise CheckpointLoadError(
            f"{path}: holds {type(metadata).__name__}, not distributed-checkpoint metadata"
        )
    return metadata


def flattened_names(metadata: Any, *, model_only: bool = True) -> dict[str, str]:
    """Which stored tensors to load, and the name each gets in the state dict.

    Args:
        metadata: the checkpoint's metadata (:func:`read_metadata`).
        model_only: keep only the ``model`` entry's tensors when the checkpoint holds several top-level
            entries and one is ``model`` (the default, as ``accelerate merge-weights``); False keeps all.

    Returns:
        ``{stored name: state-dict name}`` for every tensor kept, in the stored order.
    """
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    paths = getattr(metadata, "planner_data", None) or {}
    tensors: dict[str, tuple[str, ...]] = {}
    for fqn, item in metadata.state_dict_metadata.items():
        if isinstance(item, TensorStorageMetadata):
            path = paths.get(fqn)
            tensors[fqn] = tuple(str(p) for p in path) if isinstance(path, tuple) and path else (fqn,)
    nested = {path[0] for path in tensors.values() if len(path) > 1}  # the entries that hold a dict
    if len(nested) == 1 and all(len(path) > 1 for path in tensors.values()):  # {"model": {...}}: dropped
        return {fqn: ".".join(path[1:]) for fqn, path in tensors.items()}
    if model_only and MODEL_KEY in nested:
        return {
            fqn: ".".join(path[1:]) for fqn, path in tensors.items() if path[0] == MODEL_KEY and len(path) > 1
        }
    return {fqn: fqn for fqn in tensors}


def load_directory(
    directory: str | Path, device: str = "cpu", *, model_only: bool = True
) -> dict[str, torch.Tensor]:
    """Every kept tensor of a distributed checkpoint folder, as one flat state dict on ``device``.

    Args:
        directory: the folder holding ``.metadata`` and the ``*.distcp`` files.
        device: where the tensors are allocated and loaded.
        model_only: see :func:`flattened_names`.

    Returns:
        ``{name: tensor}``, flattened as the module docstring says.

    Raises:
        CheckpointLoadError: the metadata is unreadable, holds no tensor, or a data file is missing or
            truncated.
    """
    import torch
    import torch.distributed.checkpoint as dcp

    directory = Path(directory)
    metadata = read_metadata(directory)
    names = flattened_names(metadata, model_only=model_only)
    if not names:
        raise CheckpointLoadError(f"{directory / METADATA_NAME}: the distributed checkpoint holds no tensor")
    stored = metadata.state_dict_metadata
    buffers = {
        fqn: torch.empty(stored[fqn].size, dtype=stored[fqn].properties.dtype, device=device) for fqn in names
    }
    try:
        with warnings.catch_warnings():  # one process and no process group is the intent here
            warnings.filterwarnings("ignore", message=_SINGLE_PROCESS_WARNING)
            dcp.load(buffers, storage_reader=dcp.FileSystemReader(str(directory)), no_dist=True)
    except dcp.CheckpointException as exc:  # a BaseException: the failure of each rank (here one)
        cause = next(iter(exc.failures.values()))[0]  # (exception, traceback)
        first = next((s.strip() for s in str(cause).splitlines() if s.strip()), "")
        first = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
        raise CheckpointLoadError(
            f"{directory}: a data file of the distributed checkpoint is missing or unreadable ({first}); "
            "copy or save the checkpoint again"
        ) from exc
    return {name: buffers[fqn] for fqn, name in names.items()}


def _discover(directory: Path, matched: list[Path]) -> list[Candidate]:
    """The folder is one checkpoint: its ``.metadata`` first, then every ``*.distcp`` file."""
    if not matched:
        return []
    shards = tuple(sorted(directory.glob(SHARD_GLOB)))
    return [Candidate("dcp", directory / METADATA_NAME, (directory / METADATA_NAME, *shards))]


def _load(candidate: Candidate, device: str) -> dict[str, Any]:
    return load_directory(candidate.path.parent, device)


DCP = CheckpointFormat(
    name="dcp",
    priority=20,
    globs=(SHARD_GLOB, METADATA_NAME),
    load=_load,
    matches=looks_like_pickle,
    discover=_discover,
    executes_code=True,
    description="PyTorch distributed checkpoint folder (.metadata + *.distcp; metadata is pickled)",
)


@hookimpl
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    register(DCP)
