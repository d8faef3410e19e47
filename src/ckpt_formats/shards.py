"""Sharded checkpoints: an index JSON (Hugging Face's ``*.index.json``) and the shard files it names.

One implementation for every sharded format: the builtin sharded safetensors and sharded pickle formats use
it, and a plugin may too. The rules:

* the index is a JSON object whose ``weight_map`` is an object of tensor name -> plain file name beside the
  index (no folder, not the index itself); anything else is one :class:`~ckpt_formats.CheckpointLoadError`
  naming the index;
* each tensor is taken from the shard the index names; a tensor found in a shard the index does not assign
  it to, or in no index entry, is an error naming the tensor and both files; a tensor the index lists but no
  shard holds is an error too.

Shards are loaded one at a time by the format's own single-file loader (memory-mapped where it can), so the
peak memory is that of the state dict itself. :func:`open_sharded` lists the tensors of every shard (from
their headers, with a format's ``open_shard``) and reads them one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import untrusted
from .errors import CheckpointLoadError, UnsafeNameError
from .formats import Candidate, CheckpointFormat, Discoverer, MetadataReader
from .tensors import CombinedReader, StateDictReader, TensorInfo, TensorReader

__all__ = [
    "discover_sharded",
    "index_metadata",
    "load_sharded",
    "looks_like_index",
    "open_sharded",
    "read_index",
    "read_weight_map",
    "shard_names",
    "sharded_format",
]

MAX_INDEX_BYTES = 64 * 1024 * 1024
_EXPECTED = '{"weight_map": {TENSOR_NAME: SHARD_FILE_NAME, ...}}'


def _invalid(path: Path, why: str) -> CheckpointLoadError:
    return CheckpointLoadError(
        f"{path}: not a valid sharded checkpoint index: {why} (expected JSON {_EXPECTED}, every shard a "
        "file beside the index). Re-download or re-export the set"
    )


def read_index(path: Path) -> dict[str, Any]:
    """The whole JSON object of a sharded index.

    Args:
        path: the index file.

    Returns:
        The parsed object (``weight_map`` not yet checked: see :func:`read_weight_map`).

    Raises:
        CheckpointLoadError: the file cannot be read, is larger than 64 MiB, or is not a JSON object.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_INDEX_BYTES + 1)
    except OSError as exc:
        raise CheckpointLoadError(f"{path}: cannot read the index ({exc.strerror or exc})") from exc
    if len(raw) > MAX_INDEX_BYTES:
        raise _invalid(path, f"larger than {MAX_INDEX_BYTES // (1024 * 1024)} MiB")
    try:
        index = json.loads(raw)
    except ValueError as exc:
        raise _invalid(path, f"not valid JSON ({exc})") from exc
    if not isinstance(index, dict):
        raise _invalid(path, f"the document is a JSON {_json_type(index)}, not an object")
    return index


