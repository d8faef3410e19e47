"""The Ray Data stages of ``corridorkey infer --ray`` (the driver is :mod:`corridorkey_engine.cli_ray`).

The driver checks the clips, lists the frames not done yet (the local resume rules), resolves the checkpoint
once (a hub download happens there, once) and gives Ray Data one row per chunk of ``--batch-size`` frames.
CPU tasks read them (the local loader); an actor pool keys them (each actor loads the engine once through the
registry) with the local keying loop; CPU tasks write them with the local atomic writers straight into the
output folders (storage every node sees). Only counts and per-frame errors come back to the driver. Ray
restarts a dead worker and retries its chunk (Ray Data's defaults); a retried frame is rewritten atomically
under the same names. Ray is imported only here, only for ``--ray``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RayRunError
from ..model.source import CheckpointSource
from .pipeline import Clip, KeyOptions, LoadedFrame, _Loader, key_batches, write_frame

INSTALL_HINT = "pip install 'ckpt-formats[ray]'"
RESUME = "every written file is whole: rerun the same command to finish the rest"
TEST_EXIT_ENV = "CORRIDORKEY_RAY_TEST_EXIT_ONCE"
"""Test hook, never set in production: ``key:FRAME:MARKER`` makes the worker keying frame ``FRAME`` exit
(``os._exit``) once, ``write:FRAME:MARKER`` the task writing it, after its first output; whoever gets
there first creates the file ``MARKER``, and no one exits once it exists."""


def import_ray() -> Any:
    """The ``ray`` module, with Ray Data; :class:`RayRunError` naming the extra when it is missing."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayRunError(f"--ray needs Ray, which is not installed here: {INSTALL_HINT}") from exc
    return ray


@dataclass(frozen=True)
class EngineSpec:
    """How each worker loads its engine: the local ``load_engine`` arguments (a source without hub: the driver
    fetched the checkpoint, workers never download), and the torch threads of a CPU worker."""

    source: CheckpointSource
    device: str
    precision: str | None = None
    img_size: int | None = None
    compile: bool | str = False
    compile_mode: str | None = None
    low_memory: bool | str = "auto"
    channels_last: bool | str = "auto"
    cpu_threads: int = 1

    def load(self) -> Any:
        import torch

        from ..engine import load_engine

        if self.device == "cpu":  # Ray gives a worker one thread; a local run's count gives its results
            torch.set_num_threads(self.cpu_threads)
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)[1:-1]}
        return load_engine(self.source, **kwargs)


@dataclass
class RayRun:
    """What a Ray job did: frames keyed per clip, frames that failed, and the workers' engine."""

    keyed: list[int]
    failed: list[tuple[int, int, str]] = field(default_factory=list)  # (clip, frame index, message)
    engine: str = ""
    load_s: float = 0.0
    workers: int = 0


def work_rows(plans: Sequence[Sequence[int]], batch_size: int) -> list[dict[str, Any]]:
    """One row per chunk of ``batch_size`` frames to key, per clip, in order (batched as locally)."""
    return [
        {"clip": ci, "frames": json.dumps([int(i) for i in todo[k : k + batch_size]])}
        for ci, todo in enumerate(plans)
        for k in range(0, len(todo), batch_size)
    ]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _chunk(clip: Any, frames: list[int], data: bytes, errors: list[Any]) -> dict[str, Any]:
    return {"clip": clip, "frames": json.dumps(frames), "data": data, "errors": json.dumps(errors)}


