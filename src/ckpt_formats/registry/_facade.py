"""The :class:`Registry` facade and :func:`resolve`: the calls applications make.

The top of the registry's layers: it delegates plugin loading to :mod:`ckpt_formats._plugins`, the reading of
a directory to :mod:`ckpt_formats._discovery` and downloads to :mod:`ckpt_formats.hub`; what it adds is the
policy (restriction, safe-only, disabled formats), loading with a clear error, and the resolve rules
(including the hub fetch when nothing is local).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._discovery import Discovery, discover, matches_format, refused_names
from .._plugins import DISABLE_ENV, BrokenPlugin, Plugins, disabled_from_env, safe_only_from_env
from ..errors import (
    CheckpointDownloadError,
    CheckpointError,
    CheckpointLoadError,
    CheckpointNotFoundError,
    NoSpaceError,
    PluginError,
)
from ..formats import Candidate, CheckpointFormat, ResolvedCheckpoint
from ._loading import load_checked, open_checked

if TYPE_CHECKING:
    from ..hub import HubSource
    from ..tensors import TensorReader

logger = logging.getLogger("ckpt_formats.registry")


class Registry:
    """Formats declared by plugins. Entry points are loaded once, on first use."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._plugins = Plugins()
        self._load_entry_points = load_entry_points
        self._loaded = False

    # -- plugins -------------------------------------------------------------------------------------

    def _ensure_loaded(self) -> Plugins:
        if not self._loaded:
            self._loaded = True
            if self._load_entry_points:
                self._plugins.load_entry_points()
        return self._plugins

    def register(self, plugin: object, name: str | None = None, *, distribution: str | None = None) -> str:
        """Register a plugin object or module at run time (applications, tests).

        Args:
            plugin: a module or object with ``@hookimpl`` functions.
            name: the plugin's name (default: its ``__name__``, else its class name).
            distribution: the installed distribution it comes from (``ckpt_formats.testing`` passes it for
                entry points it loads); None for a plugin defined at run time.

        Returns:
            The name it was registered under.

        Raises:
            PluginError: the plugin implements a hook no spec declares, or declares anything invalid; the
                registry is then unchanged.
        """
        plugins = self._ensure_loaded()
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        plugins.add(plugin, name, distribution)
        return name

    def unregister(self, name: str) -> None:
        """Remove the plugin registered as ``name`` and its formats.

        Raises:
            PluginError: no plugin of that name is registered.
        """
        self._ensure_loaded().remove(name)

    @property
    def broken_plugins(self) -> list[BrokenPlugin]:
        """The installed plugins that were skipped, with the reason."""
        return list(self._ensure_loaded().broken.values())

    # -- formats -------------------------------------------------------------------------------------

    def all_formats(self) -> list[CheckpointFormat]:
        """Every registered format, highest priority first (ties by name), policy not applied."""
        return sorted(self._ensure_loaded().formats.values(), key=lambda f: (-f.priority, f.name))

    def get_format(self, name: str) -> CheckpointFormat:
        """The registered format called ``name``.

        Raises:
            CheckpointError: no format has that name (the message lists the registered ones).
        """
        for fmt in self.all_formats():
            if fmt.name == name:
                return fmt
        known = ", ".join(f.name for f in self.all_formats()) or "none"
        raise CheckpointError(f"unknown checkpoint format {name!r} (registered: {known})")

    def formats(
        self, *, names: Sequence[str] | None = None, safe_only: bool | None = None
    ) -> list[CheckpointFormat]:
        """The formats allowed by the caller's restriction and the safety policy, highest priority first.

        Args:
            names: only these format names (None: all).
            safe_only: drop formats that can execute code (None: ``CKPT_FORMATS_SAFE_ONLY``).

        Returns:
            The allowed formats; ``CKPT_FORMATS_DISABLE`` removes formats and plugins too.

        Raises:
            CheckpointError: a name in ``names`` is not a registered format.
        """
        safe = safe_only_from_env() if safe_only is None else safe_only
        disabled = disabled_from_env()
        allowed = []
        if names is not None:
            for name in names:
                self.get_format(name)  # unknown names are an error, not a silent no-op
        for fmt in self.all_formats():
            if names is not None and fmt.name not in names:
                continue
            if fmt.name in disabled or fmt.plugin in disabled:
                continue
            if safe and fmt.executes_code:
                continue
            allowed.append(fmt)
        return allowed

    def format_for_file(self, path: Path) -> CheckpointFormat:
        """The highest-priority format whose globs match ``path``'s name (for convert and inspect)."""
        matching = [f for f in self.all_formats() if matches_format(path.name, f)]
        if not matching:
            globs = "; ".join(f"{f.name}: {', '.join(f.globs)}" for f in self.all_formats())
            raise CheckpointNotFoundError(f"{path}: no registered format matches this file name ({globs})")
        return matching[0]

    def candidate_for_file(
        self, path: Path, *, safe_only: bool | None = None
    ) -> tuple[CheckpointFormat, Candidate]:
        """The format and candidate for one named file (convert, inspect), with the policy applied.

        A folder names the one checkpoint it holds (a distributed checkpoint, a sharded set), chosen by the
        resolve rules.
        """
        path = Path(path)
        found: list[Candidate] = []
        if path.is_dir():
            fmt, chosen, _ = self.discover(path, safe_only=False).choose()
            found = [chosen]
        elif path.is_file():
            fmt = self.format_for_file(path)
        else:
            raise CheckpointNotFoundError(f"{path}: no such file")
        if fmt.name not in {f.name for f in self.formats(safe_only=safe_only)}:
            raise CheckpointLoadError(
                f"{path}: the {fmt.name} format is disabled by the safety policy (safe-only or {DISABLE_ENV})"
            )
        if not found and fmt.discover is not None:
            found = fmt.discover(path.parent, [path])
        return fmt, found[0] if found else Candidate(fmt.name, path)

    # -- discovery and loading -----------------------------------------------------------------------

    def discover(
        self,
        directory: str | os.PathLike[str],
        *,
        formats: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        select: str | Sequence[str] | None = None,
        safe_only: bool | None = None,
    ) -> Discovery:
        """Find every candidate of every allowed format in ``directory`` (not recursive).

        Args: as :meth:`resolve`.

        Returns:
            A :class:`Discovery`; its :meth:`~Discovery.choose` applies the resolve rules.

        Raises:
            CheckpointNotFoundError: ``directory`` does not exist or is not a directory.
        """
        directory = Path(directory)
        allowed = self.formats(names=formats, safe_only=safe_only)
        if not directory.is_dir():
            what = "is not a directory" if directory.exists() else "does not exist"
            raise CheckpointNotFoundError(f"checkpoint directory {directory} {what}")
        return discover(
            directory, allowed, self.all_formats(), restricted_to=formats, exclude=exclude, select=select
        )

    def load(
        self, fmt: CheckpointFormat, candidate: Candidate, device: str = "cpu"
    ) -> tuple[Any, dict[str, str]]:
        """Check the device and the candidate's content, then load it with its plugin. Never tries another
        format.

        Returns:
            The state dict on ``device`` and the format's metadata.

        Raises:
            DeviceUnavailableError: ``device`` is not available in this torch build or machine.
            CheckpointContentError: a file is missing, a Git LFS pointer, or not the format's content.
            CheckpointLoadError: a file cannot be read, or the plugin refused it or returned no mapping.
            PluginLoadError: the plugin's loader failed (or called ``sys.exit``); also a CheckpointLoadError.
            PluginError: the format's own content check failed (``error.hook == "matches"``).
        """
        return load_checked(fmt, candidate, device, self.all_formats())

    def open_tensors(
        self, fmt: CheckpointFormat, candidate: Candidate, device: str = "cpu"
    ) -> tuple[TensorReader, dict[str, str]]:
        """The candidate's tensors listed and read one at a time (``inspect``, ``diff``), after the checks
        of :meth:`load`: from the headers alone through the format's ``open_tensors``; a format without it is
        loaded whole onto ``device``.

        Returns:
            A :class:`~ckpt_formats.tensors.TensorReader` (close it, or use it in ``with``) and the metadata.

        Raises:
            as :meth:`load`.
        """
        return open_checked(fmt, candidate, self.all_formats(), device)

    def candidate_for(
        self, path: str | os.PathLike[str], *, safe_only: bool | None = None, advice: str | None = None
    ) -> tuple[CheckpointFormat, Candidate]:
        """The checkpoint a command line names: a file (as :meth:`candidate_for_file`), or a folder's winner
        (the resolve rules, without the hub; ``advice`` as :meth:`resolve` takes it).

        Raises:
            CheckpointNotFoundError: no such file or folder, or nothing in the folder.
            AmbiguousCheckpointError: several candidates of the winning format in the folder.
        """
        path = Path(path)
        if path.is_dir():
            fmt, candidate, _ = self.discover(path, safe_only=safe_only).choose(advice=advice)
            return fmt, candidate
        return self.candidate_for_file(path, safe_only=safe_only)

    def resolve(
        self,
        directory: str | os.PathLike[str],
        *,
        device: str = "cpu",
        formats: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        select: str | Sequence[str] | None = None,
        safe_only: bool | None = None,
        hub: HubSource | None = None,
        advice: str | None = None,
    ) -> ResolvedCheckpoint:
        """Find the best checkpoint in ``directory`` (else fetch it from ``hub``) and load it.

        Rules: the highest-priority format with a candidate wins; two candidates of the winning format are
        an :class:`AmbiguousCheckpointError`; a winner that fails to load is a :class:`CheckpointLoadError`
        (never a silent fallback); no candidate is a :class:`CheckpointNotFoundError`.

        Args:
            directory: the folder to search (not recursive; hidden files are never candidates).
            device: where the winning plugin's loader puts the tensors.
            formats: only consider these format names.
            exclude: file-name globs to ignore.
            select: a name or glob choosing among several candidates of the winning format (a sequence of
                globs: a candidate must match every one).
            safe_only: drop formats that can execute code (None: ``CKPT_FORMATS_SAFE_ONLY``).
            hub: where to download from when nothing local is found.
            advice: how your user chooses among several candidates, quoted by the ambiguity error (a command
                line passes its own flags, e.g. ``"--select NAME or --exclude GLOB"``; default: these
                keywords, ``"select=NAME or exclude=[GLOB]"``).

        Returns:
            The winner's format, candidate, state dict and metadata, and the shadowed candidates.

        Raises:
            CheckpointNotFoundError: nothing to load (and nothing on the hub).
            AmbiguousCheckpointError: several candidates of the winning format.
            CheckpointLoadError: the winner failed to load (:class:`CheckpointContentError`: wrong content).
            CheckpointDownloadError: the hub fetch failed for a reason other than "file absent".
        """
        directory = Path(directory)
        downloaded = False
        created = hub is not None and not directory.exists()
        if created:
            directory.mkdir(parents=True, exist_ok=True)
        found = self.discover(directory, formats=formats, exclude=exclude, select=select, safe_only=safe_only)
        if found.winner is None and hub is not None:
            from ..hub import fetch  # off the import path of `import ckpt_formats` until a fetch is needed

            try:
                fetch(hub, directory, found.formats, exclude=exclude, select=select)
            except (CheckpointDownloadError, CheckpointNotFoundError) as exc:
                _say_what_was_refused(exc, found)
                if created:
                    with suppress(OSError):
                        directory.rmdir()  # only if still empty: a folder made for nothing goes again
                raise
            downloaded = True
            found = self.discover(
                directory, formats=formats, exclude=exclude, select=select, safe_only=safe_only
            )
        while True:
            fmt, candidate, shadowed = found.choose(select, advice)
            try:
                state_dict, metadata = self.load(fmt, candidate, device)
                break
            except PluginError as exc:  # its content check failed: that format leaves the choice, no other
                if exc.hook != "matches" or exc.format != fmt.name:
                    raise
                found.leave_out(fmt, exc)
        if shadowed:
            logger.info(
                "%s: using %s (%s, priority %d); shadowed: %s",
                directory,
                candidate.path.name,
                fmt.name,
                fmt.priority,
                ", ".join(f"{c.path.name} ({c.format})" for c in shadowed),
            )
        logger.info("loaded %s checkpoint %s onto %s", fmt.name, candidate.path, device)
        return ResolvedCheckpoint(fmt, candidate, state_dict, metadata, shadowed, downloaded)


def _say_what_was_refused(exc: CheckpointError, found: Discovery) -> None:
    """A failed fetch also names the local files that were not taken (a refused pickle, a lone shard): the
    user otherwise sees only a network or disk error for a folder that holds weights."""
    notes = []
    if found.refused:
        notes.append(
            f"found in {found.directory} but refused by policy (safe-only or {DISABLE_ENV}): "
            f"{refused_names(found)}"
        )  # DEPRECATED: remove after .pth sunset (only pickle formats are refused by policy)
    if found.orphans:
        notes.append(f"shards without their index in {found.directory}: {', '.join(found.orphans)}")
    if not notes:
        return
    if isinstance(exc, NoSpaceError):
        exc.message = f"{exc.message}; {'; '.join(notes)}"
    elif len(exc.args) == 1:
        exc.args = (f"{exc.args[0]}; {'; '.join(notes)}",)


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (entry points loaded on first use)."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def resolve(directory: str | os.PathLike[str], **kwargs: Any) -> ResolvedCheckpoint:
    """:meth:`Registry.resolve` on the process-wide registry."""
    return get_registry().resolve(directory, **kwargs)
