"""What made a clip's outputs, as a value a manifest records: the checkpoint's sha256 (cached, so a 400 MB
checkpoint is hashed once, not on every run), the model's resolution and precision, the program version.

The hash cache is one small JSON file in the user's cache folder
(``$XDG_CACHE_HOME/corridorkey/checkpoint-sha256.json``), keyed by the checkpoint file's absolute path, size
and modification time: a replaced file is hashed again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ckpt_formats.atomic import atomic_write

log = logging.getLogger(__name__)


def hash_cache_file() -> Path:
    """Where checkpoint hashes are cached (``$XDG_CACHE_HOME``, else ``~/.cache``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "corridorkey" / "checkpoint-sha256.json"


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def checkpoint_sha256(paths: tuple[Path, ...]) -> str:
    """sha256 of a checkpoint's file(s) in order, from the cache when the files have not changed since.

    Raises:
        OSError: a file cannot be read.
    """
    key = "+".join(_file_key(Path(p)) for p in paths)
    cache_file = hash_cache_file()
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    from ckpt_formats.convert import sha256_of

    log.info("hashing %s (once: the hash is cached in %s)", paths[0], cache_file)
    digest = sha256_of(tuple(Path(p) for p in paths))
    cache = {k: v for k, v in cache.items() if not k.startswith(key.split("|", 1)[0] + "|")}
    cache[key] = digest
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(cache, indent=1, sort_keys=True)
        atomic_write(cache_file, lambda tmp: tmp.write_text(text))
    except OSError as exc:  # a read-only home: hash again next time
        log.warning("cannot cache the checkpoint hash in %s (%s)", cache_file, exc.strerror or exc)
    return digest


def model_settings(engine: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings of a loaded engine that change its outputs, and facts recorded beside them.

    Args:
        engine: a :class:`~corridorkey_engine.engine.CorridorKeyEngine`.

    Returns:
        ``(settings, about)`` as :func:`checkpoint_settings`.
    """
    return checkpoint_settings(engine.checkpoint, engine.img_size, engine.dtype)


def checkpoint_settings(checkpoint: Any, img_size: int, dtype: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings an engine on ``checkpoint`` at ``img_size`` in ``dtype`` keys with (what ``--ray``'s
    driver records without loading an engine itself).

    Args:
        checkpoint: the :class:`ckpt_formats.ResolvedCheckpoint` (None: a model built in memory).
        img_size: the resolution the model runs at.
        dtype: the engine's torch dtype.

    Returns:
        ``(settings, about)``: settings compared on a rerun (checkpoint sha256, img_size, precision);
        about is recorded only (the checkpoint's path and format).
    """
    digest = checkpoint_sha256(tuple(checkpoint.paths)) if checkpoint is not None else "in-memory"
    settings: dict[str, Any] = {
        "checkpoint_sha256": digest,
        "img_size": int(img_size),
        "precision": str(dtype).removeprefix("torch."),
    }
    about: dict[str, Any] = {
        "checkpoint": str(checkpoint.path) if checkpoint is not None else None,
        "checkpoint_format": checkpoint.format.name if checkpoint is not None else None,
    }
    return settings, about


def program_version() -> str:
    """``ckpt-formats X.Y`` (the distribution ``corridorkey`` ships in)."""
    try:
        from importlib.metadata import version

        return f"ckpt-formats {version('ckpt-formats')}"
    except Exception:
        return "ckpt-formats unknown"
