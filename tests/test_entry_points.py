"""Every documented way of starting each command line starts it: the console script, ``python -m PACKAGE``
and ``python -m PACKAGE.cli`` (docs/cli.md and docs/formats-cli.md list them; the first test keeps that list
and this one equal)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WAYS = {
    prog: (doc, [prog, f"python -m {package}", f"python -m {package}.cli"])
    for prog, doc, package in [
        ("corridorkey", "docs/cli.md", "corridorkey_engine"),
        ("ckpt-formats", "docs/formats-cli.md", "ckpt_formats"),
    ]
}


@pytest.mark.parametrize("prog", list(WAYS))
def test_the_docs_list_exactly_these_ways(prog):
    doc, ways = WAYS[prog]
    text = (ROOT / doc).read_text(encoding="utf-8")
    block = text.split("Three ways start", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    documented = [re.sub(r" (infer shot010|list)$", "", line[2:]) for line in block.splitlines()]
    assert documented == ways


def _argv(way: str) -> list[str]:
    words = way.split()
    return [sys.executable, *words[1:]] if words[0] == "python" else [str(BIN / words[0])]


def _run(way: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([*_argv(way), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("way", WAYS["corridorkey"][1])
def test_each_way_starts_corridorkey(way, tmp_path):
    version = _run(way, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("corridorkey "), version
    # infer reaches its option values (the `python -m corridorkey_engine.cli` NameError was there): a missing
    # clip is the one-line error of the real command, status 1
    missing = _run(way, "infer", str(tmp_path / "shot010"), "--no-hub", cwd=tmp_path)
    assert missing.returncode == 1, missing
    assert missing.stderr.startswith("corridorkey: error: ") and "shot010" in missing.stderr, missing.stderr
    assert "Error:" not in missing.stderr and missing.stderr.count("\n") == 1, missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("way", WAYS["ckpt-formats"][1])
def test_each_way_starts_ckpt_formats(way, tmp_path):
    listed = _run(way, "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed
    assert '"safetensors"' in listed.stdout
    missing = _run(way, "resolve", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("ckpt-formats: error: "), missing
