"""Inspect a safetensors checkpoint on the Hub from its headers alone: the tensor data is never downloaded.

A safetensors file starts with an 8-byte little-endian header length and a JSON header (names, dtypes, shapes,
offsets, ``__metadata__``). Two HTTP range requests per file read exactly those bytes (the approach of
``huggingface_hub.get_safetensors_metadata``, here with any file name and revision); a sharded set's index
JSON is read whole, then each shard's header. The response body is read only as far as needed, so a server
that ignores ``Range`` still does not make us download the weights.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Any

from .. import untrusted
from .._summary import Inspection, summarize
from ..errors import CheckpointDownloadError, CheckpointLoadError, CheckpointNotFoundError, UnsafeNameError
from ..tensors import TensorInfo, safetensors_infos
from ._errors import download_error, is_remote_absent, reason
from ._source import HubSource

logger = logging.getLogger("ckpt_formats.hub")

DEFAULT_NAMES = ("model.safetensors.index.json", "model.safetensors")
MAX_HEADER = 100 * 1024 * 1024
MAX_INDEX = 50 * 1024 * 1024


class _Absent(Exception):
    """The repository has no such file (the Hub said so)."""


class _Reader:
    """Range reads of one repository and revision, through the client's HTTP session."""

    def __init__(self, source: HubSource) -> None:
        from huggingface_hub.utils import build_hf_headers, get_session

        self.source = source
        self.revision = source.revision or "main"
        self.headers = build_hf_headers(token=source.token)  # httpx drops it on a redirect to the CDN
        self.client = get_session()

    def url(self, name: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.source.repo_id, name, revision=self.revision, endpoint=self.source.endpoint)

    def read(self, name: str, start: int, length: int) -> bytes:
        """Bytes ``start`` .. ``start + length - 1`` of ``name`` (fewer only if the file is shorter)."""
        from huggingface_hub.utils import hf_raise_for_status

        headers = dict(self.headers, Range=f"bytes={start}-{start + length - 1}")
        timeout = self.source.timeout
        try:
            with self.client.stream(
                "GET", self.url(name), headers=headers, timeout=timeout, follow_redirects=True
            ) as resp:
                hf_raise_for_status(resp)
                skip = start if resp.status_code == 200 else 0  # the server ignored the range
                data = bytearray()
                for chunk in resp.iter_bytes():
                    data += chunk
                    if len(data) >= skip + length:
                        break  # closing the stream here: the rest is never transferred
                return bytes(data[skip : skip + length])
        except Exception as exc:
            if is_remote_absent(exc):
                raise _Absent(name) from exc
            raise download_error(self.source.repo_url, self.revision, name, reason(exc, timeout)) from exc


def inspect_remote(
    repo_id: str,
    *,
    filename: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    timeout: float = 10.0,
) -> Inspection:
    """Summarise a Hub checkpoint (one safetensors file or a sharded set) from its headers.

    Args:
        repo_id: ``owner/name`` of a model repository.
        filename: a ``.safetensors`` file or a ``.safetensors.index.json`` in it (default: the sharded index
            ``model.safetensors.index.json``, else ``model.safetensors``).
        revision: branch, tag or commit hash (default: ``main``).
        token: Hub token; None uses the client's default, False sends none.
        endpoint: Hub URL (default: the client's ``HF_ENDPOINT``).
        timeout: seconds to wait for each answer.

    Returns:
        The :class:`~ckpt_formats._inspection.Inspection`; its ``path`` is ``REPO_ID/FILE@REVISION``.

    Raises:
        ValueError: the repository id or file name is not valid.
        CheckpointNotFoundError: the repository has none of the files asked for.
        CheckpointLoadError: a file is not a safetensors file or index (its header is not valid).
        CheckpointDownloadError: the Hub could not be reached or refused access.
    """
    source = HubSource(
        repo_id,
        revision=revision,
        filenames={"safetensors": [filename]} if filename else None,
        token=token,
        endpoint=endpoint,
        timeout=timeout,
    )
    reader = _Reader(source)
    for name in [filename] if filename else DEFAULT_NAMES:
        try:
            return _inspect_file(reader, name)
        except _Absent:
            logger.info("%s has no %s at revision %s", source.repo_url, name, reader.revision)
    asked = ", ".join([filename] if filename else DEFAULT_NAMES)
    raise CheckpointNotFoundError(
        f"{source.repo_url} (revision {reader.revision}) has none of: {asked}. Name the file with "
        "--filename NAME (a .safetensors file or a .safetensors.index.json)"
    )


