"""The plugin manager, lazy entry-point loading, validation, discovery and ``resolve()``."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs, sniff
from .errors import (
    AmbiguousCheckpointError,
    CheckpointContentError,
    CheckpointError,
    CheckpointLoadError,
    CheckpointNotFoundError,
    PluginError,
)
from .types import Candidate, CheckpointFormat, ResolvedCheckpoint

if TYPE_CHECKING:
    from .hub import HubSource

logger = logging.getLogger(__name__)

SAFE_ONLY_ENV = "CKPT_FORMATS_SAFE_ONLY"
DISABLE_ENV = "CKPT_FORMATS_DISABLE"
_TRUE = {"1", "true", "yes", "on"}


def safe_only_from_env() -> bool:
    return os.environ.get(SAFE_ONLY_ENV, "").strip().lower() in _TRUE


def disabled_from_env() -> frozenset[str]:
    return frozenset(n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip())


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be imported or declared something invalid."""

    name: str
    distribution: str | None
    error: str


class FormatRegistrar:
    """Handed to ``ckpt_formats_register_formats``: validates what one plugin declares."""

    def __init__(self, plugin: str, distribution: str | None, taken: dict[str, CheckpointFormat]):
        self.plugin = plugin
        self.distribution = distribution
        self._taken = taken
        self.formats: list[CheckpointFormat] = []

    def __call__(self, fmt: CheckpointFormat) -> None:
        self.formats.append(self._validate(fmt))

    def _fail(self, what: str) -> PluginError:
        return PluginError(f"plugin {self.plugin!r}: {what}")

    def _validate(self, fmt: Any) -> CheckpointFormat:
        if not isinstance(fmt, CheckpointFormat):
            raise self._fail(f"register() takes a CheckpointFormat, got {type(fmt).__name__}")
        if not isinstance(fmt.name, str) or not fmt.name.strip():
            raise self._fail("a format needs a non-empty string name")
        label = f"format {fmt.name!r}"
        owner = self._taken.get(fmt.name) or next((f for f in self.formats if f.name == fmt.name), None)
        if owner is not None:
            raise self._fail(f"{label} is already registered by plugin {owner.plugin or self.plugin!r}")
        if isinstance(fmt.priority, bool) or not isinstance(fmt.priority, int):
            raise self._fail(f"{label}: priority must be an int, got {fmt.priority!r}")
        globs = (fmt.globs,) if isinstance(fmt.globs, str) else tuple(fmt.globs or ())
        if not globs or not all(isinstance(g, str) and g for g in globs):
            raise self._fail(f"{label}: declare at least one discovery glob (e.g. '*.ext')")
        if not callable(fmt.load):
            raise self._fail(f"{label}: load must be callable (candidate, device) -> state dict")
        for attr in ("save", "matches", "read_metadata", "discover", "companions"):
            value = getattr(fmt, attr)
            if value is not None and not callable(value):
                raise self._fail(f"{label}: {attr} must be callable or None")
        exclude = (fmt.exclude_globs,) if isinstance(fmt.exclude_globs, str) else tuple(fmt.exclude_globs)
        hub_names = (fmt.hub_filenames,) if isinstance(fmt.hub_filenames, str) else tuple(fmt.hub_filenames)
        return replace(
            fmt,
            globs=globs,
            exclude_globs=exclude,
            hub_filenames=hub_names,
            executes_code=bool(fmt.executes_code),
            plugin=self.plugin,
            distribution=self.distribution,
        )


@dataclass
class Discovery:
    """What discovery saw in a directory: candidates per format (highest priority first), and the rest."""

    directory: Path
    formats: list[CheckpointFormat]
    candidates: dict[str, list[Candidate]]
    unmatched: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # file name -> format removed by policy

    @property
    def winner(self) -> CheckpointFormat | None:
        return next((f for f in self.formats if self.candidates.get(f.name)), None)

    def choose(self, select: str | None = None) -> tuple[CheckpointFormat, Candidate, list[Candidate]]:
        """Apply the resolve rules: the winning format, its one candidate, and the shadowed candidates."""
        fmt = self.winner
        if fmt is None:
            raise CheckpointNotFoundError(not_found_message(self, select))
        chosen = self.candidates[fmt.name]
        if len(chosen) > 1:
            names = ", ".join(c.path.name for c in chosen)
            raise AmbiguousCheckpointError(
                f"{self.directory}: {len(chosen)} {fmt.name} checkpoints ({names}); keep exactly one, "
                "or choose one with select=NAME (command line: --select NAME)"
            )
        shadowed = [c for f in self.formats if f is not fmt for c in self.candidates.get(f.name, [])]
        return fmt, chosen[0], shadowed


