"""SIGTERM (``kill``, a farm or scheduler stopping a job) stops ``ckpt-formats convert`` as Ctrl-C does: the
temporary file is removed, nothing is left under the final name, status 130. Deterministic: the child's
writer writes half a file, says so, then blocks on a FIFO until the signal comes (a fault-injection point,
no timing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import tiny_state_dict, write_pth

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
    import sys
    from dataclasses import replace

    import ckpt_formats_pickle
    import ckpt_formats_safetensors
    from ckpt_formats import Registry, hookimpl
    from ckpt_formats.cli import main
    from ckpt_formats.registry import _facade

    def save_half_then_wait(state, path, meta):
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
        print("writing", flush=True)
        open(sys.argv[3]).read()  # blocks until the test's signal interrupts it

    class Plugin:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            register(replace(ckpt_formats_safetensors.SAFETENSORS, save=save_half_then_wait))

    registry = Registry(load_entry_points=False)
    registry.register(ckpt_formats_pickle)
    registry.register(Plugin(), name="slow-writer")
    _facade._registry = registry  # the registry the command line uses
    sys.exit(main(["convert", sys.argv[1], sys.argv[2]]))
"""


def test_sigterm_during_convert_cleans_up_like_ctrl_c(tmp_path: Path) -> None:
    src = write_pth(tmp_path / "m.pth", tiny_state_dict())
    out = tmp_path / "m.safetensors"
    fifo = tmp_path.parent / f"{tmp_path.name}.fifo"
    os.mkfifo(fifo)
    paths = [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(src), str(out), str(fifo)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "writing\n"  # the temporary file has its first half now
        assert any(p.name.startswith(".m.safetensors.") for p in tmp_path.iterdir())
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        fifo.unlink()

    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1] == "ckpt-formats: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]  # no temporary, no output
