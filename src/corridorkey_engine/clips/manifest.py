"""The settings manifest of a clip's outputs: ``<output folder>/corridorkey.json``.

One small JSON file per clip output folder records, for each output (matte, fg, processed, comp), the
settings its frames are made with (model, keying, file type) and ``since_ns``: when outputs with these
settings began to be written, on the output file system's own clock. An output file counts as done only
when it is whole, its settings match the current ones, and it was written at or after ``since_ns``:

- a rerun with different settings records them with a new ``since_ns``, so every older frame is redone
  (by this run and by any later run or render-farm chunk);
- ``--overwrite`` marks the frames it is about to redo as stale (their modification time is set just
  before ``since_ns``), so a plain rerun after an interrupted ``--overwrite`` redoes the ones it missed.

The manifest holds no per-frame state, so processes keying different frame ranges of one clip can share
it: each rewrites it whole (atomically), keeping the ``since_ns`` of a record whose settings it shares.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ckpt_formats.atomic import atomic_write, temp_path_for

from .completeness import output_complete

log = logging.getLogger(__name__)

MANIFEST_NAME = "corridorkey.json"
MANIFEST_VERSION = 1


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest in ``out_dir`` (``{}`` when there is none; an unreadable one is logged and ignored,
    so its outputs count as made with unknown settings and are redone)."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable manifest (%s); its outputs will be redone", path, exc)
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("outputs"), dict) else {}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def changed_settings(recorded: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> list[str]:
    """``name: old -> new`` for each setting that differs; ``["no manifest record"]`` without one."""
    if not recorded or not isinstance(recorded.get("settings"), Mapping):
        return ["no manifest record"]
    old, new = _flat(recorded["settings"]), _flat(wanted)
    names = sorted(set(old) | set(new))
    return [
        f"{n.rsplit('.', 1)[-1]} {old.get(n)!r} -> {new.get(n)!r}" for n in names if old.get(n) != new.get(n)
    ]


def valid_since(
    manifest: Mapping[str, Any], wanted: Mapping[str, Mapping[str, Any]]
) -> dict[str, int | None]:
    """For each output in ``wanted`` (output -> its settings): the ``since_ns`` its files must reach to count
    as done, or None when the manifest records other settings (every frame of it is to be redone)."""
    records = manifest.get("outputs", {})
    out: dict[str, int | None] = {}
    for kind, settings in wanted.items():
        record = records.get(kind)
        same = isinstance(record, Mapping) and not changed_settings(record, settings)
        since = record.get("since_ns") if same and isinstance(record, Mapping) else None
        out[kind] = since if isinstance(since, int) else None
    return out


def output_current(path: Path, since_ns: int | None) -> bool:
    """True when ``path`` is a whole output written at or after ``since_ns`` (False for None)."""
    if since_ns is None or not output_complete(path):
        return False
    try:
        return os.stat(path).st_mtime_ns >= since_ns
    except OSError:
        return False


def file_system_now(folder: Path) -> int:
    """The current time in ns on the clock of ``folder``'s file system (a probe file's mtime), so remote
    storage and local clocks never disagree about which outputs are newer."""
    probe = temp_path_for(Path(folder) / "clock")
    probe.write_bytes(b"")
    try:
        return probe.stat().st_mtime_ns
    finally:
        probe.unlink()


def record_run(
    out_dir: Path,
    wanted: Mapping[str, Mapping[str, Any]],
    about: Mapping[str, Any],
    redo: Iterable[Path] = (),
) -> dict[str, list[str]]:
    """Record the settings of the outputs this run writes, before its first frame; ``out_dir`` exists.

    Args:
        out_dir: the clip's output folder.
        wanted: output name -> the settings its frames are made with now.
        about: facts recorded beside the settings but never compared (program version, checkpoint path).
        redo: existing output files this run rewrites whatever their state (``--overwrite``): marked stale
            first, so an interrupted run leaves them to be redone by a plain rerun.

    Returns:
        Output name -> the settings that changed (empty when its record already matched).
    """
    now = file_system_now(out_dir)
    manifest = read_manifest(out_dir)  # read again now: another process may have just recorded
    records = dict(manifest.get("outputs", {}))
    changes: dict[str, list[str]] = {}
    for kind, settings in wanted.items():
        old = records.get(kind)
        changes[kind] = changed_settings(old, settings)
        since = old.get("since_ns") if isinstance(old, Mapping) and not changes[kind] else None
        records[kind] = {"settings": settings, "since_ns": since if isinstance(since, int) else now}
    oldest = min((records[kind]["since_ns"] for kind in wanted), default=now)
    for path in redo:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        os.utime(path, ns=(st.st_atime_ns, min(st.st_mtime_ns, oldest - 1)))
    text = json.dumps(
        {"manifest": MANIFEST_VERSION, "about": dict(about), "outputs": records}, indent=1, sort_keys=True
    )
    atomic_write(Path(out_dir) / MANIFEST_NAME, lambda tmp: tmp.write_text(text + "\n"))
    return {k: v for k, v in changes.items() if v}