def _matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _matches_format(name: str, fmt: CheckpointFormat) -> bool:
    return _matches_any(name, fmt.globs) and not _matches_any(name, fmt.exclude_globs)


class Registry:
    """Formats declared by plugins. Entry points are loaded once, on first use."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._distributions: dict[str, str | None] = {}  # plugin name -> distribution, in order
        self._formats: dict[str, CheckpointFormat] | None = None
        self._broken: dict[str, BrokenPlugin] = {}

    # -- plugins -------------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._load_entry_points:
            self._load_from_entry_points()

    def _load_from_entry_points(self) -> None:
        from importlib.metadata import entry_points

        disabled = disabled_from_env()
        for ep in entry_points(group=hookspecs.PROJECT_NAME):
            dist = ep.dist.name if ep.dist is not None else None
            if ep.name in disabled:
                logger.info("plugin %r is disabled by %s", ep.name, DISABLE_ENV)
                continue
            if self._pm.has_plugin(ep.name) or ep.name in self._broken:
                continue  # the same entry point seen twice on sys.path
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self._mark_broken(ep.name, dist, f"import failed: {type(exc).__name__}: {exc}")
                continue
            try:
                self._add(plugin, ep.name, dist)
            except PluginError as exc:
                self._mark_broken(ep.name, dist, str(exc))

    def _mark_broken(self, name: str, dist: str | None, error: str) -> None:
        logger.error("ckpt_formats plugin %r (%s) is broken and was skipped: %s", name, dist or "?", error)
        self._broken[name] = BrokenPlugin(name, dist, error)

    def _add(self, plugin: object, name: str, dist: str | None) -> None:
        """Register ``plugin`` and validate its formats; leaves nothing behind when they are invalid."""
        if self._pm.has_plugin(name) or self._pm.is_registered(plugin):
            raise PluginError(f"plugin {name!r} is already registered")
        self._pm.register(plugin, name=name)
        self._distributions[name] = dist
        try:
            self._collect()
        except PluginError:
            self._pm.unregister(name=name)
            self._distributions.pop(name, None)
            self._collect()
            raise

    def _collect(self) -> None:
        formats: dict[str, CheckpointFormat] = {}
        order = list(self._distributions)  # registration order: a duplicate blames the later plugin
        impls = self._pm.hook.ckpt_formats_register_formats.get_hookimpls()
        for impl in sorted(impls, key=lambda i: order.index(i.plugin_name)):
            registrar = FormatRegistrar(impl.plugin_name, self._distributions.get(impl.plugin_name), formats)
            try:
                impl.function(register=registrar)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: ckpt_formats_register_formats failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            formats.update((f.name, f) for f in registrar.formats)
        self._formats = formats

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object or module at run time (applications, tests).

        Raises :class:`PluginError` naming the plugin when it declares anything invalid; the registry is
        then unchanged. Returns the name it was registered under.
        """
        self._ensure_loaded()
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self._add(plugin, name, None)
        return name

    def unregister(self, name: str) -> None:
        self._ensure_loaded()
        self._pm.unregister(name=name)
        self._distributions.pop(name, None)
        self._collect()

    @property
    def broken_plugins(self) -> list[BrokenPlugin]:
        self._ensure_loaded()
        return list(self._broken.values())

    # -- formats -------------------------------------------------------------------------------------

    def all_formats(self) -> list[CheckpointFormat]:
        """Every registered format, highest priority first (ties by name), policy not applied."""
        self._ensure_loaded()
        if self._formats is None:
            self._collect()
        assert self._formats is not None
        return sorted(self._formats.values(), key=lambda f: (-f.priority, f.name))

    def get_format(self, name: str) -> CheckpointFormat:
        for fmt in self.all_formats():
            if fmt.name == name:
                return fmt
        known = ", ".join(f.name for f in self.all_formats()) or "none"
        raise CheckpointError(f"unknown checkpoint format {name!r} (registered: {known})")

    def formats(
        self, *, names: Sequence[str] | None = None, safe_only: bool | None = None
    ) -> list[CheckpointFormat]:
        """The formats allowed by the caller's restriction and the safety policy, highest priority first."""
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
        matching = [f for f in self.all_formats() if _matches_format(path.name, f)]
        if not matching:
            globs = "; ".join(f"{f.name}: {', '.join(f.globs)}" for f in self.all_formats())
            raise CheckpointNotFoundError(f"{path}: no registered format matches this file name ({globs})")
        return matching[0]

    def candidate_for_file(
        self, path: Path, *, safe_only: bool | None = None
    ) -> tuple[CheckpointFormat, Candidate]:
        """The format and candidate for one named file (convert, inspect), with the policy applied."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointNotFoundError(f"{path}: no such file")
        fmt = self.format_for_file(path)
        if fmt.name not in {f.name for f in self.formats(safe_only=safe_only)}:
            raise CheckpointLoadError(
                f"{path}: the {fmt.name} format is disabled by the safety policy (safe-only or {DISABLE_ENV})"
            )
        found = fmt.discover(path.parent, [path]) if fmt.discover is not None else []
        return fmt, found[0] if found else Candidate(fmt.name, path)

    # -- discovery and loading -----------------------------------------------------------------------

    def discover(
        self,
        directory: str | os.PathLike[str],
        *,
        formats: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        select: str | None = None,
        safe_only: bool | None = None,
    ) -> Discovery:
        """Find every candidate of every allowed format in ``directory`` (not recursive)."""
        directory = Path(directory)
        allowed = self.formats(names=formats, safe_only=safe_only)
        if not directory.is_dir():
            what = "is not a directory" if directory.exists() else "does not exist"
            raise CheckpointNotFoundError(f"checkpoint directory {directory} {what}")
        files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
        excluded = [p.name for p in files if _matches_any(p.name, exclude)]
        files = [p for p in files if p.name not in excluded]

        candidates: dict[str, list[Candidate]] = {}
        for fmt in allowed:
            matched = [p for p in files if _matches_format(p.name, fmt)]
            if fmt.discover is not None:
                found = fmt.discover(directory, matched)
            else:
                found = [Candidate(fmt.name, p) for p in matched]
            candidates[fmt.name] = sorted(found, key=lambda c: c.path.name)

        # A file that belongs to a multi-file checkpoint (a shard) is not a checkpoint of its own.
        claimed = {
            p: name for name, cands in candidates.items() for c in cands if len(c.paths) > 1 for p in c.paths
        }
        for name, cands in candidates.items():
            candidates[name] = [c for c in cands if claimed.get(c.path, name) == name]
        if select is not None:
            for name, cands in candidates.items():
                candidates[name] = [c for c in cands if _matches_any(c.path.name, [select])]

        seen = {p for cands in candidates.values() for c in cands for p in c.paths} | set(claimed)
        refused: dict[str, str] = {}
        allowed_names = {f.name for f in allowed}
        for fmt in self.all_formats():
            # removed by the policy (safe-only, disabled), not by the caller's own restriction
            if fmt.name not in allowed_names and (formats is None or fmt.name in formats):
                for p in files:
                    if p not in seen and _matches_format(p.name, fmt):
                        refused.setdefault(p.name, fmt.name)
        unmatched = [
            p.name for p in files if p not in seen and p.name not in refused and not _in_any(p, allowed)
        ]
        return Discovery(directory, allowed, candidates, unmatched, excluded, refused)

    def load(self, fmt: CheckpointFormat, candidate: Candidate, device: str = "cpu") -> tuple[Any, dict]:
        """Check the candidate's content, then load it with its plugin. Never tries another format."""
        check_content(fmt, candidate, self.all_formats())
        try:
            state_dict = fmt.load(candidate, str(device))
            metadata = dict(fmt.read_metadata(candidate)) if fmt.read_metadata else {}
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointLoadError(
                f"{candidate.path}: failed to load as {fmt.name}: {type(exc).__name__}: {exc}. "
                "The file may be corrupt or truncated: re-download or re-export it "
                "(no other format was tried)."
            ) from exc
        if not hasattr(state_dict, "keys"):
            raise CheckpointLoadError(
                f"{candidate.path}: the {fmt.name} loader returned {type(state_dict).__name__}, "
                f"not a mapping of tensors (plugin {fmt.plugin!r})"
            )
        return state_dict, metadata

    def resolve(
        self,
        directory: str | os.PathLike[str],
        *,
        device: str = "cpu",
        formats: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        select: str | None = None,
        safe_only: bool | None = None,
        hub: HubSource | None = None,
    ) -> ResolvedCheckpoint:
        """Find the best checkpoint in ``directory`` (else fetch it from ``hub``) and load it.

        Rules: the highest-priority format with a candidate wins; two candidates of the winning format are
        an :class:`AmbiguousCheckpointError`; a winner that fails to load is a :class:`CheckpointLoadError`
        (never a silent fallback); no candidate is a :class:`CheckpointNotFoundError`.
        """
        directory = Path(directory)
        downloaded = False
        if hub is not None and not directory.exists():
            directory.mkdir(parents=True, exist_ok=True)
        found = self.discover(directory, formats=formats, exclude=exclude, select=select, safe_only=safe_only)
        if found.winner is None and hub is not None:
            from . import hub as hub_fetch

            hub_fetch.fetch(hub, directory, found.formats)
            downloaded = True
            found = self.discover(
                directory, formats=formats, exclude=exclude, select=select, safe_only=safe_only
            )
        fmt, candidate, shadowed = found.choose(select)
        if shadowed:
            logger.info(
                "%s: using %s (%s, priority %d); shadowed: %s",
                directory,
                candidate.path.name,
                fmt.name,
                fmt.priority,
                ", ".join(f"{c.path.name} ({c.format})" for c in shadowed),
            )
        state_dict, metadata = self.load(fmt, candidate, device)
        logger.info("loaded %s checkpoint %s onto %s", fmt.name, candidate.path, device)
        return ResolvedCheckpoint(fmt, candidate, state_dict, metadata, shadowed, downloaded)


