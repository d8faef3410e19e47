"""The errors corridorkey_engine and its CLI raise on purpose: one tree, rooted at :class:`CorridorKeyError`.

Each message names the file or setting at fault and what to do next; the ``corridorkey`` CLI prints it as
one line. Errors that also belong to a builtin family keep that base (a :class:`ConfigError` is a
``ValueError``), and a checkpoint that does not fit the model is both a :class:`CorridorKeyError` and a
:class:`ckpt_formats.CheckpointLoadError`, so ``except CheckpointError`` still covers every loading failure.
This module imports no torch.
"""

from __future__ import annotations

from ckpt_formats import CheckpointLoadError

__all__ = [
    "CheckpointMismatchError",
    "CliError",
    "ClipError",
    "ConfigError",
    "CorridorKeyError",
    "DeviceUnavailableError",
    "ExrSupportError",
    "FrameIOError",
    "FrameSelectionError",
    "RayRunError",
    "UsageError",
]


class CorridorKeyError(Exception):
    """Base class of every error corridorkey_engine raises on purpose."""


class ConfigError(CorridorKeyError, ValueError):
    """A setting is invalid: a GreenFormer config (argument or checkpoint metadata), a precision."""


class DeviceUnavailableError(CorridorKeyError, RuntimeError):
    """The requested device does not exist in this PyTorch build or on this machine."""


class OutOfDeviceMemoryError(CorridorKeyError, RuntimeError):
    """The device ran out of memory keying a frame; the message names the settings that need less."""


class CheckpointMismatchError(CorridorKeyError, CheckpointLoadError):
    """The checkpoint's tensors do not fit the GreenFormer the config describes (a
    :class:`ckpt_formats.CheckpointLoadError`, so one ``except CheckpointError`` covers loading)."""


class FrameIOError(CorridorKeyError):
    """A frame or folder cannot be read or written; the message names the file and what to do."""


class ExrSupportError(FrameIOError):
    """Neither the OpenEXR package nor an EXR-enabled OpenCV is available."""


class ClipError(CorridorKeyError):
    """A clip cannot be keyed as it is (missing folders, count or size mismatch); the message says why."""


class CliError(CorridorKeyError):
    """An error the CLI reports as one line (bad option combination, unusable device...)."""


class UsageError(CliError, ValueError):
    """The command asks for something it cannot mean (options that need another, a frame selection that
    selects no frame): the command line exits with status 2, as for a bad option."""


class FrameSelectionError(UsageError, ClipError):
    """``--frames`` selects none of a clip's frames (the message names the clip's first and last frame)."""


class RayRunError(CorridorKeyError):
    """``--ray`` cannot run as asked (Ray not installed, no GPU in the cluster, the job failed)."""
