"""The ``ckpt-formats`` options without an end-to-end test elsewhere, each shown changing what the command
does: ``resolve --format/--exclude/--select``, ``--safe-only`` on ``inspect`` and ``convert``, ``convert
--force``, ``-v`` and ``fetch --revision``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_same_tensors, tiny_state_dict, write_pth, write_safetensors
from hub_testing import PTH, REPO, ST, child_env, safetensors_bytes

from ckpt_formats.cli import main


@pytest.fixture
def three(tmp_path: Path) -> Path:
    """a.safetensors, b.safetensors (ambiguous together) and m.pth, each with different weights."""
    write_safetensors(tmp_path / "a.safetensors", tiny_state_dict(1))
    write_safetensors(tmp_path / "b.safetensors", tiny_state_dict(2))
    write_pth(tmp_path / "m.pth", tiny_state_dict(3))
    return tmp_path


def run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def winner(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("winner: ")).split()[1]


def test_resolve_without_options_is_ambiguous(three: Path, capsys) -> None:
    status, _, err = run(capsys, "resolve", three)
    assert status == 1 and "keep exactly one" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--select", "b.safetensors"], "b.safetensors"),
        (["--select", "a*"], "a.safetensors"),
        (["--exclude", "a.*"], "b.safetensors"),
        (["--exclude", "*.safetensors"], "m.pth"),
        (["--format", "pickle"], "m.pth"),
        (["--format", "pickle", "--format", "safetensors", "--select", "b*"], "b.safetensors"),
    ],
)
def test_resolve_selection_options_choose_the_winner(three: Path, capsys, args, expected) -> None:
    status, out, err = run(capsys, "resolve", three, *args)
    assert status == 0, err
    assert winner(out) == expected


def test_resolve_load_loads_the_selected_file(three: Path, capsys) -> None:
    status, out, _ = run(capsys, "resolve", three, "--select", "b*", "--load", "--device", "cpu")
    assert status == 0
    assert out.splitlines()[-1] == "loaded b.safetensors (safetensors): 4 entries on cpu"


def test_resolve_unknown_format_is_one_line(three: Path, capsys) -> None:
    status, _, err = run(capsys, "resolve", three, "--format", "nope")
    assert status == 1 and err.startswith("ckpt-formats: error: unknown checkpoint format 'nope'")


def test_safe_only_refuses_inspect_and_convert_of_a_pickle(three: Path, capsys) -> None:
    out_file = three / "m.safetensors"
    for args in (["inspect", three / "m.pth"], ["convert", three / "m.pth", out_file]):
        status, out, err = run(capsys, "--safe-only", *args)
        assert status == 1 and out == ""
        assert err.strip() == (
            f"ckpt-formats: error: {three / 'm.pth'}: the pickle format is disabled by the safety policy "
            "(safe-only or CKPT_FORMATS_DISABLE)"
        )
    assert not out_file.exists()
    status, out, _ = run(capsys, "inspect", three / "m.pth", "--json")  # without it: the same file is read
    assert status == 0 and json.loads(out)["format"] == "pickle"


def test_convert_force_replaces_an_existing_output(tmp_path: Path, capsys) -> None:
    src = write_pth(tmp_path / "m.pth")
    out_file = tmp_path / "m.safetensors"
    out_file.write_bytes(b"an older file")

    status, _, err = run(capsys, "convert", src, out_file)
    assert status == 1 and "already exists" in err and "--force" in err
    assert out_file.read_bytes() == b"an older file"

    status, out, _ = run(capsys, "convert", src, out_file, "--force")
    assert status == 0 and "verified bit for bit" in out
    from safetensors.torch import load_file

    assert_same_tensors(load_file(out_file), tiny_state_dict())


@pytest.mark.slow
def test_verbose_shows_the_traceback(tmp_path: Path, caplog) -> None:
    plain = subprocess.run(
        [sys.executable, "-m", "ckpt_formats.cli", "resolve", str(tmp_path)], capture_output=True, text=True
    )
    verbose = subprocess.run(
        [sys.executable, "-m", "ckpt_formats.cli", "-v", "resolve", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert plain.returncode == verbose.returncode == 1
    assert len(plain.stderr.strip().splitlines()) == 1 and "Traceback" not in plain.stderr
    assert "Traceback" in verbose.stderr and "CheckpointNotFoundError" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == plain.stderr.strip()


# -- fetch --------------------------------------------------------------------------------------------

NAMES = [f"--filename=safetensors={ST}", f"--filename=pickle={PTH}"]


@pytest.mark.slow
def test_fetch_revision_is_the_one_asked_for(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {ST: safetensors_bytes()}, branches=("v2",))
    env = child_env(hub, tmp_path / "hf")
    cmd = [sys.executable, "-m", "ckpt_formats.cli", "fetch", REPO, str(tmp_path / "ckpt"), *NAMES]

    default = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    pinned = subprocess.run([*cmd, "--revision", "v2"], env=env, capture_output=True, text=True, timeout=120)

    assert default.returncode == 1 and "(revision main): revision not found" in default.stderr
    assert pinned.returncode == 0, pinned.stderr
    assert (tmp_path / "ckpt" / ST).read_bytes() == safetensors_bytes()
