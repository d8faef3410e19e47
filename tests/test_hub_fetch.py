"""hub.fetch against the fake hub with the real huggingface_hub client (endpoint and cache passed explicitly).

Each test asserts on the files that land, the requests the server saw (order and count) and the error text.
"""

from __future__ import annotations

import fnmatch
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_testing import (
    CK_NAMES,
    PTH,
    REPO,
    ST,
    closed_port,
    leftovers,
    pth_bytes,
    safetensors_bytes,
    sha256,
    source,
)

from ckpt_formats import CheckpointDownloadError, CheckpointNotFoundError, HubSource, get_registry
from ckpt_formats.atomic import is_temp_file, temp_path_for
from ckpt_formats.hub import fetch


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "ckpt"


def formats(*names: str):
    return get_registry().formats(names=list(names) if names else None)


CK_FORMATS = ("safetensors", "pickle")
BOTH = {ST: safetensors_bytes(), PTH: pth_bytes()}


# -- the happy paths and the fallback rule ------------------------------------------------------------


def test_empty_directory_gets_the_safetensors_file_first(hub, cache, target, caplog):
    hub.add_repo(REPO, BOTH)
    caplog.set_level(logging.INFO, logger="ckpt_formats")

    placed = fetch(source(hub, cache), target, formats(*CK_FORMATS))

    assert placed == [target / ST]
    assert (target / ST).read_bytes() == BOTH[ST]
    assert leftovers(target) == [ST]
    # one metadata request, then the bytes from the CDN
    assert hub.seen() == [("hub", "HEAD", ST), ("cdn", "GET", ST)]
    messages = [r.getMessage() for r in caplog.records if r.name == "ckpt_formats.hub"]
    assert any(m.startswith(f"Downloading {ST}") and REPO in m for m in messages), messages
    assert f"{ST} saved to {target / ST}" in messages


def test_safetensors_absent_falls_back_to_pth(hub, cache, target):
    hub.add_repo(REPO, {PTH: BOTH[PTH]})

    placed = fetch(source(hub, cache), target, formats(*CK_FORMATS))

    assert placed == [target / PTH]
    assert (target / PTH).read_bytes() == BOTH[PTH]
    assert hub.seen() == [
        ("hub", "HEAD", ST),
        ("hub", "HEAD", PTH),
        ("cdn", "GET", PTH),
    ]


def test_regular_git_file_is_served_by_the_hub_and_checked_by_git_sha1(hub, cache, target):
    hub.add_repo(REPO, {ST: BOTH[ST]}, lfs=False)

    fetch(source(hub, cache), target, formats(*CK_FORMATS))

    assert (target / ST).read_bytes() == BOTH[ST]
    assert hub.seen() == [("hub", "HEAD", ST), ("hub", "GET", ST)]


def test_default_names_ask_for_the_sharded_index_first(hub, cache, target):
    hub.add_repo(REPO, {"model.safetensors": BOTH[ST]})

    fetch(source(hub, cache, filenames=None), target, formats())

    assert (target / "model.safetensors").read_bytes() == BOTH[ST]
    assert hub.seen("hub")[0] == ("hub", "HEAD", "model.safetensors.index.json")
    assert [r for r in hub.seen() if r[1] == "GET"] == [("cdn", "GET", "model.safetensors")]


def test_nothing_in_the_repository_lists_every_file_asked_for(hub, cache, target):
    hub.add_repo(REPO, {"README.md": b"hello"})

    with pytest.raises(CheckpointNotFoundError) as err:
        fetch(source(hub, cache, revision="main"), target, formats(*CK_FORMATS))

    message = str(err.value)
    assert f"{hub.url}/{REPO} (revision main)" in message
    assert f"{ST} (safetensors)" in message and f"{PTH} (pickle)" in message
    assert hub.seen() == [("hub", "HEAD", ST), ("hub", "HEAD", PTH)]
    assert leftovers(target) == []


def test_safe_only_never_asks_for_the_pickle(hub, cache, target):
    hub.add_repo(REPO, {PTH: BOTH[PTH]})

    with pytest.raises(CheckpointNotFoundError):
        fetch(source(hub, cache), target, get_registry().formats(names=list(CK_FORMATS), safe_only=True))

    assert hub.seen() == [("hub", "HEAD", ST)]


