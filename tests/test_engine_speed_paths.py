"""The engine's speed and memory paths, on the CPU: only the asked outputs are computed, one frame in flight
in the clip pipeline, writes overlapped with keying, per-stage times, the low-memory mode giving the same
output, channels_last, compile modes and their cache folder, the out-of-memory message."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import frame

from corridorkey_engine import CorridorKeyEngine, OutOfDeviceMemoryError
from corridorkey_engine.cli import main
from corridorkey_engine.clips import pipeline
from corridorkey_engine.clips.planning import KeyOptions
from corridorkey_engine.clips.stages import StageTimes
from corridorkey_engine.demo.clip import bundled_checkpoint_dir, write_demo_clip
from corridorkey_engine.errors import ConfigError
from corridorkey_engine.keying.transfer import StageClock
from corridorkey_engine.model.compiling import compile_cache_dir


@pytest.fixture(scope="module")
def engine() -> CorridorKeyEngine:
    return CorridorKeyEngine(bundled_checkpoint_dir(), device="cpu")


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_clip(tmp_path_factory.mktemp("speed") / "shot", frames=4, size=(72, 96)).folder


def test_only_the_asked_outputs_are_computed(engine: CorridorKeyEngine) -> None:
    image, hint = frame(96, 128)
    everything = engine.process_frame(image, hint)
    matte = engine.process_frame(image, hint, outputs=("alpha",))
    assert list(matte) == ["alpha"]
    np.testing.assert_array_equal(matte["alpha"], everything["alpha"])
    some = engine.process_frame(image, hint, outputs=("comp", "fg"))
    assert list(some) == ["comp", "fg"]
    np.testing.assert_array_equal(some["comp"], everything["comp"])
    np.testing.assert_array_equal(some["fg"], everything["fg"])
    with pytest.raises(ValueError, match="outputs must be a non-empty subset of"):
        engine.process_frame(image, hint, outputs=("matte",))


def test_a_matte_alone_does_not_despeckle(engine: CorridorKeyEngine, monkeypatch) -> None:
    """The work a matte does not need is not done: despeckle runs only for processed/comp."""
    from corridorkey_engine.keying import frames

    calls = []
    real = frames.despeckle
    monkeypatch.setattr(frames, "despeckle", lambda *a, **k: calls.append(1) or real(*a, **k))
    image, hint = frame(64, 64)
    engine.process_frame(image, hint, outputs=("alpha", "fg"))
    assert calls == []
    engine.process_frame(image, hint, outputs=("processed",))
    assert calls == [1]


def test_submit_returns_what_process_frame_returns_and_times_each_stage(engine: CorridorKeyEngine) -> None:
    image, hint = frame(64, 80)
    clock = StageClock(engine.device)
    pending = engine.submit(image, hint, clock=clock, outputs=("alpha", "processed"))
    got = pending.result()
    expected = engine.process_frame(image, hint, outputs=("alpha", "processed"))
    assert got.keys() == expected.keys()
    for name in got:
        np.testing.assert_array_equal(got[name], expected[name])
    durations = clock.durations()
    assert list(durations) == ["upload", "model", "post", "download"]
    assert all(ms >= 0 for ms in durations.values()) and durations["model"] > 0


def test_stage_times_line_names_every_stage_and_the_busy_share() -> None:
    stages = StageTimes(device="cuda")
    stages.add_all({"upload": 2.0, "model": 60.0, "post": 8.0, "download": 4.0}, frames=2)
    stages.add("read", 30.0, 2)
    stages.add("write", 0.0, 2)
    stages.add("write", 100.0, 0)
    stages.seconds = 0.1
    assert stages.line() == (
        "stages (ms/frame): read 15.0, upload 1.0, model 30.0, post 4.0, download 2.0, write 50.0; "
        "cuda busy 70%"
    )
    assert StageTimes().line() == "stages (ms/frame): none timed"


class _Recorder:
    """A real engine whose submissions and collections are logged in order."""

    def __init__(self, engine: CorridorKeyEngine) -> None:
        self.engine = engine
        self.device = engine.device
        self.log: list[str] = []

    def process_frame(self, image, mask, options=None, **kw):  # the FrameEngine protocol
        return self.engine.process_frame(image, mask, options, **kw)

    def submit(self, image, mask, options=None, **kw):
        n = sum(1 for e in self.log if e.startswith("submit"))
        self.log.append(f"submit {n}")
        pending = self.engine.submit(image, mask, options, **kw)
        result = pending.result

        def collect():
            self.log.append(f"collect {n}")
            return result()

        pending.result = collect
        return pending


def _clip(root: Path, out: Path, opts: KeyOptions):
    return pipeline.prepare_clip(root, opts, out)


def test_pipeline_submits_the_next_frame_before_collecting_the_last(engine, demo_clip, tmp_path) -> None:
    recorder = _Recorder(engine)
    opts = KeyOptions(outputs=("matte",), overwrite=True)
    clip = _clip(demo_clip, tmp_path, opts)
    frames = list(pipeline.plan_frames(clip, opts))
    loader = pipeline._Loader(clip, opts)
    loaded = [loader(i) for i in frames]
    list(pipeline.key_batches(recorder, clip, opts, loaded))
    assert recorder.log == [
        "submit 0", "submit 1", "collect 0", "submit 2", "collect 1", "submit 3", "collect 2", "collect 3"
    ]


def test_a_failed_submission_still_yields_the_frame_before_it(engine, demo_clip, tmp_path) -> None:
    opts = KeyOptions(outputs=("matte",), overwrite=True)
    clip = _clip(demo_clip, tmp_path, opts)
    loader = pipeline._Loader(clip, opts)
    good = loader(0)
    bad = (1, good[1][:, :, :2], good[2])  # two channels: refused by the engine
    got = []
    with pytest.raises(ValueError, match="RGB"):
        for indices, outputs in pipeline.key_batches(engine, clip, opts, [good, bad]):
            got.append((indices, list(outputs[0])))
    assert got == [([0], ["alpha"])]


def test_an_unreadable_frame_still_lets_the_frames_before_it_be_keyed(engine, demo_clip, tmp_path) -> None:
    """The next batch is read before the current one is submitted; when that read fails, the current
    batch is still keyed and yielded, then the reader's error propagates."""
    from corridorkey_engine.errors import FrameIOError

    opts = KeyOptions(outputs=("matte",), overwrite=True)
    clip = _clip(demo_clip, tmp_path, opts)
    loader = pipeline._Loader(clip, opts)

    def frames():
        yield loader(0)
        yield loader(1)
        raise FrameIOError("frame_0002.png: cannot be read")

    got = []
    with pytest.raises(FrameIOError, match="frame_0002.png: cannot be read"):
        for indices, _outputs in pipeline.key_batches(engine, clip, opts, frames()):
            got.extend(indices)
    assert got == [0, 1]


