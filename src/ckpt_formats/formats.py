"""The value types shared by the registry, its plugins and its callers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays out of `import ckpt_formats`
    import torch

    from .tensors import TensorReader

    StateDict = dict[str, torch.Tensor]
else:
    StateDict = dict


@dataclass(frozen=True)
class Candidate:
    """One loadable checkpoint found on disk: a format and the file(s) that make it up.

    ``path`` is the file discovery matched (for a sharded checkpoint: its index); ``paths`` is every file
    the checkpoint needs, ``path`` first. Single-file formats have ``paths == (path,)``.
    """

    format: str
    path: Path
    paths: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.paths:
            object.__setattr__(self, "paths", (self.path,))

    @property
    def name(self) -> str:
        return self.path.name


Loader = Callable[[Candidate, str], StateDict]
"""``load(candidate, device) -> state dict``: loads every tensor onto ``device``."""

Saver = Callable[[Mapping[str, Any], Path, Mapping[str, str]], None]
"""``save(state_dict, path, metadata)``: writes a checkpoint (conversion targets only)."""

MetadataReader = Callable[[Candidate], dict[str, str]]
"""``read_metadata(candidate) -> {str: str}``: cheap, without loading tensors."""

ContentCheck = Callable[[Path], bool]
"""``matches(path) -> bool``: does this file's content (magic bytes) look like the format?"""

Discoverer = Callable[[Path, list[Path]], list[Candidate]]
"""``discover(directory, matched_files) -> candidates``: groups multi-file checkpoints."""

TensorOpener = Callable[[Candidate], "TensorReader"]
"""``open_tensors(candidate) -> TensorReader``: the tensors listed from the headers, read one at a time."""

CompanionLister = Callable[[Path], list[str]]
"""``companions(path) -> names``: other files (relative to ``path``'s folder) that ``path`` needs,
read from ``path`` itself (a sharded index lists its shards). Used by the hub fetch."""


@dataclass(frozen=True)
class CheckpointFormat:
    """A checkpoint format, as a plugin declares it.

    Attributes:
        name: unique name (``safetensors``, ``pickle``, ``npz``...).
        priority: higher wins when several formats have candidates in one directory.
        globs: discovery patterns, matched against file names in the directory (not recursive).
        load: ``(candidate, device) -> dict[str, torch.Tensor]``.
        exclude_globs: file names matching these are never candidates of this format.
        save: optional ``(state_dict, path, metadata)``; a format with one can be a conversion target.
        matches: optional content check on the file's first bytes; when it says no, the registry
            identifies what the file really is and refuses to load it.
        read_metadata: optional ``candidate -> {str: str}`` (safetensors' ``__metadata__``).
        hub_filenames: file names to ask a hub for, in order, when nothing is local.
        discover: optional grouping of matched files into multi-file candidates (default: one each).
        companions: optional; the files a downloaded primary file needs beside it (hub fetch).
        open_tensors: optional ``candidate -> TensorReader`` (:mod:`ckpt_formats.tensors`): every tensor
            listed from the headers and read one at a time; ``inspect`` and ``diff`` then never load the
            whole checkpoint (without it they do, through ``load``).
        executes_code: True when loading can run code from the file (pickle); removed by ``safe_only``.
        description: one line for ``ckpt-formats list``.

    The registry calls every function of a registered format through a guard: raise a
    :class:`~ckpt_formats.CheckpointError` (or let an ``OSError`` about the file through) to report a
    problem; anything else is reported as a failure of the plugin (:class:`~ckpt_formats.PluginError`).
    """

    name: str
    priority: int
    globs: tuple[str, ...]
    load: Loader
    exclude_globs: tuple[str, ...] = ()
    save: Saver | None = None
    matches: ContentCheck | None = None
    read_metadata: MetadataReader | None = None
    hub_filenames: tuple[str, ...] = ()
    discover: Discoverer | None = None
    companions: CompanionLister | None = None
    open_tensors: TensorOpener | None = None
    executes_code: bool = False
    description: str = ""
    # Filled in by the registry: which plugin (and distribution) declared the format.
    plugin: str = field(default="", compare=False)
    distribution: str | None = field(default=None, compare=False)


@dataclass
class ResolvedCheckpoint:
    """What :func:`ckpt_formats.resolve` hands back."""

    format: CheckpointFormat
    candidate: Candidate
    state_dict: StateDict
    metadata: dict[str, str]
    shadowed: list[Candidate] = field(default_factory=list)
    downloaded: bool = False

    @property
    def path(self) -> Path:
        return self.candidate.path

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.candidate.paths
