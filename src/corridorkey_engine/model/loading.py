"""From a checkpoint directory to a ready GreenFormer, without random initialisation or a second copy.

``resolve()`` (the registry) picks and loads the checkpoint onto the CPU — memory-mapped for safetensors
and zip ``.pth`` files, so the tensors are the page cache's pages, not a copy. The format-blind cleanup
(wrappers, ``_orig_mod.``/``module.`` prefixes, ``pos_embed`` resampling) follows, then the model is built on
the meta device and each tensor is assigned after one ``.to(device, dtype)``: a no-op on the CPU in
float32, one host-to-device copy in the target dtype otherwise.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import CheckpointMismatchError, ConfigError
from .config import GreenFormerConfig
from .network import GreenFormer, build_greenformer
from .source import CheckpointSource

if TYPE_CHECKING:
    from ckpt_formats import ResolvedCheckpoint

logger = logging.getLogger(__name__)

POS_EMBED_KEY = "encoder.model.pos_embed"


@dataclass
class LoadReport:
    """What loading found: the keys the model lacked or did not know, and what was adapted."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # non-tensor entries (epoch, optimizer state, ...)
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A GreenFormer in eval mode on its device and dtype, and where its weights came from."""

    model: GreenFormer
    config: GreenFormerConfig
    report: LoadReport
    checkpoint: ResolvedCheckpoint | None = None  # path, format, metadata; its state_dict is emptied


def resample_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubic re-interpolation of a square ``[1, N, C]`` token grid to ``grid × grid`` tokens."""
    from timm.layers import resample_abs_pos_embed

    old = math.isqrt(pos_embed.shape[1])
    if old * old != pos_embed.shape[1]:
        raise CheckpointMismatchError(
            f"{POS_EMBED_KEY} has {pos_embed.shape[1]} tokens, not a square grid: cannot resize it"
        )
    # antialias=False: the interpolation upstream CorridorKey uses, so outputs match it at any img_size.
    return resample_abs_pos_embed(
        pos_embed, new_size=[grid, grid], old_size=[old, old], num_prefix_tokens=0, antialias=False
    )


