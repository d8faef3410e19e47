"""A checkpoint may declare which screens it keys (metadata ``corridorkey.screens``). With an explicit
checkpoint folder, its one checkpoint that declares the asked colour is used as it is; the file-name rules
(``blue`` in the name) only choose among several; ``--select NAME`` is never combined with them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_ckpt import make_clip, run_cli

from ckpt_formats import CheckpointNotFoundError
from corridorkey_engine.demo.clip import bundled_checkpoint_dir
from corridorkey_engine.model.source import SCREENS_KEY, CheckpointSource


def checkpoint(folder: Path, name: str, screens: str | None = None, value: float = 0.0) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    metadata = {SCREENS_KEY: screens} if screens else None
    save_file({"w": torch.full((2,), value)}, str(folder / name), metadata=metadata)
    return folder / name


def chosen(folder: Path, **kwargs) -> str:
    return CheckpointSource(checkpoint_dir=folder, **kwargs).resolve().path.name


def test_one_checkpoint_declaring_both_screens_keys_blue_whatever_its_name(tmp_path):
    checkpoint(tmp_path, "model.safetensors", "green,blue")
    assert chosen(tmp_path, screen_color="blue") == "model.safetensors"
    assert chosen(tmp_path, screen_color="green") == "model.safetensors"


def test_one_blue_named_checkpoint_declaring_green_keys_green(tmp_path):
    checkpoint(tmp_path, "model_blue_and_green.safetensors", "green, Blue")
    assert chosen(tmp_path, screen_color="green") == "model_blue_and_green.safetensors"


def test_without_a_declaration_the_names_decide(tmp_path):
    checkpoint(tmp_path, "model.safetensors")
    with pytest.raises(CheckpointNotFoundError):
        chosen(tmp_path, screen_color="blue")
    checkpoint(tmp_path / "green-only", "model.safetensors", "green")
    with pytest.raises(CheckpointNotFoundError):
        chosen(tmp_path / "green-only", screen_color="blue")


def test_among_several_the_names_choose(tmp_path):
    checkpoint(tmp_path, "model.safetensors", "green,blue", 0.0)
    checkpoint(tmp_path, "model_blue.safetensors", "blue", 1.0)
    assert chosen(tmp_path, screen_color="blue") == "model_blue.safetensors"
    assert chosen(tmp_path, screen_color="green") == "model.safetensors"


def test_select_names_one_file_and_no_screen_rule_empties_it(tmp_path):
    checkpoint(tmp_path, "a.safetensors")
    checkpoint(tmp_path, "b.safetensors")
    checkpoint(tmp_path, "b_blue.safetensors")
    assert chosen(tmp_path, screen_color="blue", select="b.safetensors") == "b.safetensors"
    assert chosen(tmp_path, screen_color="blue", select="b*") == "b_blue.safetensors"  # within the screen


def test_the_bundled_model_keys_a_blue_screen_from_the_command_line(tmp_path):
    clip = make_clip(tmp_path / "blue", ["b_1"], screen="blue")
    proc = run_cli(
        "infer", clip, "--checkpoint-dir", bundled_checkpoint_dir(), "--screen-color", "blue", "--no-hub",
        "--img-size", "64", "--outputs", "matte",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "corridorkey_demo.safetensors" in proc.stdout
    assert (clip / "Matte" / "b_1.exr").is_file()
