"""Discovery and choice: which files of a directory are candidates of which format, and which one wins.

Also the checks made before a loader runs (:func:`check_content`) and the text of the "nothing found" error.
A format whose plugin fails in ``discover`` (or, for the winner, in ``matches``) is left out of the choice
with a one-line warning; the other formats are unaffected.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import sniff
from ._plugins import DISABLE_ENV
from .errors import (
    AmbiguousCheckpointError,
    CheckpointAccessError,
    CheckpointContentError,
    CheckpointLoadError,
    CheckpointNotFoundError,
    PluginError,
)
from .formats import Candidate, CheckpointFormat

logger = logging.getLogger("ckpt_formats.registry")

SHARD_NAME = re.compile(r".+-(\d+)-of-(\d+)\.[^.]+")
"""Hugging Face's shard naming (``model-00001-of-00002.safetensors``): part of a set, never a whole model."""


@dataclass
class Discovery:
    """What discovery saw in a directory: candidates per format (highest priority first), and the rest."""

    directory: Path
    formats: list[CheckpointFormat]
    candidates: dict[str, list[Candidate]]
    unmatched: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # file name -> format removed by policy
    faulty: dict[str, str] = field(default_factory=dict)  # format name -> why its plugin was left out
    orphans: list[str] = field(default_factory=list)  # shards (by name) that no index in the folder lists

    @property
    def winner(self) -> CheckpointFormat | None:
        return next((f for f in self.formats if self.candidates.get(f.name)), None)

    def choose(
        self, select: str | Sequence[str] | None = None, advice: str | None = None
    ) -> tuple[CheckpointFormat, Candidate, list[Candidate]]:
        """Apply the resolve rules: the winning format, its one candidate, and the shadowed candidates.

        Args:
            select: the selection discovery applied (named in the "not found" message).
            advice: how the caller's user chooses among several candidates, quoted in the ambiguity
                message (default :data:`DEFAULT_ADVICE`, the keywords of :meth:`Registry.resolve`).

        Raises:
            CheckpointNotFoundError: no allowed format has a candidate (the message says what was seen).
            AmbiguousCheckpointError: the winning format has several candidates.
        """
        fmt = self.winner
        if fmt is None:
            raise CheckpointNotFoundError(not_found_message(self, select))
        chosen = self.candidates[fmt.name]
        if len(chosen) > 1:
            names = ", ".join(c.path.name for c in chosen)
            raise AmbiguousCheckpointError(
                f"{self.directory}: {len(chosen)} {fmt.name} checkpoints ({names}); keep exactly one, "
                f"or choose one with {advice or DEFAULT_ADVICE}"
            )
        shadowed = [c for f in self.formats if f is not fmt for c in self.candidates.get(f.name, [])]
        return fmt, chosen[0], shadowed

    def leave_out(self, fmt: CheckpointFormat, error: BaseException) -> None:
        """Remove ``fmt`` from the choice because its plugin failed (``error``), with a one-line warning."""
        self.faulty[fmt.name] = left_out(self.directory, fmt, error)
        self.formats = [f for f in self.formats if f.name != fmt.name]
        self.candidates.pop(fmt.name, None)


def left_out(directory: Path, fmt: CheckpointFormat, error: BaseException) -> str:
    """Log (one line) and return why ``fmt`` was left out of the choice in ``directory``."""
    why = str(error) if isinstance(error, PluginError) else f"{directory}: {type(error).__name__}: {error}"
    message = f"format {fmt.name!r} left out of the choice: {why}"
    logger.warning("%s", message)
    return message


def _run_discover(directory: Path, fmt: CheckpointFormat, matched: list[Path]) -> list[Candidate]:
    """The format's own grouping (the guard already turned its failures into PluginError)."""
    assert fmt.discover is not None
    found = fmt.discover(directory, matched)
    if not isinstance(found, (list, tuple)) or not all(isinstance(c, Candidate) for c in found):
        raise PluginError(
            f"{directory}: plugin {fmt.plugin!r} (format {fmt.name!r}) failed in discover: it returned "
            f"{type(found).__name__}, not a list of Candidate",
            plugin=fmt.plugin,
            format=fmt.name,
            hook="discover",
        )
    return list(found)


DEFAULT_ADVICE = "select=NAME or exclude=[GLOB]"
"""How the ambiguity message tells a Python caller to choose; a command line passes its own flags."""