def prepare_state_dict(
    checkpoint: Any, model: torch.nn.Module, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The format-blind cleanup: unwrap ``state_dict``/``model`` wrappers, strip ``_orig_mod.`` and
    ``module.``, drop non-tensor entries, and resample ``pos_embed`` to the model's token grid.

    Compares the result with ``model``'s own state dict (a meta model is fine): the report lists missing
    and unexpected keys; a shape that differs (other than ``pos_embed``'s token count) raises
    :class:`CheckpointMismatchError` naming ``source``.
    """
    from ckpt_formats.statedict import clean_state_dict

    try:
        tensors, skipped = clean_state_dict(checkpoint)
    except (TypeError, ValueError) as exc:
        raise CheckpointMismatchError(f"{source}: not a GreenFormer state dict: {exc}") from exc
    if skipped:
        logger.info("%s: ignoring %d non-tensor entries (%s)", source, len(skipped), ", ".join(skipped[:5]))
    expected = model.state_dict()
    report = LoadReport(
        missing=[k for k in expected if k not in tensors],
        unexpected=[k for k in tensors if k not in expected],
        skipped=skipped,
    )
    wrong = []
    for key, want in expected.items():
        have = tensors.get(key)
        if have is None or have.shape == want.shape:
            continue
        if key.endswith("pos_embed") and have.ndim == 3 and have.shape[2] == want.shape[2]:
            tensors[key] = resample_pos_embed(have, math.isqrt(want.shape[1]))
            report.resized[key] = (tuple(have.shape), tuple(want.shape))
            logger.info("%s: resampled %s from %s to %s tokens", source, key, have.shape[1], want.shape[1])
        else:
            wrong.append(f"{key}: checkpoint {list(have.shape)}, model {list(want.shape)}")
    if wrong:
        raise CheckpointMismatchError(
            f"{source}: {len(wrong)} tensors have the wrong shape for this GreenFormer config "
            f"({'; '.join(wrong[:3])}{' …' if len(wrong) > 3 else ''}); the checkpoint is for another "
            "architecture: check its config metadata or pass the matching config"
        )
    return tensors, report


def _materialise_missing(
    model: torch.nn.Module, missing: Sequence[str], device: torch.device, dtype: torch.dtype
) -> None:
    """Give the tensors a checkpoint lacks real storage and their module's default initialisation."""
    owners: dict[str, torch.nn.Module] = {}
    for key in missing:
        owner_name = key.rpartition(".")[0]
        owners[owner_name] = model.get_submodule(owner_name)
    for name, module in owners.items():
        module.to_empty(device=device, recurse=False)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            with torch.no_grad():
                for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
                    tensor.zero_()
            logger.warning("%s: no default initialisation; its missing tensors are zeros", name or "model")
        module.to(dtype=dtype)


def _some(keys: Sequence[str]) -> str:
    """``"12 (a, b, c …)"``: a count and the first few names."""
    shown = ", ".join(keys[:3]) + (" …" if len(keys) > 3 else "")
    return f"{len(keys)} ({shown})" if keys else "0"


def assign_weights(
    model: torch.nn.Module,
    tensors: dict[str, torch.Tensor],
    report: LoadReport,
    *,
    device: torch.device,
    dtype: torch.dtype,
    strict: bool = True,
    source: str = "checkpoint",
) -> None:
    """Move each tensor once to ``device``/``dtype`` (floating tensors only) and assign it to the meta
    ``model``. ``tensors`` is consumed. In strict mode a missing or unexpected key raises
    :class:`CheckpointMismatchError`; otherwise both are logged and missing tensors get their default
    initialisation."""
    if report.missing or report.unexpected:
        detail = f"{_some(report.missing)} missing, {_some(report.unexpected)} unexpected"
        if strict:
            raise CheckpointMismatchError(
                f"{source}: does not match the GreenFormer: {detail}. Check that this is a CorridorKey "
                "checkpoint for this config, or load with strict=False to accept it"
            )
        logger.warning("%s: loading non-strictly: %s", source, detail)
        for key in report.unexpected:
            del tensors[key]
        _materialise_missing(model, report.missing, device, dtype)
    for key in list(tensors):
        tensor = tensors.pop(key)
        target = dtype if tensor.is_floating_point() else tensor.dtype
        tensors[key] = tensor.to(device=device, dtype=target)
    model.load_state_dict(tensors, strict=False, assign=True)
    tensors.clear()
    model.requires_grad_(False)
    model.eval()


def load_greenformer(
    checkpoint: str | os.PathLike[str] | CheckpointSource | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: GreenFormerConfig | None = None,
    img_size: int | None = None,
    strict: bool = True,
    **source_options: Any,
) -> LoadedModel:
    """Resolve a checkpoint through the registry and return the GreenFormer it holds, ready on ``device``
    in ``dtype``.

    Args:
        checkpoint: a checkpoint folder, a :class:`CheckpointSource`, or None for
            :meth:`CheckpointSource.default` (the published weights, fetched on first use).
        device, dtype: where the weights end up.
        config: the architecture; default the one in the checkpoint's metadata, else CorridorKey v1.0.
        img_size: overrides the config's resolution (``pos_embed`` is resampled).
        strict: refuse missing or unexpected keys.
        source_options: :class:`CheckpointSource` fields to replace (``hub``, ``exclude``, ``select``,
            ``safe_only``, ``formats``).

    Returns:
        The :class:`LoadedModel`.

    Raises:
        ckpt_formats.CheckpointError: the registry's errors, unchanged; :class:`CheckpointMismatchError`
            when the tensors do not fit the config.
    """
    device = torch.device(device)
    resolved: ResolvedCheckpoint = CheckpointSource.of(checkpoint, **source_options).resolve()
    return load_resolved(
        resolved, device=device, dtype=dtype, config=config, img_size=img_size, strict=strict
    )


def load_resolved(
    resolved: ResolvedCheckpoint,
    *,
    device: torch.device,
    dtype: torch.dtype,
    config: GreenFormerConfig | None = None,
    img_size: int | None = None,
    strict: bool = True,
) -> LoadedModel:
    """:func:`load_greenformer` for a checkpoint the registry has already resolved."""
    source = f"{resolved.path} ({resolved.format.name})"
    if config is None:
        try:
            config = GreenFormerConfig.from_metadata(resolved.metadata)
        except ConfigError as exc:
            raise CheckpointMismatchError(f"{source}: {exc}") from exc
    config = config.with_img_size(img_size)
    model = build_greenformer(config)
    tensors, report = prepare_state_dict(resolved.state_dict, model, source)
    resolved.state_dict = {}  # the tensors now live in the model only
    assign_weights(model, tensors, report, device=device, dtype=dtype, strict=strict, source=source)
    logger.info("GreenFormer ready from %s on %s (%s, img_size %d)", source, device, dtype, config.img_size)
    return LoadedModel(model, config, report, resolved)


def save_checkpoint(
    model: GreenFormer, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``model``'s weights as a ``.safetensors`` file whose metadata carries its config (plus
    ``metadata``), atomically: a temporary file beside it (outside the discovery globs), then a rename."""
    from safetensors.torch import save_file

    from ckpt_formats.atomic import atomic_write, write_in_private_folder

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a GreenFormer checkpoint is written as .safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {**(metadata or {}), **model.config.to_metadata()}

    def write(tmp: Path) -> None:  # safetensors' own temporary file lands in a folder of ours, never beside
        write_in_private_folder(tmp, lambda inner: save_file(tensors, str(inner), metadata=metadata))

    atomic_write(path, write)
    return path
