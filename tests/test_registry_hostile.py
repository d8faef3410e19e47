"""Hostile or faulty plugins stay contained: builtin names are safe, failures name the plugin and its format,
one failing format never takes the others down, and ``sys.exit`` in a loader is a load error."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import torch
from conftest import assert_same_tensors, tiny_state_dict, write_pth, write_safetensors
from plugin_testing import declaring, fake_distribution

from ckpt_formats import (
    Candidate,
    CheckpointContentError,
    CheckpointFormat,
    CheckpointLoadError,
    HubSource,
    PluginError,
    Registry,
    hookimpl,
)
from ckpt_formats.errors import PluginLoadError
from ckpt_formats.hub import fetch

HOOKS = ["discover", "matches", "load", "read_metadata", "save", "companions"]


class Hostile:
    """A plugin declaring format ``hostile`` (``*.hostile``, priority 500, above safetensors) whose function
    ``fail`` misbehaves as ``how`` says; its other functions work."""

    def __init__(self, fail: str | None = None, how: str = "raise") -> None:
        self.fail, self.how = fail, how

    def _maybe_fail(self, hook: str):
        if hook != self.fail:
            return
        if self.how == "exit":
            sys.exit(0)
        if self.how == "interrupt":
            raise KeyboardInterrupt
        if self.how == "garbage":
            return "garbage"
        raise RuntimeError(f"boom in {hook}\nsecond line of the plugin's message")

    def discover(self, directory, matched):
        return self._maybe_fail("discover") or [Candidate("hostile", p) for p in matched]

    def matches(self, path):
        self._maybe_fail("matches")
        return path.read_bytes().startswith(b"HOSTILE")

    def load(self, candidate, device):
        self._maybe_fail("load")
        return {"w": torch.tensor([float(len(candidate.path.read_bytes()))], device=device)}

    def read_metadata(self, candidate):
        self._maybe_fail("read_metadata")
        return {"kind": "hostile"}

    def save(self, state_dict, path, metadata):
        self._maybe_fail("save")
        path.write_bytes(b"HOSTILE")

    def companions(self, path):
        self._maybe_fail("companions")
        return []

    @hookimpl
    def ckpt_formats_register_formats(self, register):
        register(
            CheckpointFormat(
                name="hostile",
                priority=500,
                globs=("*.hostile",),
                load=self.load,
                save=self.save,
                matches=self.matches,
                read_metadata=self.read_metadata,
                discover=self.discover,
                companions=self.companions,
                hub_filenames=("model.hostile",),
            )
        )


@pytest.fixture
def hostile(registry):
    def add(fail=None, how="raise"):
        registry.register(Hostile(fail, how), name="hostile-plugin")
        return registry

    yield add
    if "hostile" in [f.name for f in registry.all_formats()]:
        registry.unregister("hostile-plugin")


def _names_plugin(text: str, path) -> None:
    assert "plugin 'hostile-plugin'" in text and "format 'hostile'" in text and str(path) in text
    assert "\n" not in text


# -- a builtin format's name cannot be taken -------------------------------------------------------------

TAKEOVER = """
from ckpt_formats import CheckpointFormat, hookimpl

def load(candidate, device):
    open({marker!r}, "w").write("the third-party loader ran")
    return {{}}

@hookimpl
def ckpt_formats_register_formats(register):
    register(CheckpointFormat(name={name!r}, priority=1000, globs=("*.safetensors", "*.pth"), load=load))