def test_a_file_already_placed_is_not_downloaded_again(hub, cache, target):
    hub.add_repo(REPO, BOTH)
    fetch(source(hub, cache), target, formats(*CK_FORMATS))
    before = len(hub.requests)

    assert fetch(source(hub, cache), target, formats(*CK_FORMATS)) == [target / ST]
    assert len(hub.requests) == before


def test_token_goes_to_the_hub_but_not_to_the_cdn(hub, cache, target):
    hub.add_repo(REPO, BOTH, token="hf_secret")

    fetch(source(hub, cache, token="hf_secret"), target, formats(*CK_FORMATS))

    assert (target / ST).is_file()
    assert all(
        r.headers.get("authorization") == "Bearer hf_secret" for r in hub.requests if r.server == "hub"
    )
    assert all("authorization" not in r.headers for r in hub.requests if r.server == "cdn")


def test_revision_is_sent_and_a_commit_hash_pins_the_cache(hub, cache, target, tmp_path):
    repo = hub.add_repo(REPO, BOTH)
    fetch(source(hub, cache, revision=repo.commit), target, formats(*CK_FORMATS))
    assert hub.seen()[0] == ("hub", "HEAD", ST)
    assert hub.requests[0].headers  # the request reached the server with the commit in the url
    before = len(hub.requests)

    # a pinned commit already in the cache: no request at all
    again = tmp_path / "again"
    assert fetch(source(hub, cache, revision=repo.commit), again, formats(*CK_FORMATS)) == [again / ST]
    assert len(hub.requests) == before
    assert (again / ST).read_bytes() == BOTH[ST]


# -- failures that must NOT fall back: one request, a download error, nothing placed -----------------------


def _assert_download_error(err, hub, name=ST) -> str:
    message = str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert f"{hub.url}/{REPO}" in message and name in message
    assert "Check the network connection" in message
    assert err.value.__cause__ is not None
    return message


def test_503_is_one_request_and_a_download_error(hub, cache, target):
    hub.add_repo(REPO, BOTH)
    hub.status = 503

    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache), target, formats(*CK_FORMATS))

    assert "HTTP 503" in _assert_download_error(err, hub)
    assert hub.seen() == [("hub", "HEAD", ST)]
    assert leftovers(target) == []


@pytest.mark.parametrize(
    ("setup", "expected", "cause"),
    [
        pytest.param({"status": 500}, "HTTP 500", "HfHubHTTPError", id="500"),
        pytest.param({"plain_404": True}, "HTTP 404", "HfHubHTTPError", id="404-without-hub-error-code"),
        pytest.param({"repo": "other/repo"}, "repository not found", "RepositoryNotFoundError", id="no-repo"),
        pytest.param({"token": "hf_x"}, "repository not found", "RepositoryNotFoundError", id="private-401"),
        pytest.param({"gated": True}, "gated", "GatedRepoError", id="gated-403"),
        pytest.param({"revision": "v9"}, "revision not found", "RevisionNotFoundError", id="no-revision"),
    ],
)
def test_hub_errors_do_not_fall_back(hub, cache, target, setup, expected, cause):
    hub.add_repo(setup.get("repo", REPO), BOTH, token=setup.get("token"), gated=setup.get("gated", False))
    hub.status = setup.get("status")
    hub.plain_404 = setup.get("plain_404", False)

    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache, revision=setup.get("revision")), target, formats(*CK_FORMATS))

    assert expected in _assert_download_error(err, hub)
    assert type(err.value.__cause__).__name__ == cause
    assert hub.seen() == [("hub", "HEAD", ST)]  # the .pth, although served, was never asked for
    assert leftovers(target) == []


def test_connection_refused(cache, target):
    port = closed_port()
    endpoint = f"http://127.0.0.1:{port}"  # nothing listens there
    src = HubSource(REPO, filenames=CK_NAMES, endpoint=endpoint, cache_dir=cache, token=False)

    with pytest.raises(CheckpointDownloadError) as err:
        fetch(src, target, formats(*CK_FORMATS))

    message = str(err.value)
    assert f"http://127.0.0.1:{port}/{REPO}" in message and ST in message and "could not connect" in message
    assert "Check the network connection" in message
    assert "ConnectError" in type(err.value.__cause__).__name__


