"""``corridorkey infer --ray``: the real command in a subprocess, on a Ray cluster on this machine (CPU
workers, the tiny random-weight checkpoint, no dashboard), against a local run of the same command.

Most runs join one cluster the module starts in-process (``ray.init``) and stops at teardown, which saves a
cluster start per run; the equality test lets the CLI start (and stop) its own. Ray's servers listen on the
node's address: Ray maps 127.0.0.1 to it on purpose and has no setting to keep them on the loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_ckpt import TINY_IMG_SIZE, make_clip, run_cli, write_tiny_checkpoint

from ckpt_formats.atomic import is_temp_file
from corridorkey_engine.clips.completeness import output_complete
from corridorkey_engine.clips.images import read_image
from corridorkey_engine.clips.pixels import as_mask, as_rgb, to_uint8
from corridorkey_engine.clips.ray_stages import work_rows, worker_layout
from corridorkey_engine.errors import RayRunError
from corridorkey_engine.model.source import CheckpointSource

OUTPUT_FOLDERS = ("Matte", "FG", "Processed", "Comp")
TIMEOUT = 300  # seconds per CLI run: generous, the CI machine has 2 shared cores


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster on this machine for the module (4 logical CPUs: 2 would leave the read tasks none
    once the workers hold theirs); yields its address, stopped at teardown."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(
        address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def infer(clips, ckpt: Path, *extra, **kw) -> subprocess.CompletedProcess:
    clips = clips if isinstance(clips, list | tuple) else [clips]
    return run_cli(
        "infer", *clips, "--checkpoint-dir", ckpt, "--img-size", TINY_IMG_SIZE, *extra, timeout=TIMEOUT, **kw
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def outputs(root: Path) -> dict[str, Path]:
    return {
        f"{folder}/{p.name}": p
        for folder in OUTPUT_FOLDERS
        if (root / folder).is_dir()
        for p in sorted((root / folder).iterdir())
    }


def assert_same_outputs(ray_root: Path, local_root: Path, frames: int) -> None:
    """Every output file of the Ray run is whole and equals the local run's: PNG byte for byte, EXR value
    for value; no temporary file is left."""
    got, want = outputs(ray_root), outputs(local_root)
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    assert len(got) == 4 * frames
    for name, path in got.items():
        assert not is_temp_file(path), name
        assert output_complete(path), f"{name} is not whole"
        if path.suffix == ".png":
            assert path.read_bytes() == want[name].read_bytes(), name
        else:
            np.testing.assert_array_equal(read_image(path), read_image(want[name]), err_msg=name)


def frames_done(root: Path) -> set[str]:
    """Frames whose four outputs are all present and whole."""
    folders = [root / f for f in OUTPUT_FOLDERS]
    if not all(f.is_dir() for f in folders):
        return set()
    return set.intersection(*({p.stem for p in f.iterdir() if output_complete(p)} for f in folders))


def clip_pair(tmp_path: Path, name: str, frames: int, size=(40, 56)) -> tuple[Path, Path]:
    """The same clip twice: one for the Ray run, one for the local reference run."""
    names = [f"f_{i:03d}" for i in range(frames)]
    return make_clip(tmp_path / "ray" / name, names, size), make_clip(tmp_path / "local" / name, names, size)


# ------------------------------------------------------------------------------------ no cluster needed


def test_work_rows_chunk_each_clip_by_batch_size() -> None:
    rows = work_rows([[0, 1, 2, 5, 6], [], [3]], batch_size=2)
    assert [(r["clip"], r["frames"]) for r in rows] == [(0, "[0, 1]"), (0, "[2, 5]"), (0, "[6]"), (2, "[3]")]


def test_worker_layout_defaults_and_limits() -> None:
    assert worker_layout("cpu", 0, None, None) == ("cpu", 1, 0.0)
    assert worker_layout(None, 0, None, None) == ("cpu", 1, 0.0)
    assert worker_layout(None, 4, None, None) == ("cuda", 4, 1.0)
    assert worker_layout("cuda:1", 8, None, 0.5) == ("cuda", 16, 0.5)
    assert worker_layout("cuda", 4, 2, None) == ("cuda", 2, 1.0)
    assert worker_layout("cpu", 4, 3, None) == ("cpu", 3, 0.0)
    with pytest.raises(RayRunError, match="no GPU"):
        worker_layout("cuda", 0, None, None)
    with pytest.raises(RayRunError, match="--ray-gpus-per-worker 1: the Ray cluster has 0 GPU"):
        worker_layout("cpu", 0, None, 1)


@pytest.mark.slow
def test_local_run_never_imports_ray(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "shot", ["a", "b"])
    code = textwrap.dedent(
        f"""
        import sys
        from corridorkey_engine.cli import main
        status = main(["infer", {str(clip)!r}, "--checkpoint-dir", {str(ckpt_dir)!r},
                       "--img-size", "{TINY_IMG_SIZE}", "-q"])
        assert status == 0, status
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "CORRIDORKEY_DEVICE": "cpu"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert len(outputs(clip)) == 8  # it did key the clip