def _in_any(path: Path, formats: Iterable[CheckpointFormat]) -> bool:
    return any(_matches_format(path.name, f) for f in formats)


def check_content(fmt: CheckpointFormat, candidate: Candidate, known: Sequence[CheckpointFormat]) -> None:
    """Refuse a file whose bytes are not what its format expects, before any loader touches it."""
    for path in candidate.paths:
        if not path.is_file():
            raise CheckpointLoadError(
                f"{path}: missing; {candidate.path.name} ({fmt.name}) needs it. Restore or re-download it."
            )
        if sniff.is_lfs_pointer(path):
            raise CheckpointContentError(
                f"{path} is a Git LFS pointer file, not the weights: run `git lfs pull` in its repository "
                "or download the real file"
            )
    path = candidate.path
    if fmt.matches is None or fmt.matches(path):
        return
    really = sniff.identify(path)
    owners = [f.name for f in known if f is not fmt and f.matches is not None and f.matches(path)]
    hint = f"; its content matches the {', '.join(owners)} format" if owners else ""
    raise CheckpointContentError(
        f"{path} is named like a {fmt.name} file but its content is {really}{hint}. It was not loaded: "
        "rename it to the right extension, or re-download/re-export it"
    )


def not_found_message(found: Discovery, select: str | None = None) -> str:
    searched = "; ".join(f"{f.name} ({', '.join(f.globs)})" for f in found.formats) or "no format allowed"
    parts = [f"no checkpoint found in {found.directory} (searched: {searched})"]
    if select is not None:
        parts.append(f"only names matching {select!r} were considered")
    if found.refused:
        refused = ", ".join(f"{n} ({fmt})" for n, fmt in found.refused.items())
        parts.append(
            f"refused by policy (safe-only or {DISABLE_ENV}): {refused}; convert it with "
            "`ckpt-formats convert SRC DST.safetensors` in a trusted environment"
        )
    if found.excluded:
        parts.append(f"excluded by pattern: {', '.join(found.excluded)}")
    parts.append(f"present but matching no format: {', '.join(found.unmatched) or 'none'}")
    parts.append("place a checkpoint there or configure a hub source")
    return "; ".join(parts)


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
