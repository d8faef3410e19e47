"""Plugins: the installed third-party example, runtime registration, validation, broken plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import assert_same_tensors, tiny_state_dict, write_pth
from plugin_testing import fake_distribution as _fake_distribution

from ckpt_formats import (
    Candidate,
    CheckpointContentError,
    CheckpointFormat,
    PluginError,
    Registry,
    hookimpl,
    hookspecs,
)


def _load_txt(candidate: Candidate, device: str) -> dict[str, torch.Tensor]:
    values = [float(x) for x in candidate.path.read_text().split()]
    return {"values": torch.tensor(values, device=device)}


TXT = CheckpointFormat(name="txt", priority=500, globs=("*.weights.txt",), load=_load_txt)


class TxtPlugin:
    def __init__(self, *formats: CheckpointFormat):
        self.formats = formats or (TXT,)

    @hookimpl
    def ckpt_formats_register_formats(self, register):
        for fmt in self.formats:
            register(fmt)


@pytest.fixture
def txt_plugin(registry):
    name = registry.register(TxtPlugin(), name="txt-plugin")
    try:
        yield registry
    finally:
        registry.unregister(name)


def test_example_third_party_plugin_is_installed_and_resolves_npz(tmp_path, registry):
    fmt = registry.get_format("npz")
    assert fmt.plugin == "npz" and fmt.distribution == "ckpt-formats-npz" and not fmt.executes_code
    sd = {k: v for k, v in tiny_state_dict().items()}
    np.savez(tmp_path / "model.npz", **{k: v.numpy() for k, v in sd.items()})
    write_pth(tmp_path / "model.pth")
    got = registry.resolve(tmp_path)
    assert got.format.name == "npz" and got.path.name == "model.npz"
    assert_same_tensors(got.state_dict, sd)


def test_npz_loses_to_safetensors(tmp_path, registry):
    from conftest import write_safetensors

    write_safetensors(tmp_path / "model.safetensors")
    np.savez(tmp_path / "model.npz", w=np.ones(2))
    assert registry.resolve(tmp_path).format.name == "safetensors"


def test_runtime_registration_and_unregistration(tmp_path, txt_plugin):
    (tmp_path / "a.weights.txt").write_text("1 2 3")
    write_pth(tmp_path / "model.pth")
    got = txt_plugin.resolve(tmp_path)
    assert got.format.name == "txt" and got.format.plugin == "txt-plugin"
    assert got.state_dict["values"].tolist() == [1.0, 2.0, 3.0]


def test_unregister_removes_the_format(tmp_path, registry):
    registry.register(TxtPlugin(), name="txt-plugin")
    registry.unregister("txt-plugin")
    assert "txt" not in [f.name for f in registry.all_formats()]


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (
            replace(TXT, name="safetensors"),
            "format 'safetensors' is already registered by plugin 'safetensors'",
        ),
        (replace(TXT, priority="high"), "priority must be an int"),
        (replace(TXT, priority=1.5), "priority must be an int"),
        (replace(TXT, priority=True), "priority must be an int"),
        (replace(TXT, globs=()), "at least one discovery glob"),
        (replace(TXT, load="not callable"), "load must be callable"),
        (replace(TXT, matches=42), "matches must be callable"),
        (replace(TXT, name=""), "non-empty string name"),
    ],
)
def test_invalid_declarations_name_the_plugin_and_leave_registry_unchanged(registry, fmt, message):
    before = [f.name for f in registry.all_formats()]
    with pytest.raises(PluginError) as err:
        registry.register(TxtPlugin(fmt), name="bad-plugin")
    assert "plugin 'bad-plugin'" in str(err.value) and message in str(err.value)
    assert [f.name for f in registry.all_formats()] == before


def test_duplicate_within_one_plugin(registry):
    with pytest.raises(PluginError, match="plugin 'dup'.*already registered"):
        registry.register(TxtPlugin(TXT, TXT), name="dup")


def test_a_plugin_whose_hook_raises_is_reported_by_name(registry):
    class Raises:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            raise RuntimeError("boom")

    with pytest.raises(PluginError, match="plugin 'raises'.*RuntimeError: boom"):
        registry.register(Raises(), name="raises")


def test_broken_entry_points_are_reported_and_others_keep_working(tmp_path, monkeypatch, caplog):
    _fake_distribution(
        tmp_path, "broken-import", "broken", "ckf_broken_mod", "raise ImportError('no numpy 9')\n"
    )
    _fake_distribution(
        tmp_path,
        "invalid-decl",
        "invalid",
        "ckf_invalid_mod",
        """
        from ckpt_formats import CheckpointFormat, hookimpl

        @hookimpl
        def ckpt_formats_register_formats(register):
            register(CheckpointFormat(name="bad", priority=1, globs=(), load=print))
        """,
    )
    _fake_distribution(
        tmp_path,
        "good-extra",
        "good",
        "ckf_good_mod",
        """
        from ckpt_formats import CheckpointFormat, hookimpl

        @hookimpl
        def ckpt_formats_register_formats(register):
            register(CheckpointFormat(name="good", priority=7, globs=("*.good",), load=print))
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    names = [f.name for f in registry.all_formats()]
    assert "good" in names and "safetensors" in names and "bad" not in names
    assert registry.get_format("good").distribution == "good-extra"
    broken = {b.name: b for b in registry.broken_plugins}
    assert set(broken) == {"broken", "invalid"}
    assert broken["broken"].distribution == "broken-import" and "no numpy 9" in broken["broken"].error
    assert "plugin 'invalid'" in broken["invalid"].error and "glob" in broken["invalid"].error
    assert any("broken" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_every_hookspec_is_documented_and_implemented_by_a_builtin():
    import ckpt_formats_safetensors

    specs = [n for n in dir(hookspecs) if n.startswith("ckpt_formats_")]
    assert specs == ["ckpt_formats_register_formats"]
    for name in specs:
        assert len((getattr(hookspecs, name).__doc__ or "").strip()) > 80
        assert callable(getattr(ckpt_formats_safetensors, name))


def test_entry_points_are_loaded_lazily_once():
    code = textwrap.dedent(
        """
        import sys
        import ckpt_formats
        r = ckpt_formats.get_registry()
        before = 'ckpt_formats_safetensors' in sys.modules
        r.all_formats(); r.all_formats()
        print(before, 'ckpt_formats_safetensors' in sys.modules, r is ckpt_formats.get_registry())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False True True"


@pytest.mark.parametrize(
    "module", ["ckpt_formats", "ckpt_formats_safetensors", "ckpt_formats_pickle", "ckpt_formats_dcp"]
)
def test_import_is_light(module):
    code = (
        f"import sys, {module}\n"
        "heavy = [m for m in ('torch', 'safetensors', 'huggingface_hub', 'numpy') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_listing_formats_stays_light():
    code = (
        "import sys, ckpt_formats\n"
        "ckpt_formats.get_registry().all_formats()\n"
        "print([m for m in ('torch', 'safetensors', 'huggingface_hub') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- strict hooks: an implementation whose name matches no spec (pluggy's check_pending) -----------------


class MisspelledHook:
    """Implements ``ckpt_formats_register_format`` (singular): a typo pluggy knows no spec for."""

    @hookimpl
    def ckpt_formats_register_format(self, register):
        register(TXT)


def test_runtime_plugin_with_a_misspelled_hook_is_refused_by_name(tmp_path, registry):
    before = [f.name for f in registry.all_formats()]
    with pytest.raises(PluginError) as err:
        registry.register(MisspelledHook(), name="typo-plugin")
    message = str(err.value)
    assert "plugin 'typo-plugin'" in message
    assert "unknown hook 'ckpt_formats_register_format'" in message
    assert "ckpt_formats_register_formats" in message  # the hook it probably meant
    assert [f.name for f in registry.all_formats()] == before
    # nothing was left behind: the name is free and the spec'd hooks still work
    assert registry.register(TxtPlugin(), name="typo-plugin") == "typo-plugin"
    (tmp_path / "a.weights.txt").write_text("4 5")
    assert registry.resolve(tmp_path).state_dict["values"].tolist() == [4.0, 5.0]


def test_runtime_plugin_whose_hook_takes_the_wrong_argument_is_a_plugin_error(registry):
    class WrongArgument:
        @hookimpl
        def ckpt_formats_register_formats(self, registrar):
            registrar(TXT)

    with pytest.raises(PluginError, match="plugin 'wrong-arg': .*'registrar'.* not be found in the hookspec"):
        registry.register(WrongArgument(), name="wrong-arg")
    assert "txt" not in [f.name for f in registry.all_formats()]


MISSPELLED_MODULE = """
    from ckpt_formats import CheckpointFormat, hookimpl

    @hookimpl
    def ckpt_formats_register_format(register):
        register(CheckpointFormat(name="typo-format", priority=7, globs=("*.typo",), load=print))
    """


def test_entry_point_with_a_misspelled_hook_is_broken_and_listed(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "typo-dist", "typo", "ckf_typo_mod", MISSPELLED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    names = [f.name for f in registry.all_formats()]
    assert "typo-format" not in names and "safetensors" in names
    broken = {b.name: b for b in registry.broken_plugins}
    assert set(broken) == {"typo"} and broken["typo"].distribution == "typo-dist"
    assert "plugin 'typo': unknown hook 'ckpt_formats_register_format'" in broken["typo"].error

    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cli = [sys.executable, "-m", "ckpt_formats.cli", "list"]
    listed = subprocess.run(cli, capture_output=True, text=True, env=env, check=True)
    line = [x for x in listed.stdout.splitlines() if x.startswith("BROKEN")]
    assert line == [f"BROKEN plugin typo (typo-dist): {broken['typo'].error}"]
    assert "safetensors" in listed.stdout and "typo-format" not in listed.stdout


def test_the_quick_start_in_the_package_docstring_is_a_working_plugin(tmp_path, monkeypatch):
    import importlib

    from conftest import write_safetensors

    import ckpt_formats

    doc = textwrap.dedent(ckpt_formats.__doc__)
    after = doc.split("``my_plugin.py``, a complete plugin")[1].split("::\n", 1)[1]
    code = after.split("\n``ckpt-formats")[0]
    (tmp_path / "ckf_quick_start.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = importlib.import_module("ckf_quick_start")

    registry = Registry(load_entry_points=False)
    registry.register(plugin)
    weights = tmp_path / "weights"
    weights.mkdir()
    write_safetensors(weights / "model.st")
    got = registry.resolve(weights)
    assert got.format.name == "st-alias" and got.format.plugin == "ckf_quick_start"
    assert_same_tensors(got.state_dict, tiny_state_dict())
    (weights / "model.st").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(CheckpointContentError, match="named like a st-alias file"):
        registry.resolve(weights)


def test_every_plugin_types_its_hook_with_the_public_registrar():
    import typing

    import ckpt_formats_npz

    import ckpt_formats_pickle
    import ckpt_formats_safetensors
    from ckpt_formats import FormatRegistrar

    assert "FormatRegistrar" in __import__("ckpt_formats").__all__
    for plugin in (ckpt_formats_safetensors, ckpt_formats_pickle, ckpt_formats_npz):
        hints = typing.get_type_hints(plugin.ckpt_formats_register_formats)
        assert hints["register"] is FormatRegistrar, plugin.__name__
