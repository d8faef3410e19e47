"""``ckpt_formats.testing``: the plugin author's kit works as documented (and can fail)."""

from __future__ import annotations

import json

import pytest
import torch

from ckpt_formats import CheckpointFormat, CheckpointNotFoundError, PluginError, hookimpl
from ckpt_formats.testing import (
    assert_same_tensors,
    isolated_registry,
    tiny_state_dict,
    write_pickle,
    write_safetensors,
    write_sharded_safetensors,
)


def test_an_isolated_registry_has_only_what_it_is_given(tmp_path):
    write_safetensors(tmp_path / "model.safetensors")

    assert isolated_registry().all_formats() == []
    with pytest.raises(CheckpointNotFoundError):
        isolated_registry().resolve(tmp_path)
    st = isolated_registry(entry_points=["safetensors"])
    assert [f.name for f in st.all_formats()] == ["safetensors-sharded", "safetensors"]
    assert st.all_formats()[0].distribution == "ckpt-formats"
    assert_same_tensors(st.resolve(tmp_path).state_dict, tiny_state_dict())
    with pytest.raises(
        PluginError, match=r"no installed ckpt_formats entry point named 'nope' \(installed: "
    ):
        isolated_registry(entry_points=["nope"])


def test_a_plugin_under_test_is_registered_alone(tmp_path):
    class AliasPlugin:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            from safetensors.torch import load_file

            load = lambda c, d: load_file(str(c.path), device=d)  # noqa: E731
            register(CheckpointFormat(name="alias", priority=5, globs=("*.st",), load=load))

    write_safetensors(tmp_path / "w.st")
    write_pickle(tmp_path / "w.pth")  # no pickle format in this registry: not a candidate

    registry = isolated_registry(AliasPlugin())
    resolved = registry.resolve(tmp_path)

    assert resolved.format.name == "alias" and resolved.format.plugin == "AliasPlugin"
    assert_same_tensors(resolved.state_dict, tiny_state_dict())


def test_writers_for_each_builtin_format(tmp_path):
    registry = isolated_registry(entry_points=["safetensors", "pickle"])
    files = write_sharded_safetensors(tmp_path / "set" / "model.safetensors")
    write_pickle(tmp_path / "pth" / "model.pth", {"state_dict": tiny_state_dict(1)})

    assert [p.name for p in files] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    assert len(set(json.loads(files[-1].read_text())["weight_map"].values())) == 2
    assert registry.resolve(tmp_path / "set").format.name == "safetensors-sharded"
    assert_same_tensors(registry.resolve(tmp_path / "set").state_dict, tiny_state_dict())
    assert_same_tensors(registry.resolve(tmp_path / "pth").state_dict["state_dict"], tiny_state_dict(1))


def test_assert_same_tensors_fails_on_every_difference():
    base = tiny_state_dict()
    assert_same_tensors(base, tiny_state_dict())
    nan = {"x": torch.tensor([float("nan"), 1.0])}
    assert_same_tensors(nan, {"x": torch.tensor([float("nan"), 1.0])})  # same bits, although nan != nan

    cases = [
        ({k: v for k, v in base.items() if k != "head.steps"}, r"missing \['head.steps'\]"),
        (base | {"extra": torch.zeros(1)}, r"unexpected \['extra'\]"),
        (base | {"head.weight": base["head.weight"].float()}, r"head.weight: torch.float32\[2, 4\]"),
        (base | {"encoder.bias": base["encoder.bias"] + 1e-7}, "encoder.bias: the values differ"),
        (base | {"encoder.bias": base["encoder.bias"].reshape(2, 2)}, r"expected torch.float32\[4\]"),
        (base | {"head.steps": [0, 1, 2, 3, 4]}, "head.steps: list, not a tensor"),
        ({"x": torch.tensor([0.0])}, None),
    ]
    for actual, message in cases:
        expected = base if message else {"x": torch.tensor([-0.0])}  # -0.0 == 0.0, but not the same bits
        with pytest.raises(AssertionError, match=message or "x: the values differ"):
            assert_same_tensors(actual, expected)


def test_an_entry_point_that_is_not_installed_is_named():
    from ckpt_formats.testing import isolated_registry

    with pytest.raises(PluginError) as err:
        isolated_registry(entry_points=["no-such-plugin"])
    expected = "no installed ckpt_formats entry point named 'no-such-plugin' (installed: "
    assert str(err.value).startswith(expected)
    assert "safetensors" in str(err.value)


def test_the_writers_make_missing_folders(tmp_path):
    from ckpt_formats.testing import write_safetensors, write_sharded_safetensors

    single = write_safetensors(tmp_path / "a" / "b" / "model.safetensors")
    assert single.is_file()
    files = write_sharded_safetensors(tmp_path / "c" / "d" / "model.safetensors", {"x": torch.ones(20)}, 64)
    assert all(p.is_file() and p.parent == tmp_path / "c" / "d" for p in files)
