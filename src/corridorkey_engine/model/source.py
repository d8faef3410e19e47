"""Where the engine's weights come from: one :class:`CheckpointSource` value, and the published defaults.

A source is the checkpoint folder plus every setting of :func:`ckpt_formats.resolve` (hub, formats,
exclude, select, safe_only). It travels whole from the caller (``corridorkey infer``, ``CorridorKeyEngine``)
through :func:`~corridorkey_engine.model.loading.load_greenformer` to the registry, so a new resolution
setting is a new field here (and, if the CLI offers it, a flag). :meth:`CheckpointSource.default` is what
``corridorkey infer`` uses without options: the CorridorKey v1.0 weights from the hub, cached in
:func:`default_checkpoint_dir`. This module imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ckpt_formats import HubSource, ResolvedCheckpoint

DEFAULT_HUB_REPO = "nikopueringer/CorridorKey_v1.0"
"""Where the published CorridorKey v1.0 weights live; fetched into the checkpoint folder when it is empty."""
HUB_FILENAMES = {
    "safetensors": ["CorridorKey_v1.0.safetensors"],
    "pickle": ["CorridorKey_v1.0.pth"],  # DEPRECATED: remove after .pth sunset
}
"""The file names of :data:`DEFAULT_HUB_REPO`'s weights, per format. Any other hub repository is searched
the Hugging Face way, with each format's default names (``model.safetensors.index.json``,
``model.safetensors``, then the pickle names)."""
CHECKPOINT_DIR_ENV = "CORRIDORKEY_CHECKPOINT_DIR"


def default_checkpoint_dir() -> Path:
    """``$CORRIDORKEY_CHECKPOINT_DIR``, else ``$XDG_CACHE_HOME/corridorkey/CorridorKey_v1.0`` (~/.cache).

    Returns:
        The folder the default weights are resolved from (and downloaded into on first use).
    """
    explicit = os.environ.get(CHECKPOINT_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "corridorkey" / "CorridorKey_v1.0"


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint folder and how the registry resolves it.

    Attributes:
        checkpoint_dir: the folder holding the checkpoint (any registered format); None means
            :func:`default_checkpoint_dir`.
        hub: where to fetch the checkpoint from when the folder has none: a :class:`ckpt_formats.HubSource`,
            or a repository id (:data:`DEFAULT_HUB_REPO` brings its known file names); None never downloads.
        formats, exclude, select, safe_only: passed to :func:`ckpt_formats.resolve`.
    """

    checkpoint_dir: str | os.PathLike[str] | None = None
    hub: HubSource | str | None = None
    formats: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    select: str | None = None
    safe_only: bool | None = None

    @classmethod
    def default(cls, **overrides: Any) -> CheckpointSource:
        """What ``corridorkey infer`` resolves without options: the default folder, filled from
        :data:`DEFAULT_HUB_REPO` on first use. ``overrides`` replace fields (e.g. ``safe_only=True``)."""
        return replace(cls(hub=DEFAULT_HUB_REPO), **overrides)

    @classmethod
    def of(
        cls, checkpoint: str | os.PathLike[str] | CheckpointSource | None = None, **overrides: Any
    ) -> CheckpointSource:
        """A source from a folder (or a source, or None for :meth:`default`), with fields replaced.

        Raises:
            TypeError: an override names no field of :class:`CheckpointSource`.
        """
        if isinstance(checkpoint, CheckpointSource):
            source = checkpoint
        elif checkpoint is None:
            source = cls.default()
        else:
            source = cls(checkpoint_dir=checkpoint)
        return replace(source, **overrides) if overrides else source

    @property
    def directory(self) -> Path:
        """The checkpoint folder (the default one when none was given)."""
        return Path(self.checkpoint_dir) if self.checkpoint_dir is not None else default_checkpoint_dir()

    def hub_source(self) -> HubSource | None:
        """:attr:`hub` as a :class:`ckpt_formats.HubSource` (None: never download).

        Raises:
            ValueError: ``hub`` is not a valid repository id.
        """
        if self.hub is None or not isinstance(self.hub, str):
            return self.hub
        from ckpt_formats.hub import HubSource

        filenames = HUB_FILENAMES if self.hub == DEFAULT_HUB_REPO else None
        return HubSource(self.hub, filenames=filenames)

    def resolve(self) -> ResolvedCheckpoint:
        """Resolve (and fetch, if needed) the checkpoint onto the CPU through the registry.

        Returns:
            The registry's :class:`ckpt_formats.ResolvedCheckpoint`.

        Raises:
            ckpt_formats.CheckpointError: the registry's errors, unchanged.
        """
        import ckpt_formats

        own = ("checkpoint_dir", "hub")  # the rest are resolve()'s keywords, by name
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in own}
        return ckpt_formats.resolve(self.directory, device="cpu", hub=self.hub_source(), **options)