def test_timeout_is_one_request_and_a_download_error(hub, cache, target):
    hub.add_repo(REPO, BOTH)
    hub.hang_head = True

    started = time.monotonic()
    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache, timeout=0.5), target, formats(*CK_FORMATS))

    assert time.monotonic() - started < 5
    assert "no answer within 0.5 s" in _assert_download_error(err, hub)
    assert hub.seen() == [("hub", "HEAD", ST)]


def test_dropped_connection_mid_body_is_retried_and_the_file_is_whole(hub, cache, target):
    data = safetensors_bytes(state_dict={"w": torch.arange(50_000, dtype=torch.float32)})
    hub.add_repo(REPO, {ST: data})
    hub.drop_once[ST] = 1000  # the client had not received a whole chunk: it starts over

    fetch(source(hub, cache), target, formats(*CK_FORMATS))

    assert (target / ST).read_bytes() == data
    assert leftovers(target) == [ST]
    assert hub.seen() == [("hub", "HEAD", ST), ("cdn", "GET", ST), ("cdn", "GET", ST)]


# -- integrity, disk space, atomic placement ---------------------------------------------------------------


def test_sha256_mismatch_deletes_the_file_and_raises(hub, cache, target):
    hub.add_repo(REPO, BOTH)
    hub.corrupt.add(ST)

    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache), target, formats(*CK_FORMATS))

    message = str(err.value)
    assert f"do not match the Hub's sha256 (expected {sha256(BOTH[ST])}" in message
    assert "corrupt copy was deleted" in message
    assert leftovers(target) == []  # no file, no temporary
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name == sha256(BOTH[ST])]
    assert hub.seen() == [("hub", "HEAD", ST), ("cdn", "GET", ST)]

    hub.corrupt.clear()  # the next attempt downloads again and succeeds
    fetch(source(hub, cache), target, formats(*CK_FORMATS))
    assert (target / ST).read_bytes() == BOTH[ST]
    assert [r for r in hub.seen() if r[1] == "GET"] == [("cdn", "GET", ST)] * 2


def test_not_enough_disk_space_gives_the_size_from_the_hub(hub, cache, target):
    hub.add_repo(REPO, BOTH)
    huge = 7 * 10**18  # more than any test machine has free
    hub.size_override[ST] = huge

    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache), target, formats(*CK_FORMATS))

    message = str(err.value)
    assert f"needs 7000.0 PB ({huge} bytes, size from the Hub)" in message
    assert ST in message and f"{hub.url}/{REPO}" in message
    assert hub.seen() == [("hub", "HEAD", ST)]  # refused before downloading anything
    assert leftovers(target) == []


def test_staging_names_are_outside_every_discovery_glob(tmp_path):
    globs = [g for f in get_registry().all_formats() for g in f.globs]
    for name in (ST, PTH, "model.safetensors.index.json", "weights.npz"):
        staged = temp_path_for(tmp_path / name).name  # the name the hub stages a download under
        assert staged.startswith(".") and is_temp_file(staged, name)  # hidden: discovery skips dotfiles
        assert not [g for g in globs if fnmatch.fnmatchcase(staged, g)], staged


def test_bad_sources_are_refused_up_front():
    with pytest.raises(ValueError, match="repo"):
        HubSource("not a repo id!")
    with pytest.raises(ValueError, match="relative path inside the repository"):
        HubSource(REPO, filenames={"safetensors": ["../escape.safetensors"]})
    assert HubSource(REPO, filenames={"safetensors": ST}).filenames == {"safetensors": (ST,)}


def test_no_format_with_hub_names(hub, cache, target):
    with pytest.raises(CheckpointNotFoundError, match="none of the allowed formats"):
        fetch(source(hub, cache, filenames={"npz": ["x.npz"]}), target, formats(*CK_FORMATS))
    assert hub.seen() == []


def test_importing_the_hub_module_stays_light():
    code = (
        "import sys, ckpt_formats, ckpt_formats.hub; "
        "print([m for m in ('huggingface_hub', 'torch', 'safetensors', 'httpx2') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
