"""ckpt_formats plugin: ``*.foreign`` files, a format this project does not know (installed by .ci/run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ckpt_formats import Candidate, CheckpointFormat, CheckpointLoadError, FormatRegistrar, hookimpl


def _load(candidate: Candidate, device: str) -> dict[str, Any]:
    raise CheckpointLoadError(f"{Path(candidate.path)}: the foreign format holds no tensors")


FOREIGN = CheckpointFormat(
    name="foreign",
    priority=60,
    globs=("*.foreign", "*.safetensors.foreign"),
    load=_load,
    hub_filenames=("model.foreign",),
    description="a third party's format (installed by .ci/run to prove the tests hold beside it)",
)


@hookimpl
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    register(FOREIGN)
