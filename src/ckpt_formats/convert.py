"""Convert any loadable checkpoint to any format with a ``save``: cleaned, optionally cast, verified bit for
bit, written atomically (and, without ``force``, exclusively: of concurrent converts to one file exactly one
wins).

The target format is the registered format that can save whose globs match the output's name
(``.safetensors``, ``.npz`` with the example plugin, ...). With ``max_shard_size`` the output is a sharded
safetensors set in the Hugging Face layout (:mod:`ckpt_formats._shards`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._discovery import matches_format
from .atomic import atomic_write, sweep_temps
from .errors import NO_SPACE_ERRNOS, CheckpointError, NoSpaceError, PluginError
from .formats import Candidate, CheckpointFormat
from .registry import Registry, get_registry
from .statedict import clean_state_dict

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TARGET_FORMAT = "safetensors"  # the format of sharded sets
DTYPES = ("float16", "bfloat16", "float32")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
META_SOURCE_FORMAT = "ckpt_formats.source_format"
META_SOURCE_FILE = "ckpt_formats.source_file"
META_SOURCE_SHA256 = "ckpt_formats.source_sha256"


class ConversionError(CheckpointError):
    """The conversion was refused or failed; no output file was left behind."""


class ConversionNoSpaceError(NoSpaceError, ConversionError):
    """The output did not fit on the disk (also an ``OSError`` with ``errno.ENOSPC``); nothing was left."""


@dataclass
class ConversionReport:
    """What :func:`convert` wrote: ``files`` are every file placed (a sharded set: shards, then the index)."""

    source: Path
    source_format: str
    output: Path
    tensors: int
    bytes: int
    skipped: list[str] = field(default_factory=list)
    unshared: list[str] = field(default_factory=list)
    target_format: str = TARGET_FORMAT
    dtype: str | None = None
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (paths as strings)."""
        data = asdict(self)
        data.update(source=str(self.source), output=str(self.output), files=[str(p) for p in self.files])
        return data


def parse_size(text: str) -> int:
    """``"2GB"`` -> 2000000000: a size in bytes, with decimal (KB, MB, GB, TB) or binary (KiB...) units.

    Args:
        text: a number, optionally followed by a unit (``B`` when none).

    Returns:
        The size in bytes.

    Raises:
        ConversionError: not a positive size.
    """
    match = _SIZE.match(text)
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]) if match else 0
    if size <= 0:
        raise ConversionError(
            f"--max-shard-size {text!r}: expected a positive size such as 2GB, 500MB or 1GiB"
        )
    return size


def saving_formats(registry: Registry, safe_only: bool | None = None) -> list[CheckpointFormat]:
    """The formats that can be conversion targets (they have a ``save``), highest priority first.

    Args:
        registry: where the formats are registered.
        safe_only: the safety policy (None: ``CKPT_FORMATS_SAFE_ONLY``); disabled formats are never targets.

    Returns:
        The allowed formats with a ``save``.
    """
    return [f for f in registry.formats(safe_only=safe_only) if f.save is not None]


def target_format_for(registry: Registry, output: Path, safe_only: bool | None = None) -> CheckpointFormat:
    """The format ``output`` will be written in: the highest-priority allowed saving format matching its name.

    Raises:
        ConversionError: no format that can save matches the name (the message lists those that can).
    """
    targets = saving_formats(registry, safe_only)
    for fmt in targets:
        if matches_format(output.name, fmt):
            return fmt
    known = "; ".join(f"{f.name} ({', '.join(f.globs)})" for f in targets) or "none"
    raise ConversionError(
        f"{output}: no registered format that can save matches this name; the conversion targets are: {known}"
    )


def _cast(tensors: dict[str, torch.Tensor], dtype: str | None) -> None:
    """Cast the floating-point tensors to ``dtype`` in place (integers and booleans are kept)."""
    if dtype is None:
        return
    import torch

    want = getattr(torch, dtype)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dtype != want:
            tensors[name] = tensor.to(want)


def sha256_of(paths: tuple[Path, ...]) -> str:
    """sha256 of one file, or of the files in order for a multi-file checkpoint."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _unshare(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Give every tensor its own contiguous storage (safetensors refuses shared or strided tensors)."""
    import torch

    seen: set[int] = set()
    unshared = []
    for name, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if ptr is not None and ptr in seen:
            tensors[name] = tensor.clone(memory_format=torch.contiguous_format)
            unshared.append(name)
        else:
            tensors[name] = tensor.contiguous()
        if ptr is not None:
            seen.add(ptr)
    return unshared


