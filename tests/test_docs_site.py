"""The documentation site (mkdocs.yml): docs/ and the API reference from the public docstrings build in strict
mode, and a broken link, anchor or API reference fails the build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_with_the_api_reference(tmp_path):
    built = build(ROOT / "mkdocs.yml", tmp_path / "site")

    assert built.returncode == 0, built.stderr
    reference = (tmp_path / "site" / "reference" / "ckpt_formats" / "index.html").read_text()
    assert "candidate_for_file" in reference and "CheckpointNotFoundError" in reference
    plugins = (tmp_path / "site" / "reference" / "builtin-plugins" / "index.html").read_text()
    assert "load_directory" in plugins and "model_only" in plugins


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("See [the rules](registry.md#no-such-section).", "does not contain an anchor '#no-such-section'"),
        ("See [the guide](no-such-page.md).", "no-such-page.md"),
        ("::: ckpt_formats.no_such_name", "ckpt_formats.no_such_name"),
    ],
)
def test_a_broken_reference_fails_the_build(tmp_path, line, complaint):
    docs = shutil.copytree(ROOT / "docs", tmp_path / "docs")
    with open(docs / "index.md", "a", encoding="utf-8") as f:
        f.write(f"\n{line}\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    mkdocstrings = next(p for p in config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    mkdocstrings["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT / "src")]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))

    built = build(tmp_path / "mkdocs.yml", tmp_path / "site")

    assert built.returncode == 1, built.stderr
    assert complaint in built.stderr
