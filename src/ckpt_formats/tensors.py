"""Tensors one at a time: what a checkpoint holds (:class:`TensorInfo`) and how to read it lazily.

A format may declare ``open_tensors(candidate) -> TensorReader`` (:class:`~ckpt_formats.CheckpointFormat`):
:meth:`TensorReader.infos` then lists every tensor from the file's headers alone, and
:meth:`TensorReader.get` reads one tensor when it is asked for (from a memory map where the format allows).
``ckpt-formats inspect`` and ``ckpt-formats diff`` use it; for a format without it the registry loads the
whole state dict and wraps it in a :class:`StateDictReader`.

Nothing here imports torch at import time; the builtin safetensors plugin and the Hub's remote inspection
share :func:`safetensors_infos`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

    import torch

__all__ = [
    "SAFETENSORS_DTYPES",
    "StateDictReader",
    "TensorInfo",
    "TensorReader",
    "by_name",
    "safetensors_infos",
]

SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
}
"""safetensors' dtype codes -> torch's dtype names (``torch.`` left off)."""

_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a checkpoint lists it, without its data.

    Attributes:
        name: the tensor's key in the state dict.
        dtype: torch's dtype name without ``torch.`` (``float32``, ``bfloat16``, ``int64``...).
        shape: its dimensions (``()`` for a scalar).
        bytes: the size of its data.
        file: for a checkpoint of several files (a sharded set), the name of the file that holds it.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    bytes: int
    file: str | None = None

    @property
    def numel(self) -> int:
        """The number of elements (1 for a scalar)."""
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "bytes": self.bytes,
            "file": self.file,
        }


def by_name(name: str) -> tuple[Any, ...]:
    """Sort key for tensor names: numbered parts in numeric order (``blocks.2`` before ``blocks.10``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(name))


def safetensors_infos(header: Mapping[str, Any], file: str | None = None) -> list[TensorInfo]:
    """The tensors a safetensors header describes (its ``__metadata__`` left out), in the header's order.

    Args:
        header: the parsed JSON header (tensor name -> ``dtype``, ``shape``, ``data_offsets``).
        file: the file name to record in each :class:`TensorInfo` (a shard of a set), or None.

    Raises:
        KeyError, TypeError, ValueError: an entry lacks a field or has one of the wrong type.
    """
    infos = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"], str(entry["dtype"]).lower())
        infos.append(
            TensorInfo(name, dtype, tuple(int(d) for d in entry["shape"]), int(end) - int(start), file)
        )
    return infos


def tensor_info(name: str, tensor: torch.Tensor) -> TensorInfo:
    """The :class:`TensorInfo` of a loaded tensor."""
    dtype = str(tensor.dtype).removeprefix("torch.")
    return TensorInfo(name, dtype, tuple(tensor.shape), tensor.numel() * tensor.element_size())


class TensorReader:
    """The tensors of one checkpoint, listed without their data and read one at a time (on the CPU).

    Subclasses implement :meth:`infos` and :meth:`get`, and :meth:`close` when they hold files open. Use it
    as a context manager.

    Attributes:
        non_tensor_entries: how many entries of the checkpoint are not tensors (a pickle's ``epoch``).
    """

    non_tensor_entries: int = 0

    def infos(self) -> list[TensorInfo]:
        """Every tensor, without reading any tensor data."""
        raise NotImplementedError

    def get(self, name: str) -> torch.Tensor:
        """The tensor called ``name`` (possibly a view of a memory map: do not write into it).

        Raises:
            KeyError: no tensor has that name.
            CheckpointLoadError: its data cannot be read (a truncated file).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the files and maps (idempotent)."""

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class StateDictReader(TensorReader):
    """A :class:`TensorReader` over tensors already loaded (a format without ``open_tensors``)."""

    def __init__(self, entries: Mapping[str, Any]) -> None:
        import torch

        self._tensors = {str(k): v for k, v in entries.items() if isinstance(v, torch.Tensor)}
        self.non_tensor_entries = len(entries) - len(self._tensors)

    def infos(self) -> list[TensorInfo]:
        return [tensor_info(k, v) for k, v in self._tensors.items()]

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def close(self) -> None:
        self._tensors = {}


class CombinedReader(TensorReader):
    """Several readers as one (the shards of a set); a name must be in exactly one of them."""

    def __init__(self, parts: Iterable[TensorReader], check: Callable[[TensorInfo], None] | None = None):
        self._parts = list(parts)
        self._where: dict[str, TensorReader] = {}
        self._infos: list[TensorInfo] = []
        for part in self._parts:
            for info in part.infos():
                if check is not None:
                    check(info)
                self._where[info.name] = part
                self._infos.append(info)

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def get(self, name: str) -> torch.Tensor:
        return self._where[name].get(name)

    def close(self) -> None:
        for part in self._parts:
            part.close()
