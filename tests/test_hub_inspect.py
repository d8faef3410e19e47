"""``ckpt-formats inspect --hub``: a Hub checkpoint summarised from its headers, the weights never downloaded.

The fake hub counts every body byte its CDN serves; each test compares the remote summary with the local
inspection of the very same bytes, and the bytes served with the file sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_testing import REPO, child_env, safetensors_bytes

from ckpt_formats import CheckpointDownloadError, CheckpointLoadError, CheckpointNotFoundError
from ckpt_formats._inspection import inspect_checkpoint
from ckpt_formats.convert import convert
from ckpt_formats.hub import inspect_remote


def big_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "encoder.weight": torch.randn(512, 512, generator=g),
        "encoder.bias": torch.randn(512, generator=g).to(torch.bfloat16),
        "head.weight": torch.randn(256, 512, generator=g).to(torch.float16),
        "head.steps": torch.arange(1000, dtype=torch.int64),
    }


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ckpt_formats.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def local_summary(path: Path) -> dict:
    info = inspect_checkpoint(path).to_dict()
    return {k: info[k] for k in ("tensors", "parameters", "bytes", "dtypes", "metadata")}


def test_single_file_from_its_header_alone(hub, tmp_path):
    local = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file(big_state_dict(), str(local), metadata={"corridorkey.config": '{"img_size": 64}'})
    hub.add_repo(REPO, {"weights/model.safetensors": local.read_bytes()})

    proc = cli(
        ["inspect", "--hub", REPO, "--filename", "weights/model.safetensors", "--json"],
        child_env(hub, tmp_path / "hf"),
    )

    assert proc.returncode == 0, proc.stderr
    remote = json.loads(proc.stdout)
    assert {k: remote[k] for k in local_summary(local)} == local_summary(local)
    assert remote["format"] == "safetensors" and remote["path"] == f"{REPO}/weights/model.safetensors@main"
    size = local.stat().st_size
    header = int.from_bytes(local.read_bytes()[:8], "little")
    served = hub.served["weights/model.safetensors"]
    assert served == 8 + header and hub.served == {"weights/model.safetensors": served}  # the header only
    assert served < size / 100
    assert not (tmp_path / "hf").exists() or not list((tmp_path / "hf").rglob("*.safetensors"))


def test_sharded_set_found_by_its_default_index_name(hub, tmp_path):
    src = tmp_path / "src.safetensors"
    from safetensors.torch import save_file

    save_file(big_state_dict(), str(src), metadata={"note": "sharded"})
    out = tmp_path / "set" / "model.safetensors"
    report = convert(src, out, max_shard_size=600_000)
    files = {p.name: p.read_bytes() for p in report.files}
    assert len(files) >= 3 and "model.safetensors.index.json" in files
    hub.add_repo(REPO, files)

    info = inspect_remote(REPO, endpoint=hub.url, token=False)

    assert info.format == "safetensors-sharded"
    local = local_summary(src)
    assert (info.tensors, info.parameters, info.bytes, info.dtypes) == (
        local["tensors"],
        local["parameters"],
        local["bytes"],
        local["dtypes"],
    )
    assert info.metadata["note"] == "sharded" and int(info.metadata["total_size"]) == local["bytes"]
    listed = inspect_checkpoint(out.parent / "model.safetensors.index.json").tensor_list
    assert info.tensor_list == listed  # every tensor: its dtype, shape, bytes and shard, as listed locally
    assert {t.file for t in listed} == set(files) - {"model.safetensors.index.json"}
    shards = [n for n in files if not n.endswith(".json")]
    for name in shards:  # each shard: its header only
        header = int.from_bytes(files[name][:8], "little")
        assert hub.served[name] == 8 + header < len(files[name]) / 10
    assert sum(hub.served.values()) < sum(len(d) for d in files.values()) / 20


@pytest.mark.slow
def test_human_output_and_one_line_errors(hub, tmp_path):
    hub.add_repo(REPO, {"model.safetensors": safetensors_bytes()})
    env = child_env(hub, tmp_path / "hf")

    human = cli(["inspect", "--hub", REPO], env)  # no index: model.safetensors is the next default name
    assert human.returncode == 0, human.stderr
    assert "format:      safetensors" in human.stdout and "parameters:  29" in human.stdout
    assert ("hub", "GET", "model.safetensors.index.json") in hub.seen()

    for args, fragment in [
        (["inspect", "--hub", REPO, "--filename", "nope.safetensors"], "has none of: nope.safetensors"),
        (["inspect", "--hub", "someone/missing"], "repository not found"),
        (["inspect", "--hub", REPO, "--filename", "model.pth"], "only safetensors checkpoints"),
        (["inspect", "--filename", "x.safetensors", str(tmp_path)], "only apply with --hub"),
        (["inspect"], "give a FILE"),
    ]:
        if "model.pth" in args:
            hub.repos[REPO].files["model.pth"] = b"not read"
        proc = cli(args, env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("ckpt-formats: error:") and fragment in lines[0], lines[0]


def test_not_a_safetensors_file_is_a_clear_error_and_reads_8_bytes(hub):
    hub.add_repo(REPO, {"model.safetensors": b"\xff" * 8 + b"x" * 100_000})

    with pytest.raises(CheckpointLoadError, match="header length .* is implausible"):
        inspect_remote(REPO, endpoint=hub.url, token=False)
    assert hub.served == {"model.safetensors": 8}


def test_an_empty_repository_names_the_files_asked_for(hub):
    hub.add_repo(REPO, {"README.md": b"nothing here"})

    with pytest.raises(CheckpointNotFoundError, match="has none of: model.safetensors.index.json, model"):
        inspect_remote(REPO, endpoint=hub.url, token=False)
    assert hub.served == {}


def test_revision_is_sent_and_an_unknown_one_is_a_download_error(hub):
    repo = hub.add_repo(REPO, {"model.safetensors": safetensors_bytes()}, branches=("main", "v2"))

    for revision in ("v2", repo.commit):
        info = inspect_remote(REPO, endpoint=hub.url, token=False, revision=revision)
        assert info.path == f"{REPO}/model.safetensors@{revision}" and info.parameters == 29
    assert {r.filename for r in hub.requests if r.server == "hub"} == {
        "model.safetensors.index.json",
        "model.safetensors",
    }
    with pytest.raises(CheckpointDownloadError, match=r"revision nope\): revision not found"):
        inspect_remote(REPO, endpoint=hub.url, token=False, revision="nope")