def _inspect_file(reader: _Reader, name: str) -> Inspection:
    where = f"{reader.source.repo_id}/{name}@{reader.revision}"
    if name.endswith(".index.json"):
        index = _read_index(reader, name, where)
        folder = name.rpartition("/")[0]
        shards = sorted(set(index["weight_map"].values()))
        headers = [_read_shard_header(reader, f"{folder}/{s}" if folder else s, name) for s in shards]
        files: list[str | None] = list(shards)
        metadata = dict(headers[0].get("__metadata__") or {}) if headers else {}
        metadata.update({k: str(v) for k, v in (index.get("metadata") or {}).items()})
        fmt = "safetensors-sharded"
    elif name.endswith(".safetensors"):
        headers = [_read_header(reader, name)]
        files = [None]
        metadata = dict(headers[0].get("__metadata__") or {})
        fmt = "safetensors"
    else:
        raise CheckpointLoadError(
            f"{where}: only safetensors checkpoints can be inspected remotely (a .safetensors file or a "
            ".safetensors.index.json); download other formats with `ckpt-formats fetch`"
        )
    pairs = zip(headers, files, strict=True)
    infos = [info for header, file in pairs for info in _infos(header, file, where)]
    return summarize(where, fmt, False, infos, metadata)


def _infos(header: dict[str, Any], file: str | None, where: str) -> list[TensorInfo]:
    try:
        return safetensors_infos(header, file)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointLoadError(f"{where}: not a safetensors header (a tensor entry is malformed)") from exc


def _read_index(reader: _Reader, name: str, where: str) -> dict[str, Any]:
    raw = reader.read(name, 0, MAX_INDEX + 1)
    try:
        index: Any = json.loads(raw) if len(raw) <= MAX_INDEX else None
    except ValueError as exc:
        raise CheckpointLoadError(f"{where}: not a valid safetensors index (not JSON: {exc})") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(_plain_name(v) for v in weight_map.values()):
        raise CheckpointLoadError(
            f"{where}: not a valid safetensors index (expected a JSON object whose weight_map maps tensor "
            "names to shard file names)"
        )
    return index  # type: ignore[no-any-return]  # a dict: checked above


def _plain_name(value: object) -> bool:
    try:
        untrusted.file_name(value, "a shard name")
    except UnsafeNameError:
        return False
    return True


def _read_shard_header(reader: _Reader, name: str, index: str) -> dict[str, Any]:
    try:
        return _read_header(reader, name)
    except _Absent:
        raise CheckpointDownloadError(
            f"{reader.source.repo_id}/{name}@{reader.revision}: {index} lists this shard but the repository "
            "has no such file"
        ) from None


def _read_header(reader: _Reader, name: str) -> dict[str, Any]:
    where = f"{reader.source.repo_id}/{name}@{reader.revision}"
    raw = reader.read(name, 0, 8)
    if len(raw) < 8:
        raise CheckpointLoadError(f"{where}: too short for a safetensors file ({len(raw)} bytes)")
    (length,) = struct.unpack("<Q", raw)
    if length > MAX_HEADER:
        raise CheckpointLoadError(f"{where}: not a safetensors file (header length {length} is implausible)")
    try:
        header = json.loads(reader.read(name, 8, length))
    except ValueError as exc:
        raise CheckpointLoadError(f"{where}: not a safetensors file (header is not JSON: {exc})") from exc
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else None
    if tensors is None or not all(
        isinstance(v, dict) and {"dtype", "shape", "data_offsets"} <= set(v) for v in tensors.values()
    ):
        raise CheckpointLoadError(f"{where}: not a safetensors header (expected tensor entries)")
    return header  # type: ignore[no-any-return]  # a dict: checked above
