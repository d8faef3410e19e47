"""Every ``corridorkey`` option shows its effect end to end: argv in, output files on disk out.

Most runs call the CLI's ``main()`` in this process (the real argument parsing, clip pipeline, engine and
writers, without a second interpreter start); the safety switch runs the real console script. Each run is
compared with the in-process engine given the same settings, and the settings are chosen so that each one,
reverted to its default, changes the reference: a flag the CLI drops (or replaces by its default) fails.

The clip is a 128x128 plate keyed with the small trained model bundled in the package: a disc and a small
separate speck, which the model keys and auto-despeckle removes.
"""

from __future__ import annotations

import logging
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers_ckpt import make_clip, run_cli, write_png_rgb

from corridorkey_engine import CorridorKeyEngine
from corridorkey_engine.cli import main
from corridorkey_engine.clips.completeness import output_complete
from corridorkey_engine.clips.images import read_image, write_exr
from corridorkey_engine.clips.manifest import MANIFEST_NAME
from corridorkey_engine.clips.pixels import as_mask, as_rgb
from corridorkey_engine.demo.clip import bundled_checkpoint_dir
from corridorkey_engine.keying.chroma import chroma_hint

SIZE = 128
SPECK = (slice(97, 104), slice(107, 114))  # rows, columns of the speck
HALF = {"atol": 2e-3, "rtol": 2e-3}  # half-float EXR round trip
OUTPUT_FILES = {
    "alpha": "Matte/f.exr",
    "fg": "FG/f.exr",
    "processed": "Processed/f.exr",
    "comp": "Comp/f.png",
}


