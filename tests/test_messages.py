"""The exact words users read: content sniffing, inspection, hub integrity and disk-space errors (written to
kill the mutants scripts/mutation found surviving in ckpt_formats.sniff, .inspect and .hub)."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_state_dict, write_pth, write_safetensors
from hub_testing import PTH, REPO, ST, pth_bytes, safetensors_bytes, source

from ckpt_formats import CheckpointDownloadError, get_registry
from ckpt_formats._inspection import inspect_checkpoint
from ckpt_formats.hub import fetch
from ckpt_formats.sniff import identify, looks_like_json


def test_identify_names_what_a_file_really_is(tmp_path: Path) -> None:
    def file(name: str, data: bytes) -> Path:
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a", "b")
    raw_pickle = io.BytesIO()
    torch.save({"w": torch.ones(1)}, raw_pickle, _use_new_zipfile_serialization=False)
    cases = {
        file("empty", b""): "an empty file",
        file("pointer", b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"): (
            "a Git LFS pointer file, not the weights"
        ),
        write_safetensors(tmp_path / "st"): "a safetensors file",
        file("zip", zipped.getvalue()): (
            "a zip archive (a PyTorch .pth pickle checkpoint or a NumPy .npz archive)"
        ),
        file("raw", raw_pickle.getvalue()): "a raw pickle (a legacy PyTorch checkpoint)",
        file("json", b'{"weight_map": {}}'): "a JSON file",
        file("text", b"hello"): "not a recognised checkpoint format",
    }
    for path, expected in cases.items():
        assert identify(path) == expected, path.name
    assert identify(tmp_path / "missing") == "unreadable (No such file or directory)"


def test_looks_like_json(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"a": [1, 2]}')
    (tmp_path / "b.json").write_text('{"a": ')
    assert looks_like_json(tmp_path / "a.json") is True
    assert looks_like_json(tmp_path / "b.json") is False
    assert looks_like_json(tmp_path / "missing.json") is False


def test_inspection_counts_and_describes(tmp_path: Path) -> None:
    path = write_pth(tmp_path / "m.pth", {"state_dict": {**tiny_state_dict(), "step": 3, "name": "x"}})

    info = inspect_checkpoint(path)

    assert info.to_dict() == {
        "path": str(path),
        "format": "pickle",
        "executes_code": True,
        "tensors": 4,
        "parameters": 29,
        "bytes": 120,
        "dtypes": {"float16": 1, "float32": 2, "int64": 1},
        "metadata": {},
        "non_tensor_entries": 2,
        "tensor_list": [  # sorted by name, each tensor's bytes from its dtype and shape
            {"name": "encoder.bias", "dtype": "float32", "shape": [4], "bytes": 16, "file": None},
            {"name": "encoder.weight", "dtype": "float32", "shape": [4, 3], "bytes": 48, "file": None},
            {"name": "head.steps", "dtype": "int64", "shape": [5], "bytes": 40, "file": None},
            {"name": "head.weight", "dtype": "float16", "shape": [2, 4], "bytes": 16, "file": None},
        ],
    }
    with_meta = write_safetensors(tmp_path / "m.safetensors", tiny_state_dict(), {"k": "v"})
    assert inspect_checkpoint(str(with_meta)).metadata == {"k": "v"}


def test_a_corrupt_download_names_both_digests(hub, cache: Path, tmp_path: Path) -> None:
    data = safetensors_bytes()
    hub.add_repo(REPO, {ST: data, PTH: pth_bytes()})
    hub.corrupt.add(ST)
    corrupted = bytes([data[0] ^ 0xFF]) + data[1:]

    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache), tmp_path / "ckpt", get_registry().formats(names=["safetensors", "pickle"]))

    assert str(err.value).startswith(
        f"could not download {ST} from {hub.url}/{REPO} (revision main): the downloaded bytes do not match "
        f"the Hub's sha256 (expected {hashlib.sha256(data).hexdigest()}, got "
        f"{hashlib.sha256(corrupted).hexdigest()})"
    )


def test_not_enough_space_says_how_much_is_free_and_where(hub, cache: Path, tmp_path: Path) -> None:
    hub.add_repo(REPO, {ST: safetensors_bytes()})
    hub.size_override[ST] = 7 * 10**18

    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache), tmp_path / "ckpt", get_registry().formats(names=["safetensors"]))

    message = str(err.value)
    assert message.startswith(f"not enough disk space for {ST} from {hub.url}/{REPO}: it needs 7000.0 PB")
    assert re.search(rf"in {re.escape(str(cache))}, which has \d+(\.\d)? [KMGTP]?B free\. ", message), message
    assert message.endswith(
        f"Free some space (the file also goes through the Hugging Face cache {cache}) and retry"
    )


def test_sniffing_boundaries(tmp_path: Path) -> None:
    import struct

    from ckpt_formats.sniff import is_lfs_pointer, looks_like_pickle, looks_like_safetensors

    def file(name: str, data: bytes) -> Path:
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    prefix = b"version https://git-lfs.github.com/spec/v1\n"
    assert is_lfs_pointer(file("p1023", prefix.ljust(1023, b"x"))) is True
    assert is_lfs_pointer(file("p1024", prefix.ljust(1024, b"x"))) is False
    assert looks_like_pickle(file("p5", b"\x80\x05rest")) is True
    assert looks_like_pickle(file("p6", b"\x80\x06rest")) is False
    assert looks_like_pickle(file("p1", b"\x80\x01rest")) is False

    def st(name: str, length: int, body: bytes) -> bool:
        return looks_like_safetensors(file(name, struct.pack("<Q", length) + body))

    assert st("one", 1, b"{") is True  # the smallest header that fits
    assert st("zero", 0, b"{}") is False
    assert st("list", 2, b"[]") is False
    assert st("fits", 10, b"{" + b" " * 9) is True
    assert st("past", 11, b"{" + b" " * 9) is False  # claims one byte more than the file has
    assert st("far", 17, b"{" + b" " * 9) is False


def test_json_sniffing_reads_at_most_16_mib(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text('{"pad": "' + "x" * (16 * 1024 * 1024 + 8 * 1024) + '"}')
    assert looks_like_json(big) is False  # only the first 16 MiB are read: not a whole JSON document
