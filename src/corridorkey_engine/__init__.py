"""corridorkey_engine: the CorridorKey green-screen keyer (GreenFormer) on the ckpt_formats registry.

Public API (imported lazily, so ``import corridorkey_engine`` does not import torch):

- :class:`CorridorKeyEngine`: load a checkpoint directory, key frames (``process_frame``);
- :class:`GreenFormerConfig`, :data:`CORRIDORKEY_V1`: the architecture, and how checkpoints carry it;
- :class:`GreenFormer`, :func:`build_greenformer`, :func:`load_greenformer`, :func:`save_checkpoint`;
- errors: :class:`CheckpointMismatchError`, :class:`ConfigError`, :class:`DeviceUnavailableError`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CorridorKeyEngine": "engine",
    "load_engine": "engine",
    "GreenFormerConfig": "config",
    "CORRIDORKEY_V1": "config",
    "ConfigError": "config",
    "GreenFormer": "model",
    "build_greenformer": "model",
    "load_greenformer": "loading",
    "save_checkpoint": "loading",
    "CheckpointMismatchError": "loading",
    "LoadedModel": "loading",
    "DeviceUnavailableError": "device",
    "resolve_device": "device",
    "resolve_dtype": "device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'corridorkey_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
