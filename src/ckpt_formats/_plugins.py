"""Plugin loading and validation: the pluggy manager, entry points, and the registrar plugins call.

A plugin that cannot be imported, implements a hook no spec declares (pluggy's ``check_pending()``) or
declares an invalid format (see :mod:`._registrar`) is *broken*: it is skipped, logged and listed, and every
other plugin keeps working. A plugin registered at run time with :meth:`Plugins.add` raises
:class:`PluginError` instead.

The builtin plugins (the entry points of this distribution) are loaded before any other, whatever order
``importlib.metadata`` lists them in: a third-party plugin that declares a builtin format's name (or takes a
builtin plugin's name) is the one marked broken. Every function a format declares is wrapped by
:mod:`._guard` when it is registered. Below the hub and the :class:`~ckpt_formats.registry.Registry`
facade: it imports neither.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import pluggy

from . import hookspecs
from ._guard import first_line
from ._registrar import FormatRegistrar
from .errors import PluginError
from .formats import CheckpointFormat

logger = logging.getLogger("ckpt_formats.registry")

SAFE_ONLY_ENV = "CKPT_FORMATS_SAFE_ONLY"
DISABLE_ENV = "CKPT_FORMATS_DISABLE"
_TRUE = {"1", "true", "yes", "on"}
BUILTIN_DISTRIBUTION = "ckpt-formats"
"""The distribution whose entry points are the builtin plugins (safetensors, pickle)."""


def _normalized(dist: str | None) -> str:
    return re.sub(r"[-_.]+", "-", dist or "").lower()


def safe_only_from_env() -> bool:
    """True when ``CKPT_FORMATS_SAFE_ONLY`` asks for safe formats only (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get(SAFE_ONLY_ENV, "").strip().lower() in _TRUE


def disabled_from_env() -> frozenset[str]:
    """The plugin and format names listed in ``CKPT_FORMATS_DISABLE`` (comma-separated)."""
    return frozenset(n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip())


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be imported or declared something invalid."""

    name: str
    distribution: str | None
    error: str


class Plugins:
    """The pluggy manager of one registry and the formats its plugins declare."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._distributions: dict[str, str | None] = {}  # plugin name -> distribution, in order
        self.formats: dict[str, CheckpointFormat] = {}
        self.broken: dict[str, BrokenPlugin] = {}

    def load_entry_points(self) -> None:
        """Import and add every plugin of the ``ckpt_formats`` entry-point group, except disabled ones.

        The builtin plugins come first, so that a third party can never take their format names. (A
        distribution found twice on ``sys.path`` is listed once: ``importlib.metadata`` drops duplicates.)
        """
        from importlib.metadata import entry_points

        disabled = disabled_from_env()
        found = list(entry_points(group=hookspecs.PROJECT_NAME))
        builtin = [_normalized(ep.dist.name if ep.dist else None) == BUILTIN_DISTRIBUTION for ep in found]
        for _, ep in sorted(zip(builtin, found, strict=True), key=lambda pair: not pair[0]):
            dist = ep.dist.name if ep.dist is not None else None
            if ep.name in disabled:
                logger.info("plugin %r is disabled by %s", ep.name, DISABLE_ENV)
                continue
            if self._pm.has_plugin(ep.name) or ep.name in self.broken:
                owner = self._distributions.get(ep.name)
                self._mark_broken(
                    ep.name,
                    dist,
                    f"the plugin name {ep.name!r} is already taken by distribution {owner or '?'}; "
                    "rename the entry point",
                    key=f"{ep.name} ({dist})",
                )
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # a broken plugin must not take the others down
                self._mark_broken(ep.name, dist, f"import failed: {type(exc).__name__}: {exc}")
                continue
            try:
                self.add(plugin, ep.name, dist)
            except PluginError as exc:
                self._mark_broken(ep.name, dist, str(exc))

    def _mark_broken(self, name: str, dist: str | None, error: str, key: str | None = None) -> None:
        logger.error("ckpt_formats plugin %r (%s) is broken and was skipped: %s", name, dist or "?", error)
        self.broken[key or name] = BrokenPlugin(name, dist, error)

    def add(self, plugin: object, name: str, dist: str | None) -> None:
        """Register ``plugin`` and validate its hooks and formats; leaves nothing behind when invalid.

        Raises:
            PluginError: the name is taken, a hook implementation matches no spec or has the wrong
                arguments, or a declared format is invalid. The message names the plugin.
        """
        if self._pm.has_plugin(name) or self._pm.is_registered(plugin):
            raise PluginError(f"plugin {name!r} is already registered")
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # an implementation whose arguments the spec lacks
            detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise PluginError(f"plugin {name!r}: {detail}") from exc
        self._distributions[name] = dist
        try:
            self._check_hooks(plugin, name)
            self.collect()
        except PluginError:
            self.remove(name)
            raise

    def _check_hooks(self, plugin: object, name: str) -> None:
        """pluggy's ``check_pending()``: every ``ckpt_formats_*`` implementation must match a spec."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            callers = self._pm.get_hookcallers(plugin) or []
            unknown = sorted(c.name for c in callers if not c.has_spec())
            known = ", ".join(n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT_NAME}_"))
            what = ", ".join(repr(n) for n in unknown) or str(exc)
            raise PluginError(
                f"plugin {name!r}: unknown hook {what} (no such hook specification; the hooks are: {known}). "
                "Check the function's spelling"
            ) from exc

    def remove(self, name: str) -> None:
        """Unregister the plugin called ``name`` and forget its formats.

        Raises:
            PluginError: no plugin of that name is registered (the message lists the registered ones).
        """
        if not self._pm.has_plugin(name):
            known = ", ".join(self._distributions) or "none"
            raise PluginError(f"no plugin {name!r} is registered (registered: {known})")
        self._pm.unregister(name=name)
        del self._distributions[name]
        self.collect()

    def collect(self) -> None:
        """Call every plugin's ``ckpt_formats_register_formats`` in registration order, into :attr:`formats`.

        Raises:
            PluginError: a plugin declared an invalid format or its hook raised.
        """
        formats: dict[str, CheckpointFormat] = {}
        order = list(self._distributions)  # registration order: a duplicate blames the later plugin
        impls = self._pm.hook.ckpt_formats_register_formats.get_hookimpls()
        for impl in sorted(impls, key=lambda i: order.index(i.plugin_name)):
            registrar = FormatRegistrar(impl.plugin_name, self._distributions.get(impl.plugin_name), formats)
            try:
                impl.function(register=registrar)
            except PluginError:
                raise
            except (Exception, SystemExit) as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: ckpt_formats_register_formats failed: {first_line(exc)}"
                ) from exc
            formats.update((f.name, f) for f in registrar.formats)
        self.formats = formats
