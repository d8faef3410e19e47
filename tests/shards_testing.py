"""Helpers for the sharded-checkpoint tests: real shard sets (safetensors or pickle) in Hugging Face's layout,
and a pickle payload that would write a marker file if anything ever unpickled it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# format name -> (single-file suffix, index suffix, the Hugging Face stem)
KINDS = {
    "safetensors-sharded": (".safetensors", ".safetensors.index.json", "model"),
    "pickle-sharded": (".bin", ".bin.index.json", "pytorch_model"),  # DEPRECATED: remove after .pth sunset
}


def save_shard(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:  # DEPRECATED: remove after .pth sunset
        torch.save(tensors, path)


def shard_name(kind: str, i: int, n: int) -> str:
    suffix, _, stem = KINDS[kind]
    return f"{stem}-{i:05d}-of-{n:05d}{suffix}"


def write_shard_set(
    directory: Path,
    kind: str,
    state_dict: dict[str, torch.Tensor],
    shards: int = 2,
    weight_map: object = None,
) -> Path:
    """Shards of ``state_dict`` (round-robin by sorted name) and their index; ``weight_map`` replaces the
    index's real one when given. Returns the index path."""
    _, index_suffix, stem = KINDS[kind]
    names = sorted(state_dict)
    real_map = {}
    for i in range(shards):
        shard = shard_name(kind, i + 1, shards)
        part = {k: state_dict[k] for k in names[i::shards]}
        save_shard(directory / shard, part)
        real_map.update(dict.fromkeys(part, shard))
    index = directory / f"{stem}{index_suffix}"
    chosen = real_map if weight_map is None else weight_map
    index.write_text(json.dumps({"metadata": {"total_size": 1234}, "weight_map": chosen}))
    return index


class WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class RunsShell:
    """Unpickling this calls ``os.system("touch MARKER")`` (the global ``posix.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))
