"""The bytes of one file: from the Hub (or the CDN it redirects to) into the Hugging Face cache.

A plain streaming GET through the client's own HTTP session (``huggingface_hub.utils.get_session``), so that
every read is bounded: a download that receives no byte for ``HubSource.stall_timeout`` seconds, or is not
finished after ``HubSource.deadline`` seconds, fails with one line at once (the client's ``hf_hub_download``
reads 10 MB chunks and retries a stalled read five times, so a trickling server is never given up on). A
connection dropped mid-body is resumed with a ``Range`` request (at most :data:`RESUMES` times in a row).

The file lands in the client's cache layout (``blobs/<etag>``, ``snapshots/<commit>/<name>`` linking to it,
``refs/<revision>``), so ``try_to_load_from_cache`` and offline runs find it. The blob is written under a
unique temporary name and renamed: a failed or interrupted download leaves no partial blob.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import CheckpointDownloadError
from ._context import FetchContext
from ._errors import NO_SPACE

logger = logging.getLogger("ckpt_formats.hub")

RESUMES = 5
"""How many times in a row a dropped connection is resumed before the download fails."""


def download_to_cache(session: FetchContext, name: str, metadata: Any, bar_class: Any) -> Path:
    """Download ``name`` (whose ``get_hf_file_metadata`` answer is ``metadata``) into the cache.

    Args:
        session: the fetch (source, revision, cache, error helpers).
        name: the file's path in the repository.
        metadata: the Hub's answer: ``location``, ``etag``, ``commit_hash``, ``size``.
        bar_class: a tqdm class for the progress bar, or None for none.

    Returns:
        The snapshot path of the file in the cache (a link to its blob).

    Raises:
        CheckpointDownloadError: the download stalled, passed its deadline, failed, or the disk is full.
    """
    storage = session.storage
    blob = session.in_storage(storage / "blobs" / metadata.etag, f"the blob of {name}")
    snapshot = storage / "snapshots" / metadata.commit_hash / name
    pointer = session.in_storage(snapshot, f"the snapshot of {name}")
    ref = session.in_storage(storage / "refs" / session.revision, f"the reference {session.revision}")
    try:
        if not blob.is_file() or blob.is_symlink():
            blob.parent.mkdir(parents=True, exist_ok=True)
            tmp = blob.with_name(f"{blob.name}.{secrets.token_hex(6)}.incomplete")
            try:
                _stream(session, name, metadata, tmp, bar_class)
                os.replace(tmp, blob)
            finally:
                tmp.unlink(missing_ok=True)
        _link(blob, pointer)
        session.in_storage(pointer, f"the snapshot of {name}")  # no link planted while it was made
        if session.revision != metadata.commit_hash:
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(metadata.commit_hash, encoding="utf-8")
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise session.no_space(name, metadata.size, session.cache_dir, exc) from exc
        raise session.error(name, exc) from exc
    return pointer


def _link(blob: Path, pointer: Path) -> None:
    """``snapshots/<commit>/<name>`` -> ``../../blobs/<etag>`` (a copy where links are not allowed)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:  # Windows without developer mode, some network file systems
        shutil.copyfile(blob, pointer)


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _stream(session: FetchContext, name: str, metadata: Any, out_path: Path, bar_class: Any) -> None:
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    source = session.source
    url = metadata.location
    headers = build_hf_headers(token=source.token)
    if not _same_origin(url, source.resolved_endpoint):  # a signed CDN URL: the token stays with the Hub
        headers.pop("authorization", None)
    client = get_session()
    started = time.monotonic()
    received = 0
    resumes = 0
    bar = bar_class(total=metadata.size, unit="B", unit_scale=True, desc=name) if bar_class else None
    try:
        with open(out_path, "wb") as out:
            while True:
                ask = dict(headers, Range=f"bytes={received}-") if received else headers
                read_timeout = _remaining(source, started, source.stall_timeout)
                timeout = (source.timeout, read_timeout, source.timeout, source.timeout)
                before = received
                try:
                    request: dict[str, Any] = {"headers": ask, "timeout": timeout, "follow_redirects": True}
                    with client.stream("GET", url, **request) as resp:
                        hf_raise_for_status(resp)
                        if received and resp.status_code == 200:  # the server ignored the range: start over
                            out.seek(0)
                            out.truncate()
                            received = 0
                        for chunk in resp.iter_bytes():
                            out.write(chunk)
                            received += len(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                            _check_deadline(session, name, started, received, metadata.size)
                    if metadata.size is None or received >= metadata.size:
                        return
                    raise _Dropped(f"the server closed the body after {received} of {metadata.size} bytes")
                except CheckpointDownloadError:
                    raise
                except OSError:
                    raise
                except Exception as exc:
                    kind = _kind(exc)
                    if kind == "stalled":
                        _check_deadline(session, name, started, received, metadata.size)
                        raise session.error(
                            name,
                            exc,
                            f"the download stalled: no data for {read_timeout:g} s after {received} of "
                            f"{_of(metadata.size)} bytes (stall timeout {source.stall_timeout:g} s)",
                        ) from exc
                    resumes = 0 if received > before else resumes + 1
                    if kind != "dropped" or resumes > RESUMES:
                        raise session.error(name, exc) from exc
                    logger.warning("%s: %s; resuming at byte %d", name, _short(exc), received)
    finally:
        if bar is not None:
            bar.close()


class _Dropped(Exception):
    """The body ended before the size the Hub announced (treated like a dropped connection)."""


def _kind(exc: BaseException) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "ReadTimeout" in names:
        return "stalled"
    if names & {"_Dropped", "RemoteProtocolError", "ReadError"}:
        return "dropped"
    return "other"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _of(size: int | None) -> str:
    return "?" if size is None else str(size)


def _remaining(source: Any, started: float, stall: float) -> float:
    """The read timeout: the stall timeout, or less when the deadline is nearer."""
    if source.deadline is None:
        return stall
    return max(0.01, min(stall, float(source.deadline) - (time.monotonic() - started)))


def _check_deadline(
    session: FetchContext, name: str, started: float, received: int, size: int | None
) -> None:
    deadline = session.source.deadline
    if deadline is not None and time.monotonic() - started > deadline:
        raise session.error(
            name,
            None,
            f"the download did not finish within its deadline of {deadline:g} s ({received} of {_of(size)} "
            "bytes received)",
        )
