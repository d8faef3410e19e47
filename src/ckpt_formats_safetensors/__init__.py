"""Builtin plugin: safetensors files, single and sharded (``*.safetensors.index.json`` + shards).

safetensors stores raw tensor bytes behind a JSON header: loading it cannot run code. The library is
imported inside the functions so that registering this plugin stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckpt_formats import Candidate, CheckpointFormat, CheckpointLoadError, FormatRegistrar, hookimpl, shards
from ckpt_formats.sniff import looks_like_safetensors
from ckpt_formats.tensors import TensorInfo, TensorReader, safetensors_infos

INDEX_SUFFIX = ".safetensors.index.json"
_OS_ERROR = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")  # newer | older (0.4.3) safetensors
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
    """All tensors of one safetensors file, on ``device``.

    Raises:
        CheckpointLoadError: the header or the data is truncated or corrupt.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file as st_load

    read_header(path)  # the clear errors for a broken header, before the library's own
    try:
        return st_load(str(path), device=device)
    except SafetensorError as exc:
        detail = next((s.strip() for s in str(exc).splitlines() if s.strip()), "no detail")
        raise CheckpointLoadError(
            f"{path}: corrupt or truncated safetensors file ({detail}): re-download or re-export it"
        ) from exc


def save_file(state_dict: Mapping[str, Any], path: Path, metadata: Mapping[str, str]) -> None:
    """Write ``state_dict`` to ``path`` as safetensors, with ``metadata``.

    Raises:
        OSError: the write failed (disk full: ``errno.ENOSPC``...); safetensors reports these as its own
            error, which is turned back into the operating system's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file as st_save

    from ckpt_formats.atomic import write_in_private_folder

    try:  # safetensors' own temporary file lands in a folder of ours, never beside the checkpoint
        write_in_private_folder(
            path, lambda inner: st_save(dict(state_dict), str(inner), metadata=dict(metadata) or None)
        )
    except SafetensorError as exc:
        found = _OS_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1) or found.group(2))
        raise OSError(code, os.strerror(code), str(path)) from exc


class SafetensorsReader(TensorReader):
    """The tensors of one safetensors file: listed from its header, each read on demand through
    ``safetensors.safe_open`` (a memory map; one tensor copied out at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._infos = safetensors_infos(read_header(path))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointLoadError(
                f"{path}: safetensors header has a malformed tensor entry ({type(exc).__name__}: {exc})"
            ) from exc
        self._names = {t.name for t in self._infos}
        self._handle: Any = None

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def get(self, name: str) -> Any:
        from safetensors import SafetensorError, safe_open

        if name not in self._names:
            raise KeyError(name)
        try:
            if self._handle is None:
                self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            return self._handle.get_tensor(name)
        except SafetensorError as exc:
            detail = next((s.strip() for s in str(exc).splitlines() if s.strip()), "no detail")
            raise CheckpointLoadError(
                f"{self.path}: cannot read tensor {name!r}: corrupt or truncated safetensors file ({detail})"
            ) from exc

    def close(self) -> None:
        self._handle = None


def _open_shard(path: Path) -> TensorReader:
    _check_shard(path)
    return SafetensorsReader(path)


def _open_single(candidate: Candidate) -> TensorReader:
    return SafetensorsReader(candidate.path)


def _load_single(candidate: Candidate, device: str) -> dict[str, Any]:
    return load_file(candidate.path, device)


def _read_metadata_single(candidate: Candidate) -> dict[str, str]:
    return _metadata(candidate.path)


# -- sharded: the index rules are ckpt_formats.shards', shared with the sharded pickle format --------------


def _check_shard(path: Path) -> None:
    if not looks_like_safetensors(path):
        raise CheckpointLoadError(f"{path}: a shard of a sharded safetensors set, but not a safetensors file")


def _load_shard(path: Path, device: str) -> dict[str, Any]:
    _check_shard(path)
    return load_file(path, device)


def _shard_keys(path: Path) -> list[str]:
    return [k for k in read_header(path) if k != "__metadata__"]


def _read_metadata_sharded(candidate: Candidate) -> dict[str, str]:
    metadata = _metadata(candidate.paths[1]) if len(candidate.paths) > 1 else {}
    metadata.update(shards.index_metadata(candidate.path))
    return metadata


SAFETENSORS = CheckpointFormat(
    name="safetensors",
    priority=100,
    globs=("*.safetensors",),
    load=_load_single,
    save=save_file,
    matches=looks_like_safetensors,
    read_metadata=_read_metadata_single,
    open_tensors=_open_single,
    hub_filenames=("model.safetensors",),
    description="safetensors file (raw tensors behind a JSON header; cannot run code)",
)

SAFETENSORS_SHARDED = shards.sharded_format(
    "safetensors-sharded",
    priority=110,
    index_suffix=INDEX_SUFFIX,
    load_shard=_load_shard,
    shard_keys=_shard_keys,
    open_shard=_open_shard,
    read_metadata=_read_metadata_sharded,
    hub_filenames=("model" + INDEX_SUFFIX,),
    description="sharded safetensors: an index JSON and the shards it lists, loaded as one state dict",
)


@hookimpl
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    register(SAFETENSORS_SHARDED)
    register(SAFETENSORS)
