"""Helpers for the hub tests: real checkpoint bytes, a HubSource pointed at the fake hub, a child process."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import tiny_state_dict

from ckpt_formats.hub import HubSource

REPO = "nikopueringer/CorridorKey_v1.0"
ST = "CorridorKey_v1.0.safetensors"
PTH = "CorridorKey_v1.0.pth"
CK_NAMES = {"safetensors": [ST], "pickle": [PTH]}
CHILD = Path(__file__).with_name("hub_child.py")
ROOT = Path(__file__).resolve().parents[1]


def safetensors_bytes(seed: int = 0, state_dict: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save(state_dict if state_dict is not None else tiny_state_dict(seed))


def pth_bytes(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    torch.save(tiny_state_dict(seed), buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source(hub, cache: Path, repo_id: str = REPO, **kwargs) -> HubSource:
    """A HubSource on the fake hub: explicit endpoint and cache, no token, no bar, short timeout."""
    options = {"filenames": CK_NAMES, "token": False, "progress": False, "timeout": 5.0, **kwargs}
    return HubSource(repo_id, endpoint=hub.url, cache_dir=cache, **options)


def leftovers(directory: Path) -> list[str]:
    """Everything in ``directory`` (temporary files and locks would show up here); [] if it is gone."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def child_env(hub, hf_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process: the fake hub through HF_ENDPOINT, a temporary HF_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="10",
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")]),
    )
    env.update(extra)
    return env


def run_child(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHILD), *args], env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def child_result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
