"""The pluggy hook specifications. Specs only: the manager lives in :mod:`ckpt_formats._plugins`.

A plugin implements a hook by defining a function of the same name marked with :data:`hookimpl`. A function
whose name starts with ``ckpt_formats_`` but matches no spec here (a typo) makes the plugin broken: the
registry runs pluggy's ``check_pending()`` after adding each plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

PROJECT_NAME = "ckpt_formats"
"""Both the pluggy marker name and the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

if TYPE_CHECKING:
    from ._registrar import FormatRegistrar


# -- declaring formats (called once per plugin, on first use of the registry) ---------------------------


@hookspec
def ckpt_formats_register_formats(register: FormatRegistrar) -> None:
    """Declare this plugin's checkpoint formats.

    Call ``register(CheckpointFormat(...))`` once per format. The registrar validates each declaration
    (unique name, integer priority, at least one glob, callable loader) and raises
    :class:`~ckpt_formats.errors.PluginError` naming this plugin when one is invalid. Every plugin's
    implementation is called once, on first use of the registry; results are not combined, so the
    return value is ignored.

    :param register:
        The :class:`~ckpt_formats.FormatRegistrar` of this plugin: ``register(fmt)`` adds the
        :class:`~ckpt_formats.CheckpointFormat` ``fmt``; ``register.plugin`` and
        ``register.distribution`` say under which name and from which distribution the plugin was loaded.
    """
