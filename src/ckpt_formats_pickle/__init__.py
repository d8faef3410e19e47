"""Builtin plugin: legacy PyTorch pickle checkpoints (``.pth``, ``.pt``, ``.ckpt``).

Removing this plugin (its folder and its entry point in pyproject.toml) is the .pth sunset itself, so its
functions carry no deprecation tags; the steps are in docs/security.md.

Pickle can run code while loading. We only ever call ``torch.load(weights_only=True)``, whose restricted
unpickler refuses anything but tensors and plain containers, and the format is still marked
``executes_code`` so that ``safe_only`` removes it entirely. Lowest priority: any safe format beside it wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ckpt_formats import Candidate, CheckpointFormat, CheckpointLoadError, FormatRegistrar, hookimpl
from ckpt_formats.sniff import looks_like_pickle, looks_like_zip


def _matches(path: Path) -> bool:
    return looks_like_zip(path) or looks_like_pickle(path)


def _load(candidate: Candidate, device: str) -> Any:
    import pickle

    import torch

    path = candidate.path
    # mmap needs torch.save's zip container; a legacy raw pickle is read into memory.
    mmap = looks_like_zip(path)
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointLoadError(
            f"{path}: refused to unpickle: it holds objects other than tensors and plain containers, "
            f"which could run code ({first_line}). Only load it if you trust its source, and convert it to "
            "safetensors in an isolated environment"
        ) from exc


PICKLE = CheckpointFormat(
    name="pickle",
    priority=0,
    globs=("*.pth", "*.pt", "*.ckpt"),
    load=_load,
    matches=_matches,
    hub_filenames=("model.pth",),
    executes_code=True,
    description="legacy PyTorch pickle (torch.load weights_only=True, mmap); deprecated",
)


@hookimpl
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    register(PICKLE)
