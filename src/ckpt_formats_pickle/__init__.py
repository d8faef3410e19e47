"""Builtin plugin: legacy PyTorch pickle checkpoints (``.pth``, ``.pt``, ``.ckpt``, Hugging Face's ``.bin``).

Removing this plugin (its folder and its entry point in pyproject.toml) is the .pth sunset itself, so its
functions carry no deprecation tags; the steps are in docs/security.md.

Pickle can run code while loading. We only ever call ``torch.load(weights_only=True)``, whose restricted
unpickler refuses anything but tensors and plain containers, and both formats are marked ``executes_code``
so that ``safe_only`` removes them entirely. Lowest priorities: any safe format beside them wins.

Two formats:

* ``pickle``: one file. ``*.bin`` is a common name for anything, so a ``.bin`` file is a candidate only when
  its first bytes are a torch zip or a pickle (checked in discovery); other names are checked before loading.
* ``pickle-sharded``: Hugging Face's ``pytorch_model.bin.index.json`` and the shards it lists, under the
  index rules of :mod:`ckpt_formats.shards` (shared with sharded safetensors).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from ckpt_formats import Candidate, CheckpointFormat, CheckpointLoadError, FormatRegistrar, hookimpl, shards
from ckpt_formats.sniff import looks_like_pickle, looks_like_zip

INDEX_SUFFIX = ".bin.index.json"
_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")
_TORCH_ADVICE = ("weights only load failed", "weights_only", "re-running", "documentation", "please")


def _matches(path: Path) -> bool:
    return looks_like_zip(path) or looks_like_pickle(path)


def _discover(directory: Path, matched: list[Path]) -> list[Candidate]:
    """Every matched file, except a ``.bin`` whose bytes are neither a torch zip nor a pickle."""
    found = []
    for path in matched:
        if path.name.endswith(".bin"):
            try:
                if not _matches(path):
                    continue
            except OSError:
                pass  # unreadable: stays a candidate, so that loading names it and the reason
        found.append(Candidate("pickle", path))
    return found


def refusal_reason(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its advice to turn the protection off."""
    text = str(exc)
    match = _GLOBAL.search(text)
    if match:
        return f"refused global {match.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = [line for line in lines if not any(a in line.lower() for a in _TORCH_ADVICE)]
    if detail:
        return detail[0].removeprefix("WeightsUnpickler error:").strip()
    return type(exc).__name__


def load_file(path: Path, device: str) -> Any:
    """``torch.load(path, weights_only=True)``, memory-mapped for torch's zip container.

    Raises:
        CheckpointLoadError: the unpickler refused an object (naming the refused global), or the file is
            not a readable torch checkpoint.
    """
    import torch

    # mmap needs torch.save's zip container; a legacy raw pickle is read into memory.
    mmap = looks_like_zip(path)
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise CheckpointLoadError(
            f"{path}: refused to unpickle ({refusal_reason(exc)}): only tensors and plain containers are "
            "accepted, anything else could run code. Only load it if you trust its source, and convert it "
            "to safetensors in an isolated environment"
        ) from exc
    except (RuntimeError, EOFError, ValueError) as exc:  # a truncated zip, a cut-off stream
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CheckpointLoadError(
            f"{path}: not a readable PyTorch checkpoint ({first}); it may be corrupt or truncated: "
            "re-download or re-export it"
        ) from exc


def _load(candidate: Candidate, device: str) -> Any:
    return load_file(candidate.path, device)


def _load_shard(path: Path, device: str) -> Any:
    if not _matches(path):
        raise CheckpointLoadError(f"{path}: a shard of a sharded pickle set, but not a PyTorch checkpoint")
    loaded = load_file(path, device)
    if not hasattr(loaded, "items"):
        raise CheckpointLoadError(f"{path}: a shard holds {type(loaded).__name__}, not a mapping of tensors")
    return loaded


PICKLE = CheckpointFormat(
    name="pickle",
    priority=0,
    globs=("*.pth", "*.pt", "*.ckpt", "*.bin"),
    exclude_globs=("training_args.bin",),  # the Hugging Face Trainer's arguments, never weights
    load=_load,
    matches=_matches,
    discover=_discover,
    hub_filenames=("pytorch_model.bin", "model.pth"),
    executes_code=True,
    description="legacy PyTorch pickle (torch.load weights_only=True, mmap); deprecated",
)

PICKLE_SHARDED = shards.sharded_format(
    "pickle-sharded",
    priority=10,
    index_suffix=INDEX_SUFFIX,
    load_shard=_load_shard,
    hub_filenames=("pytorch_model" + INDEX_SUFFIX,),
    executes_code=True,
    description="sharded PyTorch pickle (pytorch_model.bin.index.json and its .bin shards); deprecated",
)


@hookimpl
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    register(PICKLE_SHARDED)
    register(PICKLE)
