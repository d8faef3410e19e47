"""The errors the registry raises. Each message names the file, the format and what to do next."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of every error raised by ckpt_formats."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file in the directory matched any allowed format (and no hub could supply one)."""


class AmbiguousCheckpointError(CheckpointError):
    """Two or more candidates of the winning format: the registry will not guess which one."""


class CheckpointLoadError(CheckpointError):
    """The chosen checkpoint failed to load (corrupt, truncated, unsafe or wrong content)."""


class CheckpointContentError(CheckpointLoadError):
    """A file's content is not what its name claims (a pickle named .safetensors, a Git LFS pointer, ...)."""


class CheckpointDownloadError(CheckpointError, RuntimeError):
    """Fetching a checkpoint from a hub failed for a reason other than "the file is not there"."""


class PluginError(CheckpointError):
    """A plugin declared something invalid, or could not be imported."""
