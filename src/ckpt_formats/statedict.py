"""Format-blind state-dict cleanup shared by conversion and consumers such as the CorridorKey engine."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
PREFIXES = ("_orig_mod.", "module.")


def unwrap(obj: Any) -> Any:
    """Descend through ``{"state_dict": …}`` / ``{"model": …}`` wrappers (training checkpoints)."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        logger.debug("unwrapping checkpoint wrapper (keys: %s)", ", ".join(map(str, list(obj)[:5])))
        obj = inner
    return obj


def strip_prefixes(key: str, prefixes: tuple[str, ...] = PREFIXES) -> str:
    """Remove every leading ``_orig_mod.`` (torch.compile) and ``module.`` (DataParallel) prefix."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def clean_state_dict(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """Unwrap, strip prefixes, keep only tensors. Returns the tensors and the names of what was skipped."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    source = unwrap(obj)
    if not isinstance(source, Mapping):
        raise TypeError(f"expected a mapping of tensors, got {type(source).__name__}")
    for key, value in source.items():
        if not isinstance(value, torch.Tensor):
            skipped.append(str(key))
            continue
        name = strip_prefixes(str(key))
        if name in tensors:
            raise ValueError(f"two entries become {name!r} once prefixes are stripped")
        tensors[name] = value
    return tensors, skipped