def test_an_unreadable_first_frame_is_the_error_raised(engine, demo_clip, tmp_path) -> None:
    from corridorkey_engine.errors import FrameIOError

    opts = KeyOptions(outputs=("matte",), overwrite=True)
    clip = _clip(demo_clip, tmp_path, opts)

    def frames():
        raise FrameIOError("frame_0000.png: cannot be read")
        yield  # a generator

    with pytest.raises(FrameIOError, match="frame_0000.png: cannot be read"):
        list(pipeline.key_batches(engine, clip, opts, frames()))


def test_an_engine_with_process_frame_only_keys_through_the_same_loop(engine, demo_clip, tmp_path) -> None:
    """The FrameEngine protocol (``process_frame`` alone, as Ray's actors and third-party engines have):
    no staging, no overlap, the same outputs."""

    class Plain:
        def process_frame(self, image, mask, options=None, **kw):
            return engine.process_frame(image, mask, options, **kw)

    opts = KeyOptions(outputs=("matte", "fg"), overwrite=True, batch_size=2)
    clip = _clip(demo_clip, tmp_path, opts)
    loader = pipeline._Loader(clip, opts)
    loaded = [loader(i) for i in range(4)]
    plain = list(pipeline.key_batches(Plain(), clip, opts, loaded))
    ours = list(pipeline.key_batches(engine, clip, opts, loaded))
    assert [i for i, _ in plain] == [i for i, _ in ours] == [[0, 1], [2, 3]]
    for (_, a), (_, b) in zip(plain, ours, strict=True):
        for fa, fb in zip(a, b, strict=True):
            assert sorted(fa) == ["alpha", "fg"]
            np.testing.assert_array_equal(fa["alpha"], fb["alpha"])


