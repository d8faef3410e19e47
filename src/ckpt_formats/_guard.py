"""Containment of plugin code: every function a format declares is called through a guard.

The registrar wraps ``discover``, ``matches``, ``load``, ``read_metadata``, ``save``, ``companions`` and
``open_tensors`` when a format is registered (and :func:`guarded_reader` the ``infos`` and ``get`` of the
reader ``open_tensors`` returns), so every caller (discovery, the content check, loading, convert, inspect,
diff, the hub fetch) gets the same rules:

* a :class:`~ckpt_formats.CheckpointError` the plugin raises on purpose passes unchanged;
* an ``OSError`` passes unchanged too: it is about the file (unreadable, disk full), and the caller, which
  knows the file, reports it as such;
* any other exception, and ``SystemExit``, becomes a :class:`~ckpt_formats.PluginError` naming the plugin,
  its format and the file (:class:`~ckpt_formats.errors.PluginLoadError`, also a load error, for ``load``
  ``read_metadata`` and ``open_tensors``); ``KeyboardInterrupt`` is never caught: Ctrl-C stops the program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import CheckpointError, PluginError, PluginLoadError
from .formats import CheckpointFormat
from .tensors import TensorInfo, TensorReader

HOOKS = ("discover", "matches", "load", "read_metadata", "save", "companions", "open_tensors")
_ARG_OF_FILE = {
    "discover": 0, "matches": 0, "load": 0, "read_metadata": 0, "save": 1, "companions": 0, "open_tensors": 0
}


def first_line(exc: BaseException) -> str:
    """``Type: first non-empty line of the message`` (``Type`` alone for an empty message)."""
    line = next((s.strip() for s in str(exc).splitlines() if s.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _subject(hook: str, args: tuple[Any, ...]) -> str:
    """The file (or folder) a call was about, for the message."""
    index = _ARG_OF_FILE[hook]
    value = args[index] if len(args) > index else None
    path = getattr(value, "path", value)  # a Candidate, or a path
    return str(path) if isinstance(path, (str, Path)) else "?"


def failure(fmt: CheckpointFormat, hook: str, subject: str, exc: BaseException) -> PluginError:
    """The :class:`PluginError` for ``fmt``'s ``hook`` having raised ``exc`` while handling ``subject``."""
    what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"raised {first_line(exc)}"
    cls = PluginLoadError if hook in ("load", "read_metadata", "open_tensors") else PluginError
    advice = (
        " The file may be corrupt, or the plugin faulty: re-download or re-export it, or report it to the "
        "plugin's author (no other format was tried)"
        if cls is PluginLoadError
        else " Report it to the plugin's author, or disable it with CKPT_FORMATS_DISABLE"
    )
    return cls(
        f"{subject}: plugin {fmt.plugin!r} (format {fmt.name!r}) failed in {hook}: {what}.{advice}",
        plugin=fmt.plugin,
        format=fmt.name,
        hook=hook,
    )


def _guard(fmt: CheckpointFormat, hook: str, function: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(function, "__ckpt_formats_guarded__", False):
        function = function.__wrapped__  # type: ignore[attr-defined]  # re-registered: guard once

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (CheckpointError, OSError):
            raise
        except (Exception, SystemExit) as exc:
            raise failure(fmt, hook, _subject(hook, args), exc) from exc

    guarded.__ckpt_formats_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def guarded(fmt: CheckpointFormat) -> CheckpointFormat:
    """``fmt`` with each of its declared functions wrapped by the guard (``fmt.plugin`` already set)."""
    changes = {h: _guard(fmt, h, getattr(fmt, h)) for h in HOOKS if getattr(fmt, h) is not None}
    return replace(fmt, **changes)  # type: ignore[arg-type]  # only the callable fields


class _GuardedReader(TensorReader):
    """A plugin's :class:`TensorReader` whose ``infos`` and ``get`` fail under the guard's rules."""

    def __init__(self, fmt: CheckpointFormat, reader: TensorReader, subject: str) -> None:
        self._fmt, self._reader, self._subject = fmt, reader, subject
        self.non_tensor_entries = reader.non_tensor_entries

    def _call(self, what: Callable[[], Any]) -> Any:
        try:
            return what()
        except (CheckpointError, OSError, KeyError):
            raise
        except (Exception, SystemExit) as exc:
            raise failure(self._fmt, "open_tensors", self._subject, exc) from exc

    def infos(self) -> list[TensorInfo]:
        infos: list[TensorInfo] = self._call(self._reader.infos)
        return infos

    def get(self, name: str) -> Any:
        return self._call(lambda: self._reader.get(name))

    def close(self) -> None:
        self._call(self._reader.close)


def guarded_reader(fmt: CheckpointFormat, reader: TensorReader, subject: str) -> TensorReader:
    """``reader`` (from ``fmt.open_tensors``, about the file ``subject``) with its calls guarded."""
    if not isinstance(reader, TensorReader):
        wrong = TypeError(f"returned {type(reader).__name__}, not a TensorReader")
        raise failure(fmt, "open_tensors", subject, wrong)
    return _GuardedReader(fmt, reader, subject)
