"""Convert any loadable checkpoint to ``.safetensors``: cleaned, verified bit for bit, written atomically."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_write
from .errors import NO_SPACE_ERRNOS, CheckpointError, NoSpaceError, PluginError
from .formats import Candidate
from .registry import Registry, get_registry
from .statedict import clean_state_dict

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TARGET_FORMAT = "safetensors"
META_SOURCE_FORMAT = "ckpt_formats.source_format"
META_SOURCE_FILE = "ckpt_formats.source_file"
META_SOURCE_SHA256 = "ckpt_formats.source_sha256"


class ConversionError(CheckpointError):
    """The conversion was refused or failed; no output file was left behind."""


class ConversionNoSpaceError(NoSpaceError, ConversionError):
    """The output did not fit on the disk (also an ``OSError`` with ``errno.ENOSPC``); nothing was left."""


@dataclass
class ConversionReport:
    source: Path
    source_format: str
    output: Path
    tensors: int
    bytes: int
    skipped: list[str] = field(default_factory=list)
    unshared: list[str] = field(default_factory=list)


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
) -> ConversionReport:
    """Convert ``source`` (any format the registry can load) to the safetensors file ``output``.

    Unwraps ``state_dict``/``model`` wrappers, strips ``_orig_mod.``/``module.``, skips non-tensor entries
    (reported), un-shares tensors that share storage, records provenance in the metadata, writes to a
    temporary file, reloads it and checks it bit for bit, then renames it into place. On any failure no
    output file is left.
    """
    registry = registry or get_registry()
    source, output = Path(source), Path(output)
    if output.suffix != ".safetensors":
        raise ConversionError(f"{output}: the output must end in .safetensors")
    if output.exists() and not force:
        raise ConversionError(f"{output} already exists; pass force=True (--force) to replace it")
    fmt, candidate = registry.candidate_for_file(source, safe_only=safe_only)
    target = registry.get_format(TARGET_FORMAT)
    assert target.save is not None

    loaded, metadata = registry.load(fmt, candidate, "cpu")
    try:
        tensors, skipped = clean_state_dict(loaded)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"{source}: {exc}") from exc
    if not tensors:
        raise ConversionError(f"{source}: holds no tensors to convert")
    for name in skipped:
        logger.warning("%s: skipping non-tensor entry %r", source.name, name)
    unshared = _unshare(tensors)
    metadata = {str(k): str(v) for k, v in metadata.items()}
    metadata.update(
        {
            META_SOURCE_FORMAT: fmt.name,
            META_SOURCE_FILE: source.name,
            META_SOURCE_SHA256: sha256_of(candidate.paths),
        }
    )

    output.parent.mkdir(parents=True, exist_ok=True)

    def write_verified(tmp: Path) -> None:
        target.save(tensors, tmp, metadata)
        verify_identical(tensors, target.load(Candidate(target.name, tmp), "cpu"), output)

    try:
        atomic_write(output, write_verified)
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
    logger.info("converted %s (%s) to %s: %d tensors, %d bytes", source, fmt.name, output, len(tensors), size)
    return ConversionReport(source, fmt.name, output, len(tensors), size, skipped, unshared)