"""


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("name", ["safetensors", "pickle"])
def test_a_third_party_cannot_take_a_builtin_format_name(tmp_path, monkeypatch, where, name):
    site, ckpt, marker = tmp_path / "site", tmp_path / "ckpt", tmp_path / "marker"
    site.mkdir(), ckpt.mkdir()
    fake_distribution(
        site,
        "evil-formats",
        "evil",
        f"ckf_evil_{name}_{where}",
        TAKEOVER.format(marker=str(marker), name=name),
    )
    paths = [str(site), *sys.path] if where == "before" else [*sys.path, str(site)]
    monkeypatch.setattr(sys, "path", paths)
    order = [ep.name for ep in entry_points(group="ckpt_formats") if ep.name in ("evil", name)]
    assert order == (["evil", name] if where == "before" else [name, "evil"])  # the order really differs

    registry = Registry()
    fmt = registry.get_format(name)
    assert (fmt.plugin, fmt.distribution) == (name, "ckpt-formats")
    broken = {b.name: b for b in registry.broken_plugins}
    assert list(broken) == ["evil"] and broken["evil"].distribution == "evil-formats"
    assert f"format {name!r} is already registered by plugin {name!r}" in broken["evil"].error
    sd = tiny_state_dict()
    write_safetensors(ckpt / "model.safetensors", sd) if name == "safetensors" else write_pth(
        ckpt / "m.pth", sd
    )
    got = registry.resolve(ckpt)
    assert got.format.name == name and got.format.plugin == name
    assert_same_tensors(got.state_dict, sd)
    assert not marker.exists()


def test_a_third_party_entry_point_named_like_a_builtin_plugin_is_broken(tmp_path, monkeypatch):
    fake_distribution(
        tmp_path, "evil-names", "safetensors", "ckf_evil_names", TAKEOVER.format(marker="x", name="x")
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    assert registry.get_format("safetensors").distribution == "ckpt-formats"
    (broken,) = registry.broken_plugins
    assert (broken.name, broken.distribution) == ("safetensors", "evil-names")
    assert "already taken by distribution ckpt-formats" in broken.error
    assert "x" not in [f.name for f in registry.all_formats()]


# -- discover / matches failures leave that format out, never the others -----------------------------------


@pytest.mark.parametrize("how", ["raise", "exit", "garbage"])
def test_a_failing_discover_only_removes_its_own_format(tmp_path, hostile, caplog, how):
    registry = hostile("discover", how)
    sd = tiny_state_dict()
    write_safetensors(tmp_path / "model.safetensors", sd)
    (tmp_path / "x.hostile").write_bytes(b"HOSTILE")
    with caplog.at_level(logging.WARNING, logger="ckpt_formats"):
        got = registry.resolve(tmp_path)
    assert got.format.name == "safetensors"
    assert_same_tensors(got.state_dict, sd)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    _names_plugin(warning, tmp_path)
    assert "left out of the choice" in warning and "failed in discover" in warning
    assert list(registry.discover(tmp_path).faulty) == ["hostile"]


def test_a_failing_discover_with_nothing_else_says_so(tmp_path, hostile):
    registry = hostile("discover")
    (tmp_path / "x.hostile").write_bytes(b"HOSTILE")
    with pytest.raises(Exception, match="left out because their plugin failed: hostile"):
        registry.resolve(tmp_path)


def test_a_failing_matches_keeps_a_corrupt_builtin_files_clear_error(tmp_path, hostile, caplog):
    registry = hostile("matches")
    path = write_pth(tmp_path / "model.safetensors")  # a pickle named .safetensors
    with (
        caplog.at_level(logging.WARNING, logger="ckpt_formats"),
        pytest.raises(CheckpointContentError) as err,
    ):
        registry.resolve(tmp_path)
    assert str(path) in str(err.value) and "matches the pickle format" in str(err.value)
    assert any("failed in matches" in r.getMessage() for r in caplog.records)


def test_the_winners_failing_matches_leaves_it_out_with_a_warning(tmp_path, hostile, caplog):
    registry = hostile("matches")
    sd = tiny_state_dict()
    write_safetensors(tmp_path / "model.safetensors", sd)
    path = tmp_path / "x.hostile"
    path.write_bytes(b"HOSTILE")
    with caplog.at_level(logging.WARNING, logger="ckpt_formats"):
        got = registry.resolve(tmp_path)
    assert got.format.name == "safetensors"
    assert any("left out of the choice" in r.getMessage() for r in caplog.records)
    with pytest.raises(PluginError) as err:  # asked for that file itself, there is no choice: an error
        registry.load(registry.get_format("hostile"), Candidate("hostile", path))
    assert (err.value.plugin, err.value.format, err.value.hook) == ("hostile-plugin", "hostile", "matches")
    _names_plugin(str(err.value), path)


# -- load, read_metadata, save, companions ------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["load", "read_metadata"])
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failing_loader_is_a_plugin_load_error_and_no_fallback(tmp_path, hostile, hook, how):
    registry = hostile(hook, how)
    write_safetensors(tmp_path / "model.safetensors")  # lower priority: must not be used instead
    path = tmp_path / "x.hostile"
    path.write_bytes(b"HOSTILE")
    with pytest.raises(PluginLoadError) as err:
        registry.resolve(tmp_path)
    assert isinstance(err.value, CheckpointLoadError) and isinstance(err.value, PluginError)
    assert err.value.hook == hook
    _names_plugin(str(err.value), path)
    assert ("called sys.exit(0)" if how == "exit" else "RuntimeError: boom in") in str(err.value)


def test_ctrl_c_in_a_loader_is_not_swallowed(tmp_path, hostile):
    registry = hostile("load", "interrupt")
    (tmp_path / "x.hostile").write_bytes(b"HOSTILE")
    with pytest.raises(KeyboardInterrupt):
        registry.resolve(tmp_path)


def test_a_failing_save_names_the_plugin(tmp_path, hostile):
    registry = hostile("save")
    path = tmp_path / "out.hostile"
    with pytest.raises(PluginError) as err:
        registry.get_format("hostile").save(tiny_state_dict(), path, {})
    assert err.value.hook == "save"
    _names_plugin(str(err.value), path)


def test_failing_companions_stop_a_fetch_naming_the_plugin(tmp_path, hostile, hub, cache):
    registry = hostile("companions")
    hub.add_repo("someone/hostile", {"model.hostile": b"HOSTILE"})
    source = HubSource("someone/hostile", endpoint=hub.url, cache_dir=cache, token=False, progress=False)
    target = tmp_path / "ckpt"
    with pytest.raises(PluginError) as err:
        fetch(source, target, registry.formats(names=["hostile"]))
    assert err.value.hook == "companions" and "plugin 'hostile-plugin'" in str(err.value)
    assert not target.exists()  # nothing placed; the folder the fetch made is gone again


def test_every_declared_function_is_guarded(hostile):
    fmt = hostile().get_format("hostile")
    for hook in HOOKS:
        assert getattr(getattr(fmt, hook), "__ckpt_formats_guarded__", False), hook


# -- through the real command line, with the plugin installed -------------------------------------------

EXITING_LOADER = """
import sys
from ckpt_formats import CheckpointFormat, hookimpl

