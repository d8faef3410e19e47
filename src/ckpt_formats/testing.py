"""A plugin author's kit: what a format plugin's tests need, and what this project's own tests use.

* :func:`isolated_registry`: a :class:`~ckpt_formats.Registry` that loads no installed plugin (or only the
  entry points named), with the plugins under test registered at run time;
* :func:`tiny_state_dict`: a small state dict with float32, float16 and int64 tensors, the same for a seed;
* writers for each builtin format: :func:`write_safetensors`, :func:`write_sharded_safetensors`,
  :func:`write_pickle`;
* :func:`assert_same_tensors`: same names, dtypes, shapes and bits.

Example (docs/plugin-authors.md has a complete plugin with its tests)::

    from ckpt_formats.testing import assert_same_tensors, isolated_registry, tiny_state_dict

    registry = isolated_registry(my_plugin)          # only this plugin: no installed format interferes
    my_plugin.save_file(tiny_state_dict(), "weights/model.myfmt")
    assert_same_tensors(registry.resolve("weights").state_dict, tiny_state_dict())

torch and safetensors are imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PluginError
from .hookspecs import PROJECT_NAME
from .registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "assert_same_tensors",
    "isolated_registry",
    "tiny_state_dict",
    "write_pickle",
    "write_safetensors",
    "write_sharded_safetensors",
]

BUILTIN_ENTRY_POINTS = ("safetensors", "pickle")


def isolated_registry(*plugins: object, entry_points: tuple[str, ...] | list[str] = ()) -> Registry:
    """A registry with no installed plugin except the ``entry_points`` named, plus ``plugins``.

    Args:
        plugins: plugin modules or objects (with ``@hookimpl`` functions) to register, in order; each is
            registered under its ``__name__`` (or class name).
        entry_points: names in the ``ckpt_formats`` entry-point group to load as installed plugins
            (e.g. ``("safetensors",)`` for the builtin safetensors formats beside yours).

    Returns:
        The registry; use it directly (``registry.resolve(...)``), never the process-wide one.

    Raises:
        PluginError: a plugin is invalid, or an entry point named is not installed (the message lists those
            that are).
    """
    from importlib.metadata import entry_points as installed

    registry = Registry(load_entry_points=False)
    found = {ep.name: ep for ep in installed(group=PROJECT_NAME)}
    for name in entry_points:
        ep = found.get(name)
        if ep is None:
            known = ", ".join(sorted(found)) or "none"
            raise PluginError(f"no installed ckpt_formats entry point named {name!r} (installed: {known})")
        registry.register(ep.load(), name=name, distribution=ep.dist.name if ep.dist is not None else None)
    for plugin in plugins:
        registry.register(plugin)
    return registry


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Four small tensors (float32 4x3 and 4, float16 2x4, int64 5), random but fixed for a ``seed``.

    Returns:
        ``encoder.weight``, ``encoder.bias``, ``head.weight`` and ``head.steps``: 29 parameters, 128 bytes.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.weight": torch.randn(4, 3, generator=g),
        "encoder.bias": torch.randn(4, generator=g),
        "head.weight": torch.randn(2, 4, generator=g).to(torch.float16),
        "head.steps": torch.arange(5, dtype=torch.int64),
    }


def _parent(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_safetensors(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a safetensors file (folders created as needed).

    Args:
        path: the file to write.
        state_dict: the tensors (default: :func:`tiny_state_dict`).
        metadata: the ``__metadata__`` strings.

    Returns:
        ``path``.
    """
    from safetensors.torch import save_file

    path = _parent(path)
    tensors = dict(state_dict) if state_dict is not None else tiny_state_dict()
    save_file(tensors, str(path), metadata=dict(metadata) if metadata else None)
    return path


def write_sharded_safetensors(
    path: str | os.PathLike[str], state_dict: Mapping[str, Any] | None = None, max_shard_size: int = 64
) -> list[Path]:
    """Write a sharded safetensors set in the Hugging Face layout.

    Args:
        path: ``DIR/NAME.safetensors``; the shards are ``DIR/NAME-0000i-of-0000N.safetensors``, the index
            ``DIR/NAME.safetensors.index.json``.
        state_dict: the tensors (default: :func:`tiny_state_dict`: 2 shards at the default size).
        max_shard_size: bytes per shard at most.

    Returns:
        The files written: the shards, then the index (just ``path`` when one shard holds everything).
    """
    from safetensors.torch import save_file

    from ._shards import write_sharded

    tensors = dict(state_dict) if state_dict is not None else tiny_state_dict()
    return write_sharded(
        tensors,
        _parent(path),
        max_shard_size,
        lambda tmp, part, _final: save_file(part, str(tmp)),
        force=True,
    )


def write_pickle(path: str | os.PathLike[str], obj: Any = None) -> Path:
    """Write a PyTorch pickle checkpoint with ``torch.save`` (``.pth``, ``.pt``, ``.ckpt``).

    Args:
        path: the file to write.
        obj: what to save (default: :func:`tiny_state_dict`); wrap it (``{"state_dict": ...}``) to test
            training checkpoints.

    Returns:
        ``path``.
    """
    import torch

    path = _parent(path)
    torch.save(obj if obj is not None else tiny_state_dict(), path)
    return path


def assert_same_tensors(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Assert the two state dicts have the same names, and each tensor the same dtype, shape and bits.

    Raises:
        AssertionError: naming the first difference (missing or extra names, or the tensor that differs).
    """
    import torch

    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    assert not missing and not extra, f"names differ: missing {missing[:5]}, unexpected {extra[:5]}"
    for name, want in expected.items():
        got = actual[name]
        assert isinstance(got, torch.Tensor), f"{name}: {type(got).__name__}, not a tensor"
        assert (got.dtype, tuple(got.shape)) == (want.dtype, tuple(want.shape)), (
            f"{name}: {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"
        )
        same = torch.equal(
            got.detach().cpu().contiguous().reshape(-1).view(torch.uint8),
            want.detach().cpu().contiguous().reshape(-1).view(torch.uint8),
        )
        assert same, f"{name}: the values differ"
