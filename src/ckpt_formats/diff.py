"""Compare two checkpoints tensor by tensor: :func:`diff_checkpoints` (``ckpt-formats diff A B``).

Each side is anything the registry can load: a file, a sharded set (its index) or a folder (the checkpoint
``resolve`` would choose there), in any registered format. Tensors are matched by name (after the optional
prefix stripping) and sorted like ``inspect`` sorts them. Each pair is then one of: only in A, only in B,
shape differs, dtype differs, values differ (with the largest absolute and relative difference and the
number of elements that differ), or equal.

Equal means bit for bit (the same bytes, so ``-0.0`` and ``0.0`` differ and a NaN equals the same NaN)
unless a tolerance is given: then an element differs when ``|a - b| > atol + rtol * |b|`` (computed in
float64; NaNs in the same place are equal), as ``torch.isclose`` has it.

Memory: the tensors are read one pair at a time through the formats' readers (:mod:`ckpt_formats.tensors`:
memory maps for safetensors and torch's zip pickles), and each pair is compared in slices of
:data:`CHUNK` elements, so the process holds at most one tensor of each side, plus a few slices, beyond
the memory maps (benchmarks/bench_diff.py measures it).
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError
from .registry import Registry, get_registry
from .statedict import strip_prefixes
from .tensors import TensorInfo, TensorReader, by_name

if TYPE_CHECKING:
    import torch

__all__ = ["CHUNK", "DiffReport", "Side", "TensorDiff", "diff_checkpoints"]

CHUNK = 1 << 20
"""Elements compared at a time (float64 slices of 8 MiB)."""

KINDS = ("only_in_a", "only_in_b", "shape", "dtype", "values")
"""The kinds of difference, in the order they are counted and described."""


@dataclass(frozen=True)
class Side:
    """One of the two checkpoints: what was named, the file that was read, its format and tensor count."""

    path: str
    file: str
    format: str
    tensors: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TensorDiff:
    """A tensor that differs between A and B.

    Attributes:
        name: its name (after prefix stripping).
        kind: ``only_in_a``, ``only_in_b``, ``shape``, ``dtype`` or ``values``.
        a, b: the tensor on each side (None on the side that lacks it); their ``name`` is the original one.
        max_abs, max_rel: the largest ``|a - b|`` and ``|a - b| / |b|`` over the elements (``dtype`` and
            ``values`` only; ``inf`` where one side is NaN or ``b`` is 0 and ``a`` is not).
        count: how many elements differ (``dtype`` and ``values`` only).
    """

    name: str
    kind: str
    a: TensorInfo | None = None
    b: TensorInfo | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "a": self.a.to_dict() if self.a else None,
            "b": self.b.to_dict() if self.b else None,
            "max_abs": _json_number(self.max_abs),
            "max_rel": _json_number(self.max_rel),
            "count": self.count,
            "numel": self.a.numel if self.count is not None and self.a is not None else None,
        }


@dataclass
class DiffReport:
    """What :func:`diff_checkpoints` found: the differences, sorted by name, and what was equal or ignored."""

    a: Side
    b: Side
    atol: float
    rtol: float
    differences: list[TensorDiff] = field(default_factory=list)
    equal_tensors: int = 0
    ignored: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """True when no tensor differs (and neither side has a tensor the other lacks)."""
        return not self.differences

    def count(self, kind: str) -> int:
        return sum(d.kind == kind for d in self.differences)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "equal": self.equal,
            "atol": self.atol,
            "rtol": self.rtol,
            "equal_tensors": self.equal_tensors,
            "ignored": self.ignored,
            "counts": {kind: self.count(kind) for kind in KINDS},
            "differences": [d.to_dict() for d in self.differences],
        }


def diff_checkpoints(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
    ignore: Sequence[str] = (),
    strip_prefix: Sequence[str] = (),
    safe_only: bool | None = None,
    registry: Registry | None = None,
) -> DiffReport:
    """Compare the checkpoints ``a`` and ``b`` tensor by tensor.

    Args:
        a, b: a checkpoint file, a sharded set's index, or a folder (its ``resolve`` winner, hub not used).
        atol, rtol: tolerances (both 0: bit for bit).
        ignore: tensor-name globs (``fnmatch``, case sensitive) left out of the comparison.
        strip_prefix: leading prefixes removed from every name of both sides before matching (repeatedly:
            ``_orig_mod.module.x`` -> ``x`` with both ``_orig_mod.`` and ``module.``).
        safe_only: refuse formats that can execute code (None: ``CKPT_FORMATS_SAFE_ONLY``).
        registry: the registry to use (default: the process-wide one).

    Returns:
        The :class:`DiffReport`.

    Raises:
        ValueError: a tolerance is negative or not a number.
        CheckpointError: a side cannot be found or read, or two of its tensors have the same name once the
            prefixes are stripped.
    """
    for label, value in (("atol", atol), ("rtol", rtol)):
        if not value >= 0 or math.isinf(value):
            raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
    registry = registry or get_registry()
    with ExitStack() as stack:
        side_a, reader_a = stack.enter_context(_Opened(registry, a, safe_only))
        side_b, reader_b = stack.enter_context(_Opened(registry, b, safe_only))
        names_a = _named(reader_a, strip_prefix, side_a.path)
        names_b = _named(reader_b, strip_prefix, side_b.path)
        report = DiffReport(side_a, side_b, float(atol), float(rtol))
        for name in sorted(names_a.keys() | names_b.keys(), key=by_name):
            if any(fnmatch.fnmatchcase(name, glob) for glob in ignore):
                report.ignored.append(name)
                continue
            found = _compare(name, names_a.get(name), names_b.get(name), reader_a, reader_b, atol, rtol)
            if found is None:
                report.equal_tensors += 1
            else:
                report.differences.append(found)
    return report


class _Opened:
    """A side's reader, opened through the registry (content checks, policy) and closed afterwards."""

    def __init__(self, registry: Registry, path: str | os.PathLike[str], safe_only: bool | None) -> None:
        self.registry, self.path, self.safe_only = registry, path, safe_only
        self.reader: TensorReader | None = None

    def __enter__(self) -> tuple[Side, TensorReader]:
        advice = "naming the file instead of the folder"
        fmt, candidate = self.registry.candidate_for(self.path, safe_only=self.safe_only, advice=advice)
        self.reader, _ = self.registry.open_tensors(fmt, candidate)
        side = Side(str(self.path), str(candidate.path), fmt.name, len(self.reader.infos()))
        return side, self.reader

    def __exit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.reader.close()


