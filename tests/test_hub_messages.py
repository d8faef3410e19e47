"""The hub fetch's words and small rules, exactly: sizes, reasons, the disk-space and download errors, a
resumed download's warning, the bar a caller forces, a sharded set's companions in a folder of the repo."""

from __future__ import annotations

import errno
import importlib
import json
import logging

import pytest
import torch
from hub_testing import REPO, ST, safetensors_bytes, source
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import get_session
from test_write_paths import file_size_limit

from ckpt_formats import CheckpointDownloadError, HubSource, get_registry
from ckpt_formats.errors import DownloadNoSpaceError
from ckpt_formats.hub import fetch
from ckpt_formats.hub._errors import human, no_space_error, reason
from ckpt_formats.hub._placement import digest_from_blob

# The HTTP client huggingface_hub itself uses (httpx for 1.x, httpx2 for 2.x): its private choice, so asked of
# the installed release rather than imported by name.
httpx = importlib.import_module(type(get_session()).__module__.split(".")[0])

BIG = safetensors_bytes(state_dict={"w": torch.arange(50_000, dtype=torch.float32)})  # 200 KB


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "unknown size"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (2_500_000, "2.5 MB"),
        (3_210_000_000, "3.2 GB"),
        (4 * 10**12, "4.0 TB"),
        (5 * 10**15, "5.0 PB"),
        (7 * 10**18, "7000.0 PB"),
    ],
)
def test_human_sizes(size, text):
    assert human(size) == text


def _response_error(status: int) -> hf_errors.HfHubHTTPError:
    request = httpx.Request("GET", "http://127.0.0.1/x")
    return hf_errors.HfHubHTTPError("refused", response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    ("exc", "why"),
    [
        (None, "unknown error"),
        (httpx.RemoteProtocolError("peer closed"), "the connection was dropped (peer closed)"),
        (httpx.ConnectError("refused"), "could not connect (ConnectError: refused)"),
        (httpx.ReadTimeout("slow"), "no answer within 2.5 s (ReadTimeout)"),
        (_response_error(401), "the Hub answered HTTP 401 (access denied: check the token)"),
        (_response_error(403), "the Hub answered HTTP 403 (access denied: check the token)"),
        (_response_error(500), "the Hub answered HTTP 500"),
        (ValueError("first line\nsecond"), "ValueError: first line"),
        (ValueError("  "), "ValueError"),
    ],
)
def test_reasons(exc, why):
    assert reason(exc, 2.5) == why


def test_the_disk_space_error_names_size_place_free_space_and_cause(tmp_path):
    cache = tmp_path / "cache"
    full = OSError(errno.ENOSPC, "No space left on device")
    err = no_space_error("http://hub/r", cache, "f.safetensors", None, tmp_path, full, free=5)
    assert isinstance(err, DownloadNoSpaceError) and err.errno == errno.ENOSPC
    assert err.filename == str(tmp_path)
    assert str(err) == (
        f"not enough disk space for f.safetensors from http://hub/r: it needs an unknown size in {tmp_path}, "
        "which has 5 B free (No space left on device). Free some space (the file also goes through the "
        f"Hugging Face cache {cache}) and retry"
    )
    sized = no_space_error("http://hub/r", cache, "f.safetensors", 2000, tmp_path, None, free=1000)
    assert str(sized).startswith(
        "not enough disk space for f.safetensors from http://hub/r: it needs 2.0 KB (2000 bytes, size from "
        f"the Hub) in {tmp_path}, which has 1.0 KB free. Free"
    )


def test_a_download_error_word_for_word(hub, cache, tmp_path):
    hub.add_repo(REPO, {ST: BIG})
    hub.status = 503
    with pytest.raises(CheckpointDownloadError) as err:
        fetch(source(hub, cache), tmp_path / "ckpt", get_registry().formats(names=["safetensors"]))
    assert str(err.value) == (
        f"could not download {ST} from {hub.url}/{REPO} (revision main): the Hub answered HTTP 503. Check "
        "the network connection (and HF_ENDPOINT, the token, the repository id and revision) and retry; no "
        "other file was tried"
    )