def select_globs(select: str | Sequence[str] | None) -> list[str]:
    """``select`` as a list of globs (a candidate must match every one of them)."""
    if select is None:
        return []
    return [select] if isinstance(select, str) else list(select)


def _matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def filtered_out(name: str, exclude: Sequence[str], select: str | Sequence[str] | None) -> bool:
    """True when the caller's ``exclude`` or ``select`` leaves a file called ``name`` out of the choice."""
    if _matches_any(name, exclude):
        return True
    return not all(fnmatch.fnmatchcase(name, glob) for glob in select_globs(select))


def refused_names(found: Discovery) -> str:
    """``old.pth (pickle), older.pt (pickle)``: the files the policy refused, with their format."""
    return ", ".join(f"{n} ({fmt})" for n, fmt in found.refused.items())


def matches_format(name: str, fmt: CheckpointFormat) -> bool:
    """True when the file name ``name`` matches one of ``fmt``'s globs and none of its exclude globs."""
    return _matches_any(name, fmt.globs) and not _matches_any(name, fmt.exclude_globs)


def discover(
    directory: Path,
    allowed: Sequence[CheckpointFormat],
    every: Sequence[CheckpointFormat],
    *,
    restricted_to: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    select: str | Sequence[str] | None = None,
) -> Discovery:
    """Group the regular, non-hidden files of ``directory`` into candidates of the ``allowed`` formats.

    Args:
        directory: an existing directory (not searched recursively).
        allowed: the formats left by the caller's restriction and the policy, highest priority first.
        every: every registered format (to name the files the policy refused).
        restricted_to: the caller's own restriction of format names, if any (not reported as refused).
        exclude: file-name globs to ignore.
        select: a name or glob keeping only the matching candidates (several: a candidate must match
            every one).

    Returns:
        The candidates per format, and the files excluded, refused by policy or matching no format.
    """
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    except PermissionError as exc:
        raise CheckpointAccessError(
            f"{directory}: cannot list the folder ({exc.strerror or exc}); check its permissions (the user "
            "running this needs read and execute permission on it)",
            str(directory),
        ) from exc
    excluded = [p.name for p in files if _matches_any(p.name, exclude)]
    files = [p for p in files if p.name not in excluded]

    candidates: dict[str, list[Candidate]] = {}
    faulty: dict[str, str] = {}
    for fmt in allowed:
        matched = [p for p in files if matches_format(p.name, fmt)]
        if fmt.discover is None:
            found = [Candidate(fmt.name, p) for p in matched]
        else:
            try:
                found = _run_discover(directory, fmt, matched)
            except (PluginError, OSError) as exc:  # that format only: never the others
                faulty[fmt.name] = left_out(directory, fmt, exc)
                continue
        candidates[fmt.name] = sorted(found, key=lambda c: c.path.name)
    allowed = [f for f in allowed if f.name not in faulty]

    # A file that belongs to a multi-file checkpoint (a shard) is not a checkpoint of its own.
    claimed = {
        p: name for name, cands in candidates.items() for c in cands if len(c.paths) > 1 for p in c.paths
    }
    for name, cands in candidates.items():
        candidates[name] = [c for c in cands if claimed.get(c.path, name) == name]
    # A shard that no index lists (a set interrupted mid-copy or mid-download) is not a whole model either.
    singles = [c.path for cands in candidates.values() for c in cands if len(c.paths) == 1]
    orphans = sorted({p.name for p in singles if is_orphan_shard(p)})
    if orphans:
        logger.warning(
            "%s: %s named like part of a sharded set but no index there lists %s; not a checkpoint on its "
            "own (the set was interrupted: fetch or copy it again, index included)",
            directory,
            ", ".join(orphans),
            "it" if len(orphans) == 1 else "them",
        )
        for name, cands in candidates.items():
            candidates[name] = [c for c in cands if c.path.name not in orphans]
    seen = {p for cands in candidates.values() for c in cands for p in c.paths} | set(claimed)
    seen |= {directory / n for n in orphans}
    seen |= {p for fmt in every if fmt.name in faulty for p in files if matches_format(p.name, fmt)}
    for glob in select_globs(select):
        for name, cands in candidates.items():
            candidates[name] = [c for c in cands if fnmatch.fnmatchcase(c.path.name, glob)]

    refused: dict[str, str] = {}
    allowed_names = {f.name for f in allowed} | set(faulty)
    for fmt in every:
        # removed by the policy (safe-only, disabled), not by the caller's own restriction
        if fmt.name not in allowed_names and (restricted_to is None or fmt.name in restricted_to):
            for p in files:
                if p not in seen and matches_format(p.name, fmt):
                    refused.setdefault(p.name, fmt.name)
    # matching no format: no glob matched it, or the format's discovery did not take it (a .bin that is
    # not a pickle)
    unmatched = [p.name for p in files if p not in seen and p.name not in refused]
    return Discovery(directory, list(allowed), candidates, unmatched, excluded, refused, faulty, orphans)