def _pack(arrays: Iterator[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    for array in arrays:
        np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _unpack(data: bytes, count: int) -> list[np.ndarray]:
    buf = io.BytesIO(data)
    return [np.load(buf, allow_pickle=False) for _ in range(count)]


RESULT_OF = {"matte": "alpha", "fg": "fg", "processed": "processed", "comp": "comp"}
"""The engine result each output is written from (what the key stage sends to the write stage)."""


def _test_exit(hook: str, stage: str, clip: Clip, index: int) -> None:
    """The :data:`TEST_EXIT_ENV` hook: exit this worker process, once, at ``stage`` of the named frame."""
    at, name, marker = [*hook.split(":", 2), "", ""][:3]
    if at == stage and clip.input.names[index] == name:
        with contextlib.suppress(FileExistsError):
            Path(marker).open("x").close()
            os._exit(17)


def read_chunk(row: dict[str, Any], clips: Sequence[Clip], opts: KeyOptions) -> dict[str, Any]:
    """Read stage (CPU tasks): decode a chunk's frames; unreadable frames become errors, not exceptions."""
    loader, loaded, errors = _Loader(clips[int(row["clip"])], opts), [], []
    try:
        for index in json.loads(row["frames"]):
            try:
                loaded.append(loader(index))
            except Exception as exc:
                errors.append([index, _one_line(exc)])
    finally:
        loader.close()
    data = _pack(a for _, image, mask in loaded for a in (image, mask))
    return _chunk(row["clip"], [i for i, _, _ in loaded], data, errors)


class KeyWorker:
    """Key stage (the actor pool): loads the engine once, then keys chunks of frames with the local keying
    loop; a frame that fails is keyed alone again, then reported."""

    def __init__(
        self, spec: EngineSpec, clips: Sequence[Clip], opts: KeyOptions, exit_hook: str = ""
    ) -> None:
        start = time.perf_counter()
        self.engine = spec.load()
        self.load_s = time.perf_counter() - start
        self.description = self.engine.describe()
        self.clips, self.opts, self.exit_hook = clips, opts, exit_hook
        self.reported = False

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        clip, indices = self.clips[int(row["clip"])], json.loads(row["frames"])
        errors: list[list[Any]] = json.loads(row["errors"])
        arrays = _unpack(row["data"], 2 * len(indices))
        frames = [(i, arrays[2 * k], arrays[2 * k + 1]) for k, i in enumerate(indices)]
        keyed: dict[int, dict[str, np.ndarray]] = {}
        try:
            self._key(clip, frames, keyed)
        except Exception:  # isolate the failing frame(s)
            for item in frames:
                try:
                    if item[0] not in keyed:
                        self._key(clip, [item], keyed)
                except Exception as exc:
                    errors.append([item[0], _one_line(exc)])
        results = [RESULT_OF[kind] for kind in self.opts.outputs]
        data = _pack(keyed[i][r] for i in keyed for r in results)
        out = {**_chunk(row["clip"], list(keyed), data, errors), "engine": "", "load_s": 0.0}
        if not self.reported:  # once per worker: what it loaded, and how long that took
            out.update(engine=self.description, load_s=self.load_s)
            self.reported = True
        return out

    def _key(
        self, clip: Clip, frames: Sequence[LoadedFrame], keyed: dict[int, dict[str, np.ndarray]]
    ) -> None:
        for indices, outputs in key_batches(self.engine, clip, self.opts, frames):
            for index, frame_out in zip(indices, outputs, strict=True):
                if self.exit_hook:
                    _test_exit(self.exit_hook, "key", clip, index)
                keyed[index] = frame_out


def write_chunk(
    row: dict[str, Any], clips: Sequence[Clip], opts: KeyOptions, exit_hook: str
) -> dict[str, Any]:
    """Write stage (CPU tasks): the local atomic writers, the outputs of a frame in parallel."""
    clip, indices = clips[int(row["clip"])], json.loads(row["frames"])
    errors: list[list[Any]] = json.loads(row["errors"])
    results = [RESULT_OF[kind] for kind in opts.outputs]
    arrays = iter(_unpack(row["data"], len(results) * len(indices)))
    written = 0
    with ThreadPoolExecutor(len(results), thread_name_prefix="ck-write") as writers:
        for index in indices:
            jobs = write_frame(writers, clip, opts, index, {r: next(arrays) for r in results})
            try:
                jobs[0][1].result()
                if exit_hook:
                    _test_exit(exit_hook, "write", clip, index)
                for _, job in jobs:
                    job.result()
                written += 1
            except Exception as exc:
                errors.append([index, _one_line(exc)])
    report = {k: row[k] for k in ("clip", "engine", "load_s")}
    return {**report, "keyed": written, "errors": json.dumps(errors)}


@contextlib.contextmanager
def quiet_native_logs(enabled: bool) -> Iterator[None]:
    """Send what Ray's native code, and the processes it starts, write to file descriptor 2 into a temporary
    file (deleted after), while Python's ``sys.stderr`` (our bar and messages) stays on the terminal."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, (fd, path) = os.dup(2), tempfile.mkstemp(prefix="corridorkey-ray-", suffix=".log")
    os.dup2(fd, 2)
    os.close(fd)
    old = sys.stderr
    sys.stderr = open(saved, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is old]
    try:
        for h in handlers:
            h.setStream(sys.stderr)  # type: ignore[attr-defined]
        yield
    finally:
        for h in handlers:
            h.setStream(old)  # type: ignore[attr-defined]
        sys.stderr.close()
        sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)
        os.unlink(path)


def connect(ray: Any, address: str, extra_cpus: int, verbose: bool) -> bool:
    """Start a local cluster (``local``; ``extra_cpus`` logical CPUs beyond the machine's, so the workers'
    reservations never leave the read tasks without one), or join ``auto``, ``ray://host:port`` or
    ``host:port``. Returns True when this call started the cluster."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar for the job: ours
    ctx.print_on_execution_start = False
    level = logging.INFO if verbose else logging.ERROR
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "logging_level": level}
    if address == "local":
        # No dashboard. Ray's own servers listen on the node's address (Ray maps 127.0.0.1 to it on purpose).
        ray.init(
            address="local", num_cpus=(os.cpu_count() or 1) + extra_cpus, include_dashboard=False, **kwargs
        )
    else:
        ray.init(address=address, **kwargs)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(level)
    return address == "local"


def worker_layout(
    device: str | None, cluster_gpus: float, workers: int | None, gpus_per_worker: float | None
) -> tuple[str, int, float]:
    """The workers' device, how many workers, and the GPUs each reserves. Defaults: with CUDA (``cuda``,
    ``cuda:N`` or auto on a cluster with GPUs) one worker per GPU; on the CPU one worker. Raises
    :class:`RayRunError` when the cluster lacks the GPUs asked for."""
    kind = (device or "auto").split(":")[0]
    if kind == "cuda" and cluster_gpus <= 0:
        raise RayRunError(f"--device {device}: the Ray cluster has no GPU; pass --device cpu")
    if kind == "cuda" or (kind == "auto" and cluster_gpus > 0):
        gpw = 1.0 if gpus_per_worker is None else gpus_per_worker
        default = max(1, int(cluster_gpus // gpw)) if gpw > 0 else 1
        target, layout = "cuda", (workers or default, gpw)
    else:
        target, layout = ("cpu" if kind == "auto" else kind), (workers or 1, gpus_per_worker or 0.0)
    if layout[1] > cluster_gpus:
        raise RayRunError(
            f"--ray-gpus-per-worker {layout[1]:g}: the Ray cluster has {cluster_gpus:g} GPU(s); "
            "a worker could never start"
        )
    return target, *layout


def key_on_ray(
    ray: Any,
    clips: Sequence[Clip],
    plans: Sequence[Sequence[int]],
    opts: KeyOptions,
    spec: EngineSpec,
    workers: int,
    gpus_per_worker: float,
    on_frames: Callable[[int], None],
) -> RayRun:
    """Run the read → key → write pipeline on the connected cluster; ``on_frames(n)`` as frames finish."""
    import ray.data
    from ray.data import ActorPoolStrategy

    opts = replace(opts, pin_memory=False)
    rows = work_rows(plans, opts.batch_size)
    hook = os.environ.get(TEST_EXIT_ENV, "")
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    # Tasks reserve half a CPU, workers one: different resources keep Ray Data from fusing the stages.
    ds = ds.map(read_chunk, fn_kwargs={"clips": list(clips), "opts": opts}, num_cpus=0.5)
    ds = ds.map(
        KeyWorker,
        fn_constructor_kwargs={"spec": spec, "clips": list(clips), "opts": opts, "exit_hook": hook},
        compute=ActorPoolStrategy(size=workers),
        num_cpus=1,
        num_gpus=gpus_per_worker or None,
    )
    ds = ds.map(write_chunk, fn_kwargs={"clips": list(clips), "opts": opts, "exit_hook": hook}, num_cpus=0.5)
    run = RayRun(keyed=[0] * len(clips), workers=workers)
    for row in ds.iter_rows():
        ci = int(row["clip"])
        run.keyed[ci] += int(row["keyed"])
        run.failed.extend((ci, int(i), msg) for i, msg in json.loads(row["errors"]))
        if row["engine"]:
            run.engine, run.load_s = str(row["engine"]), max(run.load_s, float(row["load_s"]))
        on_frames(int(row["keyed"]))
    return run
