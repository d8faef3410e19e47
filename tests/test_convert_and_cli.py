"""Conversion to safetensors, and the ckpt-formats command line (run for real in a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_tensors, run_main, tiny_state_dict, write_pth, write_safetensors

from ckpt_formats import CheckpointFormat, CheckpointLoadError, Registry, hookimpl
from ckpt_formats.atomic import atomic_write, is_temp_file, sweep_temps, temp_path_for
from ckpt_formats.cli import main
from ckpt_formats.convert import ConversionError, convert


def _load(path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        return load_file(str(path)), f.metadata()


def test_convert_training_checkpoint_unwraps_strips_and_records_provenance(tmp_path, registry):
    sd = tiny_state_dict()
    src = write_pth(
        tmp_path / "train.pth",
        {"epoch": 7, "state_dict": {f"_orig_mod.module.{k}": v for k, v in sd.items()}, "note": "x"},
    )
    out = tmp_path / "model.safetensors"
    report = convert(src, out, registry=registry)
    tensors, meta = _load(out)
    assert_same_tensors(tensors, sd)
    assert meta["ckpt_formats.source_format"] == "pickle"
    assert meta["ckpt_formats.source_file"] == "train.pth"
    assert meta["ckpt_formats.source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert report.tensors == len(sd) and report.skipped == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "train.pth"]


def test_convert_skips_non_tensors_and_unshares_storage(tmp_path, registry):
    base = torch.randn(4, 4)
    src = write_pth(
        tmp_path / "m.pth", {"w": base, "w_t": base.t(), "w_row": base[1], "lr": 0.1, "name": "m"}
    )
    report = convert(src, tmp_path / "m.safetensors", registry=registry)
    assert sorted(report.skipped) == ["lr", "name"]
    assert sorted(report.unshared) == ["w_row", "w_t"]
    tensors, _ = _load(tmp_path / "m.safetensors")
    assert torch.equal(tensors["w_t"], base.t()) and torch.equal(tensors["w_row"], base[1])


def test_convert_keeps_safetensors_metadata_and_npz(tmp_path, registry):
    write_safetensors(tmp_path / "a.safetensors", tiny_state_dict(), {"corridorkey.config": "{}"})
    convert(tmp_path / "a.safetensors", tmp_path / "b.safetensors", registry=registry)
    assert _load(tmp_path / "b.safetensors")[1]["corridorkey.config"] == "{}"
    np.savez(tmp_path / "c.npz", w=np.arange(6, dtype=np.float32).reshape(2, 3))
    convert(tmp_path / "c.npz", tmp_path / "c.safetensors", registry=registry)
    assert _load(tmp_path / "c.safetensors")[1]["ckpt_formats.source_format"] == "npz"


def test_convert_refuses_bad_output_names_and_existing_files(tmp_path, registry):
    src = write_pth(tmp_path / "m.pth")
    with pytest.raises(ConversionError, match="no registered format that can save matches this name"):
        convert(src, tmp_path / "m.bin", registry=registry)
    existing = tmp_path / "m.safetensors"
    existing.write_bytes(b"keep me")
    with pytest.raises(ConversionError, match="already exists"):
        convert(src, existing, registry=registry)
    assert existing.read_bytes() == b"keep me"
    convert(src, existing, force=True, registry=registry)
    assert_same_tensors(_load(existing)[0], tiny_state_dict())


def test_failed_conversion_leaves_no_output(tmp_path, registry):
    (tmp_path / "bad.pth").write_bytes(b"PK\x03\x04 this is not a real zip")
    with pytest.raises(CheckpointLoadError):
        convert(tmp_path / "bad.pth", tmp_path / "out.safetensors", registry=registry)
    write_pth(tmp_path / "empty.pth", {"lr": 0.1})
    with pytest.raises(ConversionError, match="no tensors"):
        convert(tmp_path / "empty.pth", tmp_path / "out.safetensors", registry=registry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth", "empty.pth"]


def test_convert_respects_safe_only(tmp_path, registry):
    src = write_pth(tmp_path / "m.pth")
    with pytest.raises(CheckpointLoadError, match="disabled by the safety policy"):
        convert(src, tmp_path / "m.safetensors", safe_only=True, registry=registry)
    assert not (tmp_path / "m.safetensors").exists()


# -- writing: umask mode, interruption, stale temporaries (ckpt_formats.atomic) ---------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_converted_files_get_the_mode_a_normal_write_gets(tmp_path, registry, umask):
    src = write_pth(tmp_path / "m.pth")
    old = os.umask(umask)
    try:
        convert(src, tmp_path / "m.safetensors", registry=registry)
        (tmp_path / "plain").write_bytes(b"x")  # what open(path, "w") gives under this umask
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def _failing_target_registry(written: list[Path]) -> Registry:
    """A registry whose safetensors saver writes half a file, then fails (a full disk, a crash)."""

    def save(state_dict, path, metadata):
        Path(path).write_bytes(b"half a file")
        written.append(Path(path))
        raise OSError(28, "No space left on device")

    def load(candidate, device):
        return torch.load(candidate.path, map_location=device, weights_only=True)

    class Plugin:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            register(
                CheckpointFormat(
                    name="safetensors", priority=100, globs=("*.safetensors",), load=load, save=save
                )
            )
            register(CheckpointFormat(name="pt", priority=0, globs=("*.pt",), load=load))

    registry = Registry(load_entry_points=False)
    registry.register(Plugin(), name="failing")
    return registry


def test_a_write_that_fails_midway_leaves_the_old_output_and_no_temporary(tmp_path):
    written: list[Path] = []
    registry = _failing_target_registry(written)
    src = write_pth(tmp_path / "m.pt")
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"previous version")
    with pytest.raises(ConversionError, match="not enough disk space to write it") as err:
        convert(src, out, force=True, registry=registry)
    assert isinstance(err.value, OSError) and err.value.errno == 28  # callers catching OSError catch it
    assert written and is_temp_file(written[0], "m.safetensors")  # the partial bytes went to a temporary
    assert out.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.safetensors"]


def test_an_exception_inside_the_write_callback_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt  # not even an Exception: the temporary still goes

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


KILLED_WRITER = """
import sys, time
from pathlib import Path
from ckpt_formats.atomic import atomic_write

