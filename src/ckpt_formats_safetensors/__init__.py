"""Builtin plugin: safetensors files, single and sharded (``*.safetensors.index.json`` + shards).

safetensors stores raw tensor bytes behind a JSON header: loading it cannot run code. The library is
imported inside the functions so that registering this plugin stays cheap.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckpt_formats import Candidate, CheckpointFormat, CheckpointLoadError, FormatRegistrar, hookimpl
from ckpt_formats.sniff import looks_like_safetensors

INDEX_SUFFIX = ".safetensors.index.json"
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, read without touching the tensor data."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointLoadError(f"{path}: truncated safetensors file ({len(raw)} bytes, no header)")
        (length,) = struct.unpack("<Q", raw)
        size = os.fstat(f.fileno()).st_size
        if length > min(size - 8, _MAX_HEADER):
            raise CheckpointLoadError(
                f"{path}: safetensors header claims {length} bytes but the file has {size - 8} after the "
                "length field; the file is truncated or corrupt: re-download it"
            )
        try:
            header = json.loads(f.read(length))
        except ValueError as exc:
            raise CheckpointLoadError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointLoadError(f"{path}: safetensors header is not a JSON object")
    return header


def _metadata(path: Path) -> dict[str, str]:
    return dict(read_header(path).get("__metadata__") or {})


def load_file(path: Path, device: str) -> dict[str, Any]:
    from safetensors.torch import load_file as st_load

    read_header(path)  # the clear errors for a broken header, before the library's own
    return st_load(str(path), device=device)


def save_file(state_dict: Mapping[str, Any], path: Path, metadata: Mapping[str, str]) -> None:
    from safetensors.torch import save_file as st_save

    st_save(dict(state_dict), str(path), metadata=dict(metadata) or None)


def _load_single(candidate: Candidate, device: str) -> dict[str, Any]:
    return load_file(candidate.path, device)


def _read_metadata_single(candidate: Candidate) -> dict[str, str]:
    return _metadata(candidate.path)


# -- sharded -----------------------------------------------------------------------------------------


def _read_index(path: Path) -> dict[str, str]:
    """``weight_map`` of a sharded index: tensor name -> shard file name."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointLoadError(
            f"{path}: not a valid safetensors index (expected JSON with a 'weight_map'): {exc}"
        ) from exc
    bad = [s for s in weight_map.values() if not isinstance(s, str) or Path(s).name != s]
    if not isinstance(weight_map, dict) or bad:
        raise CheckpointLoadError(f"{path}: weight_map must map tensor names to shard file names beside it")
    return weight_map


def shard_names(index_path: Path) -> list[str]:
    return sorted(set(_read_index(index_path).values()))


def _discover_sharded(directory: Path, matched: list[Path]) -> list[Candidate]:
    candidates = []
    for index in matched:
        try:
            shards = tuple(directory / name for name in shard_names(index))
        except CheckpointLoadError:
            shards = ()  # still a candidate: loading it gives the clear error
        candidates.append(Candidate("safetensors-sharded", index, (index, *shards)))
    return candidates


def _load_sharded(candidate: Candidate, device: str) -> dict[str, Any]:
    weight_map = _read_index(candidate.path)
    state_dict: dict[str, Any] = {}
    for shard in candidate.paths[1:]:
        if not looks_like_safetensors(shard):
            raise CheckpointLoadError(f"{shard}: shard of {candidate.path.name} is not a safetensors file")
        state_dict.update(load_file(shard, device))
    missing = sorted(k for k in weight_map if k not in state_dict)
    if missing:
        raise CheckpointLoadError(
            f"{candidate.path}: {len(missing)} tensors listed in the index are in none of its shards "
            f"(first: {missing[0]}); the shards do not belong to this index: re-download the set"
        )
    return state_dict


def _read_metadata_sharded(candidate: Candidate) -> dict[str, str]:
    metadata = _metadata(candidate.paths[1]) if len(candidate.paths) > 1 else {}
    index = json.loads(candidate.path.read_text(encoding="utf-8"))
    metadata.update({k: str(v) for k, v in (index.get("metadata") or {}).items()})
    return metadata


def _looks_like_index(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1024).lstrip()[:1] == b"{"


SAFETENSORS = CheckpointFormat(
    name="safetensors",
    priority=100,
    globs=("*.safetensors",),
    load=_load_single,
    save=save_file,
    matches=looks_like_safetensors,
    read_metadata=_read_metadata_single,
    hub_filenames=("model.safetensors",),
    description="safetensors file (raw tensors behind a JSON header; cannot run code)",
)

SAFETENSORS_SHARDED = CheckpointFormat(
    name="safetensors-sharded",
    priority=110,
    globs=("*" + INDEX_SUFFIX,),
    load=_load_sharded,
    matches=_looks_like_index,
    read_metadata=_read_metadata_sharded,
    hub_filenames=("model" + INDEX_SUFFIX,),
    discover=_discover_sharded,
    companions=shard_names,
    description="sharded safetensors: an index JSON and the shards it lists, loaded as one state dict",
)


@hookimpl
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    register(SAFETENSORS_SHARDED)
    register(SAFETENSORS)
