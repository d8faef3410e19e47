"""The format registry: plugins in, the best checkpoint of a directory out.

The layers below it, one reason to change each (they import nothing of this package):

* :mod:`ckpt_formats._plugins` and :mod:`ckpt_formats._registrar`: the pluggy manager, entry-point loading,
  hook and format validation (:class:`FormatRegistrar`, :class:`BrokenPlugin`);
* :mod:`ckpt_formats._discovery`: which files are candidates of which format, which one wins, the content
  check before loading, the "nothing found" message (:class:`Discovery`);
* :mod:`ckpt_formats.hub`: the download when nothing is local (it may use discovery, never this package).

This package composes them: :mod:`._loading` (device and content checks around a plugin's loader) and
:mod:`._facade` (:class:`Registry`, the process-wide :func:`get_registry` and :func:`resolve`). The names
below are re-exported here for callers; the modules above never import this package.
"""

from __future__ import annotations

from .._discovery import Discovery, check_content, not_found_message
from .._plugins import (
    DISABLE_ENV,
    SAFE_ONLY_ENV,
    BrokenPlugin,
    disabled_from_env,
    safe_only_from_env,
)
from .._registrar import FormatRegistrar
from ._facade import Registry, get_registry, resolve

__all__ = [
    "DISABLE_ENV",
    "SAFE_ONLY_ENV",
    "BrokenPlugin",
    "Discovery",
    "FormatRegistrar",
    "Registry",
    "check_content",
    "disabled_from_env",
    "get_registry",
    "not_found_message",
    "resolve",
    "safe_only_from_env",
]
