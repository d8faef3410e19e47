"""A fake installed distribution with a ``ckpt_formats`` entry point: what ``pip install some-plugin`` makes,
written into a folder that a test puts on ``sys.path`` (or a child process's ``PYTHONPATH``); and a run-time
plugin declaring given formats."""

from __future__ import annotations

import textwrap
from pathlib import Path


def fake_distribution(
    root: Path, dist_name: str, entry_name: str, module_name: str, module_source: str
) -> None:
    """``root/<dist>-0.1.dist-info`` declaring ``entry_name = module_name``, and ``root/<module_name>.py``."""
    info = root / f"{dist_name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ckpt_formats]\n{entry_name} = {module_name}\n")
    (root / f"{module_name}.py").write_text(textwrap.dedent(module_source))


def declaring(*formats: object) -> object:
    """A run-time plugin (an object of class ``Plugin``) whose hook registers ``formats``."""
    from ckpt_formats import hookimpl

    class Plugin:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            for fmt in formats:
                register(fmt)

    return Plugin()
