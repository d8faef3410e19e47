"""What discovery and ``resolve()`` choose, detail by detail: shards claimed by their index, what counts as
unmatched, the options a fetch and the discovery after it keep, the folder a fetch makes, and the logs."""

from __future__ import annotations

import logging

import pytest
from conftest import assert_same_tensors, tiny_state_dict, write_pth, write_safetensors
from hub_testing import pth_bytes, safetensors_bytes
from shards_testing import write_shard_set

from ckpt_formats import CheckpointNotFoundError, HubSource

HF_REPO = "someone/model"


@pytest.fixture
def both(hub, cache):
    """A Hub repository with Hugging Face's two single-file names, and a source for it."""
    hub.add_repo(HF_REPO, {"model.safetensors": safetensors_bytes(1), "pytorch_model.bin": pth_bytes(2)})
    return HubSource(HF_REPO, endpoint=hub.url, cache_dir=cache, token=False, progress=False, timeout=5.0)


def test_an_index_with_one_shard_claims_it(tmp_path, registry):
    write_shard_set(tmp_path, "safetensors-sharded", tiny_state_dict(), shards=1)
    got = registry.resolve(tmp_path)
    assert got.format.name == "safetensors-sharded" and got.shadowed == []
    assert_same_tensors(got.state_dict, tiny_state_dict())


def test_unmatched_lists_only_what_no_format_took(tmp_path, registry):
    write_safetensors(tmp_path / "model.safetensors")
    write_shard_set(tmp_path, "safetensors-sharded", tiny_state_dict())
    (tmp_path / "model-00001-of-00003.safetensors").write_bytes(b"x")  # an orphan of another set
    (tmp_path / "notes.txt").write_text("n")
    found = registry.discover(tmp_path)
    assert found.unmatched == ["notes.txt"]
    assert found.orphans == ["model-00001-of-00003.safetensors"]


@pytest.mark.parametrize("count", [1, 2])
def test_the_orphan_warning(tmp_path, registry, caplog, count):
    names = [f"model-0000{i}-of-00003.safetensors" for i in range(1, count + 1)]
    for name in names:
        write_safetensors(tmp_path / name)
    with caplog.at_level(logging.WARNING, logger="ckpt_formats"):
        registry.discover(tmp_path)
    pronoun = "it" if count == 1 else "them"
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: {', '.join(names)} named like part of a sharded set but no index there lists "
        f"{pronoun}; not a checkpoint on its own (the set was interrupted: fetch or copy it again, index "
        "included)"
    ]


def test_a_disabled_format_leaves_the_others(monkeypatch, registry):
    monkeypatch.setenv("CKPT_FORMATS_DISABLE", "safetensors-sharded")
    names = [f.name for f in registry.formats()]
    assert names == [f.name for f in registry.all_formats() if f.name != "safetensors-sharded"]
    assert [f.name for f in registry.formats(names=["pickle", "safetensors"])] == ["safetensors", "pickle"]


@pytest.mark.parametrize("exists", [True, False])
def test_a_directory_that_is_not_one(tmp_path, registry, exists):
    target = tmp_path / "weights.safetensors"
    if exists:
        target.write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(target)
    what = "is not a directory" if exists else "does not exist"
    assert str(err.value) == f"checkpoint directory {target} {what}"


def test_resolve_makes_the_folder_and_its_parents_for_a_fetch(tmp_path, registry, both):
    target = tmp_path / "models" / "v1"
    got = registry.resolve(target, hub=both)
    assert got.downloaded and got.candidate.path == target / "model.safetensors"


def test_exclude_reaches_the_fetch_and_the_discovery_after_it(tmp_path, registry, both):
    (tmp_path / "skip.safetensors").write_bytes(b"not looked at")
    got = registry.resolve(tmp_path, hub=both, exclude=["*.safetensors"])
    assert got.format.name == "pickle" and got.candidate.path == tmp_path / "pytorch_model.bin"
    assert not (tmp_path / "model.safetensors").exists()  # the fetch skipped it too


def test_select_reaches_the_fetch_and_the_discovery_after_it(tmp_path, registry, both):
    write_safetensors(tmp_path / "other.safetensors")
    got = registry.resolve(tmp_path, hub=both, select="model.*")
    assert got.candidate.path == tmp_path / "model.safetensors" and got.downloaded


def test_formats_reach_the_discovery_after_the_fetch(tmp_path, registry, both):
    write_safetensors(tmp_path / "local.safetensors")
    got = registry.resolve(tmp_path, hub=both, formats=["pickle"])
    assert got.format.name == "pickle" and got.candidate.path == tmp_path / "pytorch_model.bin"


def test_resolve_logs_the_winner_and_what_it_shadows(tmp_path, registry, caplog):
    write_safetensors(tmp_path / "a.safetensors")
    write_pth(tmp_path / "b.pth")
    with caplog.at_level(logging.INFO, logger="ckpt_formats.registry"):
        registry.resolve(tmp_path)
    assert [r.getMessage() for r in caplog.records if r.name == "ckpt_formats.registry"] == [
        f"{tmp_path}: using a.safetensors (safetensors, priority 100); shadowed: b.pth (pickle)",
        f"loaded safetensors checkpoint {tmp_path / 'a.safetensors'} onto cpu",
    ]


def test_a_fetch_whose_every_name_is_filtered_out_downloads_nothing(tmp_path, registry, both, hub):
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path, hub=both, select="nothing-like-this*")
    assert str(err.value).startswith(f"nothing to fetch from {both.repo_url}: every file name asked for (")
    assert str(err.value).endswith("is left out by exclude=[] or select='nothing-like-this*'")
    assert [r for r in hub.seen() if r[1] == "GET"] == []


def test_safe_only_holds_for_the_discovery_after_the_fetch(tmp_path, registry, both):
    """A local file of an unsafe format that outranks everything is refused before the fetch and after it:
    the fetched safetensors is loaded and the unsafe loader never runs."""
    from plugin_testing import declaring

    from ckpt_formats import CheckpointFormat

    ran = []
    risky = CheckpointFormat("risky", 500, ("*.risky",), lambda c, d: ran.append(c) or {}, executes_code=True)
    registry.register(declaring(risky), name="unsafe")
    (tmp_path / "local.risky").write_bytes(b"")
    got = registry.resolve(tmp_path, hub=both, safe_only=True)
    assert got.format.name == "safetensors" and got.downloaded and ran == []