BLOCK_RAY = """
import sys

class _NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _NoRay())
"""


@pytest.mark.slow
def test_ray_missing_names_the_extra_in_one_line(tmp_path: Path, ckpt_dir: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_RAY)
    clip = make_clip(tmp_path / "shot", ["a"])
    proc = infer(clip, ckpt_dir, "--ray", env={"PYTHONPATH": str(site)})
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        "corridorkey: error: --ray needs Ray, which is not installed here: pip install 'ckpt-formats[ray]'"
    ]
    assert not outputs(clip) and not (clip / "Matte").exists()  # checked before anything is written
    assert ok(infer(clip, ckpt_dir, "-q", env={"PYTHONPATH": str(site)}))  # a local run does not need Ray


def test_ray_options_need_ray(tmp_path: Path, ckpt_dir: Path) -> None:
    clip = make_clip(tmp_path / "shot", ["a"])
    proc = infer(clip, ckpt_dir, "--ray-workers", "2")
    assert proc.returncode == 2 and "--ray-workers and --ray-gpus-per-worker need --ray" in proc.stderr
    assert not (clip / "Matte").exists()


# ---------------------------------------------------------------------------------- on a Ray cluster


@pytest.mark.slow
def test_ray_run_equals_local_run_on_two_clips(tmp_path: Path, ckpt_dir: Path) -> None:
    """``--ray`` alone: the CLI starts a cluster for the run (and stops it); two workers share two clips."""
    pytest.importorskip("ray")
    a, a_ref = clip_pair(tmp_path, "sh010", 5)
    b, b_ref = clip_pair(tmp_path, "sh020", 4, size=(48, 64))
    ok(infer([a_ref, b_ref], ckpt_dir, "-q"))
    proc = ok(infer([a, b], ckpt_dir, "--ray", "--ray-workers", "2"))
    assert "keyed 9 frames (0 already done, 0 outside the selection, 0 failed) from 2 clip(s)" in proc.stdout
    assert "on 2 Ray worker(s)" in proc.stdout
    assert "device cpu (float32), checkpoint" in proc.stdout
    assert "(5 frame(s) keyed)" in proc.stdout and "(4 frame(s) keyed)" in proc.stdout
    assert_same_outputs(a, a_ref, 5)
    assert_same_outputs(b, b_ref, 4)
    # Only our bar and our lines: none of Ray's logging.
    assert "INFO" not in proc.stderr and "WARNING" not in proc.stderr and "core_worker" not in proc.stderr
    again = ok(infer([a, b], ckpt_dir, "--ray"))
    assert "nothing to do: all 9 frames of 2 clip(s) are done" in again.stdout


@pytest.mark.slow
def test_frames_selecting_nothing_is_a_usage_error_on_ray_too(tmp_path: Path, ckpt_dir: Path) -> None:
    pytest.importorskip("ray")
    clip = make_clip(tmp_path / "shot", ["shot_1001", "shot_1002"])
    proc = infer(clip, ckpt_dir, "--ray", "--frames", "7-9")
    assert proc.returncode == 2
    assert "--frames 7-9 selects none of its frames" in proc.stderr
    assert not outputs(clip)


@pytest.mark.slow
def test_low_vram_and_channels_last_reach_the_ray_workers(tmp_path: Path, ckpt_dir: Path, cluster) -> None:
    clip = make_clip(tmp_path / "shot", ["a"])
    proc = ok(infer(clip, ckpt_dir, "--ray", cluster, "--device", "cpu", "--low-vram", "--channels-last"))
    assert "device cpu (float32, low-memory, channels_last), checkpoint" in proc.stdout
    assert len(outputs(clip)) == 4


@pytest.mark.slow
def test_gpus_per_worker_beyond_the_cluster_is_refused(tmp_path: Path, ckpt_dir: Path, cluster: str) -> None:
    clip = make_clip(tmp_path / "shot", ["a"])
    proc = infer(clip, ckpt_dir, "--ray", cluster, "--device", "cpu", "--ray-gpus-per-worker", "1")
    assert proc.returncode == 1
    assert "--ray-gpus-per-worker 1: the Ray cluster has 0 GPU(s)" in proc.stderr.splitlines()[-1]
    assert not outputs(clip)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["key", "write"])
def test_killed_worker_costs_only_a_retry(tmp_path: Path, ckpt_dir: Path, cluster: str, stage: str) -> None:
    """A worker process exits (``os._exit``) on frame f_002: the engine worker (actor) after keying it, or
    the write task after its first output file. Ray restarts it and retries the chunk; the clip ends whole,
    each frame once, equal to a local run."""
    clip, ref = clip_pair(tmp_path, "sh030", 5)
    marker = tmp_path / "worker-exited"
    ok(infer(ref, ckpt_dir, "-q"))
    env = {"CORRIDORKEY_RAY_TEST_EXIT_ONCE": f"{stage}:f_002:{marker}"}
    proc = ok(infer(clip, ckpt_dir, "--ray", cluster, env=env))
    assert marker.exists(), "the worker never exited: the fault was not injected"
    assert "keyed 5 frames (0 already done, 0 outside the selection, 0 failed)" in proc.stdout
    assert_same_outputs(clip, ref, 5)


