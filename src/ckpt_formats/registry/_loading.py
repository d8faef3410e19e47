"""The load path of the registry: device check, content check, the plugin's loader, one clear error.

In order: the device must exist in this torch build and machine (an unavailable device is reported as such,
never as a corrupt file); the candidate's files must be present, readable and of the format's content
(:func:`ckpt_formats._discovery.check_content`); then the plugin's ``load`` and ``read_metadata`` run.
Whatever fails becomes one error naming the file. Warnings the loader emits (torch's notes on pickle
protocols) are passed to ``logging`` at INFO level instead of being printed.

:func:`open_checked` is the same path for reading tensors one at a time (``inspect``, ``diff``): through the
format's ``open_tensors`` when it has one, else by loading the whole state dict.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._discovery import check_content, unreadable
from .._guard import failure, first_line, guarded_reader
from ..errors import CheckpointError, CheckpointLoadError, DeviceUnavailableError
from ..formats import Candidate, CheckpointFormat
from ..statedict import unwrap
from ..tensors import StateDictReader, TensorReader

logger = logging.getLogger("ckpt_formats.registry")


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot receive tensors here (None when it can); imports torch unless it is ``cpu``."""
    if device == "cpu":
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        return f"{device!r} is not a device torch knows ({first_line(exc)}); use cpu, cuda, cuda:N or mps"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
                return f"CUDA is not available in this torch build (torch {torch.__version__}, no CUDA)"
            return (
                f"CUDA is not available: no NVIDIA driver or GPU found (torch {torch.__version__}, built for "
                f"CUDA {torch.version.cuda})"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"{device} does not exist: this machine has {count} CUDA device(s)"
        return None
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "MPS (Apple GPU) is not available in this torch build or on this machine"
        return None
    backend = getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and not is_available():
        return f"{dev.type} is not available in this torch build or on this machine"
    return None


def check_device(device: str, path: Path) -> None:
    """Refuse a device that cannot receive tensors, before any file is read.

    Raises:
        DeviceUnavailableError: naming the file, the device and why (a CheckpointLoadError).
    """
    why = device_problem(str(device))
    if why is not None:
        raise DeviceUnavailableError(
            f"{path}: not loaded onto {device}: {why}. Choose another device (device='cpu'; "
            "command line: --device cpu)"
        )


def load_checked(
    fmt: CheckpointFormat, candidate: Candidate, device: str, known: Sequence[CheckpointFormat]
) -> tuple[Any, dict[str, str]]:
    """Check the device and the candidate's content, then load it with its plugin.

    Returns:
        The state dict and the format's metadata.

    Raises:
        DeviceUnavailableError: the device is not available.
        CheckpointContentError: a file is missing, a Git LFS pointer, or not the format's content.
        CheckpointLoadError: a file cannot be read, or the plugin refused it, or returned no mapping.
        PluginLoadError: the plugin's code failed (also a CheckpointLoadError).
        PluginError: the format's content check failed (``hook == "matches"``).
    """
    path = candidate.path
    check_device(device, path)
    check_content(fmt, candidate, known)
    with warnings.catch_warnings(record=True) as caught:
        try:
            state_dict = fmt.load(candidate, str(device))
            metadata = dict(fmt.read_metadata(candidate)) if fmt.read_metadata else {}
        except CheckpointError:
            raise
        except OSError as exc:
            raise unreadable(path, fmt, exc) from exc
        except (Exception, SystemExit) as exc:  # a format not registered through the registrar
            raise failure(fmt, "load", str(path), exc) from exc
        finally:
            for w in caught:
                logger.info("%s: %s from the %s loader: %s", path, w.category.__name__, fmt.name, w.message)
    if not hasattr(state_dict, "keys"):
        raise CheckpointLoadError(
            f"{path}: the {fmt.name} loader returned {type(state_dict).__name__}, "
            f"not a mapping of tensors (plugin {fmt.plugin!r})"
        )
    return state_dict, metadata


def open_checked(
    fmt: CheckpointFormat, candidate: Candidate, known: Sequence[CheckpointFormat], device: str = "cpu"
) -> tuple[TensorReader, dict[str, str]]:
    """The candidate's tensors, listed and read one at a time, after the same checks as :func:`load_checked`.

    With the format's ``open_tensors`` nothing but headers is read until a tensor is asked for (on the CPU);
    without it the state dict is loaded whole onto ``device`` (unwrapped from ``state_dict``/``model``
    wrappers) and served from memory.

    Returns:
        The reader (close it) and the format's metadata.

    Raises:
        as :func:`load_checked`.
    """
    if fmt.open_tensors is None:
        state_dict, metadata = load_checked(fmt, candidate, device, known)
        return StateDictReader(unwrap(state_dict)), metadata
    path = candidate.path
    check_device(device, path)
    check_content(fmt, candidate, known)
    reader = None
    try:
        reader = fmt.open_tensors(candidate)
        metadata = dict(fmt.read_metadata(candidate)) if fmt.read_metadata else {}
    except BaseException as exc:
        if isinstance(reader, TensorReader):
            reader.close()
        if isinstance(exc, CheckpointError) or not isinstance(exc, (Exception, SystemExit)):
            raise
        if isinstance(exc, OSError):
            raise unreadable(path, fmt, exc) from exc
        raise failure(fmt, "open_tensors", str(path), exc) from exc
    return guarded_reader(fmt, reader, str(path)), metadata
