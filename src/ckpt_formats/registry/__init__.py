"""The format registry: plugins in, the best checkpoint of a directory out.

Three modules, one reason to change each:

* :mod:`._plugins`: the pluggy manager, entry-point loading, hook and format validation
  (:class:`FormatRegistrar`, :class:`BrokenPlugin`);
* :mod:`._discovery`: which files are candidates of which format, which one wins, the content check
  before loading, the "nothing found" message (:class:`Discovery`);
* :mod:`._facade`: :class:`Registry`, the process-wide :func:`get_registry` and :func:`resolve`.
"""

from __future__ import annotations

from ._discovery import Discovery, check_content, not_found_message
from ._facade import Registry, get_registry, resolve
from ._plugins import (
    DISABLE_ENV,
    SAFE_ONLY_ENV,
    BrokenPlugin,
    FormatRegistrar,
    disabled_from_env,
    safe_only_from_env,
)

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
