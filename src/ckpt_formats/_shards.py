"""Write a sharded safetensors set in the Hugging Face layout, as one unit.

``DIR/model.safetensors`` with a maximum shard size becomes ``DIR/model-00001-of-0000N.safetensors``... plus
``DIR/model.safetensors.index.json`` (``{"metadata": {"total_size": ...}, "weight_map": {tensor: shard}}``),
split by ``huggingface_hub.split_torch_state_dict_into_shards`` exactly as ``transformers`` splits. Every file
is written to a hidden temporary and verified first; then the shards are placed and the index last, so a
reader never sees an index whose shards are missing. On failure nothing stays under the final names.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import atomic_write, publish_durably, sweep_temps, temp_path_for, writing_in

logger = logging.getLogger(__name__)

INDEX_SUFFIX = ".index.json"

WriteVerified = Callable[[Path, dict[str, Any], Path], None]
"""``write_verified(tmp, tensors, final_path)``: save ``tensors`` to ``tmp`` and check them bit for bit."""


def index_name_for(output: Path) -> str:
    """``model.safetensors`` -> ``model.safetensors.index.json``."""
    return output.name + INDEX_SUFFIX


def _shard_pattern(stem: str) -> re.Pattern[str]:
    return re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}\.safetensors")


def write_sharded(
    tensors: dict[str, Any],
    output: Path,
    max_shard_size: int,
    write_verified: WriteVerified,
    *,
    force: bool = False,
) -> list[Path]:
    """Write ``tensors`` as the sharded set of ``output`` (a single ``output`` when one shard holds them all).

    Args:
        tensors: contiguous tensors that share no storage, in the order they are to be sharded.
        output: ``DIR/NAME.safetensors``; the shards are ``DIR/NAME-0000i-of-0000N.safetensors``.
        max_shard_size: bytes per shard at most (a larger tensor gets a shard of its own).
        write_verified: writes and checks one file (see :data:`WriteVerified`).
        force: replace existing files, and afterwards remove what an earlier checkpoint of that name left
            (``output`` or the index, and shards the new set does not list), so the new one is what
            discovery finds. Without it each file is claimed with ``os.link``.

    Returns:
        The files placed: the shards in order, then the index.

    Raises:
        FileExistsError: without ``force``, a file of the set exists (nothing of this set is left).
        Whatever ``write_verified`` raises; nothing is left under the final names.
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    stem = output.name[: -len(".safetensors")]
    split = split_torch_state_dict_into_shards(
        tensors, filename_pattern=stem + "{suffix}.safetensors", max_shard_size=max_shard_size
    )
    folder = output.parent
    index = folder / index_name_for(output)
    if not split.is_sharded:  # the Hugging Face convention: one shard is a plain file, without an index
        atomic_write(output, lambda tmp: write_verified(tmp, tensors, output), replace=force)
        if force:  # an earlier set would outrank the new file: its index first, then its shards
            _remove_replaced(folder, stem, [index], keep={output}, by=output.name)
        return [output]
    for name in [*split.filename_to_tensors, index.name]:
        sweep_temps(folder, name)
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    with writing_in(folder):
        try:
            for filename, names in split.filename_to_tensors.items():
                dest = folder / filename
                staged.append((temp_path_for(dest), dest))
                write_verified(staged[-1][0], {n: tensors[n] for n in names}, dest)
            staged.append((temp_path_for(index), index))
            content = {
                "metadata": {"total_size": split.metadata["total_size"]},
                "weight_map": split.tensor_to_filename,
            }
            staged[-1][0].write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            for tmp, dest in staged:  # shards first, the index last
                publish_durably(tmp, dest, replace=force)
                placed.append(dest)
        except BaseException:
            for dest in placed:  # shards without their index must not stay behind
                dest.unlink(missing_ok=True)
            raise
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
    if force:
        _remove_replaced(folder, stem, [output], keep=set(placed), by="the new sharded set")
    logger.info("wrote %s: %d shards and %s", output, len(placed) - 1, index.name)
    return placed


def _remove_replaced(folder: Path, stem: str, first: list[Path], *, keep: set[Path], by: str) -> None:
    """After a forced write: remove ``first`` (an earlier single file or index), then the shards of an
    earlier set of ``stem``, except the files just written (``keep``); ``by`` names what replaced them."""
    pattern = _shard_pattern(stem)
    old = sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))
    for path in [*first, *old]:
        if path not in keep and path.is_file():
            logger.info("removing %s, replaced by %s", path.name, by)
            path.unlink(missing_ok=True)
