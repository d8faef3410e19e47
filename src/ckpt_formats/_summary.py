"""What ``inspect`` reports about a checkpoint (:class:`Inspection`), built from its tensor listing.

A value type below the registry and the hub: the local inspection (:mod:`._inspection`) and the Hub's
remote one (:mod:`.hub._remote`) both build it with :func:`summarize`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tensors import TensorInfo, by_name


@dataclass
class Inspection:
    """A checkpoint's summary; ``path`` is a local path, or ``REPO_ID/FILE@REVISION`` for a Hub checkpoint.

    ``tensor_list`` holds every tensor sorted by name (:func:`ckpt_formats.tensors.by_name`).
    """

    path: Path | str
    format: str
    executes_code: bool
    tensors: int
    parameters: int
    bytes: int
    dtypes: dict[str, int]
    metadata: dict[str, str] = field(default_factory=dict)
    non_tensor_entries: int = 0
    tensor_list: list[TensorInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {**self.__dict__, "path": str(self.path)}
        data["tensor_list"] = [t.to_dict() for t in self.tensor_list]
        return data


def summarize(
    path: Path | str,
    format: str,
    executes_code: bool,
    infos: Sequence[TensorInfo],
    metadata: Mapping[str, Any],
    non_tensor_entries: int = 0,
) -> Inspection:
    """The :class:`Inspection` of a checkpoint whose tensors are ``infos`` (counted, summed, sorted)."""
    dtypes = Counter(t.dtype for t in infos)
    return Inspection(
        path=path,
        format=format,
        executes_code=executes_code,
        tensors=len(infos),
        parameters=sum(t.numel for t in infos),
        bytes=sum(t.bytes for t in infos),
        dtypes=dict(sorted(dtypes.items())),
        metadata={str(k): str(v) for k, v in metadata.items()},
        non_tensor_entries=non_tensor_entries,
        tensor_list=sorted(infos, key=lambda t: by_name(t.name)),
    )