def load(candidate, device):
    sys.exit(0)

@hookimpl
def ckpt_formats_register_formats(register):
    register(CheckpointFormat(name="quitter", priority=500, globs=("*.quit",), load=load))
"""


def _cli(site, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "ckpt_formats.cli", *map(str, args)], capture_output=True, text=True, env=env
    )


def test_resolve_load_does_not_exit_0_when_a_loader_calls_sys_exit(tmp_path):
    site, ckpt = tmp_path / "site", tmp_path / "ckpt"
    site.mkdir(), ckpt.mkdir()
    fake_distribution(site, "quitter-formats", "quitter", "ckf_quitter", EXITING_LOADER)
    (ckpt / "model.quit").write_bytes(b"x")
    out = _cli(site, "resolve", ckpt, "--load")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "loaded" not in out.stdout
    assert out.stderr.count("\n") == 1 and "plugin 'quitter' (format 'quitter')" in out.stderr
    assert "called sys.exit(0)" in out.stderr and str(ckpt / "model.quit") in out.stderr


def test_a_plugin_that_exits_while_imported_is_listed_as_broken(tmp_path):
    fake_distribution(tmp_path, "exits-on-import", "exits", "ckf_exits", "raise SystemExit(3)\n")
    out = _cli(tmp_path, "list")
    assert out.returncode == 0, out.stderr
    assert "BROKEN plugin exits (exits-on-import): import failed: SystemExit: 3" in out.stdout
    assert "safetensors" in out.stdout


def test_a_register_hook_that_exits_is_a_plugin_error(registry):
    class Exits:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            sys.exit(2)

    before = [f.name for f in registry.all_formats()]
    with pytest.raises(
        PluginError, match="plugin 'exits': ckpt_formats_register_formats failed: SystemExit: 2"
    ):
        registry.register(Exits(), name="exits")
    assert [f.name for f in registry.all_formats()] == before


# -- the exact messages (every word of them reaches a user) ------------------------------------------------

LOAD_ADVICE = (
    " The file may be corrupt, or the plugin faulty: re-download or re-export it, or report it to the "
    "plugin's author (no other format was tried)"
)
OTHER_ADVICE = " Report it to the plugin's author, or disable it with CKPT_FORMATS_DISABLE"


@pytest.mark.parametrize(
    ("hook", "cls", "advice"),
    [
        ("load", PluginLoadError, LOAD_ADVICE),
        ("read_metadata", PluginLoadError, LOAD_ADVICE),
        ("matches", PluginError, OTHER_ADVICE),
        ("discover", PluginError, OTHER_ADVICE),
        ("save", PluginError, OTHER_ADVICE),
        ("companions", PluginError, OTHER_ADVICE),
    ],
)
def test_each_hooks_failure_message_word_for_word(tmp_path, hostile, hook, cls, advice):
    fmt = hostile(hook).get_format("hostile")
    path = tmp_path / "x.hostile"
    path.write_bytes(b"HOSTILE")
    calls = {
        "load": lambda: fmt.load(Candidate("hostile", path), "cpu"),
        "read_metadata": lambda: fmt.read_metadata(Candidate("hostile", path)),
        "matches": lambda: fmt.matches(path),
        "discover": lambda: fmt.discover(tmp_path, [path]),
        "save": lambda: fmt.save({}, path, {}),
        "companions": lambda: fmt.companions(path),
    }
    subject = tmp_path if hook == "discover" else path
    with pytest.raises(PluginError) as err:
        calls[hook]()
    assert type(err.value) is cls
    assert str(err.value) == (
        f"{subject}: plugin 'hostile-plugin' (format 'hostile') failed in {hook}: raised RuntimeError: "
        f"boom in {hook}.{advice}"
    )
    assert (err.value.plugin, err.value.format, err.value.hook) == ("hostile-plugin", "hostile", hook)


class Quiet(Exception):
    """An exception whose message is empty (or blank lines only)."""


@pytest.mark.parametrize("message", ["", "\n  \n"])
def test_an_exception_without_a_message_is_named_by_its_type(tmp_path, registry, message):
    def load(candidate, device):
        raise Quiet(message)

    registry.register(declaring(CheckpointFormat("quiet", 1, ("*.quiet",), load)), name="quiet-plugin")
    (tmp_path / "m.quiet").write_bytes(b"")
    with pytest.raises(PluginLoadError) as err:
        registry.resolve(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'm.quiet'}: plugin 'quiet-plugin' (format 'quiet') failed in load: raised Quiet."
        + LOAD_ADVICE
    )


def test_a_guarded_function_called_with_keywords_names_no_file(tmp_path, hostile):
    fmt = hostile("load").get_format("hostile")
    with pytest.raises(PluginLoadError) as err:
        fmt.load(candidate=Candidate("hostile", tmp_path / "x.hostile"), device="cpu")
    assert str(err.value).startswith("?: plugin 'hostile-plugin' (format 'hostile') failed in load: ")


@pytest.mark.parametrize("how", ["plugin", "os"])
def test_a_format_left_out_is_reported_word_for_word(tmp_path, registry, caplog, how):
    def discover(directory, matched):
        if how == "os":
            raise PermissionError(13, "Permission denied", str(directory))
        raise RuntimeError("cannot group")

    grouped = CheckpointFormat("grouped", 1, ("*.grp",), lambda c, d: {}, discover=discover)
    registry.register(declaring(grouped), name="grouping-plugin")
    (tmp_path / "a.grp").write_bytes(b"")
    why = (
        f"{tmp_path}: PermissionError: [Errno 13] Permission denied: '{tmp_path}'"
        if how == "os"
        else f"{tmp_path}: plugin 'grouping-plugin' (format 'grouped') failed in discover: raised "
        f"RuntimeError: cannot group.{OTHER_ADVICE}"
    )
    with caplog.at_level(logging.WARNING, logger="ckpt_formats"):
        found = registry.discover(tmp_path)
    assert found.faulty == {"grouped": f"format 'grouped' left out of the choice: {why}"}
    assert [r.getMessage() for r in caplog.records] == [found.faulty["grouped"]]


def test_the_winner_left_out_for_its_content_check_is_reported_word_for_word(tmp_path, hostile, caplog):
    registry = hostile("matches")
    sd = tiny_state_dict()
    write_safetensors(tmp_path / "model.safetensors", sd)
    path = tmp_path / "x.hostile"
    path.write_bytes(b"HOSTILE")
    found = registry.discover(tmp_path)
    fmt = registry.get_format("hostile")
    error = PluginError("the plugin's words", plugin="hostile-plugin", format="hostile", hook="matches")
    found.leave_out(fmt, error)
    assert found.faulty == {"hostile": "format 'hostile' left out of the choice: the plugin's words"}
    assert "hostile" not in found.candidates and found.winner.name == "safetensors"


def test_a_guarded_format_registered_again_under_another_name_is_guarded_once(tmp_path, hostile):
    from dataclasses import replace

    registry = hostile("load")
    alias = replace(registry.get_format("hostile"), name="alias", globs=("*.alias",), priority=600)

    registry.register(declaring(alias), name="alias-plugin")
    path = tmp_path / "x.alias"
    path.write_bytes(b"HOSTILE")
    with pytest.raises(PluginLoadError) as err:
        registry.resolve(tmp_path)
    assert str(err.value) == (
        f"{path}: plugin 'alias-plugin' (format 'alias') failed in load: raised RuntimeError: boom in load."
        + LOAD_ADVICE
    )
    assert err.value.__cause__.__class__ is RuntimeError  # one guard: the plugin's own error beneath
    registry.unregister("alias-plugin")