def _named(reader: TensorReader, prefixes: Sequence[str], where: str) -> dict[str, TensorInfo]:
    """The reader's tensors by their name once ``prefixes`` are stripped."""
    named: dict[str, TensorInfo] = {}
    for info in reader.infos():
        name = strip_prefixes(info.name, tuple(prefixes)) if prefixes else info.name
        if name in named:
            raise CheckpointError(
                f"{where}: tensors {named[name].name!r} and {info.name!r} are both {name!r} once the "
                f"prefixes {', '.join(prefixes)} are stripped; strip fewer prefixes"
            )
        named[name] = info
    return named


def _compare(
    name: str,
    a: TensorInfo | None,
    b: TensorInfo | None,
    reader_a: TensorReader,
    reader_b: TensorReader,
    atol: float,
    rtol: float,
) -> TensorDiff | None:
    """The difference between the tensors called ``name`` (None when they are equal)."""
    if a is None or b is None:
        return TensorDiff(name, "only_in_b" if a is None else "only_in_a", a, b)
    if a.shape != b.shape:
        return TensorDiff(name, "shape", a, b)
    tensor_a, tensor_b = reader_a.get(a.name), reader_b.get(b.name)  # the one pair held at a time
    exact = atol == 0 and rtol == 0 and a.dtype == b.dtype
    count, max_abs, max_rel = compare_values(tensor_a, tensor_b, atol, rtol, exact)
    del tensor_a, tensor_b
    if a.dtype != b.dtype:
        return TensorDiff(name, "dtype", a, b, max_abs, max_rel, count)
    if count:
        return TensorDiff(name, "values", a, b, max_abs, max_rel, count)
    return None


def compare_values(
    a: torch.Tensor, b: torch.Tensor, atol: float = 0.0, rtol: float = 0.0, exact: bool = True
) -> tuple[int, float, float]:
    """How many elements of two tensors of one shape differ, and the largest absolute and relative
    difference, compared in slices of :data:`CHUNK` elements.

    Args:
        a, b: the tensors (any dtypes; same shape).
        atol, rtol: the tolerances when not ``exact``.
        exact: compare the bytes of each element (``a`` and ``b`` of one dtype).

    Returns:
        ``(count, max_abs, max_rel)``.
    """
    import torch

    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    count, max_abs, max_rel = 0, 0.0, 0.0
    wide = torch.complex128 if a.is_complex() or b.is_complex() else torch.float64
    for start in range(0, flat_a.numel(), CHUNK):
        part_a, part_b = flat_a[start : start + CHUNK], flat_b[start : start + CHUNK]
        if exact:
            size = part_a.element_size()
            bytes_a = part_a.contiguous().view(torch.uint8).view(-1, size)
            bytes_b = part_b.contiguous().view(torch.uint8).view(-1, size)
            differs = (bytes_a != bytes_b).any(dim=1)
            if not bool(differs.any()):
                continue
            wide_a, wide_b = part_a.to(wide), part_b.to(wide)
        else:
            wide_a, wide_b = part_a.to(wide), part_b.to(wide)
            differs = ~torch.isclose(wide_a, wide_b, rtol=rtol, atol=atol, equal_nan=True)
        count += int(differs.sum())
        abs_diff = (wide_a - wide_b).abs()
        same = (wide_a == wide_b) | (wide_a.isnan() & wide_b.isnan())
        abs_diff = torch.where(same, 0.0, torch.nan_to_num(abs_diff, nan=math.inf, posinf=math.inf))
        rel = abs_diff / wide_b.abs()  # x / 0 is inf, inf / inf is nan
        rel = torch.nan_to_num(rel, nan=math.inf, posinf=math.inf)
        rel = torch.where(abs_diff == 0, 0.0, rel)
        max_abs = max(max_abs, float(abs_diff.max()))
        max_rel = max(max_rel, float(rel.max()))
    return count, max_abs, max_rel


def _json_number(value: float | None) -> float | str | None:
    """JSON has no infinity: ``"inf"`` stands for it."""
    if value is None or math.isfinite(value):
        return value
    return "inf"


def format_number(value: float | None) -> str:
    """``0.5``, ``1.2e-07``, ``inf``; ``-`` for None."""
    return "-" if value is None else f"{value:.6g}"

