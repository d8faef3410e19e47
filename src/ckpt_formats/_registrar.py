"""The registrar a plugin's ``ckpt_formats_register_formats(register)`` hook receives.

Below :mod:`ckpt_formats.hookspecs` (which names this type) and the plugin manager (:mod:`._plugins`): it
imports only the value types, the errors and the guard.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ._guard import guarded
from .errors import PluginError
from .formats import CheckpointFormat


class FormatRegistrar:
    """What ``ckpt_formats_register_formats(register)`` receives: call it once per format.

    ``register(CheckpointFormat(...))`` validates the declaration (unique name, integer priority, at least
    one glob, callable loader and hooks) and raises :class:`~ckpt_formats.PluginError` naming the plugin
    when it is invalid.

    Attributes:
        plugin: the name the plugin is registered under (its entry-point name).
        distribution: the installed distribution that provides it; None for a plugin registered at run time.
        formats: the formats accepted so far, normalised (tuples for globs, ``plugin`` filled in).
    """

    def __init__(self, plugin: str, distribution: str | None, taken: dict[str, CheckpointFormat]):
        self.plugin = plugin
        self.distribution = distribution
        self._taken = taken
        self.formats: list[CheckpointFormat] = []

    def __call__(self, fmt: CheckpointFormat) -> None:
        """Declare ``fmt``.

        Args:
            fmt: the format to add to the registry.

        Raises:
            PluginError: the declaration is invalid; the message names the plugin and the format.
        """
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
        for attr in ("save", "matches", "read_metadata", "discover", "companions", "open_tensors"):
            value = getattr(fmt, attr)
            if value is not None and not callable(value):
                raise self._fail(f"{label}: {attr} must be callable or None")
        exclude = (fmt.exclude_globs,) if isinstance(fmt.exclude_globs, str) else tuple(fmt.exclude_globs)
        hub_names = (fmt.hub_filenames,) if isinstance(fmt.hub_filenames, str) else tuple(fmt.hub_filenames)
        return guarded(
            replace(
                fmt,
                globs=globs,
                exclude_globs=exclude,
                hub_filenames=hub_names,
                executes_code=bool(fmt.executes_code),
                plugin=self.plugin,
                distribution=self.distribution,
            )
        )
