"""Unsafe, corrupt and misnamed files: one clear error, the wrong loader never runs, no fallback."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile

import pytest
import torch
from conftest import write_pth, write_safetensors

from ckpt_formats import CheckpointContentError, CheckpointLoadError


class WritesMarker:
    """Unpickling this object calls ``open(marker, "w")``: code execution if anything unpickles it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("ext", ["pth", "pt", "ckpt"])
@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, registry, ext, container):
    marker = tmp_path / "pwned"
    payload = {"weight": torch.ones(2), "evil": WritesMarker(marker)}
    path = tmp_path / f"model.{ext}"
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    assert str(path) in str(err.value) and "refused to unpickle" in str(err.value)
    assert not marker.exists()


@pytest.mark.slow
def test_unsafe_pickle_in_a_subprocess_with_safe_only_unset(tmp_path):
    """The process-wide entry point (the real CLI) refuses it too, and nothing is written."""
    import subprocess
    import sys

    marker = tmp_path / "pwned"
    torch.save({"evil": WritesMarker(marker)}, tmp_path / "model.pth")
    out = subprocess.run(
        [sys.executable, "-m", "ckpt_formats.cli", "resolve", str(tmp_path), "--load"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("ckpt-formats: error: ") and "refused to unpickle" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def _header_bytes(header: dict) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def corrupt_files(tmp_path):
    good = write_safetensors(
        tmp_path / "good.bin.tmp", {"w": torch.arange(16, dtype=torch.float32)}
    ).read_bytes()
    (header_len,) = struct.unpack("<Q", good[:8])
    return {
        "header-length-beyond-file": struct.pack("<Q", 10**9) + good[8:],
        "invalid-header-json": struct.pack("<Q", 12) + b"{not json!!}" + b"\0" * 64,
        "offsets-past-end": _header_bytes({"w": {"dtype": "F32", "shape": [16], "data_offsets": [0, 4096]}})
        + b"\0" * 64,
        "truncated-data": good[: 8 + header_len + 10],
    }


@pytest.mark.parametrize(
    "case", ["header-length-beyond-file", "invalid-header-json", "offsets-past-end", "truncated-data"]
)
def test_corrupt_safetensors_is_a_load_error_never_a_fallback(tmp_path, registry, case):
    data = corrupt_files(tmp_path)[case]
    (tmp_path / "good.bin.tmp").unlink()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    write_pth(tmp_path / "model.pth")  # a lower-priority file that must NOT be used
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    assert str(path) in str(err.value)


def test_pickle_named_safetensors_says_what_it_is(tmp_path, registry):
    path = write_pth(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointContentError) as err:
        registry.resolve(tmp_path)
    text = str(err.value)
    assert str(path) in text and "named like a safetensors file" in text
    assert "PyTorch .pth pickle" in text and "matches the pickle format" in text


def test_pickle_named_safetensors_is_never_unpickled(tmp_path, registry):
    marker = tmp_path / "pwned"
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(WritesMarker(marker)))
    with pytest.raises(CheckpointContentError, match="raw pickle"):
        registry.resolve(tmp_path)
    assert not marker.exists()


def test_safetensors_named_pth_says_what_it_is(tmp_path, registry):
    path = write_safetensors(tmp_path / "model.pth")
    with pytest.raises(CheckpointContentError) as err:
        registry.resolve(tmp_path)
    assert str(path) in str(err.value) and "content is a safetensors file" in str(err.value)
    assert "rename it" in str(err.value)


@pytest.mark.parametrize("name", ["model.safetensors", "model.pth"])
def test_git_lfs_pointer_is_explained(tmp_path, registry, name):
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 399999999\n"
    )
    (tmp_path / name).write_text(pointer)
    with pytest.raises(CheckpointContentError) as err:
        registry.resolve(tmp_path)
    assert "Git LFS pointer" in str(err.value) and "git lfs pull" in str(err.value)
    assert name in str(err.value)


def test_empty_file_is_a_content_error(tmp_path, registry):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointContentError, match="an empty file"):
        registry.resolve(tmp_path)


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path, registry):
    import numpy as np

    marker = tmp_path / "pwned"
    path = tmp_path / "model.npz"
    np.savez(path, ok=np.ones(3), evil=np.array([WritesMarker(marker)], dtype=object))
    with zipfile.ZipFile(path) as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    with pytest.raises(CheckpointLoadError, match="pickle"):
        registry.resolve(tmp_path)
    assert not marker.exists()
