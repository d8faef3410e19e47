"""Summarise a checkpoint: format, every tensor (name, dtype, shape, bytes, file), counts and metadata."""

from __future__ import annotations

import os
from pathlib import Path

from ._summary import Inspection, summarize
from .registry import Registry, get_registry

__all__ = ["Inspection", "inspect_checkpoint"]


def inspect_checkpoint(
    path: str | os.PathLike[str],
    *,
    safe_only: bool | None = None,
    registry: Registry | None = None,
    device: str = "cpu",
) -> Inspection:
    """List ``path``'s tensors through its format's plugin (with the usual content checks) and count.

    A format with ``open_tensors`` (safetensors, single or sharded) is listed from its headers alone: no
    tensor data is read. Any other format is loaded whole onto ``device``.

    Args:
        path: the checkpoint file (for a sharded set: its index).
        safe_only: refuse formats that can execute code (None: ``CKPT_FORMATS_SAFE_ONLY``).
        registry: the registry to use (default: the process-wide one).
        device: where the tensors are loaded when they must be.

    Returns:
        The summary, ``tensor_list`` sorted by name.

    Raises:
        CheckpointError: the file is missing, matches no format, or fails to load.
    """
    registry = registry or get_registry()
    path = Path(path)
    fmt, candidate = registry.candidate_for_file(path, safe_only=safe_only)
    reader, metadata = registry.open_tensors(fmt, candidate, device)
    with reader:
        infos = reader.infos()
        return summarize(path, fmt.name, fmt.executes_code, infos, metadata, reader.non_tensor_entries)