def test_a_dropped_body_is_resumed_where_it_stopped_with_a_warning(hub, cache, tmp_path, caplog):
    hub.add_repo(REPO, {ST: BIG})
    hub.drop_once[ST] = 100_000  # past the client's first chunk: it resumes with a range request
    with caplog.at_level(logging.WARNING, logger="ckpt_formats.hub"):
        fetch(source(hub, cache), tmp_path / "ckpt", get_registry().formats(names=["safetensors"]))
    assert (tmp_path / "ckpt" / ST).read_bytes() == BIG
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{ST}: RemoteProtocolError: peer closed connection without sending complete message body (received "
        f"100000 bytes, expected {len(BIG)}); resuming at byte 100000"
    ]
    gets = [r for r in hub.requests if r.method == "GET" and r.server == "cdn"]
    assert len(gets) == 2 and "range" not in gets[0].headers
    assert gets[1].headers["range"] == "bytes=100000-"


def test_a_bar_asked_for_is_shown_even_off_a_terminal(hub, cache, tmp_path, capsys):
    hub.add_repo(REPO, {ST: BIG})
    forced = HubSource(REPO, endpoint=hub.url, cache_dir=cache, token=False, progress=True, filenames={
        "safetensors": [ST]})  # fmt: skip
    fetch(forced, tmp_path / "ckpt", get_registry().formats(names=["safetensors"]))
    err = capsys.readouterr().err
    assert "100%|" in err and ST in err and "B/s" in err
    assert f"{len(BIG) // 1000}k/{len(BIG) // 1000}k" in err  # bytes, scaled to kB


def test_the_shards_of_an_index_in_a_folder_of_the_repo(hub, cache, tmp_path):
    from safetensors.torch import save

    halves = [{"a": torch.ones(2)}, {"b": torch.zeros(3)}]
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    files = {f"sub/{n}": save(h) for n, h in zip(names, halves, strict=True)}
    weight_map = {"a": names[0], "b": names[1]}
    files["sub/model.safetensors.index.json"] = json.dumps({"weight_map": weight_map}).encode()
    hub.add_repo("someone/nested", files)
    nested = HubSource("someone/nested", endpoint=hub.url, cache_dir=cache, token=False, progress=False,
                       filenames={"safetensors-sharded": ["sub/model.safetensors.index.json"]})  # fmt: skip
    placed = fetch(nested, tmp_path / "ckpt", get_registry().formats(names=["safetensors-sharded"]))
    assert [p.name for p in placed] == ["model.safetensors.index.json", *names]

    del files["sub/" + names[1]]
    hub.add_repo("someone/nested", files)
    with pytest.raises(CheckpointDownloadError) as err:
        fetch(nested, tmp_path / "other", get_registry().formats(names=["safetensors-sharded"]))
    assert str(err.value).startswith(
        f"could not download sub/{names[1]} from {hub.url}/someone/nested (revision main): "
        "sub/model.safetensors.index.json lists it but the repository has no such file."
    )


def test_a_blob_name_that_is_no_digest_is_not_taken_for_one(tmp_path):
    blob = tmp_path / "blobs" / "not-a-digest"
    blob.parent.mkdir()
    blob.write_bytes(b"x")
    (tmp_path / "link").symlink_to(blob)
    assert digest_from_blob(tmp_path / "link") is None
    real = tmp_path / "blobs" / ("ab" * 32)
    real.write_bytes(b"x")
    assert digest_from_blob(real) == "ab" * 32