def is_orphan_shard(path: Path) -> bool:
    """True for a file named like shard i of a set of more than one (``NAME-0000i-of-0000N.EXT``, N > 1).

    Called only for files no index in their folder claims.
    """
    named = SHARD_NAME.fullmatch(path.name)
    return named is not None and int(named.group(2)) > 1


def check_content(fmt: CheckpointFormat, candidate: Candidate, known: Sequence[CheckpointFormat]) -> None:
    """Refuse a file whose bytes are not what its format expects, before any loader touches it.

    Args:
        fmt: the candidate's format.
        candidate: every file of it is checked for presence and Git LFS pointers, the primary by ``matches``.
        known: every format, to say which one the content really matches.

    Raises:
        CheckpointLoadError: a file of the candidate is missing or cannot be read.
        PluginError: the format's own content check failed (``hook == "matches"``).
        CheckpointContentError: a Git LFS pointer, or content that is not the format's.
    """
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
    if fmt.matches is None:
        return
    try:
        if fmt.matches(path):
            return
    except OSError as exc:
        raise unreadable(path, fmt, exc) from exc
    really = sniff.identify(path)
    owners = [f.name for f in known if f is not fmt and _safe_match(f, path)]
    hint = f"; its content matches the {', '.join(owners)} format" if owners else ""
    raise CheckpointContentError(
        f"{path} is named like a {fmt.name} file but its content is {really}{hint}. It was not loaded: "
        "rename it to the right extension, or re-download/re-export it"
    )


def _safe_match(fmt: CheckpointFormat, path: Path) -> bool:
    """Another format's content check, for the hint only: a failing plugin is skipped, with a warning."""
    if fmt.matches is None:
        return False
    try:
        return bool(fmt.matches(path))
    except PluginError as exc:
        logger.warning("%s", exc)
    except OSError:
        pass
    return False


def unreadable(path: Path, fmt: CheckpointFormat, exc: OSError) -> CheckpointLoadError:
    """The one-line error for a file of a candidate that the operating system could not read."""
    name = exc.filename if isinstance(exc.filename, str) else str(path)
    return CheckpointLoadError(
        f"{name}: cannot read it ({exc.strerror or type(exc).__name__}; errno {exc.errno}); it was not "
        f"loaded as {fmt.name}. Check the file's permissions and the disk, then retry"
    )


def not_found_message(found: Discovery, select: str | Sequence[str] | None = None) -> str:
    """The text of the :class:`CheckpointNotFoundError` for a discovery without a winner."""
    searched = "; ".join(f"{f.name} ({', '.join(f.globs)})" for f in found.formats) or "no format allowed"
    parts = [f"no checkpoint found in {found.directory} (searched: {searched})"]
    globs = select_globs(select)
    if globs:
        parts.append(f"only names matching {' and '.join(repr(g) for g in globs)} were considered")
    if found.refused:
        parts.append(
            f"refused by policy (safe-only or {DISABLE_ENV}): {refused_names(found)}; convert it with "
            "`ckpt-formats convert SRC DST.safetensors` in a trusted environment"
        )  # DEPRECATED: remove after .pth sunset (the convert hint: only pickle is refused by safe-only)
    if found.faulty:
        parts.append(f"left out because their plugin failed: {', '.join(found.faulty)} (see the warnings)")
    if found.orphans:
        parts.append(
            f"shards without their index (an interrupted set): {', '.join(found.orphans)}; fetch or copy the "
            "whole set again, index included"
        )
    if found.excluded:
        parts.append(f"excluded by pattern: {', '.join(found.excluded)}")
    parts.append(f"present but matching no format: {', '.join(found.unmatched) or 'none'}")
    parts.append("place a checkpoint there or configure a hub source")
    return "; ".join(parts)
