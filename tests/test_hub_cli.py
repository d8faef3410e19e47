"""``ckpt-formats fetch`` against the fake hub, in a child process configured by HF_ENDPOINT and HF_HOME."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hub_testing import PTH, REPO, ST, child_env, leftovers, pth_bytes, safetensors_bytes

from ckpt_formats.cli import main

CK_ARGS = [f"--filename=safetensors={ST}", f"--filename=pickle={PTH}"]
BOTH = {ST: safetensors_bytes(), PTH: pth_bytes()}


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ckpt_formats.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fetch_places_the_file_and_prints_it(hub, tmp_path):
    hub.add_repo(REPO, BOTH)

    proc = cli(["fetch", REPO, str(tmp_path / "ckpt"), *CK_ARGS], child_env(hub, tmp_path / "hf"))

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{tmp_path / 'ckpt' / ST} (safetensors)"
    assert f"Downloading {ST}" in proc.stderr and f"{ST} saved to {tmp_path / 'ckpt' / ST}" in proc.stderr
    assert "100%|" not in proc.stderr  # not a terminal: no bar
    assert (tmp_path / "ckpt" / ST).read_bytes() == BOTH[ST]


def test_fetch_error_is_one_line_and_exit_1(hub, tmp_path):
    hub.add_repo(REPO, BOTH)
    hub.status = 503

    proc = cli(
        ["fetch", REPO, str(tmp_path / "ckpt"), *CK_ARGS, "--no-progress"], child_env(hub, tmp_path / "hf")
    )

    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt-formats: error: could not download"), proc.stderr
    assert "HTTP 503" in lines[0] and "Check the network connection" in lines[0]
    assert hub.seen() == [("hub", "HEAD", ST)]
    assert leftovers(tmp_path / "ckpt") == []


@pytest.mark.parametrize("where", ["global", "subcommand"])
def test_fetch_safe_only_never_asks_for_the_pickle(hub, tmp_path, where):
    hub.add_repo(REPO, {PTH: BOTH[PTH]})
    flag = ["--safe-only"]
    args = (
        [*flag, "fetch", REPO, str(tmp_path)] if where == "global" else ["fetch", REPO, str(tmp_path), *flag]
    )

    proc = cli([*args, *CK_ARGS], child_env(hub, tmp_path / "hf"))

    assert proc.returncode == 1 and "has none of the files asked for" in proc.stderr
    assert hub.seen() == [("hub", "HEAD", ST)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fetch", REPO, "DIR", "--filename=safetensors"], "expected FORMAT=REMOTE_NAME"),
        (["fetch", "not a repo!", "DIR"], "not a repo!"),
        (["fetch", REPO, "DIR", "--filename=safetensors=../up.safetensors"], "relative path inside"),
    ],
)
def test_fetch_bad_arguments_are_one_line_errors(tmp_path, capsys, args, expected):
    args = [str(tmp_path / "ckpt") if a == "DIR" else a for a in args]

    assert main(args) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ckpt-formats: error:") and expected in err[0], err
    assert not (tmp_path / "ckpt").exists()