def test_uploads_are_staged_only_for_pinned_tensors_on_cuda() -> None:
    from corridorkey_engine.keying.transfer import start_upload

    image, hint = frame(16, 16)
    staged = start_upload((image, hint), torch.device("cpu"))
    assert staged.ready is None and staged.take()[0] is image and staged.take()[1] is hint


def test_writes_overlap_keying_and_only_written_outputs_are_computed(
    engine, demo_clip, tmp_path, monkeypatch
) -> None:
    """Writers that cannot finish before the last frame has been keyed: a pipeline that waited for a
    frame's files before keying the next would never get there (the test would time out)."""
    all_keyed = threading.Event()
    real_write = pipeline.write_output
    written_kinds: list[tuple[str, tuple[str, ...]]] = []

    def slow_write(path, kind, result, filetype):
        assert all_keyed.wait(timeout=60), "a write blocked the keying of later frames"
        written_kinds.append((kind, tuple(sorted(result))))
        real_write(path, kind, result, filetype)

    monkeypatch.setattr(pipeline, "write_output", slow_write)
    opts = KeyOptions(outputs=("matte", "comp"), overwrite=True, write_threads=2)
    clip = _clip(demo_clip, tmp_path, opts)
    keyed = []

    def on_frame(n: int) -> None:
        keyed.append(n)
        if sum(keyed) == len(clip):
            all_keyed.set()

    todo = pipeline.plan_frames(clip, opts)
    pipeline.begin_clip(clip, opts, todo)
    result = pipeline.key_clip(engine, clip, opts, frames=todo, on_frame=on_frame)
    assert result.keyed == len(clip) == 4
    assert sorted(written_kinds) == sorted([("comp", ("alpha", "comp")), ("matte", ("alpha", "comp"))] * 4)
    assert {"read", "model", "write"} <= set(result.stages.counts)
    assert result.stages.per_frame("model") > 0


