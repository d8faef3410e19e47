"""ckpt_formats: a pluggable, safe checkpoint-format registry.

Importing this package is cheap: torch, safetensors and huggingface_hub are imported only by the functions
that load, save or download, and plugins' entry points are loaded on first use of the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AmbiguousCheckpointError,
    CheckpointContentError,
    CheckpointDownloadError,
    CheckpointError,
    CheckpointLoadError,
    CheckpointNotFoundError,
    PluginError,
)
from .formats import Candidate, CheckpointFormat, ResolvedCheckpoint
from .hookspecs import hookimpl
from .registry import Registry, get_registry, resolve

if TYPE_CHECKING:
    from .hub import HubSource

__all__ = [
    "AmbiguousCheckpointError",
    "Candidate",
    "CheckpointContentError",
    "CheckpointDownloadError",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointLoadError",
    "CheckpointNotFoundError",
    "HubSource",
    "PluginError",
    "Registry",
    "ResolvedCheckpoint",
    "get_registry",
    "hookimpl",
    "resolve",
]


def __getattr__(name: str) -> Any:
    if name == "HubSource":  # the hub module is light, but keep it off the import path until asked for
        from .hub import HubSource

        return HubSource
    raise AttributeError(f"module 'ckpt_formats' has no attribute {name!r}")
