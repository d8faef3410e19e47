"""Hub fetch in child processes configured only by the environment, as a user's process is: HF_ENDPOINT,
HF_HOME, HF_HUB_OFFLINE (the client reads them at import). Also: two processes racing for one directory,
a disk that fills up mid-download, and the progress bar on a terminal and off it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
import torch
from hub_testing import (
    CHILD,
    PTH,
    REPO,
    ST,
    child_env,
    child_result,
    leftovers,
    pth_bytes,
    run_child,
    safetensors_bytes,
    sha256,
)

CK_ARGS = [f"--name=safetensors={ST}", f"--name=pickle={PTH}"]
BOTH = {ST: safetensors_bytes(), PTH: pth_bytes()}


@pytest.mark.slow
def test_environment_configures_the_client_and_offline_uses_its_cache(hub, tmp_path):
    hub.add_repo(REPO, BOTH)
    hf_home = tmp_path / "hf-home"

    online = child_result(run_child([str(tmp_path / "a"), REPO, *CK_ARGS], child_env(hub, hf_home)))

    assert online["format"] == "safetensors" and online["sha256"] == sha256(BOTH[ST])
    assert hub.seen() == [("hub", "HEAD", ST), ("cdn", "GET", ST)]
    snapshots = hf_home / "hub" / "models--nikopueringer--CorridorKey_v1.0" / "snapshots"
    assert [p.name for p in snapshots.glob(f"*/{ST}")] == [ST]  # the client's own cache layout
    before = len(hub.requests)

    offline_env = child_env(hub, hf_home, HF_HUB_OFFLINE="1")
    offline = child_result(run_child([str(tmp_path / "b"), REPO, *CK_ARGS], offline_env))

    assert offline["sha256"] == sha256(BOTH[ST]) and offline["path"] == str(tmp_path / "b" / ST)
    assert len(hub.requests) == before  # zero requests

    empty = run_child(
        [str(tmp_path / "c"), REPO, *CK_ARGS], child_env(hub, tmp_path / "empty", HF_HUB_OFFLINE="1")
    )
    assert empty.returncode == 1
    assert (
        "offline (HF_HUB_OFFLINE=1)" in empty.stderr
        and f"Place the file at {tmp_path / 'c' / ST}" in empty.stderr
    )
    assert len(hub.requests) == before


@pytest.mark.slow
def test_two_processes_download_once_and_both_get_the_valid_file(hub, tmp_path):
    data = safetensors_bytes(state_dict={"w": torch.arange(100_000, dtype=torch.float32)})
    hub.add_repo(REPO, {ST: data})
    hub.gate = threading.Event()  # the CDN holds the body back until both processes are running
    target = tmp_path / "ckpt"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = []
    for log in logs:
        env = child_env(hub, tmp_path / "hf-home")  # one cache, where the lock lives (keyed by the folder)
        with open(log, "w") as err:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(CHILD), str(target), REPO, *CK_ARGS],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                )
            )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = any("waiting for another process" in log.read_text() for log in logs)
            gets = hub.seen("cdn").count(("cdn", "GET", ST))
            if (waiting and gets == 1) or gets > 1:  # overlapped, or no lock (the asserts below say so)
                break
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.1)
        else:
            pytest.fail("the two processes never overlapped: " + " | ".join(log.read_text() for log in logs))
        hub.gate.set()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        hub.gate.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    results = [
        child_result(subprocess.CompletedProcess([], p.returncode, out, log.read_text()))
        for p, out, log in zip(procs, outputs, logs, strict=True)
    ]
    assert [r["sha256"] for r in results] == [sha256(data)] * 2
    assert [r for r in hub.seen() if r[1] == "GET"] == [("cdn", "GET", ST)]  # downloaded once
    assert leftovers(target) == [ST]  # no lock file in the folder
    assert list((tmp_path / "hf-home" / "hub" / ".locks" / "ckpt-formats").glob("fetch-*.lock"))


def test_disk_full_mid_download_names_the_size_and_leaves_nothing(hub, tmp_path):
    data = safetensors_bytes(state_dict={"w": torch.arange(64_000, dtype=torch.float32)})
    hub.add_repo(REPO, {ST: data})
    hf_home = tmp_path / "hf-home"

    # RLIMIT_FSIZE: any write past 64 KiB fails (EFBIG) the way a full disk does (ENOSPC)
    proc = run_child(
        [str(tmp_path / "ckpt"), REPO, *CK_ARGS, "--max-file-size=65536"], child_env(hub, hf_home)
    )

    assert proc.returncode == 1, proc.stderr
    assert f"not enough disk space for {ST}" in proc.stderr
    assert f"it needs 256.1 KB ({len(data)} bytes, size from the Hub)" in proc.stderr
    assert leftovers(tmp_path / "ckpt") == []
    assert not [p for p in hf_home.rglob("*") if p.is_file() and p.stat().st_size > 0 and "blobs" in p.parts]


def _stderr_on_a_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` with stderr on a pseudo-terminal; return its exit status and what it wrote there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns for the bar
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=slave, timeout=120)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(
    ("progress", "terminal", "bar"),
    [("auto", True, True), ("auto", False, False), ("off", True, False), ("on", False, True)],
)
@pytest.mark.slow
def test_progress_bar_only_on_a_terminal_or_when_asked(hub, tmp_path, progress, terminal, bar):
    hub.add_repo(REPO, BOTH)
    args = [str(tmp_path / "ckpt"), REPO, *CK_ARGS, f"--progress={progress}"]
    env = child_env(hub, tmp_path / "hf-home")
    if terminal:
        status, stderr = _stderr_on_a_terminal([sys.executable, str(CHILD), *args], env)
    else:
        proc = run_child(args, env)
        status, stderr = proc.returncode, proc.stderr
    assert status == 0, stderr
    assert ("100%|" in stderr) is bar, stderr
    assert (tmp_path / "ckpt" / ST).read_bytes() == BOTH[ST]


@pytest.mark.parametrize(("flags", "bar"), [([], True), (["--no-progress"], False)])
def test_ckpt_formats_fetch_no_progress_hides_the_bar_on_a_terminal(hub, tmp_path, flags, bar):
    hub.add_repo(REPO, BOTH)
    target = tmp_path / "ckpt"
    command = [sys.executable, "-m", "ckpt_formats.cli", "fetch", REPO, str(target)]
    command.append(f"--filename=safetensors={ST}")
    status, stderr = _stderr_on_a_terminal(command + flags, child_env(hub, tmp_path / "hf-home"))
    assert status == 0, stderr
    assert ("100%|" in stderr) is bar, stderr
    assert (target / ST).read_bytes() == BOTH[ST]