def test_what_a_fetch_logs(hub, cache, tmp_path, caplog, monkeypatch):
    hub.add_repo(REPO, {ST: BIG})
    formats = get_registry().formats(names=["safetensors-sharded", "safetensors"])
    target = tmp_path / "ckpt"
    names = {"safetensors-sharded": ["model.safetensors.index.json"], "safetensors": [ST]}
    hf = source(hub, cache, filenames=names)
    with caplog.at_level(logging.INFO, logger="ckpt_formats.hub"):
        fetch(hf, target, formats)
        fetch(hf, target, formats)
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
        fetch(hf, tmp_path / "again", formats)
    logged = [r.getMessage() for r in caplog.records]
    commit = hub.repos[REPO].commit
    assert f"{hub.url}/{REPO} has no model.safetensors.index.json at revision main" in logged
    assert f"{ST} already present in {target}; nothing downloaded" in logged
    cached = next(m for m in logged if m.startswith(f"using {ST} from the Hugging Face cache ("))
    assert commit in cached and not any("not verified" in m for m in logged)  # the blob's name is its digest


def test_nothing_to_fetch_lists_the_formats_without_hub_names(tmp_path):
    from ckpt_formats import CheckpointFormat, CheckpointNotFoundError

    plain = [CheckpointFormat(n, 1, (f"*.{n}",), lambda c, d: {}) for n in ("first", "second")]
    with pytest.raises(CheckpointNotFoundError) as err:
        fetch(HubSource("someone/x", filenames={}), tmp_path / "ckpt", plain)
    assert str(err.value) == (
        "nothing to fetch from https://huggingface.co/someone/x: none of the allowed formats (first, second) "
        "has hub file names; pass them with HubSource(filenames={FORMAT: [NAME]}) (command line: "
        "--filename FMT=NAME)"
    )
    assert not (tmp_path / "ckpt").exists()


def test_a_lock_for_a_folder_whose_name_is_not_utf8(tmp_path):
    from ckpt_formats.hub import lock_path

    odd = tmp_path / b"ckpt-\xff".decode("utf-8", "surrogateescape")
    hf = HubSource("someone/x", cache_dir=tmp_path / "cache")
    assert lock_path(hf, odd).parent == lock_path(hf, tmp_path / "plain").parent
    assert lock_path(hf, odd) != lock_path(hf, tmp_path / "plain")


def test_inspect_remote_a_named_file_in_a_folder(hub, tmp_path, caplog):
    from safetensors.torch import save

    from ckpt_formats.hub import inspect_remote

    data = save({"w": torch.ones(4, 4), "b": torch.zeros(4, dtype=torch.float16)}, metadata={"k": "v"})
    hub.add_repo("someone/x", {"weights/model.safetensors": data})
    info = inspect_remote("someone/x", filename="weights/model.safetensors", endpoint=hub.url, token=False)
    assert (info.path, info.format, info.tensors, info.parameters) == (
        "someone/x/weights/model.safetensors@main", "safetensors", 2, 20
    )  # fmt: skip
    assert info.metadata == {"k": "v"} and info.dtypes == {"float32": 1, "float16": 1}
    assert hub.served == {"weights/model.safetensors": 8 + int.from_bytes(data[:8], "little")}

    with caplog.at_level(logging.INFO, logger="ckpt_formats.hub"), pytest.raises(Exception) as err:
        inspect_remote("someone/x", filename="weights/other.safetensors", endpoint=hub.url, token=False)
    assert type(err.value).__name__ == "CheckpointNotFoundError"
    expected = f"{hub.url}/someone/x (revision main) has none of: weights/other.safetensors"
    assert str(err.value).startswith(expected)
    assert f"{hub.url}/someone/x has no weights/other.safetensors at revision main" in [
        r.getMessage() for r in caplog.records
    ]


