"""Discovery and choice: which files of a directory are candidates of which format, and which one wins.

Also the checks made before a loader runs (:func:`check_content`) and the text of the "nothing found" error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import sniff
from ..errors import (
    AmbiguousCheckpointError,
    CheckpointContentError,
    CheckpointLoadError,
    CheckpointNotFoundError,
)
from ..formats import Candidate, CheckpointFormat
from ._plugins import DISABLE_ENV


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


DEFAULT_ADVICE = "select=NAME or exclude=[GLOB]"
"""How the ambiguity message tells a Python caller to choose; a command line passes its own flags."""


def select_globs(select: str | Sequence[str] | None) -> list[str]:
    """``select`` as a list of globs (a candidate must match every one of them)."""
    if select is None:
        return []
    return [select] if isinstance(select, str) else list(select)


def _matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


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
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    excluded = [p.name for p in files if _matches_any(p.name, exclude)]
    files = [p for p in files if p.name not in excluded]

    candidates: dict[str, list[Candidate]] = {}
    for fmt in allowed:
        matched = [p for p in files if matches_format(p.name, fmt)]
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
    for glob in select_globs(select):
        for name, cands in candidates.items():
            candidates[name] = [c for c in cands if fnmatch.fnmatchcase(c.path.name, glob)]

    seen = {p for cands in candidates.values() for c in cands for p in c.paths} | set(claimed)
    refused: dict[str, str] = {}
    allowed_names = {f.name for f in allowed}
    for fmt in every:
        # removed by the policy (safe-only, disabled), not by the caller's own restriction
        if fmt.name not in allowed_names and (restricted_to is None or fmt.name in restricted_to):
            for p in files:
                if p not in seen and matches_format(p.name, fmt):
                    refused.setdefault(p.name, fmt.name)
    unmatched = [
        p.name
        for p in files
        if p not in seen and p.name not in refused and not any(matches_format(p.name, f) for f in allowed)
    ]
    return Discovery(directory, list(allowed), candidates, unmatched, excluded, refused)


def check_content(fmt: CheckpointFormat, candidate: Candidate, known: Sequence[CheckpointFormat]) -> None:
    """Refuse a file whose bytes are not what its format expects, before any loader touches it.

    Args:
        fmt: the candidate's format.
        candidate: every file of it is checked for presence and Git LFS pointers, the primary by ``matches``.
        known: every format, to say which one the content really matches.

    Raises:
        CheckpointLoadError: a file of the candidate is missing.
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
    if fmt.matches is None or fmt.matches(path):
        return
    really = sniff.identify(path)
    owners = [f.name for f in known if f is not fmt and f.matches is not None and f.matches(path)]
    hint = f"; its content matches the {', '.join(owners)} format" if owners else ""
    raise CheckpointContentError(
        f"{path} is named like a {fmt.name} file but its content is {really}{hint}. It was not loaded: "
        "rename it to the right extension, or re-download/re-export it"
    )


def not_found_message(found: Discovery, select: str | Sequence[str] | None = None) -> str:
    """The text of the :class:`CheckpointNotFoundError` for a discovery without a winner."""
    searched = "; ".join(f"{f.name} ({', '.join(f.globs)})" for f in found.formats) or "no format allowed"
    parts = [f"no checkpoint found in {found.directory} (searched: {searched})"]
    globs = select_globs(select)
    if globs:
        parts.append(f"only names matching {' and '.join(repr(g) for g in globs)} were considered")
    if found.refused:
        refused = ", ".join(f"{n} ({fmt})" for n, fmt in found.refused.items())
        parts.append(
            f"refused by policy (safe-only or {DISABLE_ENV}): {refused}; convert it with "
            "`ckpt-formats convert SRC DST.safetensors` in a trusted environment"
        )  # DEPRECATED: remove after .pth sunset (the convert hint: only pickle is refused by safe-only)
    if found.excluded:
        parts.append(f"excluded by pattern: {', '.join(found.excluded)}")
    parts.append(f"present but matching no format: {', '.join(found.unmatched) or 'none'}")
    parts.append("place a checkpoint there or configure a hub source")
    return "; ".join(parts)