def test_verbose_infer_ends_with_the_stage_line(demo_clip, tmp_path, capsys) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        status = main(
            ["infer", str(demo_clip), "--checkpoint-dir", str(bundled_checkpoint_dir()), "--device", "cpu",
             "--output", str(tmp_path / "o"), "--outputs", "matte", "-v"]
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out = capsys.readouterr().out
    assert status == 0
    line = next(line for line in out.splitlines() if line.startswith("stages (ms/frame): "))
    for stage in ("read", "upload", "model", "post", "download", "write"):
        assert f" {stage} " in line
    assert "; cpu busy " in line


def test_low_memory_engine_gives_the_same_output(engine: CorridorKeyEngine) -> None:
    low = CorridorKeyEngine(bundled_checkpoint_dir(), device="cpu", low_memory=True)
    assert low.low_memory and low.model.refiner_tile is not None
    assert not engine.low_memory and engine.model.refiner_tile is None  # auto on the CPU: off
    image, hint = frame(128, 160, seed=2)
    a, b = engine.process_frame(image, hint), low.process_frame(image, hint)
    for name in a:
        assert float(np.abs(a[name] - b[name]).max()) <= 1e-5, name


def test_channels_last_gives_the_same_output(engine: CorridorKeyEngine) -> None:
    assert not engine.channels_last  # auto: only on CUDA in half precision
    other = CorridorKeyEngine(bundled_checkpoint_dir(), device="cpu", channels_last=True)
    weight = other.model.refiner.res1.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    image, hint = frame(96, 96, seed=4)
    a, b = engine.process_frame(image, hint), other.process_frame(image, hint)
    for name in a:  # other convolution kernels: float32 rounding, summed in another order
        assert float(np.abs(a[name] - b[name]).max()) <= 1e-4, name


def test_bad_runtime_options_are_refused_before_loading(tmp_path) -> None:
    with pytest.raises(ConfigError, match="low_memory must be True, False or 'auto'"):
        CorridorKeyEngine(tmp_path, device="cpu", low_memory="sometimes")
    with pytest.raises(ConfigError, match="channels_last must be True, False or 'auto', got 'yes'"):
        CorridorKeyEngine(tmp_path, device="cpu", channels_last="yes")
    with pytest.raises(ConfigError, match="unknown compile mode 'fastest': use one of default, "):
        CorridorKeyEngine(tmp_path, device="cpu", compile=True, compile_mode="fastest")
    with pytest.raises(ConfigError, match="unknown torch.compile backend 'nope': use one of .*inductor"):
        CorridorKeyEngine(tmp_path, device="cpu", compile="nope")


def test_compile_mode_reaches_torch_compile(monkeypatch) -> None:
    """``compile_mode`` is handed to the backend by torch.compile (a recording backend sees it)."""
    from torch._dynamo import register_backend

    seen: list[dict] = []

    @register_backend(name="corridorkey_mode_recorder")
    def recorder(gm, example_inputs, **kwargs):
        seen.append(kwargs)
        return gm.forward

    engine = CorridorKeyEngine(
        bundled_checkpoint_dir(),
        device="cpu",
        compile="corridorkey_mode_recorder",
        compile_mode="reduce-overhead",
    )
    image, hint = frame(64, 64)
    engine.process_frame(image, hint, outputs=("alpha",))
    assert seen and seen[0].get("mode") == "reduce-overhead"


def test_compile_cache_folder_per_torch_device_dtype_and_size(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CORRIDORKEY_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = compile_cache_dir(torch.device("cpu"), torch.float16, 2048)
    assert folder.parent == tmp_path / "corridorkey" / "compile"
    assert folder.name == f"torch{torch.__version__}-cpu-float16-2048".replace("+", "+")
    assert compile_cache_dir(torch.device("cpu"), torch.float16, 1024) != folder
    assert compile_cache_dir(torch.device("cpu"), torch.bfloat16, 2048) != folder
    monkeypatch.setenv("CORRIDORKEY_COMPILE_CACHE", str(tmp_path / "elsewhere"))
    assert compile_cache_dir(torch.device("cpu"), torch.float16, 2048).parent == tmp_path / "elsewhere"


def test_out_of_memory_is_one_line_naming_what_helps(engine: CorridorKeyEngine, monkeypatch) -> None:
    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")

    monkeypatch.setattr(engine, "_forward", exhausted)
    image, hint = frame(64, 64)
    with pytest.raises(OutOfDeviceMemoryError) as info:
        engine.process_frame(np.stack([image] * 2), np.stack([hint] * 2))
    assert str(info.value) == (
        f"cpu ran out of memory keying 2 frame(s) at {engine.img_size} px: use --low-vram (low_memory=True) "
        f"or --batch-size 1 or a smaller --img-size than {engine.img_size}"
    )


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        ([], "(float32)"),
        (["--low-vram"], "(float32, low-memory)"),
        (["--channels-last"], "(float32, channels_last)"),
    ],
)
def test_low_vram_and_channels_last_flags_reach_the_engine(demo_clip, tmp_path, capsys, flags, shown) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        status = main(
            ["infer", str(demo_clip), "--checkpoint-dir", str(bundled_checkpoint_dir()), "--device", "cpu",
             "--output", str(tmp_path / "o"), "--outputs", "matte", *flags]
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert status == 0
    assert f"device cpu {shown}, checkpoint " in capsys.readouterr().out


def test_out_of_memory_mid_clip_is_one_line_and_leaves_whole_files(demo_clip, tmp_path, capsys, monkeypatch):
    """The device runs out of memory on the third frame: one line naming what helps, status 1, the frames
    keyed before it written whole, nothing half-written, and a rerun finishes the rest."""
    from corridorkey_engine.model.network import GreenFormer

    real = GreenFormer.forward
    calls = []

    def forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GreenFormer, "forward", forward)
    out = tmp_path / "o"
    argv = ["infer", str(demo_clip), "--checkpoint-dir", str(bundled_checkpoint_dir()), "--device", "cpu",
            "--output", str(out), "--outputs", "matte", "-q"]
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        status = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 1
        assert err[-1] == (
            "corridorkey: error: cpu ran out of memory keying 1 frame(s) at 128 px: use --low-vram "
            "(low_memory=True) or a smaller --img-size than 128"
        )
        written = sorted(p.name for p in (out / demo_clip.name / "Matte").iterdir())
        assert written == ["frame_0000.exr", "frame_0001.exr"]  # no temporary file left, no third frame
        monkeypatch.setattr(GreenFormer, "forward", real)
        assert main(argv) == 0
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    matte = out / demo_clip.name / "Matte"
    assert sorted(p.name for p in matte.iterdir()) == [f"frame_{i:04d}.exr" for i in range(4)]


