"""Fetch respects the folder: a folder that already holds a checkpoint is left alone, nothing but the
checkpoint's files is ever created in it, and a stalled or endless download gives up with one line."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_testing import CK_NAMES, PTH, REPO, ST, child_env, leftovers, pth_bytes, safetensors_bytes, source

from ckpt_formats import AmbiguousCheckpointError, CheckpointDownloadError, get_registry
from ckpt_formats.hub import fetch, lock_path

BOTH = {ST: safetensors_bytes(), PTH: pth_bytes()}
BIG = safetensors_bytes(state_dict={"w": torch.arange(50_000, dtype=torch.float32)})  # 200 KB
CK_ARGS = [f"--filename=safetensors={ST}", f"--filename=pickle={PTH}"]


def formats():
    return get_registry().formats(names=["safetensors", "pickle"])


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ckpt_formats.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def no_partial_blobs(cache: Path) -> bool:
    return not [p for p in cache.rglob("*") if p.is_file() and "blobs" in p.parts]


def test_a_folder_that_resolves_downloads_nothing_and_force_fetches_anyway(hub, tmp_path):
    hub.add_repo(REPO, BOTH)
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "mine.safetensors").write_bytes(safetensors_bytes(seed=5))
    env = child_env(hub, tmp_path / "hf")

    proc = cli(["fetch", REPO, str(target), *CK_ARGS], env)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"{target / 'mine.safetensors'} (safetensors) is already there: nothing downloaded "
        "(--force fetches anyway)"
    )
    assert hub.seen() == [] and leftovers(target) == ["mine.safetensors"]

    forced = cli(["fetch", REPO, str(target), *CK_ARGS, "--force", "--json"], env)

    assert forced.returncode == 0, forced.stderr
    assert '"downloaded": true' in forced.stdout
    assert (target / ST).read_bytes() == BOTH[ST]
    assert leftovers(target) == sorted([ST, "mine.safetensors"])


def test_library_fetch_into_a_folder_with_a_checkpoint_is_a_no_op(hub, cache, tmp_path):
    hub.add_repo(REPO, BOTH)
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.pth").write_bytes(pth_bytes(seed=2))

    assert fetch(source(hub, cache), target, formats()) == [target / "old.pth"]
    assert hub.seen() == []

    (target / "other.pth").write_bytes(pth_bytes(seed=3))  # two: fetching would make it worse
    with pytest.raises(AmbiguousCheckpointError, match="keep exactly one"):
        fetch(source(hub, cache), target, formats())

    placed = fetch(source(hub, cache), target, formats(), force=True)
    assert placed == [target / ST] and (target / ST).read_bytes() == BOTH[ST]


def test_no_lock_or_other_file_in_the_folder_after_success_or_failure(hub, cache, tmp_path):
    hub.add_repo(REPO, BOTH)
    target = tmp_path / "ckpt"

    fetch(source(hub, cache), target, formats())

    assert leftovers(target) == [ST]
    assert lock_path(source(hub, cache), target).is_file()  # the lock lives in the cache
    assert lock_path(source(hub, cache), target).parent.is_relative_to(cache)

    failing = tmp_path / "failing"
    failing.mkdir()
    hub.status = 503
    with pytest.raises(CheckpointDownloadError, match="HTTP 503"):
        fetch(source(hub, cache), failing, formats())
    assert leftovers(failing) == []
    with pytest.raises(CheckpointDownloadError, match="HTTP 503"):
        fetch(source(hub, cache), tmp_path / "new", formats())
    assert not (tmp_path / "new").exists()  # a folder made for the fetch goes again


def test_a_stalled_download_fails_after_the_stall_timeout_and_places_nothing(hub, cache, tmp_path):
    hub.add_repo(REPO, {ST: BIG})
    hub.stall_after[ST] = 1000  # then silence until the test ends
    target = tmp_path / "ckpt"

    started = time.monotonic()
    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache, stall_timeout=1.0), target, formats())

    assert time.monotonic() - started < 8
    message = str(err.value)
    assert "\n" not in message and f"could not download {ST}" in message
    assert "stalled: no data for 1 s after 1000 of 200" in message and "stall timeout 1 s" in message
    assert leftovers(target) == [] and no_partial_blobs(cache)
    assert [r for r in hub.seen() if r[1] == "GET"] == [("cdn", "GET", ST)]  # given up, not retried


def test_a_trickling_download_fails_at_its_deadline_and_places_nothing(hub, cache, tmp_path):
    hub.add_repo(REPO, {ST: BIG})
    hub.trickle[ST] = (500, 0.1)  # 5 KB/s: 40 s for the file; never silent for a whole second
    target = tmp_path / "ckpt"

    started = time.monotonic()
    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache, stall_timeout=1.0, deadline=1.5), target, formats())

    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 8
    message = str(err.value)
    assert "did not finish within its deadline of 1.5 s" in message and "\n" not in message
    assert re.search(rf"within its deadline of 1\.5 s \(\d+ of {len(BIG)} bytes received\)", message), message
    assert 0 < hub.served[ST] < len(BIG)
    assert leftovers(target) == [] and no_partial_blobs(cache)


def test_a_slow_download_within_its_limits_succeeds(hub, cache, tmp_path):
    data = safetensors_bytes(state_dict={"w": torch.arange(1000, dtype=torch.float32)})
    hub.add_repo(REPO, {ST: data})
    hub.trickle[ST] = (1500, 0.2)  # 3 pieces, 0.4 s in all: slower than nothing, within the limits

    placed = fetch(source(hub, cache, stall_timeout=1.0, deadline=10), tmp_path / "ckpt", formats())

    assert placed[0].read_bytes() == data


def test_cli_stall_timeout_is_a_one_line_error(hub, tmp_path):
    hub.add_repo(REPO, {ST: BIG})
    hub.stall_after[ST] = 10
    target = tmp_path / "ckpt"

    proc = cli(
        ["fetch", REPO, str(target), *CK_ARGS, "--stall-timeout", "1"], child_env(hub, tmp_path / "hf")
    )

    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[-1].startswith("ckpt-formats: error: could not download"), lines
    assert "stall timeout 1 s" in lines[-1] and "Traceback" not in proc.stderr
    assert leftovers(target) == []


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_cli_rejects_bad_timeouts(value, capsys):
    from ckpt_formats.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fetch", REPO, "DIR", "--deadline", value])
    assert exit_info.value.code == 2 and "--deadline" in capsys.readouterr().err


def test_sources_refuse_non_positive_limits():
    from ckpt_formats.hub import HubSource

    for kwargs, text in (
        ({"stall_timeout": 0}, "stall_timeout must be a positive number of seconds, got 0"),
        ({"deadline": -1}, "deadline must be a positive number of seconds or None, got -1"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
    ):
        with pytest.raises(ValueError) as err:
            HubSource(REPO, filenames=CK_NAMES, **kwargs)
        assert str(err.value) == text
