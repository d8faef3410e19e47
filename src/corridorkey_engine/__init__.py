"""corridorkey_engine: the CorridorKey green-screen keyer (GreenFormer) on the ckpt_formats registry.

Public API (imported lazily, so ``import corridorkey_engine`` does not import torch):

- :class:`CorridorKeyEngine`: load a checkpoint directory, key frames (``process_frame``);
- :class:`PostProcessOptions`: how a prediction becomes the outputs (despill, despeckle, preview);
- :class:`CheckpointSource`: where the weights come from (folder, hub, format choice), with the published
  defaults (:meth:`CheckpointSource.default`, :func:`default_checkpoint_dir`);
- :class:`GreenFormerConfig`, :data:`CORRIDORKEY_V1`: the architecture, and how checkpoints carry it;
- :class:`GreenFormer`, :func:`build_greenformer`, :func:`load_greenformer`, :func:`save_checkpoint`;
- errors: :class:`CorridorKeyError`, the base of :class:`CheckpointMismatchError`, :class:`ConfigError`,
  :class:`DeviceUnavailableError`, :class:`FrameIOError`, :class:`ClipError`... (see :mod:`.errors`).

The package is layered (see docs/architecture.md): ``model/`` and ``keying/`` below ``engine``, ``clips/``
above it, ``cli`` on top; ``demo/`` is tooling (synthetic data, training, evaluation, the bundled model).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CorridorKeyEngine": "engine",
    "load_engine": "engine",
    "PostProcessOptions": "keying.frames",
    "CheckpointSource": "model.source",
    "default_checkpoint_dir": "model.source",
    "GreenFormerConfig": "model.config",
    "CORRIDORKEY_V1": "model.config",
    "GreenFormer": "model.network",
    "build_greenformer": "model.network",
    "load_greenformer": "model.loading",
    "save_checkpoint": "model.loading",
    "LoadedModel": "model.loading",
    "resolve_device": "device",
    "resolve_dtype": "device",
    "CorridorKeyError": "errors",
    "CheckpointMismatchError": "errors",
    "ConfigError": "errors",
    "DeviceUnavailableError": "errors",
    "OutOfDeviceMemoryError": "errors",
    "FrameIOError": "errors",
    "ExrSupportError": "errors",
    "ClipError": "errors",
    "CliError": "errors",
    "RayRunError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'corridorkey_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