_COMPILE_RUN = """
import sys, numpy as np, torch
from torch._dynamo.utils import counters
from corridorkey_engine import CorridorKeyEngine
engine = CorridorKeyEngine(sys.argv[1], device="cpu", compile=True)
engine.process_frame(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.float32), outputs=("alpha",))
print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
"""


@pytest.mark.slow
def test_a_second_compiled_run_loads_the_kernels_the_first_one_cached(tmp_path) -> None:
    """Two fresh processes with the same settings: the first compiles and fills the per-user cache folder,
    the second finds every graph there (inductor's FX-graph cache hits, no miss)."""
    import subprocess
    import sys

    from engine_helpers import tiny_model

    from corridorkey_engine import save_checkpoint

    (tmp_path / "ckpt").mkdir()
    save_checkpoint(tiny_model(seed=2), tmp_path / "ckpt" / "tiny.safetensors")
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["CORRIDORKEY_COMPILE_CACHE"] = str(tmp_path / "cache")
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _COMPILE_RUN, str(tmp_path / "ckpt")],
            env=env, capture_output=True, text=True, timeout=900, check=True,
        )
        runs.append(tuple(int(n) for n in done.stdout.split()[-2:]))
    (cold_hits, cold_misses), (warm_hits, warm_misses) = runs
    assert cold_misses > 0 and cold_hits == 0
    assert warm_hits == cold_misses and warm_misses == 0
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name == f"torch{torch.__version__}-cpu-float32-64"


def test_compile_cache_replaces_inductors_default_but_not_a_users_choice(tmp_path, monkeypatch) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from corridorkey_engine.model.compiling import compile_model

    monkeypatch.setenv("CORRIDORKEY_COMPILE_CACHE", str(tmp_path / "ours"))
    cpu = torch.device("cpu")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # inductor set it while looking
    compile_model(torch.nn.Identity(), "inductor", None, device=cpu, dtype=torch.float32, img_size=96)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(compile_cache_dir(cpu, torch.float32, 96))
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).is_dir()
    compile_model(torch.nn.Identity(), "inductor", None, device=cpu, dtype=torch.float32, img_size=64)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(compile_cache_dir(cpu, torch.float32, 64))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    compile_model(torch.nn.Identity(), "inductor", None, device=cpu, dtype=torch.float32, img_size=64)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_stage_times_merge_clips_and_host_clock_durations() -> None:
    first, second = StageTimes(device="cpu"), StageTimes(device="cuda")
    first.add("model", 30.0, 1)
    first.seconds = 1.0
    second.add_all({"model": 50.0, "post": 10.0}, frames=2)
    second.seconds = 0.5
    total = StageTimes()
    total.merge(first)
    total.merge(second)
    assert total.per_frame("model") == pytest.approx(80.0 / 3)
    assert total.per_frame("post") == pytest.approx(5.0) and total.per_frame("read") is None
    assert total.seconds == 1.5 and total.device == "cuda"
    assert total.busy() == pytest.approx(0.09 / 1.5)
    clock = StageClock(torch.device("cpu"))
    clock.marks = {"start": 10.0, "upload": 10.25, "model": 11.0, "post": 11.5}
    assert clock.durations() == {"upload": 250.0, "model": 750.0, "post": 500.0}


def test_compile_cache_folder_names_and_inductor_settings(tmp_path, monkeypatch, caplog) -> None:
    import torch._inductor.config as inductor_config

    from corridorkey_engine.model.compiling import _slug, compile_model

    assert _slug("NVIDIA H200 NVL/141GB") == "NVIDIA-H200-NVL-141GB"
    assert _slug("///") == "unknown"
    monkeypatch.delenv("CORRIDORKEY_COMPILE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = compile_cache_dir(torch.device("cpu"), torch.float32, 64)
    assert folder.parent == tmp_path / ".cache" / "corridorkey" / "compile"
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    folder.mkdir(parents=True)  # already there: no error
    with caplog.at_level(logging.INFO, logger="corridorkey_engine.model.compiling"):
        compile_model(torch.nn.Identity(), "inductor", None, device=torch.device("cpu"), dtype=torch.float32,
                      img_size=64)
    assert f"compile cache: {folder}" in caplog.messages
    assert inductor_config.fx_graph_cache is True
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