def write(tmp: Path) -> None:
    with open(tmp, "wb") as f:
        f.write(b"x" * 4096)
        f.flush()
        print(tmp, flush=True)  # the parent kills us now, mid-write
        time.sleep(60)
        f.write(b"never")

atomic_write(sys.argv[1], write)
"""


def test_a_writer_killed_mid_write_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous version")
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        tmp = Path(child.stdout.readline().strip())
        assert tmp.stat().st_size == 4096
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"previous version"  # never replaced by a partial file
    assert tmp.parent == tmp_path and is_temp_file(tmp, target.name)
    assert registry_sees(tmp_path) == ["model.safetensors"]  # the leftover is invisible to discovery
    assert sweep_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def registry_sees(folder: Path) -> list[str]:
    found = Registry().discover(folder)
    return [c.path.name for cands in found.candidates.values() for c in cands]


def test_sweep_removes_only_the_projects_temporaries(tmp_path):
    ours = [temp_path_for(tmp_path / "model.safetensors"), temp_path_for(tmp_path / "frame_0001.png")]
    not_ours = [
        ".model.safetensors.0123abcd.part",  # another tool's (and the hub's former) staging name
        ".model.safetensors.0123456789AB.tmp",  # upper-case hex: not a name we make
        ".model.safetensors.0123456789a.tmp",  # 11 hex digits
        "model.safetensors.0123456789ab.tmp",  # not hidden
        ".hidden.tmp",
        "notes.tmp",
        ".ckpt-formats-fetch.lock",
        "model.safetensors",
    ]
    for path in ours:
        path.write_bytes(b"partial")
    for name in not_ours:
        (tmp_path / name).write_bytes(b"keep")
    folder_named_like_a_temp = temp_path_for(tmp_path / "dir")
    folder_named_like_a_temp.mkdir()

    assert sweep_temps(tmp_path, target="frame_0001.png") == 1  # only that target's
    assert ours[0].exists() and not ours[1].exists()
    assert sweep_temps(tmp_path) == 1
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*not_ours, folder_named_like_a_temp.name])
    assert sweep_temps(tmp_path / "missing") == 0


# -- the CLI, run as users run it ------------------------------------------------------------------


def cli(*args, env=None):
    """``ckpt-formats ARGS`` in this process (:func:`conftest.run_main`), in a subprocess when ``env`` is
    given (the whole environment of the child)."""
    if env is None:
        return run_main(main, "ckpt-formats", [str(a) for a in args])
    return subprocess.run(
        [sys.executable, "-m", "ckpt_formats.cli", *map(str, args)], capture_output=True, text=True, env=env
    )


def test_cli_list_shows_formats_plugins_and_distributions(project_plugins):
    out = cli("list")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert list(lines) == [
        "safetensors-sharded", "safetensors", "npz", "onnx", "dcp", "pickle-sharded", "pickle"
    ]
    assert "npz (ckpt-formats-npz)" in lines["npz"] and "*.npz" in lines["npz"]
    assert " yes " in lines["pickle"] and " no " in lines["safetensors"]
    data = json.loads(cli("--safe-only", "list", "--json").stdout)
    assert {f["name"]: f["enabled"] for f in data["formats"]}["pickle"] is False
    assert {f["name"]: f["enabled"] for f in data["formats"]}["dcp"] is False


def test_cli_resolve_explains_the_winner(tmp_path):
    write_safetensors(tmp_path / "model.safetensors")
    write_pth(tmp_path / "model.pth")
    out = cli("resolve", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "winner: model.safetensors (safetensors" in out.stdout
    assert "shadowed: model.pth (pickle)" in out.stdout
    out = cli("resolve", tmp_path, "--load")
    assert out.returncode == 0 and "loaded model.safetensors (safetensors): 4 entries" in out.stdout


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ([], [], "no checkpoint found in"),
        (["a.safetensors", "b.safetensors"], [], "keep exactly one, or choose one with --select NAME"),
        (["m.pth"], ["--safe-only"], "refused by policy"),
    ],
)
def test_cli_resolve_errors_are_one_line(tmp_path, files, args, message):
    for name in files:
        (write_safetensors if name.endswith(".safetensors") else write_pth)(tmp_path / name)
    safe = ["--safe-only"] if "--safe-only" in args else []
    out = cli(*safe, "resolve", tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("ckpt-formats: error:") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cli_resolve_ambiguity_advice_names_its_own_flags_and_they_work(tmp_path):
    write_safetensors(tmp_path / "a.safetensors", tiny_state_dict(1))
    write_safetensors(tmp_path / "b.safetensors", tiny_state_dict(2))
    for load in ([], ["--load"]):
        out = cli("resolve", tmp_path, *load)
        assert out.returncode == 1 and "--select NAME or --exclude GLOB" in out.stderr
        assert "select=NAME" not in out.stderr
    assert "winner: b.safetensors" in cli("resolve", tmp_path, "--select", "b.*").stdout
    assert "winner: a.safetensors" in cli("resolve", tmp_path, "--exclude", "b.*").stdout


def test_cli_inspect(tmp_path):
    write_safetensors(tmp_path / "m.safetensors", tiny_state_dict(), {"k": "v"})
    out = cli("inspect", tmp_path / "m.safetensors", "--json")
    data = json.loads(out.stdout)
    assert data["format"] == "safetensors" and data["tensors"] == 4
    assert data["parameters"] == 12 + 4 + 8 + 5
    assert data["bytes"] == 12 * 4 + 4 * 4 + 8 * 2 + 5 * 8
    assert data["dtypes"] == {"float16": 1, "float32": 2, "int64": 1}
    assert data["metadata"] == {"k": "v"}
    human = cli("inspect", tmp_path / "m.safetensors").stdout
    assert "metadata:    k = v" in human and "parameters:  29" in human


def test_cli_convert_and_its_errors(tmp_path):
    write_pth(tmp_path / "m.pth", {"model": tiny_state_dict()})
    out = cli("convert", tmp_path / "m.pth", tmp_path / "m.safetensors")
    assert out.returncode == 0, out.stderr
    assert "verified bit for bit" in out.stdout
    assert_same_tensors(_load(tmp_path / "m.safetensors")[0], tiny_state_dict())
    again = cli("convert", tmp_path / "m.pth", tmp_path / "m.safetensors")
    assert again.returncode == 1 and "already exists" in again.stderr
    missing = cli("convert", tmp_path / "nope.pth", tmp_path / "x.safetensors")
    assert missing.returncode == 1 and "no such file" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
