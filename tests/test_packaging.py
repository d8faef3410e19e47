"""The distribution as users get it: ``python -m build`` makes an sdist and a wheel built from that sdist (so
the sdist is complete), ``twine check`` accepts both, and the wheel, installed (not editable) into a fresh
virtual environment, registers the builtin plugins and loads a checkpoint through its console script.

The fresh environment gets the project from the wheel only; its dependencies (torch, safetensors, ...) are
those of the running environment, reached through a ``.pth`` line, so that the test downloads nothing. Only
the wheel's own files can answer ``import ckpt_formats`` there (checked).
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import tiny_state_dict, write_safetensors

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
BUILTIN_FORMATS = ("safetensors-sharded", "safetensors", "dcp", "pickle-sharded", "pickle")

pytestmark = pytest.mark.slow


def run(*args: object, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (no pip inside; this environment's pip)."""
    env = tmp_path_factory.mktemp("venv") / "env"
    assert run(sys.executable, "-m", "venv", "--without-pip", env).returncode == 0
    (wheel,) = dist.glob("*.whl")
    python = env / "bin" / "python"
    installed = run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel
    )
    assert installed.returncode == 0, installed.stderr
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(site) / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


def test_build_makes_a_wheel_and_an_sdist_of_the_one_version(dist):
    assert sorted(p.name for p in dist.iterdir()) == [
        f"ckpt_formats-{VERSION}-py3-none-any.whl",
        f"ckpt_formats-{VERSION}.tar.gz",
    ]


def test_twine_check_accepts_both(dist):
    checked = run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2


def test_the_wheel_ships_the_type_marker_and_the_builtin_entry_points(dist):
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = ("ckpt_formats", "ckpt_formats_safetensors", "ckpt_formats_pickle", "ckpt_formats_dcp")
    assert all(f"{p}/py.typed" in names for p in packages)
    entry_points = configparser.ConfigParser()
    entry_points.read_string(
        zipfile.ZipFile(wheel).read(f"ckpt_formats-{VERSION}.dist-info/entry_points.txt").decode()
    )
    assert dict(entry_points["ckpt_formats"]) == {
        "safetensors": "ckpt_formats_safetensors",
        "pickle": "ckpt_formats_pickle",
        "dcp": "ckpt_formats_dcp",
        "onnx": "ckpt_formats_onnx",
    }
    assert not [n for n in names if n.startswith("tests/")]


def test_the_installed_wheel_lists_the_builtin_plugins_and_loads_a_file(venv, tmp_path):
    python, script = venv / "bin" / "python", venv / "bin" / "ckpt-formats"
    where = run(python, "-c", "import ckpt_formats, ckpt_formats_dcp; print(ckpt_formats.__file__)")
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr  # not the source tree

    listed = run(script, "list")
    write_safetensors(tmp_path / "weights" / "model.safetensors", tiny_state_dict())
    loaded = run(script, "resolve", tmp_path / "weights", "--load")
    version = run(script, "--version")

    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    for name in BUILTIN_FORMATS:
        assert "(ckpt-formats)" in rows[name], listed.stdout
    assert loaded.returncode == 0 and loaded.stderr == "", loaded.stderr
    assert "loaded model.safetensors (safetensors): 4 entries" in loaded.stdout
    assert version.stdout.strip() == f"ckpt-formats {VERSION}"


def test_the_changelog_describes_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## (\S+)", changelog, re.M).group(1) == VERSION
