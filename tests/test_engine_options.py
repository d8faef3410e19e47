"""Settings as values: PostProcessOptions through process_frame, CheckpointSource through the loader and its
defaults (those of ``corridorkey infer``), and the one CorridorKeyError tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_helpers import TINY, frame, state_dict_of, tiny_engine, tiny_model, write_pth

import ckpt_formats
from corridorkey_engine import (
    CheckpointSource,
    CorridorKeyEngine,
    CorridorKeyError,
    PostProcessOptions,
    default_checkpoint_dir,
    errors,
    load_greenformer,
    save_checkpoint,
)
from corridorkey_engine.model.source import CHECKPOINT_DIR_ENV, DEFAULT_HUB_REPO, HUB_FILENAMES


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> CorridorKeyEngine:
    return tiny_engine(tmp_path_factory.mktemp("ckpt"), seed=3)


def test_an_options_value_and_keywords_are_the_same_call(engine) -> None:
    image, hint = frame(40, 56)
    options = PostProcessOptions(despill_strength=0.0, auto_despeckle=False, generate_comp=False)
    by_value = engine.process_frame(image, hint, options)
    by_keywords = engine.process_frame(
        image, hint, despill_strength=0.0, auto_despeckle=False, generate_comp=False
    )
    assert set(by_value) == set(by_keywords) == {"alpha", "fg", "processed"}
    for name in by_value:
        np.testing.assert_array_equal(by_value[name], by_keywords[name])
    # A keyword on top of a value replaces that one field: full despill changes the processed colours only.
    despilled = engine.process_frame(image, hint, options, despill_strength=1.0)
    np.testing.assert_array_equal(despilled["alpha"], by_value["alpha"])
    assert np.abs(despilled["processed"][..., :3] - by_value["processed"][..., :3]).max() > 1e-4
    with pytest.raises(TypeError, match="despil"):
        engine.process_frame(image, hint, despil_strength=0.5)
    with pytest.raises(ValueError, match="despill_strength"):
        engine.process_frame(image, hint, options, despill_strength=2.0)


def test_default_source_is_the_published_model_in_the_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CHECKPOINT_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = CheckpointSource.default()
    assert (
        source.directory
        == tmp_path / "cache" / "corridorkey" / "CorridorKey_v1.0"
        == default_checkpoint_dir()
    )
    hub = source.hub_source()
    assert hub.repo_id == DEFAULT_HUB_REPO == "nikopueringer/CorridorKey_v1.0"
    assert hub.filenames == {fmt: tuple(names) for fmt, names in HUB_FILENAMES.items()}
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "mine"))
    assert CheckpointSource.of(None).directory == tmp_path / "mine"
    assert CheckpointSource.of(tmp_path / "x").hub is None  # a folder of your own never downloads by default
    assert CheckpointSource(hub="someone/other").hub_source().filenames is None
    with pytest.raises(ValueError):
        CheckpointSource(hub="not a repo id!").hub_source()


def test_engine_without_a_folder_loads_the_default_folder(monkeypatch, tmp_path: Path) -> None:
    save_checkpoint(tiny_model(seed=4), tmp_path / "tiny.safetensors")
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    engine = CorridorKeyEngine(device="cpu")  # no download: the default folder holds a checkpoint
    assert engine.checkpoint.path == tmp_path / "tiny.safetensors"


def test_every_resolution_setting_reaches_the_registry(tmp_path: Path) -> None:
    save_checkpoint(tiny_model(seed=1), tmp_path / "a.safetensors")
    write_pth(tmp_path, state_dict_of(tiny_model(seed=2)))
    assert load_greenformer(tmp_path).checkpoint.format.name == "safetensors"  # the higher priority
    source = CheckpointSource(tmp_path, formats=["pickle"])
    assert load_greenformer(source, config=TINY).checkpoint.format.name == "pickle"
    assert (
        load_greenformer(tmp_path, config=TINY, exclude=["*.safetensors"]).checkpoint.format.name == "pickle"
    )
    with pytest.raises(ckpt_formats.CheckpointNotFoundError):
        load_greenformer(source, config=TINY, safe_only=True)  # a keyword replaces the source's field
    with pytest.raises(TypeError):
        load_greenformer(tmp_path, hub_repo="x")


def test_one_error_tree() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(cls, CorridorKeyError) for cls in classes)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.DeviceUnavailableError, RuntimeError)
    assert issubclass(errors.CheckpointMismatchError, ckpt_formats.CheckpointLoadError)
    assert issubclass(errors.ExrSupportError, errors.FrameIOError)
    from corridorkey_engine import GreenFormerConfig, resolve_device
    from corridorkey_engine.clips.sequences import discover_frames

    for raise_it in (
        lambda: GreenFormerConfig(img_size=33),
        lambda: resolve_device("tpu"),
        lambda: discover_frames(Path("/nonexistent/clip/Input")),
    ):
        with pytest.raises(CorridorKeyError):
            raise_it()


def test_cli_builds_the_same_values_and_reports_a_bad_hub_in_one_line(tmp_path: Path) -> None:
    from helpers_ckpt import run_cli

    from corridorkey_engine.cli import checkpoint_source, key_options
    from corridorkey_engine.cli_args import build_parser

    args = build_parser().parse_args(
        [
            "infer",
            str(tmp_path),
            "--despill",
            "0.25",
            "--no-despeckle",
            "--despeckle-size",
            "9",
            "--safe-only",
        ]
    )
    opts = key_options(args)
    assert opts.post == PostProcessOptions(despill_strength=0.25, auto_despeckle=False, despeckle_size=9)
    source = checkpoint_source(args)
    assert source.safe_only is True and source.directory == default_checkpoint_dir()
    assert source.hub.repo_id == DEFAULT_HUB_REPO
    assert source.screen_color == opts.post.screen_color == "green"
    blue = build_parser().parse_args(["infer", str(tmp_path), "--screen-color", "blue", "--select", "x*"])
    source = checkpoint_source(blue)
    assert source.screen_color == key_options(blue).post.screen_color == "blue"
    assert source.hub.repo_id == "nikopueringer/CorridorKeyBlue_1.0" and source.select == "x*"
    assert source.directory == default_checkpoint_dir("blue") and source.advice.startswith("--select NAME")
    no_hub = build_parser().parse_args(["infer", str(tmp_path), "--screen-color", "blue", "--no-hub"])
    assert checkpoint_source(no_hub).hub is None
    done = run_cli("infer", tmp_path, "--hub", "not a repo id!")
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1, done.stderr
    assert err[0].startswith("corridorkey: error: --hub 'not a repo id!': "), err


# ------------------------------------------------------------------- screen colours and MLX weights choose


def _models_folder(folder: Path) -> Path:
    """The green, blue and MLX models side by side, as upstream's checkpoints folder may hold them."""
    save_checkpoint(tiny_model(seed=1), folder / "CorridorKey_v1.0.safetensors")
    save_checkpoint(tiny_model(seed=2), folder / "CorridorKeyBlue_1.0.safetensors")
    write_pth(folder, state_dict_of(tiny_model(seed=3)), name="CorridorKeyBlue_1.0")  # shadowed for blue
    save_checkpoint(tiny_model(seed=4), folder / "corridorkey_mlx.safetensors")
    save_checkpoint(tiny_model(seed=5), folder / "CorridorKey_v1.0.mlx.safetensors")
    return folder


