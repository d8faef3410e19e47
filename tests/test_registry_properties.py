"""Property-based: over random directory contents the choice is deterministic and follows the priorities."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from conftest import write_pth, write_safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_formats import AmbiguousCheckpointError, CheckpointNotFoundError, Registry

STEMS = ["model", "a", "CorridorKey_v1.0", "z-9"]
EXTENSIONS = {"safetensors": "safetensors", "pth": "pickle", "pt": "pickle", "ckpt": "pickle", "npz": "npz"}
DISTRACTORS = ["README.md", "config.json", "weights.bin", "model.tflite"]
PRIORITY = {"safetensors": 100, "npz": 50, "pickle": 0}

REGISTRY = Registry()

files_strategy = st.tuples(
    st.sets(st.tuples(st.sampled_from(STEMS), st.sampled_from(sorted(EXTENSIONS))), max_size=6),
    st.sets(st.sampled_from(DISTRACTORS), max_size=3),
    st.booleans(),
)


def _populate(directory: Path, checkpoints, distractors) -> None:
    for stem, ext in checkpoints:
        path = directory / f"{stem}.{ext}"
        if ext == "safetensors":
            write_safetensors(path)
        elif ext == "npz":
            np.savez(path, w=np.ones(2, dtype=np.float32))
        else:
            write_pth(path)
    for name in distractors:
        (directory / name).write_text("not a checkpoint")


def _outcome(directory: Path, safe_only: bool):
    try:
        got = REGISTRY.resolve(directory, safe_only=safe_only)
        return ("ok", got.format.name, got.path.name)
    except AmbiguousCheckpointError:
        return ("ambiguous",)
    except CheckpointNotFoundError:
        return ("none",)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files_strategy)
def test_choice_is_deterministic_and_consistent_with_priorities(example):
    checkpoints, distractors, safe_only = example
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        _populate(Path(a), sorted(checkpoints), distractors)
        _populate(Path(b), sorted(checkpoints, reverse=True), distractors)  # other creation order
        outcome = _outcome(Path(a), safe_only)
        assert _outcome(Path(b), safe_only) == outcome
        assert _outcome(Path(a), safe_only) == outcome

    by_format: dict[str, list[str]] = {}
    for stem, ext in checkpoints:
        fmt = EXTENSIONS[ext]
        if not (safe_only and fmt == "pickle"):
            by_format.setdefault(fmt, []).append(f"{stem}.{ext}")
    if not by_format:
        assert outcome == ("none",)
        return
    best = max(by_format, key=PRIORITY.__getitem__)
    if len(by_format[best]) > 1:
        assert outcome == ("ambiguous",)
    else:
        assert outcome == ("ok", best, by_format[best][0])
