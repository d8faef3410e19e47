"""ckpt_formats plugin: NumPy ``.npz`` checkpoints (one array per tensor name), never unpickled."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckpt_formats import Candidate, CheckpointFormat, CheckpointLoadError, FormatRegistrar, hookimpl


def _matches(path: Path) -> bool:
    """A zip archive whose members are all ``.npy`` arrays (a torch .pth zip has ``data.pkl`` instead)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


def _load(candidate: Candidate, device: str) -> dict[str, Any]:
    import numpy as np
    import torch

    try:
        with np.load(candidate.path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:  # object arrays need pickle: refused
        raise CheckpointLoadError(
            f"{candidate.path}: holds object arrays that would need pickle to load; refused ({exc})"
        ) from exc
    return {name: torch.from_numpy(np.ascontiguousarray(a)).to(device) for name, a in arrays.items()}


def _save(state_dict: Mapping[str, Any], path: Path, metadata: Mapping[str, str]) -> None:
    import numpy as np

    with open(path, "wb") as f:  # np.savez would append ".npz" to a temporary name
        np.savez(f, **{name: t.detach().cpu().numpy() for name, t in state_dict.items()})
        f.flush()
        os.fsync(f.fileno())


NPZ = CheckpointFormat(
    name="npz",
    priority=50,
    globs=("*.npz",),
    load=_load,
    save=_save,
    matches=_matches,
    hub_filenames=("model.npz",),
    description="NumPy .npz archive, loaded with allow_pickle=False (example third-party plugin)",
)


@hookimpl
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    register(NPZ)
