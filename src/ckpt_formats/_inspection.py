"""Summarise a checkpoint file: format, tensors, parameters, dtypes, bytes and metadata."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .registry import Registry, get_registry
from .statedict import unwrap


@dataclass
class Inspection:
    """A checkpoint's summary; ``path`` is a local path, or ``REPO_ID/FILE@REVISION`` for a Hub checkpoint."""

    path: Path | str
    format: str
    executes_code: bool
    tensors: int
    parameters: int
    bytes: int
    dtypes: dict[str, int]
    metadata: dict[str, str] = field(default_factory=dict)
    non_tensor_entries: int = 0

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "path": str(self.path)}


def inspect_checkpoint(
    path: str | os.PathLike[str],
    *,
    safe_only: bool | None = None,
    registry: Registry | None = None,
    device: str = "cpu",
) -> Inspection:
    """Load ``path`` through its format's plugin (with the usual content checks) and count.

    Args:
        path: the checkpoint file.
        safe_only: refuse formats that can execute code (None: ``CKPT_FORMATS_SAFE_ONLY``).
        registry: the registry to use (default: the process-wide one).
        device: where the tensors are loaded.

    Returns:
        The summary.

    Raises:
        CheckpointError: the file is missing, matches no format, or fails to load.
    """
    import torch

    registry = registry or get_registry()
    path = Path(path)
    fmt, candidate = registry.candidate_for_file(path, safe_only=safe_only)
    loaded, metadata = registry.load(fmt, candidate, device)
    entries = unwrap(loaded)
    tensors = [v for v in entries.values() if isinstance(v, torch.Tensor)]
    dtypes = Counter(str(t.dtype).removeprefix("torch.") for t in tensors)
    return Inspection(
        path=path,
        format=fmt.name,
        executes_code=fmt.executes_code,
        tensors=len(tensors),
        parameters=sum(t.numel() for t in tensors),
        bytes=sum(t.numel() * t.element_size() for t in tensors),
        dtypes=dict(sorted(dtypes.items())),
        metadata=metadata,
        non_tensor_entries=len(entries) - len(tensors),
    )
