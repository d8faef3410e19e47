"""resolve() on a folder this user may not read raises the package's error naming it, not a bare
PermissionError. Run in a child process as an unprivileged user (root reads everything: as root the child
drops to ``nobody`` after loading the registry)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = """
    import os, sys
    import ckpt_formats
    ckpt_formats.get_registry().all_formats()  # plugins imported while the files are still readable
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    try:
        ckpt_formats.resolve(sys.argv[1])
    except ckpt_formats.CheckpointError as exc:
        print(type(exc).__name__, isinstance(exc, PermissionError), exc)
"""


def test_an_unreadable_folder_is_the_packages_error_naming_it() -> None:
    base = Path(tempfile.mkdtemp())  # not under pytest's folder, which only its owner may enter
    base.chmod(0o755)
    folder = base / "locked"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    folder.chmod(0o000)
    try:
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(folder)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
        shutil.rmtree(base)
    assert out.stdout.strip() == (
        f"CheckpointAccessError True {folder}: cannot list the folder (Permission denied); check its "
        "permissions (the user running this needs read and execute permission on it)"
    ), out.stderr