def test_screen_color_chooses_green_or_blue_and_mlx_weights_never_compete(tmp_path: Path) -> None:
    folder = _models_folder(tmp_path)
    image, hint = frame(40, 56)
    green = CorridorKeyEngine(folder, device="cpu")
    blue = CorridorKeyEngine(folder, device="cpu", screen_color="blue")
    assert green.checkpoint.path.name == "CorridorKey_v1.0.safetensors"
    assert blue.checkpoint.path.name == "CorridorKeyBlue_1.0.safetensors"
    assert [c.path.name for c in blue.checkpoint.shadowed] == ["CorridorKeyBlue_1.0.pth"]
    assert green.checkpoint.shadowed == []  # the blue .pth is never a candidate for green
    assert (green.post_defaults.screen_color, blue.post_defaults.screen_color) == ("green", "blue")
    # The weights really are the chosen files': each engine keys as that model does.
    for engine, seed in ((green, 1), (blue, 2)):
        alone = CorridorKeyEngine.from_model(tiny_model(seed=seed), device="cpu")
        got = engine.process_frame(image, hint, generate_comp=False)
        want = alone.process_frame(image, hint, generate_comp=False, screen_color=engine.screen_color)
        for name in got:
            np.testing.assert_array_equal(got[name], want[name])
    # Blue despill on the blue engine's own defaults: its processed colours differ from a green despill.
    by_default = blue.process_frame(image, hint, despill_strength=1.0)["processed"]
    as_green = blue.process_frame(image, hint, despill_strength=1.0, screen_color="green")["processed"]
    assert np.abs(by_default - as_green).max() > 1e-3


