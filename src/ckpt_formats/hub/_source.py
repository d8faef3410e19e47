"""Where to fetch from: :class:`HubSource`, the settings of one Hub repository."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..formats import CheckpointFormat


@dataclass(frozen=True)
class HubSource:
    """Where to fetch a checkpoint from when the directory has none.

    Attributes:
        repo_id: ``owner/name`` of a model repository.
        revision: branch, tag or commit hash (a commit hash pins the download); None means ``main``.
        filenames: remote file names per format name, replacing the formats' ``hub_filenames``. When given,
            only the formats named here are asked for (still in priority order).
        token: Hub token; None uses the client's default (``HF_TOKEN`` or the saved login), False sends none.
        progress: progress bar on stderr; None shows one only when stderr is a terminal.
        cache_dir: the Hugging Face cache to download through (default: the client's ``HF_HUB_CACHE``).
        endpoint: Hub URL (default: the client's ``HF_ENDPOINT``).
        timeout: seconds to wait for the Hub's answer about each file (and to connect).
        stall_timeout: a download that receives no byte for this many seconds fails.
        deadline: a download of one file that takes longer than this many seconds fails (None: no limit).

    Raises:
        ValueError: (when made) the repository id is not valid, or a file name leaves the repository.
    """

    repo_id: str
    revision: str | None = None
    filenames: Mapping[str, Sequence[str]] | None = field(default=None, hash=False)
    token: str | bool | None = None
    progress: bool | None = None
    cache_dir: str | os.PathLike[str] | None = None
    endpoint: str | None = None
    timeout: float = 10.0
    stall_timeout: float = 30.0
    deadline: float | None = None

    def __post_init__(self) -> None:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(self.repo_id)  # a ValueError naming the bad id
        for label, value in (("timeout", self.timeout), ("stall_timeout", self.stall_timeout)):
            if not value > 0:
                raise ValueError(f"{label} must be a positive number of seconds, got {value!r}")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError(f"deadline must be a positive number of seconds or None, got {self.deadline!r}")
        if self.filenames is not None:
            names: dict[str, tuple[str, ...]] = {}
            for fmt, given in self.filenames.items():
                listed = (given,) if isinstance(given, str) else tuple(given)
                for name in listed:
                    _check_remote_name(name)
                names[fmt] = listed
            object.__setattr__(self, "filenames", names)

    @property
    def repo_url(self) -> str:
        """``ENDPOINT/owner/name``, for messages."""
        return f"{self.resolved_endpoint}/{self.repo_id}"

    @property
    def resolved_endpoint(self) -> str:
        """:attr:`endpoint`, else the client's ``HF_ENDPOINT``, without a trailing slash."""
        from huggingface_hub import constants

        return (self.endpoint or constants.ENDPOINT).rstrip("/")

    @property
    def resolved_cache_dir(self) -> Path:
        """:attr:`cache_dir`, else the client's ``HF_HUB_CACHE``."""
        from huggingface_hub import constants

        return Path(self.cache_dir if self.cache_dir is not None else constants.HF_HUB_CACHE).expanduser()

    def files_for(self, fmt: CheckpointFormat) -> tuple[str, ...]:
        """The remote names to ask for ``fmt``, in order."""
        if self.filenames is None:
            return tuple(fmt.hub_filenames)
        return tuple(self.filenames.get(fmt.name, ()))


def _check_remote_name(name: object) -> None:
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"hub file name {name!r} must be a relative path inside the repository")
