"""``torch.compile`` for the engine: the backend and mode, and a compile cache that outlives the process.

Compiling the 2048 model with inductor takes about half a minute on an H200 (measured: 34 s to the first
frame), every run, because inductor's caches live under ``/tmp`` by default and are keyed by nothing the
user sees. :func:`compile_cache_dir` gives each (torch version, GPU, dtype, image size) its own folder under
``$XDG_CACHE_HOME/corridorkey/compile`` (``~/.cache``), and :func:`compile_model` points inductor's FX-graph
and AOTAutograd caches there, so a second run with the same settings loads the compiled kernels instead of
building them again (dynamo still traces the Python, which is seconds). ``$CORRIDORKEY_COMPILE_CACHE`` names
another root; a ``TORCHINDUCTOR_CACHE_DIR`` set by the user is left alone.

Modes (``torch.compile(mode=...)``): ``default`` is the default. Upstream CorridorKey uses ``max-autotune``,
which benchmarks many kernel variants per operator: on an H200 its first 2048 frame had not finished after
240 s (measured), for a few percent at best on a model whose time is in cuDNN convolutions and attention;
``max-autotune-no-cudagraphs`` tunes the same without CUDA graphs; ``reduce-overhead`` adds CUDA graphs
(less launch overhead; more memory). See docs/benchmarks.md for the figures of each.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .config import COMPILE_MODES

logger = logging.getLogger(__name__)

CACHE_ENV = "CORRIDORKEY_COMPILE_CACHE"
_SET_BY_US: str | None = None  # the TORCHINDUCTOR_CACHE_DIR this module set (a user's own is left alone)


def compile_backend(compile: bool | str) -> str | None:
    """The ``torch.compile`` backend ``compile`` names (True: torch's default), checked before any loading.

    Raises:
        ConfigError: torch knows no such backend.
    """
    if not compile:
        return None
    backend = "inductor" if compile is True else str(compile)
    try:
        torch.compile(torch.nn.Identity(), backend=backend)  # lazy: only looks the backend up
    except torch._dynamo.exc.InvalidBackend as exc:
        known = ", ".join(torch._dynamo.list_backends(exclude_tags=()))
        raise ConfigError(f"unknown torch.compile backend {backend!r}: use one of {known}") from exc
    return backend


def check_compile_mode(mode: str | None) -> str | None:
    """``mode`` if it is one of :data:`COMPILE_MODES` (or None).

    Raises:
        ConfigError: any other value, with the modes there are.
    """
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError(f"unknown compile mode {mode!r}: use one of {', '.join(COMPILE_MODES)}")
    return mode


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]+", "-", text).strip("-") or "unknown"


def compile_cache_dir(device: torch.device, dtype: torch.dtype, img_size: int) -> Path:
    """The persistent cache folder for this torch version, device (the GPU's name), dtype and size."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        root = str(cache / "corridorkey" / "compile")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    key = f"torch{torch.__version__}-{gpu}-{str(dtype).removeprefix('torch.')}-{img_size}"
    return Path(root) / _slug(key)


def _inductor_default() -> str:
    """Inductor's own default cache folder, which inductor writes into ``TORCHINDUCTOR_CACHE_DIR`` itself
    the first time it looks (so finding it there does not mean the user chose it)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # a torch that keeps it elsewhere: its documented default
        import getpass
        import tempfile

        return os.path.join(tempfile.gettempdir(), "torchinductor_" + getpass.getuser())
    return default_cache_dir()


def compile_model(
    model: torch.nn.Module,
    backend: str,
    mode: str | None,
    *,
    device: torch.device,
    dtype: torch.dtype,
    img_size: int,
) -> Any:
    """``torch.compile(model, backend=..., mode=...)`` with inductor's caches in :func:`compile_cache_dir`
    (unless the user set ``TORCHINDUCTOR_CACHE_DIR``). Inductor reads that variable when it compiles, so the
    process's later compilations use the folder of the latest engine."""
    global _SET_BY_US
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if backend == "inductor" and (not current or current in (_SET_BY_US, _inductor_default())):
        folder = compile_cache_dir(device, dtype, img_size)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = _SET_BY_US = str(folder)
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        logger.info("compile cache: %s", folder)
    options: dict[str, Any] = {"backend": backend}
    if mode is not None and mode != "default":
        options["mode"] = mode
    return torch.compile(model, **options)