def test_blue_in_the_name_is_case_insensitive_and_select_narrows_within_the_screen(tmp_path: Path) -> None:
    save_checkpoint(tiny_model(seed=1), tmp_path / "shot_BLUE_v2.safetensors")
    save_checkpoint(tiny_model(seed=2), tmp_path / "shot_Blue_v1.safetensors")
    save_checkpoint(tiny_model(seed=3), tmp_path / "shot_green.safetensors")
    assert load_greenformer(tmp_path).checkpoint.path.name == "shot_green.safetensors"
    with pytest.raises(ckpt_formats.AmbiguousCheckpointError) as err:
        load_greenformer(CheckpointSource(tmp_path, screen_color="blue"))
    text = str(err.value)
    assert "shot_BLUE_v2" in text and "shot_Blue_v1" in text and "shot_green" not in text
    assert "select=NAME or exclude=[GLOB]" in text and "--select" not in text  # Python: the fields
    source = CheckpointSource(tmp_path, screen_color="blue", select="*v1*")
    assert load_greenformer(source).checkpoint.path.name == "shot_Blue_v1.safetensors"
    # a select the screen's rules would empty names the file as it is (never an empty set)
    source = CheckpointSource(tmp_path, screen_color="blue", select="shot_green*")
    assert load_greenformer(source).checkpoint.path.name == "shot_green.safetensors"
    source = CheckpointSource(tmp_path, screen_color="blue", exclude=["*v2*"])
    assert load_greenformer(source).checkpoint.path.name == "shot_Blue_v1.safetensors"


def test_match_screen_and_skip_mlx_switch_the_rules_off(tmp_path: Path) -> None:
    folder = _models_folder(tmp_path)
    with pytest.raises(ckpt_formats.AmbiguousCheckpointError, match="corridorkey_mlx"):
        load_greenformer(CheckpointSource(folder, skip_mlx=False))
    both = CheckpointSource(folder, match_screen=False, exclude=["*mlx*", "CorridorKey_v1.0.*"])
    assert load_greenformer(both).checkpoint.path.name == "CorridorKeyBlue_1.0.safetensors"
    only_green = tmp_path / "green_only"
    only_green.mkdir()
    save_checkpoint(tiny_model(seed=1), only_green / "demo.safetensors")
    with pytest.raises(ckpt_formats.CheckpointNotFoundError):  # a green model never keys blue ...
        load_greenformer(CheckpointSource(only_green, screen_color="blue"))
    loaded = load_greenformer(CheckpointSource(only_green, screen_color="blue", match_screen=False))
    assert loaded.checkpoint.path.name == "demo.safetensors"  # ... unless it was trained on both
    with pytest.raises(ValueError, match="screen_color"):
        CheckpointSource(folder, screen_color="red")
    with pytest.raises(ValueError, match="screen_color"):
        CorridorKeyEngine(folder, device="cpu", screen_color="magenta")


def test_each_screen_colour_has_its_published_model_and_folder(monkeypatch, tmp_path: Path) -> None:
    from corridorkey_engine.model.source import PUBLISHED_MODELS

    monkeypatch.delenv(CHECKPOINT_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    blue = CheckpointSource.default(screen_color="blue")
    assert blue.directory == tmp_path / "cache" / "corridorkey" / "CorridorKeyBlue_1.0"
    assert blue.directory.parent == CheckpointSource.default().directory.parent  # next to green's
    assert blue.directory == default_checkpoint_dir("blue")
    assert CheckpointSource.of(None, screen_color="blue") == blue
    hub = blue.hub_source()
    assert hub.repo_id == "nikopueringer/CorridorKeyBlue_1.0"
    assert hub.filenames == {
        "safetensors": ("CorridorKeyBlue_1.0.safetensors",),
        "pickle": ("CorridorKeyBlue_1.0.pth",),
    }
    assert PUBLISHED_MODELS["blue"].filenames["safetensors"] == ["CorridorKeyBlue_1.0.safetensors"]
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "mine"))  # one folder of your own for both
    assert default_checkpoint_dir("blue") == default_checkpoint_dir("green") == tmp_path / "mine"


def test_a_folder_holding_green_fetches_blue_beside_it(hub, cache, tmp_path: Path) -> None:
    """One folder for both colours ($CORRIDORKEY_CHECKPOINT_DIR): asking for blue where only the green model
    is fetches the blue one next to it; green still loads the green file afterwards."""
    from hub_testing import source
    from safetensors.torch import save

    blue_names = {"safetensors": ["CorridorKeyBlue_1.0.safetensors"]}
    blue_bytes = save(state_dict_of(tiny_model(seed=2)))
    hub.add_repo("nikopueringer/CorridorKeyBlue_1.0", {"CorridorKeyBlue_1.0.safetensors": blue_bytes})
    save_checkpoint(tiny_model(seed=1), tmp_path / "CorridorKey_v1.0.safetensors")
    blue_hub = source(hub, cache, repo_id="nikopueringer/CorridorKeyBlue_1.0", filenames=blue_names)
    loaded = load_greenformer(CheckpointSource(tmp_path, hub=blue_hub, screen_color="blue"), config=TINY)
    assert loaded.checkpoint.path == tmp_path / "CorridorKeyBlue_1.0.safetensors"
    assert loaded.checkpoint.downloaded
    assert (tmp_path / "CorridorKeyBlue_1.0.safetensors").read_bytes() == blue_bytes
    green = load_greenformer(CheckpointSource(tmp_path, hub=blue_hub))
    assert green.checkpoint.path.name == "CorridorKey_v1.0.safetensors" and not green.checkpoint.downloaded
