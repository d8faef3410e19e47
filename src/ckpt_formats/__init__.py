"""ckpt_formats: a pluggable, safe checkpoint-format registry.

Applications call :func:`resolve` (or :func:`get_registry`); plugins declare formats. Importing this package
is cheap: torch, safetensors and huggingface_hub are imported only by the functions that load, save or
download, and plugins' entry points are loaded on first use of the registry.

Plugin author's quick start
---------------------------

A plugin is a module with one hook implementation, listed in the ``ckpt_formats`` entry-point group of its
distribution's ``pyproject.toml``::

    [project.entry-points.ckpt_formats]
    st-alias = "my_plugin"

``my_plugin.py``, a complete plugin (safetensors files under the ``.st`` extension)::

    from ckpt_formats import Candidate, CheckpointFormat, FormatRegistrar, hookimpl
    from ckpt_formats.sniff import looks_like_safetensors


    def load(candidate: Candidate, device: str) -> dict:
        from safetensors.torch import load_file  # heavy imports inside the function: listing stays fast

        return load_file(candidate.path, device=device)


    ST_ALIAS = CheckpointFormat(
        name="st-alias",
        priority=90,  # safetensors is 100, pickle 0: the highest priority with a candidate wins
        globs=("*.st",),
        load=load,
        matches=looks_like_safetensors,  # content check before load; a mismatch is a clear error
        description="safetensors under the .st extension",
    )


    @hookimpl
    def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
        register(ST_ALIAS)

``ckpt-formats list`` shows the new format (or the plugin as broken, with the reason); in tests, register
the module at run time with ``ckpt_formats.testing.isolated_registry(my_plugin)`` (a registry with no
installed plugin but yours; the kit also has tiny state dicts, writers and ``assert_same_tensors``). The
hooks are documented in :mod:`ckpt_formats.hookspecs`, the fields in :class:`CheckpointFormat`, the content
checks a plugin may reuse in :mod:`ckpt_formats.sniff`; docs/plugin-authors.md has the whole guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._registrar import FormatRegistrar
from .errors import (
    AmbiguousCheckpointError,
    CheckpointAccessError,
    CheckpointContentError,
    CheckpointDownloadError,
    CheckpointError,
    CheckpointLoadError,
    CheckpointNotFoundError,
    DeviceUnavailableError,
    DownloadNoSpaceError,
    HubAnswerError,
    NoSpaceError,
    PluginError,
    PluginLoadError,
    UnsafeNameError,
)
from .formats import Candidate, CheckpointFormat, ResolvedCheckpoint
from .hookspecs import hookimpl
from .registry import Registry, get_registry, resolve

if TYPE_CHECKING:
    from .hub import HubSource

__all__ = [
    "AmbiguousCheckpointError",
    "Candidate",
    "CheckpointAccessError",
    "CheckpointContentError",
    "CheckpointDownloadError",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointLoadError",
    "CheckpointNotFoundError",
    "DeviceUnavailableError",
    "DownloadNoSpaceError",
    "FormatRegistrar",
    "HubAnswerError",
    "HubSource",
    "NoSpaceError",
    "PluginError",
    "PluginLoadError",
    "Registry",
    "ResolvedCheckpoint",
    "UnsafeNameError",
    "get_registry",
    "hookimpl",
    "resolve",
]


def __getattr__(name: str) -> Any:
    if name == "HubSource":  # the hub module is light, but keep it off the import path until asked for
        from .hub import HubSource

        return HubSource
    raise AttributeError(f"module 'ckpt_formats' has no attribute {name!r}")