def _json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_weight_map(path: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded index, checked: tensor name -> shard file name beside the index.

    Raises:
        CheckpointLoadError: unreadable or invalid index, ``weight_map`` missing, not an object, empty, or
            naming something other than a plain file name beside the index (one line naming the index).
    """
    path = Path(path)
    index = read_index(path)
    if "weight_map" not in index:
        raise _invalid(path, "it has no 'weight_map'")
    weight_map = index["weight_map"]
    if not isinstance(weight_map, dict):
        raise _invalid(path, f"'weight_map' is a JSON {_json_type(weight_map)}, not an object")
    if not weight_map:
        raise _invalid(path, "'weight_map' lists no tensors")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise _invalid(path, f"tensor {tensor!r} maps to a JSON {_json_type(shard)}, not a file name")
        try:
            untrusted.file_name(shard, f"the shard of tensor {tensor!r}")
        except UnsafeNameError:
            safe = False
        else:
            safe = shard != path.name
        if not safe:
            raise _invalid(path, f"tensor {tensor!r} maps to {shard!r}, which is not a file beside the index")
    return weight_map


def shard_names(path: Path) -> list[str]:
    """The shard file names an index lists, sorted, each once (also a format's ``companions``).

    Raises:
        CheckpointLoadError: as :func:`read_weight_map`.
    """
    return sorted(set(read_weight_map(path).values()))


def index_metadata(path: Path) -> dict[str, str]:
    """The index's own ``metadata`` object (e.g. ``total_size``), values as strings; {} when absent.

    Raises:
        CheckpointLoadError: as :func:`read_index`.
    """
    metadata = read_index(path).get("metadata")
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def looks_like_index(path: Path) -> bool:
    """A content check for an index: the file starts with a JSON object (whitespace allowed).

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        return f.read(1024).lstrip()[:1] == b"{"


def discover_sharded(format_name: str) -> Discoverer:
    """A ``discover`` function for a sharded format: each matched index with the shards it lists.

    An index that cannot be read stays a candidate on its own: loading it gives the clear error.

    Args:
        format_name: the format the candidates belong to.

    Returns:
        ``discover(directory, matched_files) -> candidates``.
    """

    def discover(directory: Path, matched: list[Path]) -> list[Candidate]:
        candidates = []
        for index in matched:
            try:
                shards = tuple(directory / name for name in shard_names(index))
            except CheckpointLoadError:
                shards = ()
            candidates.append(Candidate(format_name, index, (index, *shards)))
        return candidates

    return discover


def load_sharded(
    candidate: Candidate,
    device: str,
    load_shard: Callable[[Path, str], Mapping[str, Any]],
    shard_keys: Callable[[Path], Iterable[str]] | None = None,
) -> dict[str, Any]:
    """Load a sharded candidate as one state dict, each tensor from the shard its index names.

    Args:
        candidate: the index first, then the shards (as :func:`discover_sharded` makes it).
        device: passed to ``load_shard``.
        load_shard: the format's single-file loader, ``(path, device) -> {name: tensor}``.
        shard_keys: optional ``path -> tensor names`` read without loading (a safetensors header): every
            shard is then checked against the index before any tensor is loaded.

    Returns:
        The tensors of every shard.

    Raises:
        CheckpointLoadError: invalid index; a tensor in a shard the index does not assign it to, or in no
            index entry (naming the tensor and both files); a listed tensor that no shard holds.
    """
    index = candidate.path
    weight_map = read_weight_map(index)
    shards = [index.parent / name for name in sorted(set(weight_map.values()))]  # the index is the authority
    if shard_keys is not None:
        for shard in shards:
            for name in shard_keys(shard):
                _check_owner(index, weight_map, name, shard)
    state_dict: dict[str, Any] = {}
    for shard in shards:
        for name, value in load_shard(shard, device).items():
            _check_owner(index, weight_map, name, shard)
            state_dict[name] = value
    _check_complete(index, weight_map, state_dict)
    return state_dict


def open_sharded(candidate: Candidate, open_shard: Callable[[Path], TensorReader]) -> TensorReader:
    """A sharded candidate's tensors, listed from every shard's reader and read one at a time, under the same
    index rules as :func:`load_sharded` (checked when it is opened, before any tensor is read).

    Args:
        candidate: the index first, then the shards.
        open_shard: the format's reader of one shard, ``path -> TensorReader``.

    Returns:
        One reader over every shard; each :class:`TensorInfo` names the shard file that holds it.

    Raises:
        CheckpointLoadError: as :func:`load_sharded`.
    """
    index = candidate.path
    weight_map = read_weight_map(index)
    parts: list[TensorReader] = []
    try:
        for name in sorted(set(weight_map.values())):
            parts.append(_NamedShard(open_shard(index.parent / name), name))

        def check(info: TensorInfo) -> None:
            _check_owner(index, weight_map, info.name, index.parent / str(info.file))

        reader = CombinedReader(parts, check)
        _check_complete(index, weight_map, {t.name for t in reader.infos()})
    except BaseException:
        for part in parts:
            part.close()
        raise
    return reader


class _NamedShard(TensorReader):
    """A shard's reader whose :class:`TensorInfo` records the shard's file name."""

    def __init__(self, reader: TensorReader, file: str) -> None:
        self._reader, self._file = reader, file

    def infos(self) -> list[TensorInfo]:
        return [replace(t, file=self._file) for t in self._reader.infos()]

    def get(self, name: str) -> Any:
        return self._reader.get(name)

    def close(self) -> None:
        self._reader.close()


def _check_complete(index: Path, weight_map: Mapping[str, str], found: Container[str]) -> None:
    missing = sorted(k for k in weight_map if k not in found)
    if missing:
        raise CheckpointLoadError(
            f"{index}: {len(missing)} tensor(s) listed in the index are in none of its shards (first: "
            f"{missing[0]!r}, assigned to {weight_map[missing[0]]}); the shards do not belong to this index: "
            "re-download the set"
        )


def _check_owner(index: Path, weight_map: Mapping[str, str], name: str, shard: Path) -> None:
    owner = weight_map.get(name)
    if owner is None:
        raise CheckpointLoadError(
            f"tensor {name!r} is in shard {shard} but in no entry of the index {index}; the shard does not "
            "belong to this index: re-download the set"
        )
    if owner != shard.name:
        raise CheckpointLoadError(
            f"tensor {name!r} is in shard {shard} but the index {index} assigns it to {owner}; the shards "
            "do not match the index: re-download the set"
        )


def sharded_format(
    name: str,
    *,
    priority: int,
    index_suffix: str,
    load_shard: Callable[[Path, str], Mapping[str, Any]],
    shard_keys: Callable[[Path], Iterable[str]] | None = None,
    open_shard: Callable[[Path], TensorReader] | None = None,
    read_metadata: MetadataReader | None = None,
    hub_filenames: tuple[str, ...] = (),
    executes_code: bool = False,
    description: str = "",
) -> CheckpointFormat:
    """The declaration of a sharded format whose index files end in ``index_suffix``, under these rules.

    Args:
        name: the format's name.
        priority: its priority.
        index_suffix: e.g. ``.safetensors.index.json``; the format's glob is ``*`` followed by it.
        load_shard: the single-file loader of one shard, ``(path, device) -> {name: tensor}``.
        shard_keys: optional cheap ``path -> tensor names`` (see :func:`load_sharded`).
        open_shard: optional ``path -> TensorReader`` of one shard (see :func:`open_sharded`); without it
            ``inspect`` and ``diff`` load each shard with ``load_shard`` onto the CPU.
        read_metadata: the format's metadata reader (default: the index's own ``metadata``).
        hub_filenames: index names to ask a hub for.
        executes_code: True when loading a shard can run code.
        description: one line for ``ckpt-formats list``.

    Returns:
        A :class:`~ckpt_formats.CheckpointFormat` to register.
    """

    def load(candidate: Candidate, device: str) -> dict[str, Any]:
        return load_sharded(candidate, device, load_shard, shard_keys)

    def open_loaded(path: Path) -> TensorReader:
        return StateDictReader(load_shard(path, "cpu"))

    def open_tensors(candidate: Candidate) -> TensorReader:
        return open_sharded(candidate, open_shard or open_loaded)

    return CheckpointFormat(
        name=name,
        priority=priority,
        globs=("*" + index_suffix,),
        load=load,
        matches=looks_like_index,
        read_metadata=read_metadata or (lambda candidate: index_metadata(candidate.path)),
        hub_filenames=hub_filenames,
        discover=discover_sharded(name),
        companions=shard_names,
        open_tensors=open_tensors,
        executes_code=executes_code,
        description=description,
    )
