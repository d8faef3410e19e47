"""Shared fixtures: small real checkpoints on disk, and a fresh registry per test."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ckpt_formats import Registry
from ckpt_formats.testing import (  # noqa: F401  (re-exported for the test modules)
    assert_same_tensors,
    tiny_state_dict,
    write_pickle,
    write_safetensors,
)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (CUDA)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# The plugin author's kit is what this project's own tests use too.
write_pth = write_pickle


@pytest.fixture
def registry(monkeypatch) -> Registry:
    """A fresh registry with the project's own entry points (builtins and the example plugin); any other
    installed plugin is blocked (:func:`project_only`), so the tests hold beside it."""
    monkeypatch.setenv("CKPT_FORMATS_DISABLE", project_only())
    registry = Registry()
    registry.all_formats()  # load now: the "disabled" notes are logged at set-up, not in the test
    return registry


PROJECT_PLUGINS = ("safetensors", "pickle", "dcp", "onnx", "npz")
"""The project's own plugins: the builtins and the example third-party plugin that scripts/install adds."""


def foreign_plugins() -> list[str]:
    """Entry points of the ``ckpt_formats`` group other than the project's own (a user's, a third party's)."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group="ckpt_formats")} - set(PROJECT_PLUGINS))


def project_only(disable: str = "") -> str:
    """A ``CKPT_FORMATS_DISABLE`` value that blocks ``disable`` and every foreign plugin: a registry built
    with it holds the project's own formats only, whatever else is installed."""
    return ",".join([*(n.strip() for n in disable.split(",") if n.strip()), *foreign_plugins()])


@pytest.fixture
def project_plugins(monkeypatch):
    """The process-wide registry (the CLIs') built from the project's own plugins only: tests that check
    the exact set of formats hold with another plugin installed."""
    from ckpt_formats.registry import _facade

    monkeypatch.setenv("CKPT_FORMATS_DISABLE", project_only())
    monkeypatch.setattr(_facade, "_registry", None)
    yield
    _facade._registry = None  # the next user builds it again, with the environment restored


@pytest.fixture
def info_logs(caplog):
    caplog.set_level(logging.INFO, logger="ckpt_formats")
    return caplog


@pytest.fixture
def hub():
    """A fake Hugging Face Hub on 127.0.0.1 (tests/fakehub.py), stopped at teardown."""
    from fakehub import FakeHub

    with FakeHub() as server:
        yield server


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A private Hugging Face cache directory."""
    return tmp_path / "hf-cache"


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """Caches the code under test keeps (the checkpoint hash cache) go to a temporary folder, for this
    process and the ``corridorkey`` processes it starts, never to the user's ~/.cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint folder for CLI runs (modules that need another define their own)."""
    from helpers_ckpt import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="session")
def engine(ckpt_dir: Path):
    """The same checkpoint loaded in-process: the reference the CLI's outputs must match."""
    from helpers_ckpt import TINY_IMG_SIZE

    from corridorkey_engine.engine import load_engine

    return load_engine(ckpt_dir, device="cpu", img_size=TINY_IMG_SIZE)


def run_main(
    main: Callable[[list[str]], int], prog: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A console script's ``main(argv)`` in this process, as a CompletedProcess (status, stdout, stderr):
    the real parsing and code without a second interpreter start, and visible to mutation testing.

    ``env`` is set for the call only; the logging set-up the CLI makes is undone afterwards (as a process
    exit would). Variables a module reads at import, signals and exit-time behaviour need a real process.
    """
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_logging = root.handlers[:], root.level
    touched = [logging.getLogger(name) for name in ("ckpt_formats.hub", "py.warnings")]  # the CLIs set these
    saved_levels = [logger.level for logger in touched]
    saved_env = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exc:  # argparse's usage errors and --help
                status = exc.code if isinstance(exc.code, int) else 1
    finally:
        root.handlers[:] = saved_logging[0]
        root.setLevel(saved_logging[1])
        for logger, level in zip(touched, saved_levels, strict=True):
            logger.setLevel(level)
        logging.captureWarnings(False)  # ckpt-formats routes warnings to logging for its process
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess([prog, *argv], status or 0, out.getvalue(), err.getvalue())
