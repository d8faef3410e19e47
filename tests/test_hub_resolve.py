"""End to end through ``ckpt_formats.resolve(dir, hub=...)``, offline mode, and sharded checkpoints.

Offline mode is switched on the way the client reads it (``huggingface_hub.constants.HF_HUB_OFFLINE``, set
from ``HF_HUB_OFFLINE`` at import); ``test_hub_process.py`` does it through the real environment variable.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_same_tensors, tiny_state_dict
from hub_testing import PTH, REPO, ST, leftovers, pth_bytes, safetensors_bytes, source

from ckpt_formats import CheckpointDownloadError, CheckpointNotFoundError, get_registry, resolve
from ckpt_formats.hub import fetch


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


BOTH = {ST: safetensors_bytes(), PTH: pth_bytes(1)}


def test_resolve_downloads_then_loads_the_safetensors(hub, cache, tmp_path):
    hub.add_repo(REPO, BOTH)

    resolved = resolve(tmp_path / "ckpt", hub=source(hub, cache))

    assert resolved.downloaded and resolved.format.name == "safetensors"
    assert resolved.path == tmp_path / "ckpt" / ST
    assert_same_tensors(resolved.state_dict, tiny_state_dict())
    count = len(hub.requests)

    again = resolve(tmp_path / "ckpt", hub=source(hub, cache))  # now local: no request
    assert not again.downloaded and len(hub.requests) == count


def test_resolve_falls_back_to_the_pth_and_loads_it(hub, cache, tmp_path):
    hub.add_repo(REPO, {PTH: BOTH[PTH]})

    resolved = resolve(tmp_path / "ckpt", hub=source(hub, cache))

    assert resolved.format.name == "pickle" and resolved.path.name == PTH
    assert_same_tensors(resolved.state_dict, tiny_state_dict(1))
    assert hub.seen() == [
        ("hub", "HEAD", ST),
        ("hub", "HEAD", PTH),
        ("cdn", "GET", PTH),
    ]


def test_resolve_safe_only_never_downloads_the_pth(hub, cache, tmp_path):
    hub.add_repo(REPO, {PTH: BOTH[PTH]})

    with pytest.raises(CheckpointNotFoundError, match=ST):
        resolve(tmp_path / "ckpt", hub=source(hub, cache), safe_only=True)

    assert hub.seen() == [("hub", "HEAD", ST)]
    assert leftovers(tmp_path / "ckpt") == []


def test_resolve_503_is_a_download_error_with_no_fallback(hub, cache, tmp_path):
    hub.add_repo(REPO, BOTH)
    hub.status = 503

    with pytest.raises(CheckpointDownloadError, match="HTTP 503"):
        resolve(tmp_path / "ckpt", hub=source(hub, cache))

    assert hub.seen() == [("hub", "HEAD", ST)]


# -- offline -----------------------------------------------------------------------------------------------


def test_offline_uses_the_cache_with_zero_requests(hub, cache, tmp_path, monkeypatch):
    hub.add_repo(REPO, BOTH)
    fetch(source(hub, cache), tmp_path / "first", get_registry().formats())
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)

    resolved = resolve(tmp_path / "second", hub=source(hub, cache))

    assert len(hub.requests) == before  # zero requests
    assert resolved.path == tmp_path / "second" / ST and resolved.downloaded
    assert (tmp_path / "second" / ST).read_bytes() == BOTH[ST]


def test_offline_with_an_empty_cache_says_what_to_place_where(hub, cache, tmp_path, offline):
    hub.add_repo(REPO, BOTH)

    with pytest.raises(CheckpointDownloadError) as err:
        resolve(tmp_path / "ckpt", hub=source(hub, cache))

    message = str(err.value)
    assert "offline (HF_HUB_OFFLINE=1)" in message
    assert f"Place the file at {tmp_path / 'ckpt' / ST}" in message
    assert f"{hub.url}/{REPO}" in message and "check the network connection" in message
    assert hub.seen() == []


def test_offline_never_downgrades_to_a_cached_pth(hub, cache, tmp_path, monkeypatch):
    """Only the .pth is cached and nobody knows whether the safetensors exists: refuse, do not guess."""
    hub.add_repo(REPO, BOTH)
    fetch(source(hub, cache, filenames={"pickle": [PTH]}), tmp_path / "pth-only", get_registry().formats())
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(CheckpointDownloadError, match=f"offline .* {ST} of"):
        resolve(tmp_path / "ckpt", hub=source(hub, cache))
    assert leftovers(tmp_path / "ckpt") == []


def test_offline_falls_back_when_the_cache_knows_the_file_is_absent(hub, cache, tmp_path, monkeypatch):
    hub.add_repo(REPO, {PTH: BOTH[PTH]})
    fetch(source(hub, cache), tmp_path / "first", get_registry().formats())  # records the absence
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)

    resolved = resolve(tmp_path / "second", hub=source(hub, cache))

    assert resolved.path.name == PTH and len(hub.requests) == before


# -- sharded checkpoints: the index and its shards ---------------------------------------------------------


def _sharded_repo() -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    full = tiny_state_dict(3)
    keys = sorted(full)
    shards = {
        "model-00001-of-00002.safetensors": {k: full[k] for k in keys[:2]},
        "model-00002-of-00002.safetensors": {k: full[k] for k in keys[2:]},
    }
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    files = {name: safetensors_bytes(state_dict=part) for name, part in shards.items()}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    return files, full


def test_sharded_checkpoint_comes_with_its_shards(hub, cache, tmp_path):
    files, full = _sharded_repo()
    hub.add_repo(REPO, files)

    resolved = resolve(tmp_path / "ckpt", hub=source(hub, cache, filenames=None))

    assert resolved.format.name == "safetensors-sharded"
    assert_same_tensors(resolved.state_dict, full)
    assert leftovers(tmp_path / "ckpt") == sorted(files)
    gets = [r[2] for r in hub.seen() if r[1] == "GET"]
    assert gets == ["model.safetensors.index.json", *sorted(files)[:2]]


def test_sharded_checkpoint_with_a_missing_shard_places_nothing(hub, cache, tmp_path):
    files, _ = _sharded_repo()
    del files["model-00002-of-00002.safetensors"]
    hub.add_repo(REPO, files)

    with pytest.raises(CheckpointDownloadError, match="lists it but the repository has no such file"):
        resolve(tmp_path / "ckpt", hub=source(hub, cache, filenames=None))

    assert leftovers(tmp_path / "ckpt") == []  # not even the first shard, which discovery would load alone
    asked = [r[2] for r in hub.seen() if r[1] == "HEAD"]
    assert "model.safetensors" not in asked  # a broken set is an error, not a reason to fall back