def test_inspect_remote_a_sharded_set_in_a_folder(hub):
    from safetensors.torch import save

    from ckpt_formats.hub import inspect_remote

    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    files = {
        f"sub/{names[0]}": save({"a": torch.ones(3)}, metadata={"from": "first shard"}),
        f"sub/{names[1]}": save({"b": torch.ones(2, 2)}),
        "sub/model.safetensors.index.json": json.dumps(
            {"metadata": {"total_size": 28}, "weight_map": {"a": names[0], "b": names[1]}}
        ).encode(),
    }
    hub.add_repo("someone/sharded", files)
    info = inspect_remote(
        "someone/sharded", filename="sub/model.safetensors.index.json", endpoint=hub.url, token=False
    )
    assert (info.format, info.tensors, info.parameters) == ("safetensors-sharded", 2, 7)
    assert info.metadata == {"from": "first shard", "total_size": "28"}

    del files[f"sub/{names[1]}"]
    hub.add_repo("someone/sharded", files)
    with pytest.raises(Exception) as err:
        inspect_remote("someone/sharded", filename="sub/model.safetensors.index.json", endpoint=hub.url,
                       token=False)  # fmt: skip
    assert str(err.value).startswith(
        f"someone/sharded/sub/{names[1]}@main: sub/model.safetensors.index.json lists this shard but the "
        "repository has no such file"
    )


def test_a_disk_that_fills_while_downloading_into_the_cache(hub, cache, tmp_path):
    hub.add_repo(REPO, {ST: BIG})
    with file_size_limit(64 * 1024), pytest.raises(DownloadNoSpaceError) as err:
        fetch(source(hub, cache), tmp_path / "ckpt", get_registry().formats(names=["safetensors"]))
    assert str(err.value).startswith(
        f"not enough disk space for {ST} from {hub.url}/{REPO}: it needs {human(len(BIG))} ({len(BIG)} "
        f"bytes, size from the Hub) in {cache}, which has "
    )
    assert "(File too large). Free some space" in str(err.value)
    assert not (tmp_path / "ckpt").exists()


def test_a_disk_that_fills_while_placing_from_the_cache(hub, cache, tmp_path):
    hub.add_repo(REPO, {ST: BIG})
    formats = get_registry().formats(names=["safetensors"])
    fetch(source(hub, cache), tmp_path / "first", formats)  # now in the cache
    target = tmp_path / "second"
    with file_size_limit(64 * 1024), pytest.raises(DownloadNoSpaceError) as err:
        fetch(source(hub, cache), target, formats)
    assert f"size from the Hub) in {target}, which has " in str(err.value)
    assert "(File too large). Free some space" in str(err.value)
    assert not target.exists() or [p.name for p in target.iterdir()] == []


def test_a_body_shorter_than_announced_is_resumed_then_given_up(hub, cache, tmp_path, caplog):
    hub.add_repo(REPO, {ST: BIG})
    hub.size_override[ST] = len(BIG) + 100  # the Hub announces more than the server ever sends
    formats = get_registry().formats(names=["safetensors"])
    with (
        caplog.at_level(logging.WARNING, logger="ckpt_formats.hub"),
        pytest.raises(CheckpointDownloadError) as err,
    ):
        fetch(source(hub, cache, stall_timeout=5.0), tmp_path / "ckpt", formats)
    resumed = [r.getMessage() for r in caplog.records if "resuming at byte" in r.getMessage()]
    assert len(resumed) == 6  # after the body: 5 more (RESUMES) that bring nothing, then the error
    assert resumed[0] == (
        f"{ST}: _Dropped: the server closed the body after {len(BIG)} of {len(BIG) + 100} bytes; resuming at "
        f"byte {len(BIG)}"
    )
    assert "closed the body after" in str(err.value)


def test_inspect_remote_refuses_a_file_name_outside_the_repository(hub):
    from ckpt_formats.hub import inspect_remote

    with pytest.raises(ValueError) as err:
        inspect_remote("someone/x", filename="../secrets.safetensors", endpoint=hub.url, token=False)
    expected = "hub file name '../secrets.safetensors' must be a relative path inside the repository"
    assert str(err.value) == expected
    assert hub.requests == []
