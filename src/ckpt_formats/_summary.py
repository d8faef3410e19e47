"""What ``inspect`` reports about a checkpoint (:class:`Inspection`), built from its tensor listing.

A value type below the registry and the hub: the local inspection (:mod:`._inspection`) and the Hub's
remote one (:mod:`.hub._remote`) both build it with :func:`summarize`.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .tensors import TensorInfo, by_name


@dataclass
class Inspection:
    """A checkpoint's summary; ``path`` is a local path, or ``REPO_ID/FILE@REVISION`` for a Hub checkpoint.

    ``tensor_list`` holds every tensor sorted by name (:func:`ckpt_formats.tensors.by_name`). After
    :meth:`only`, the counts and the list are those of the matching tensors, ``selected_from`` is the number
    of tensors in the checkpoint and ``tensor_globs`` the patterns.
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
    selected_from: int | None = None
    tensor_globs: list[str] | None = None

    def only(self, globs: Sequence[str]) -> Inspection:
        """This summary restricted to the tensors whose name matches one of ``globs`` (``fnmatch``, case
        sensitive), recounted."""
        kept = [t for t in self.tensor_list if any(fnmatch.fnmatchcase(t.name, g) for g in globs)]
        counted = summarize(self.path, self.format, self.executes_code, kept, self.metadata)
        return replace(
            counted,
            non_tensor_entries=self.non_tensor_entries,
            selected_from=self.tensors,
            tensor_globs=list(globs),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {**self.__dict__, "path": str(self.path)}
        data["tensor_list"] = [t.to_dict() for t in self.tensor_list]
        if self.selected_from is None:
            del data["selected_from"], data["tensor_globs"]
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
