"""A hostile hub (or mirror, proxy) on 127.0.0.1: whatever it answers, nothing lands outside the cache and the
destination, and a refused answer writes nothing at all.

Every test lists the whole temporary tree (every file, link and folder under ``tmp_path``) before and after
the fetch: afterwards it holds exactly what it held before, plus the fetch's lock file in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hub_testing import REPO, ST, safetensors_bytes, source

from ckpt_formats import CheckpointDownloadError, HubAnswerError, get_registry, resolve
from ckpt_formats.hub import LOCKS_FOLDER, fetch

UP = "../" * 8  # from the cache's blobs/ or snapshots/ folder to tmp_path/1: still inside the listed tree
INDEX = "model.safetensors.index.json"


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    base = tmp_path / "1" / "2" / "3" / "4" / "5" / "6"
    outside = tmp_path / "outside"
    outside.mkdir()
    base.mkdir(parents=True)
    (outside / "canary").write_bytes(b"untouched")
    return {"root": tmp_path, "cache": base / "hf", "target": base / "ckpt", "outside": outside}


def listing(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path -> 'dir', 'link -> TARGET' or the file's sha256."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_nothing_but_locks_added(before: dict[str, str], tree: dict[str, Path]) -> None:
    after = listing(tree["root"])
    locks = tree["cache"] / LOCKS_FOLDER
    added = {
        k: v for k, v in after.items() if k not in before and not (tree["root"] / k).is_relative_to(locks)
    }
    added = {k: v for k, v in added.items() if not (v == "dir" and (tree["root"] / k) in locks.parents)}
    assert added == {}, f"the fetch created {added}"
    assert {k: after.get(k) for k in before} == before  # nothing changed or removed either


def hostile_fetch(hub, tree, formats=("safetensors",), **kwargs):
    before = listing(tree["root"])
    with pytest.raises(CheckpointDownloadError) as err:
        fetch(
            source(hub, tree["cache"], **kwargs), tree["target"], get_registry().formats(names=list(formats))
        )
    assert "\n" not in str(err.value)
    assert_nothing_but_locks_added(before, tree)
    return err.value


BAD_PATHS = [
    pytest.param(UP + "escape", id="dotdot"),
    pytest.param("ABSOLUTE", id="absolute"),
    pytest.param("..\\..\\..\\escape", id="backslash"),
    pytest.param("0" * 5000, id="over-long"),
    pytest.param("A" * 40, id="upper-case"),
    pytest.param("0" * 39 + "/", id="slash"),
]


def _value(raw: str, tree) -> str:
    return str(tree["outside"] / "escape") if raw == "ABSOLUTE" else raw


@pytest.mark.parametrize("raw", BAD_PATHS)
def test_a_commit_header_that_is_no_commit_hash_writes_nothing(hub, tree, raw):
    hub.add_repo(REPO, {ST: safetensors_bytes()})
    hub.hostile = {"X-Repo-Commit": _value(raw, tree)}
    err = hostile_fetch(hub, tree)
    assert isinstance(err, HubAnswerError)
    assert str(err).startswith(f"the X-Repo-Commit header of {ST} is "), err
    assert err.value == _value(raw, tree)


@pytest.mark.parametrize("lfs", [True, False], ids=["X-Linked-Etag", "ETag"])
@pytest.mark.parametrize("raw", BAD_PATHS)
def test_an_etag_that_is_no_digest_writes_nothing(hub, tree, raw, lfs):
    hub.add_repo(REPO, {ST: safetensors_bytes()}, lfs=lfs)
    hub.hostile = {"X-Linked-Etag" if lfs else "ETag": f'"{_value(raw, tree)}"'}
    err = hostile_fetch(hub, tree)
    assert isinstance(err, HubAnswerError)
    assert str(err).startswith(f"the X-Linked-Etag (or ETag) header of {ST} is "), err
    assert err.value == _value(raw, tree)


def test_a_nul_in_a_header_writes_nothing(hub, tree):
    hub.add_repo(REPO, {ST: safetensors_bytes()})
    hub.hostile = {"X-Repo-Commit": "0" * 20 + "\x00" + "0" * 19}
    hostile_fetch(hub, tree)  # the HTTP client refuses the answer before it reaches us: still nothing


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "ABSOLUTE", UP + "escape", "ftp://127.0.0.1/x", "http:///no-host"],
)
def test_a_redirect_anywhere_but_http_writes_nothing(hub, tree, location):
    hub.add_repo(REPO, {ST: safetensors_bytes()})
    hub.hostile = {"Location": f"file://{tree['outside']}/escape" if location == "ABSOLUTE" else location}
    hostile_fetch(hub, tree)  # refused by us (not an http URL), or by the client (a relative one: nowhere)


@pytest.mark.parametrize(
    "shard",
    [UP + "escape.safetensors", "ABSOLUTE", "sub\\..\\x.safetensors", "x\x00.safetensors", "a" * 300],
    ids=["dotdot", "absolute", "backslash", "nul", "over-long"],
)
def test_an_index_naming_a_file_outside_its_folder_writes_nothing(hub, tree, shard):
    shard = str(tree["outside"] / "abs.safetensors") if shard == "ABSOLUTE" else shard
    files = {INDEX: json.dumps({"weight_map": {"w": shard}}).encode(), "ok.safetensors": safetensors_bytes()}
    hub.add_repo(REPO, files)
    before = listing(tree["root"])
    with pytest.raises(Exception) as err:  # the index is read from the cache: a load error naming it
        fetch(
            source(hub, tree["cache"], filenames={"safetensors-sharded": [INDEX]}),
            tree["target"],
            get_registry().formats(names=["safetensors-sharded"]),
        )
    assert "which is not a file beside the index" in str(err.value)
    after = listing(tree["root"])
    added = [k for k in after if k not in before]
    assert added and all((tree["root"] / k).is_relative_to(tree["cache"]) for k in added), added  # the index
    assert not tree["target"].exists()


@pytest.mark.parametrize("planted", ["snapshots", "blobs", "refs"])
def test_a_link_planted_in_the_cache_is_not_written_through(hub, tree, planted):
    hub.add_repo(REPO, {ST: safetensors_bytes()})
    storage = tree["cache"] / "models--nikopueringer--CorridorKey_v1.0"
    storage.mkdir(parents=True)
    (storage / planted).symlink_to(tree["outside"], target_is_directory=True)
    err = hostile_fetch(hub, tree)
    assert isinstance(err, HubAnswerError)
    assert f"outside {storage.resolve()}" in str(err)


def test_a_pinned_revision_never_reads_a_planted_snapshot(hub, tree):
    commit = "1" * 40
    hub.add_repo(REPO, {ST: safetensors_bytes()}, commit=commit)
    storage = tree["cache"] / "models--nikopueringer--CorridorKey_v1.0"
    (storage / "snapshots").mkdir(parents=True)
    (tree["outside"] / ST).write_bytes(safetensors_bytes(seed=1))
    (storage / "snapshots" / commit).symlink_to(tree["outside"], target_is_directory=True)
    err = hostile_fetch(hub, tree, revision=commit)
    assert isinstance(err, HubAnswerError) and "the Hugging Face cache entry of" in str(err)


def test_a_link_at_the_destination_is_replaced_not_written_through(hub, tree):
    hub.add_repo(REPO, {ST: safetensors_bytes()})
    tree["target"].mkdir(parents=True)
    (tree["target"] / ST).symlink_to(tree["outside"] / "victim")  # dangling: no checkpoint there yet
    placed = fetch(source(hub, tree["cache"]), tree["target"], get_registry().formats(names=["safetensors"]))
    assert placed == [tree["target"] / ST]
    assert not placed[0].is_symlink() and placed[0].read_bytes() == safetensors_bytes()
    assert sorted(p.name for p in tree["outside"].iterdir()) == ["canary"]


def test_resolve_with_the_hub_fallback_refuses_the_same_answers(hub, tree):
    hub.add_repo(REPO, {ST: safetensors_bytes()})
    hub.hostile = {"X-Repo-Commit": UP + "commit-escape"}
    before = listing(tree["root"])
    with pytest.raises(HubAnswerError):
        resolve(tree["target"], hub=source(hub, tree["cache"]), formats=["safetensors"])
    assert_nothing_but_locks_added(before, tree)