def _bits(t: torch.Tensor) -> torch.Tensor:
    import torch

    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def verify_identical(expected: dict[str, torch.Tensor], actual: dict[str, Any], where: Path) -> None:
    """Keys, shapes, dtypes and every byte of every tensor must match."""
    import torch

    if set(expected) != set(actual):
        missing = sorted(set(expected) - set(actual))[:3]
        extra = sorted(set(actual) - set(expected))[:3]
        raise ConversionError(f"{where}: reloaded keys differ (missing {missing}, unexpected {extra})")
    for name, want in expected.items():
        got = actual[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ConversionError(
                f"{where}: {name} reloaded as {got.dtype}{list(got.shape)}, "
                f"expected {want.dtype}{list(want.shape)}"
            )
        if not torch.equal(_bits(got), _bits(want)):
            raise ConversionError(f"{where}: {name} reloaded with different values")


def convert(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    force: bool = False,
    safe_only: bool | None = None,
    registry: Registry | None = None,
    dtype: str | None = None,
    max_shard_size: int | None = None,
) -> ConversionReport:
    """Convert ``source`` (any format the registry can load) to ``output``, in the format its name says.

    Unwraps ``state_dict``/``model`` wrappers, strips ``_orig_mod.``/``module.``, skips non-tensor entries
    (reported), casts floating tensors to ``dtype`` if asked, un-shares tensors that share storage, records
    provenance in the metadata (formats that keep metadata), writes to a temporary file, reloads it through
    the target format and checks it bit for bit against the (cast) tensors, then moves it into place.
    Temporaries of earlier, killed converts to the same output are removed first.

    Args:
        source: the checkpoint file to read.
        output: the file to write; the saving format whose globs match its name writes it.
        force: replace an existing output. Without it the output is claimed atomically (``os.link``): of
            several concurrent converts to one output exactly one writes it, the others raise.
        safe_only: refuse a source whose format can execute code (None: ``CKPT_FORMATS_SAFE_ONLY``).
        registry: the registry to use (default: the process-wide one).
        dtype: ``float16``, ``bfloat16`` or ``float32``: cast floating-point tensors to it.
        max_shard_size: write a sharded safetensors set of shards of at most this many bytes (``output``
            must end in ``.safetensors``; see :func:`ckpt_formats._shards.write_sharded`).

    Returns:
        What was written (:class:`ConversionReport`).

    Raises:
        ConversionError: no target format for the name, the output exists (without ``force``), nothing to
            convert, or writing/verifying failed; no output file is left behind.
        CheckpointError: the source could not be found or loaded (its usual errors).
    """
    from ._shards import index_name_for, write_sharded

    registry = registry or get_registry()
    source, output = Path(source), Path(output)
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if max_shard_size is not None:
        if max_shard_size <= 0:
            raise ConversionError(f"max_shard_size must be a positive number of bytes, got {max_shard_size}")
        target = registry.get_format(TARGET_FORMAT)
        if not output.name.endswith(".safetensors") or target.save is None:
            raise ConversionError(f"{output}: a sharded output must be named like model.safetensors")
        claimed = [output, output.with_name(index_name_for(output))]
    else:
        target = target_format_for(registry, output, safe_only)
        claimed = [output]
    if output.name.startswith("."):
        raise ConversionError(
            f"{output}: a hidden name (starting with '.'), which discovery never looks at, so resolve() "
            "would not find the result; name the file like model.safetensors"
        )
    existing = [p for p in claimed if p.exists()]
    if existing and not force:
        raise ConversionError(f"{existing[0]} already exists; pass force=True (--force) to replace it")
    if source.is_dir():  # a folder: the checkpoint resolve() picks there (a sharded set, a single file)
        fmt, candidate, _ = registry.discover(source, safe_only=safe_only).choose()
    else:
        fmt, candidate = registry.candidate_for_file(source, safe_only=safe_only)

    loaded, metadata = registry.load(fmt, candidate, "cpu")
    try:
        tensors, skipped = clean_state_dict(loaded)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"{source}: {exc}") from exc
    if not tensors:
        raise ConversionError(f"{source}: holds no tensors to convert")
    for name in skipped:
        logger.warning("%s: skipping non-tensor entry %r", source.name, name)
    _cast(tensors, dtype)
    unshared = _unshare(tensors)
    # total_size describes a sharded source's index, not the tensors written (cast, re-sharded or joined)
    metadata = {str(k): str(v) for k, v in metadata.items() if k != "total_size"}
    metadata.update(
        {
            META_SOURCE_FORMAT: fmt.name,
            META_SOURCE_FILE: candidate.path.name,
            META_SOURCE_SHA256: sha256_of(candidate.paths),
        }
    )

    output.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(output.parent, output.name)

    def write_verified(tmp: Path, part: dict[str, Any], where: Path) -> None:
        assert target.save is not None
        target.save(part, tmp, metadata)
        reloaded, _ = registry.load(target, Candidate(target.name, tmp), "cpu")
        verify_identical(part, reloaded, where)

    try:
        if max_shard_size is not None:
            files = write_sharded(tensors, output, max_shard_size, write_verified, force=force)
        else:
            atomic_write(output, lambda tmp: write_verified(tmp, tensors, output), replace=force)
            files = [output]
    except FileExistsError as exc:
        taken = exc.filename2 or exc.filename or output
        raise ConversionError(
            f"{taken} already exists (another convert placed it first); pass force=True (--force) to "
            "replace it"
        ) from exc
    except (ConversionError, PluginError):  # a failing plugin's save is named as such
        raise
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise ConversionNoSpaceError(
                f"{output}: not enough disk space to write it ({exc.strerror}); nothing was written. Free "
                f"some space in {output.parent} and retry",
                str(output),
            ) from exc
        raise ConversionError(f"{output}: writing failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise ConversionError(f"{output}: writing failed: {type(exc).__name__}: {exc}") from exc
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    logger.info(
        "converted %s (%s) to %s (%s): %d tensors, %d bytes",
        source,
        fmt.name,
        output,
        target.name,
        len(tensors),
        size,
    )
    target_name = "safetensors-sharded" if len(files) > 1 else target.name
    return ConversionReport(
        source, fmt.name, output, len(tensors), size, skipped, unshared, target_name, dtype, files
    )