@pytest.mark.slow
def test_killed_driver_is_resumed_by_rerunning(tmp_path: Path, ckpt_dir: Path, cluster: str) -> None:
    """SIGKILL the whole ``corridorkey`` process group mid-run; the same command finishes the job."""
    clip, ref = clip_pair(tmp_path, "sh040", 24, size=(96, 128))
    exe = Path(sys.executable).with_name("corridorkey")
    cmd = [exe, "infer", clip, "--checkpoint-dir", ckpt_dir, "--img-size", TINY_IMG_SIZE, "--ray", cluster]
    env = {**os.environ, "CORRIDORKEY_DEVICE": "cpu"}
    proc = subprocess.Popen(
        [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if len(frames_done(clip)) >= 2:
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be killed")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    time.sleep(1)  # let the cluster notice the dead driver and stop its workers
    ok(infer(ref, ckpt_dir, "-q"))
    rerun = ok(infer(clip, ckpt_dir, "--ray", cluster))
    done = int(rerun.stdout.split("(")[1].split(" already done")[0])
    assert 0 < done < 24, rerun.stdout  # the rerun resumed: some frames were done, not all
    counted = f"({done} already done, 0 outside the selection, 0 failed)"
    assert f"keyed {24 - done} frames {counted}" in rerun.stdout
    assert_same_outputs(clip, ref, 24)


@pytest.mark.slow
def test_failing_frame_is_reported_and_the_others_complete(
    tmp_path: Path, ckpt_dir: Path, cluster: str
) -> None:
    clip, ref = clip_pair(tmp_path, "sh050", 5)
    bad = clip / "Input" / "f_002.png"
    good = bad.read_bytes()  # header and end marker whole, pixels zeroed: only decoding finds it
    bad.write_bytes(good[:33] + bytes(len(good) - 45) + good[-12:])
    ok(infer(ref, ckpt_dir, "-q"))
    proc = infer(clip, ckpt_dir, "--ray", "auto", env={"RAY_ADDRESS": cluster})  # auto: join $RAY_ADDRESS
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("corridorkey: error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("corridorkey: error: sh050: frame f_002: ") and str(bad) in errors[0]
    assert "keyed 4 frames (0 already done, 0 outside the selection, 1 failed)" in proc.stdout
    got, want = outputs(clip), outputs(ref)
    assert sorted(got) == sorted(k for k in want if "f_002" not in k)
    for name, path in got.items():
        assert output_complete(path)
        if path.suffix == ".png":
            assert path.read_bytes() == want[name].read_bytes(), name


def test_a_frame_that_fails_to_key_is_reported_and_its_batch_mates_are_keyed(
    tmp_path: Path, ckpt_dir: Path
) -> None:
    """The key and write stages in-process (no cluster): an engine call that fails on one frame of a batch
    (as a CUDA out-of-memory would) costs that frame only; the batch's other frames are keyed alone and
    written, equal to the engine's own result."""
    import torch

    from corridorkey_engine.clips.pipeline import KeyOptions, begin_clip, engine_kwargs, prepare_clip
    from corridorkey_engine.clips.ray_stages import EngineSpec, KeyWorker, read_chunk, write_chunk

    opts = KeyOptions(batch_size=3, outputs=("comp",))
    clip = prepare_clip(make_clip(tmp_path / "sh060", ["f_000", "f_001", "f_002"]), opts)
    begin_clip(clip, opts, [0, 1, 2])  # the output folders and the manifest, as the driver makes them
    source = CheckpointSource(ckpt_dir)
    spec = EngineSpec(source, "cpu", img_size=TINY_IMG_SIZE, cpu_threads=torch.get_num_threads())
    worker = KeyWorker(spec, [clip], opts)
    engine, bad = worker.engine, as_rgb(read_image(clip.input.paths[1]))

    class FailsOnFrame1:
        def process_frame(self, image, mask, **kw):
            if any(np.array_equal(one, bad) for one in (image if image.ndim == 4 else [image])):
                raise RuntimeError("CUDA out of memory (injected by the test)")
            return engine.process_frame(image, mask, **kw)

    worker.engine = FailsOnFrame1()
    out = write_chunk(worker(read_chunk(work_rows([[0, 1, 2]], 3)[0], [clip], opts)), [clip], opts, "")
    assert out["keyed"] == 2
    assert out["errors"] == '[[1, "CUDA out of memory (injected by the test)"]]'
    assert sorted(p.name for p in (clip.root / "Comp").iterdir()) == ["f_000.png", "f_002.png"]
    for i in (0, 2):
        image = as_rgb(read_image(clip.input.paths[i]))
        mask = as_mask(read_image(clip.hint.paths[i]))
        want = to_uint8(engine.process_frame(image, mask, **engine_kwargs(clip, opts))["comp"])
        got = read_image(clip.root / "Comp" / f"f_00{i}.png")
        np.testing.assert_array_equal(to_uint8(got), want)
