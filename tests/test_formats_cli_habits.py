"""``ckpt-formats`` habits: --version, global options on either side of the command, help for every argument,
JSON output, and a closed pipe that ends quietly."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib.metadata import version

import pytest
from conftest import write_pth, write_safetensors

from ckpt_formats.cli import build_parser, parse_args

EXE = [sys.executable, "-m", "ckpt_formats.cli"]


def cli(*args, **kwargs):
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=120, **kwargs)


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"ckpt-formats {version('ckpt-formats')}"


def walk(parser: argparse.ArgumentParser, path: str = "ckpt-formats"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, f"{path} {name}")


def test_every_argument_of_every_command_has_help():
    missing = []
    commands = 0
    for path, parser in walk(build_parser()):
        commands += 1
        for action in parser._actions:
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path}: {action.option_strings or action.dest}")
        if isinstance(parser._subparsers, argparse._ArgumentGroup):
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            missing += [f"{path} {c.dest}" for c in sub._choices_actions if not c.help]
    assert commands == 7 and missing == []


COMMANDS = ["list", "resolve DIR", "inspect FILE", "convert A B.safetensors", "fetch o/r DIR", "diff A B"]
OPTIONS = [
    (["--verbose"], "verbose", True),
    (["-v"], "verbose", True),
    (["--safe-only"], "safe_only", True),
    (["--json"], "json", True),
    (["--device", "cuda:1"], "device", "cuda:1"),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("option", "dest", "value"), OPTIONS)
def test_global_options_before_or_after_the_command(command, option, dest, value):
    words = command.split()
    before = parse_args([*option, *words])
    after = parse_args([*words, *option])
    assert getattr(before, dest) == getattr(after, dest) == value
    plain = parse_args(words)
    assert (plain.verbose, plain.safe_only, plain.json, plain.device) == (False, None, False, "cpu")


def test_safe_only_after_resolve_changes_the_result(tmp_path):
    write_pth(tmp_path / "model.pth")

    before = cli("--safe-only", "resolve", tmp_path)
    after = cli("resolve", tmp_path, "--safe-only")
    plain = cli("resolve", tmp_path)

    assert plain.returncode == 0 and "winner: model.pth (pickle" in plain.stdout
    assert before.returncode == after.returncode == 1
    assert before.stderr == after.stderr and "refused by policy" in after.stderr


@pytest.mark.slow
def test_json_and_device_after_the_command(tmp_path):
    write_safetensors(tmp_path / "model.safetensors")

    out = cli("resolve", tmp_path, "--load", "--json", "--device", "cpu")

    data = json.loads(out.stdout)
    assert data["winner"] == "model.safetensors" and data["entries"] == 4 and data["device"] == "cpu"
    bad = cli("resolve", tmp_path, "--load", "--device", "nonsense")
    assert bad.returncode == 1 and bad.stderr.startswith("ckpt-formats: error:"), bad.stderr


def test_a_closed_pipe_ends_quietly_with_status_0():
    # the reader is gone before the first byte is written
    proc = subprocess.Popen([*EXE, "list", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    assert err == ""

    shell = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$0" -m ckpt_formats.cli list --json | head -1', sys.executable],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.returncode == 0 and shell.stdout == "{\n" and shell.stderr == ""


@pytest.mark.slow
def test_a_closed_pipe_in_the_middle_of_a_long_output(tmp_path):
    metadata = {f"key{i:05d}": "v" * 50 for i in range(5000)}  # 5000 lines: far more than a pipe buffer
    write_safetensors(tmp_path / "m.safetensors", metadata=metadata)
    script = 'set -o pipefail; "$0" -m ckpt_formats.cli inspect "$1" | head -1'
    shell = subprocess.run(
        ["bash", "-c", script, sys.executable, tmp_path / "m.safetensors"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.returncode == 0 and shell.stdout.startswith("file:") and shell.stderr == ""
    full = cli("inspect", tmp_path / "m.safetensors")
    assert len(full.stdout.splitlines()) > 5000  # the output really was cut short