def speck_plate() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB plate, float hint): an orange disc and an 8x8 orange speck on a green screen."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    alpha = np.clip(28 - np.hypot(xx - 40, yy - 64) + 0.5, 0, 1)
    alpha[SPECK] = 1.0
    bg, fg = np.array([40, 180, 60], np.float32), np.array([200, 120, 90], np.float32)
    img = (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).clip(0, 255).astype(np.uint8)
    return img, (alpha > 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("switches") / "speck"
    (root / "Input").mkdir(parents=True)
    (root / "AlphaHint").mkdir()
    img, hint = speck_plate()
    write_png_rgb(root / "Input" / "f.png", img)
    assert cv2.imwrite(str(root / "AlphaHint" / "f.png"), (hint * 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def engine() -> CorridorKeyEngine:
    return CorridorKeyEngine(bundled_checkpoint_dir(), device="cpu")


@pytest.fixture
def cli(tmp_path: Path):
    """``cli(clip, *args)``: ``corridorkey infer`` in this process into a fresh --output folder; returns the
    outputs read back. The CLI's logging set-up is undone afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    runs = iter(range(1000))

    def run(clip: Path, *args: str, quiet: bool = True) -> dict[str, np.ndarray]:
        out = tmp_path / f"run{next(runs)}"
        argv = ["infer", str(clip), "--checkpoint-dir", str(bundled_checkpoint_dir()), "--device", "cpu"]
        argv += ["--no-hub", "--output", str(out), *(["-q"] if quiet else [])]
        assert main([*argv, *map(str, args)]) == 0
        # the frames written; the settings manifest beside them is not an image
        files = {str(p.relative_to(out / clip.name)): p for p in frame_files(out / clip.name)}
        by_kind = {k: files.pop(f) for k, f in OUTPUT_FILES.items() if f in files}
        return {k: read_image(p) for k, p in {**by_kind, **files}.items()}

    yield run
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def frame_files(folder: Path) -> list[Path]:
    """The output frames under ``folder``: every file but the clips' settings manifests."""
    return [p for p in folder.rglob("*.*") if p.name != MANIFEST_NAME]


def reference(engine: CorridorKeyEngine, clip: Path, **kw) -> dict[str, np.ndarray]:
    image = as_rgb(read_image(next((clip / "Input").iterdir())))
    hint = kw.pop("hint", None)
    if hint is None:
        hint = as_mask(read_image(next((clip / "AlphaHint").iterdir())))
    out = engine.process_frame(image, hint, **kw)
    out["alpha"] = out["alpha"][..., 0]
    return out


def assert_matches(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for key in ("alpha", "fg", "processed"):
        np.testing.assert_allclose(got[key], want[key], err_msg=key, **HALF)
    assert np.abs(got["comp"] - want["comp"]).max() <= 1.01 / 255


def differ(a: dict[str, np.ndarray], b: dict[str, np.ndarray], key: str = "processed") -> float:
    return float(np.abs(a[key] - b[key]).max())


def test_despill_and_no_despeckle_change_the_written_outputs(cli, clip: Path, engine) -> None:
    default = reference(engine, clip)
    no_despill = reference(engine, clip, despill_strength=0.0)
    kept_speck = reference(engine, clip, auto_despeckle=False)
    both = reference(engine, clip, despill_strength=0.0, auto_despeckle=False)
    # each switch alone changes the result, also when the other one is applied (the default despill is 0.5,
    # upstream's, so turning it off moves this plate's processed output by about 0.019)
    for a, b in ((default, no_despill), (default, kept_speck), (no_despill, both), (kept_speck, both)):
        assert differ(a, b) > 0.01

    plain = cli(clip)
    switched = cli(clip, "--despill", "0", "--no-despeckle")

    assert_matches(plain, default)
    assert_matches(switched, both)
    assert differ(plain, switched) > 0.02 and differ(plain, switched, "comp") > 0.02
    assert plain["processed"][SPECK][..., 3].max() < 0.01  # the speck is cut by default ...
    assert switched["processed"][SPECK][..., 3].min() > 0.5  # ... and kept with --no-despeckle
    np.testing.assert_array_equal(plain["alpha"], switched["alpha"])  # the raw matte is not post-processed


def test_despill_strength_despeckle_size_refiner_scale_and_linear_reach_the_engine(
    cli, clip: Path, engine
) -> None:
    settings = {"despill_strength": 0.4, "despeckle_size": 20, "refiner_scale": 0.5, "input_is_linear": True}
    want = reference(engine, clip, **settings)
    defaults = {
        "despill_strength": 1.0,
        "despeckle_size": 400,
        "refiner_scale": 1.0,
        "input_is_linear": False,
    }
    for name, value in defaults.items():
        assert differ(want, reference(engine, clip, **{**settings, name: value})) > 0.02, name

    got = cli(clip, "--despill", "0.4", "--despeckle-size", "20", "--refiner-scale", "0.5", "--linear")

    assert_matches(got, want)


def test_srgb_overrides_exr_linear_default_and_img_size_reaches_the_model(cli, tmp_path: Path) -> None:
    clip = tmp_path / "exrclip"
    (clip / "Input").mkdir(parents=True)
    (clip / "AlphaHint").mkdir()
    img, hint = speck_plate()
    write_exr(clip / "Input" / "f.exr", img.astype(np.float32) / 255.0, "RGB", half=False)
    write_exr(clip / "AlphaHint" / "f.exr", hint, "Y", half=False)
    small = CorridorKeyEngine(bundled_checkpoint_dir(), device="cpu", img_size=64)
    want = reference(small, clip, input_is_linear=False)
    assert differ(want, reference(small, clip, input_is_linear=True), "alpha") > 0.02
    full = CorridorKeyEngine(bundled_checkpoint_dir(), device="cpu")
    assert differ(want, reference(full, clip, input_is_linear=False), "alpha") > 0.02

    got = cli(clip, "--srgb", "--img-size", "64")

    assert_matches(got, want)


def test_screen_colour_reaches_the_chroma_hint(cli, tmp_path: Path, engine) -> None:
    clip = make_clip(tmp_path / "chroma", ["f"], (SIZE, SIZE), hint=False)
    image = as_rgb(read_image(clip / "Input" / "f.png"))
    blue_hint = chroma_hint(image, "blue")
    want = reference(engine, clip, hint=blue_hint, screen_color="blue")
    assert differ(want, reference(engine, clip, hint=chroma_hint(image, "auto")), "alpha") > 0.02
    # --screen-color blue also picks the model by name: the bundled one, named as the blue-screen model
    blue_dir = tmp_path / "blue-model"
    blue_dir.mkdir()
    bundled = bundled_checkpoint_dir() / "corridorkey_demo.safetensors"
    (blue_dir / "corridorkey_blue.safetensors").symlink_to(bundled)

    got = cli(clip, "--hint", "chroma", "--screen-color", "blue", "--checkpoint-dir", blue_dir)

    assert_matches(got, want)


def test_precision_reaches_the_engine(cli, clip: Path, engine, capsys) -> None:
    got = cli(clip, "--precision", "bf16", quiet=False)
    assert "bfloat16 is slow on the CPU: running in float32 instead" in capsys.readouterr().err
    assert_matches(got, reference(engine, clip))

    with pytest.raises(SystemExit) as exit_status:  # a usage error, found by the parser: status 2
        main(["infer", str(clip), "--device", "cpu", "--no-hub", "--precision", "fp12", "--overwrite"])
    assert exit_status.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "corridorkey infer: error: argument --precision: precision must be one of bfloat16, float16, "
        "float32 (or fp16, half, bf16, fp32, float), got 'fp12'"
    )


def test_io_threads_sets_the_number_of_reader_and_writer_threads(tmp_path: Path) -> None:
    """Four frames read ahead at once and four outputs per frame written at once: more than one thread of
    each pool is started when allowed, never more than --io-threads."""
    clip = make_clip(tmp_path / "threads", [f"t{i}" for i in range(4)], (64, 64))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    runs = {}
    for threads in ("1", "3"):
        names: set[str] = set()

        def record(frame, event, arg, names=names):  # runs first thing in every thread started while set
            names.add(threading.current_thread().name)
            sys.setprofile(None)  # this thread only

        out = tmp_path / f"out{threads}"
        argv = ["infer", str(clip), "--checkpoint-dir", str(bundled_checkpoint_dir()), "--device", "cpu"]
        threading.setprofile(record)
        try:
            assert main([*argv, "--no-hub", "-q", "--output", str(out), "--io-threads", threads]) == 0
        finally:
            threading.setprofile(None)
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        runs[threads] = {p.relative_to(out): read_image(p) for p in frame_files(out)}
        readers = {n for n in names if n.startswith("ck-read")}
        writers = {n for n in names if n.startswith("ck-write")}
        if threads == "1":
            assert len(readers) == 1 and len(writers) == 1, sorted(names)
        else:
            assert 2 <= len(readers) <= 3 and 2 <= len(writers) <= 3, sorted(names)
    assert len(runs["1"]) == 16 and runs["1"].keys() == runs["3"].keys()
    for name, data in runs["1"].items():
        np.testing.assert_array_equal(data, runs["3"][name], err_msg=str(name))


def test_version_is_the_installed_distribution(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"corridorkey {version('ckpt-formats')}"


@pytest.mark.slow
def test_hub_option_names_the_repository_to_fetch(tmp_path: Path) -> None:
    """--hub REPO_ID (not the default repository, so the formats' default file names) against the fake hub."""
    from fakehub import FakeHub
    from hub_testing import child_env

    clip = make_clip(tmp_path / "hubclip", ["h1"], (40, 56))
    models = tmp_path / "models"
    data = (bundled_checkpoint_dir() / "corridorkey_demo.safetensors").read_bytes()
    with FakeHub() as hub:
        hub.add_repo("someone/greenformer-small", {"model.safetensors": data})
        proc = run_cli(
            "infer",
            clip,
            "--checkpoint-dir",
            models,
            "--hub",
            "someone/greenformer-small",
            "--outputs",
            "matte",
            env=child_env(hub, tmp_path / "hf"),
        )
        assert proc.returncode == 0, proc.stderr
        assert ("cdn", "GET", "model.safetensors") in hub.seen()
    assert (models / "model.safetensors").read_bytes() == data
    assert output_complete(clip / "Matte" / "h1.exr")


# ------------------------------------------------------------------------------ --safe-only, for real


def write_legacy_v1_pth(folder: Path) -> Path:
    """A legacy ``model.pth`` with the published v1.0 key layout (no metadata: taken for v1.0).

    Every tensor is one stored value expanded to its shape, so the file is ~100 KB for 100 M parameters;
    loading materialises them (float16 -> float32), and the model keys with constant weights.
    """
    from corridorkey_engine import CORRIDORKEY_V1, build_greenformer

    state = {}
    for key, meta in build_greenformer(CORRIDORKEY_V1).state_dict().items():
        if meta.is_floating_point():
            value = 1.0 if key.endswith("running_var") else 0.0
            state[key] = torch.full((1,), value, dtype=torch.float16).expand(meta.shape)
        else:
            state[key] = torch.zeros((), dtype=meta.dtype).expand(meta.shape)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "model.pth")
    return folder


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_legacy_v1_pth(tmp_path_factory.mktemp("legacy") / "ckpt")


@pytest.mark.slow
def test_safe_only_refuses_a_legacy_pth_and_writes_nothing(tmp_path: Path, legacy_dir: Path) -> None:
    clip = make_clip(tmp_path / "shot", ["f1"], (40, 56))

    proc = run_cli(
        "infer", clip, "--checkpoint-dir", legacy_dir, "--img-size", "64", "--no-hub", "--safe-only"
    )

    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("corridorkey: error: "), proc.stderr
    assert "refused by policy" in lines[0] and "model.pth (pickle)" in lines[0]
    assert "ckpt-formats convert" in lines[0]  # says what to do
    outputs = [p for p in clip.rglob("*") if p.is_file() and p.parent.name not in ("Input", "AlphaHint")]
    assert outputs == []


@pytest.mark.slow
def test_without_safe_only_the_same_legacy_pth_keys(tmp_path: Path, legacy_dir: Path) -> None:
    clip = make_clip(tmp_path / "shot", ["f1"], (40, 56))

    proc = run_cli("infer", clip, "--checkpoint-dir", legacy_dir, "--img-size", "64", "--no-hub")

    assert proc.returncode == 0, proc.stderr
    assert f"checkpoint {legacy_dir / 'model.pth'} (pickle)" in proc.stdout
    for folder, suffix in (("Matte", "exr"), ("FG", "exr"), ("Processed", "exr"), ("Comp", "png")):
        assert output_complete(clip / folder / f"f1.{suffix}"), folder


def test_batch_size_sets_the_frames_per_model_call(cli, tmp_path: Path) -> None:
    """Counted with a global forward hook on the real model: 3 frames at --batch-size 2 are 2 calls."""
    from torch.nn.modules.module import register_module_forward_hook

    from corridorkey_engine import GreenFormer

    clip = make_clip(tmp_path / "batches", ["b1", "b2", "b3"], (64, 64))
    batches: list[int] = []

    def count(module, args, output):
        if isinstance(module, GreenFormer):
            batches.append(args[0].shape[0])

    handle = register_module_forward_hook(count)
    try:
        one = cli(clip, "--outputs", "matte")
        ones = list(batches)
        batches.clear()
        two = cli(clip, "--outputs", "matte", "--batch-size", "2")
    finally:
        handle.remove()
    assert ones == [1, 1, 1] and batches == [2, 1]
    assert sorted(one) == sorted(two) == ["Matte/b1.exr", "Matte/b2.exr", "Matte/b3.exr"]
    for name in one:
        np.testing.assert_allclose(one[name], two[name], atol=1e-3)


def test_demo_device_precision_and_batch_size(tmp_path: Path, capsys) -> None:
    from torch.nn.modules.module import register_module_forward_hook

    from corridorkey_engine import GreenFormer

    batches: list[int] = []
    handle = register_module_forward_hook(
        lambda module, args, output: (
            batches.append(args[0].shape[0]) if isinstance(module, GreenFormer) else None
        )
    )
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        argv = ["demo", str(tmp_path / "demo"), "--frames", "3", "--device", "cpu", "--precision", "bf16"]
        assert main([*argv, "--batch-size", "3"]) == 0
    finally:
        handle.remove()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out, err = capsys.readouterr()
    assert "bfloat16 is slow on the CPU: running in float32 instead" in err
    assert "device cpu (float32)" in out
    assert batches == [3]


@pytest.mark.slow
def test_compile_backend_compiles_the_model_with_that_backend(cli, clip: Path, engine, capsys) -> None:
    """A backend registered with torch records each graph dynamo hands it and runs it unchanged: the
    run through ``--compile-backend`` traced the model and wrote the same outputs as the engine."""
    from torch._dynamo import register_backend

    graphs: list[torch.fx.GraphModule] = []

    @register_backend(name="corridorkey_test_recorder")
    def recorder(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    got = cli(clip, "--compile-backend", "corridorkey_test_recorder")

    assert graphs and any(node.op == "call_function" for node in graphs[0].graph.nodes)
    assert_matches(got, reference(engine, clip))
    # checked before the weights are looked for: this run has none
    assert main(["infer", str(clip), "--device", "cpu", "--no-hub", "--compile-backend", "nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("corridorkey: error: unknown torch.compile backend 'nope': use one of ")
    assert "inductor" in err[-1] and "eager" in err[-1]
