"""The resolve rules, on real files in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import assert_same_tensors, project_only, tiny_state_dict, write_pth, write_safetensors

from ckpt_formats import (
    AmbiguousCheckpointError,
    CheckpointError,
    CheckpointLoadError,
    CheckpointNotFoundError,
)


def test_both_formats_present_safetensors_wins_and_shadowed_pth_is_logged(tmp_path, registry, info_logs):
    write_safetensors(tmp_path / "model.safetensors", tiny_state_dict(1), {"origin": "st"})
    write_pth(tmp_path / "model.pth", tiny_state_dict(2))
    got = registry.resolve(tmp_path)
    assert got.format.name == "safetensors"
    assert got.path == tmp_path / "model.safetensors"
    assert got.metadata == {"origin": "st"}
    assert_same_tensors(got.state_dict, tiny_state_dict(1))
    assert [c.path.name for c in got.shadowed] == ["model.pth"]
    message = " ".join(r.getMessage() for r in info_logs.records)
    assert "model.pth (pickle)" in message and "using model.safetensors" in message


def test_only_pth_resolves_to_pickle(tmp_path, registry):
    write_pth(tmp_path / "weights.pth", tiny_state_dict(3))
    got = registry.resolve(tmp_path)
    assert got.format.name == "pickle" and got.path.name == "weights.pth"
    assert_same_tensors(got.state_dict, tiny_state_dict(3))
    assert got.shadowed == []


@pytest.mark.parametrize("ext", ["pt", "ckpt"])
def test_other_pickle_extensions(tmp_path, registry, ext):
    write_pth(tmp_path / f"w.{ext}")
    assert registry.resolve(tmp_path).format.name == "pickle"


def test_two_safetensors_are_ambiguous_and_named(tmp_path, registry):
    write_safetensors(tmp_path / "a.safetensors")
    write_safetensors(tmp_path / "b.safetensors")
    write_pth(tmp_path / "c.pth")
    with pytest.raises(AmbiguousCheckpointError) as err:
        registry.resolve(tmp_path)
    text = str(err.value)
    assert "a.safetensors" in text and "b.safetensors" in text and "keep exactly one" in text
    assert "c.pth" not in text  # no fallback to the lower-priority format
    # A Python caller is told the keywords it has, never a command line's flags.
    assert "select=NAME or exclude=[GLOB]" in text and "--select" not in text


def test_the_caller_supplies_the_ambiguity_advice(tmp_path, registry):
    write_safetensors(tmp_path / "a.safetensors")
    write_safetensors(tmp_path / "b.safetensors")
    with pytest.raises(AmbiguousCheckpointError) as err:
        registry.resolve(tmp_path, advice="the Model menu")
    assert str(err.value).endswith("keep exactly one, or choose one with the Model menu")
    assert "select=" not in str(err.value)


def test_several_select_globs_must_all_match(tmp_path, registry):
    write_safetensors(tmp_path / "green_a.safetensors", tiny_state_dict(1))
    write_safetensors(tmp_path / "blue_a.safetensors", tiny_state_dict(2))
    write_safetensors(tmp_path / "blue_b.safetensors", tiny_state_dict(3))
    got = registry.resolve(tmp_path, select=["blue_*", "*_b.*"])
    assert got.path.name == "blue_b.safetensors"
    assert_same_tensors(got.state_dict, tiny_state_dict(3))
    with pytest.raises(AmbiguousCheckpointError):
        registry.resolve(tmp_path, select=["blue_*"])
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path, select=["green_*", "*_b.*"])
    assert "only names matching 'green_*' and '*_b.*' were considered" in str(err.value)


def test_select_chooses_among_ambiguous_candidates(tmp_path, registry):
    write_safetensors(tmp_path / "a.safetensors", tiny_state_dict(1))
    write_safetensors(tmp_path / "b.safetensors", tiny_state_dict(2))
    got = registry.resolve(tmp_path, select="b.*")
    assert got.path.name == "b.safetensors"
    assert_same_tensors(got.state_dict, tiny_state_dict(2))


def test_exclude_pattern_drops_mlx_file(tmp_path, registry):
    write_safetensors(tmp_path / "corridorkey_mlx.safetensors", tiny_state_dict(9))
    write_safetensors(tmp_path / "CorridorKey_v1.0.safetensors", tiny_state_dict(1))
    with pytest.raises(AmbiguousCheckpointError):
        registry.resolve(tmp_path)
    got = registry.resolve(tmp_path, exclude=["*_mlx.safetensors"])
    assert got.path.name == "CorridorKey_v1.0.safetensors"


def test_restrict_formats_by_name(tmp_path, registry):
    write_safetensors(tmp_path / "model.safetensors")
    write_pth(tmp_path / "model.pth", tiny_state_dict(5))
    got = registry.resolve(tmp_path, formats=["pickle"])
    assert got.format.name == "pickle"
    assert_same_tensors(got.state_dict, tiny_state_dict(5))
    with pytest.raises(CheckpointError, match="unknown checkpoint format 'nope'"):
        registry.resolve(tmp_path, formats=["nope"])


def test_not_found_lists_formats_globs_and_unmatched_files(tmp_path, registry):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path)
    text = str(err.value)
    for expected in (
        str(tmp_path),
        "safetensors (*.safetensors)",
        "pickle (*.pth, *.pt, *.ckpt, *.bin)",
        "*.safetensors.index.json",
        "notes.txt",
        "weights.bin",
    ):
        assert expected in text


def test_missing_directory_is_not_found(tmp_path, registry):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        registry.resolve(tmp_path / "nope")


def test_safe_only_refuses_pth_and_says_so(tmp_path, registry, monkeypatch):
    write_pth(tmp_path / "model.pth")
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path, safe_only=True)
    assert "model.pth (pickle)" in str(err.value) and "refused by policy" in str(err.value)
    monkeypatch.setenv("CKPT_FORMATS_SAFE_ONLY", "1")
    with pytest.raises(CheckpointNotFoundError):
        registry.resolve(tmp_path)
    assert registry.resolve(tmp_path, safe_only=False).format.name == "pickle"


def test_disable_env_blocks_a_format(tmp_path, registry, monkeypatch):
    write_safetensors(tmp_path / "model.safetensors", tiny_state_dict(1))
    write_pth(tmp_path / "model.pth", tiny_state_dict(2))
    monkeypatch.setenv("CKPT_FORMATS_DISABLE", "safetensors-sharded, safetensors")
    assert registry.resolve(tmp_path).format.name == "pickle"


def test_disable_env_does_not_even_import_a_blocked_entry_point(tmp_path, monkeypatch):
    code = textwrap.dedent(
        """
        import sys
        from ckpt_formats import Registry
        names = [f.name for f in Registry().all_formats()]
        print(names, 'ckpt_formats_npz' in sys.modules, 'ckpt_formats_pickle' in sys.modules)
        """
    )
    env = {"CKPT_FORMATS_DISABLE": project_only("npz,pickle"), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "['safetensors-sharded', 'safetensors', 'onnx', 'dcp'] False False"


def test_hidden_files_are_never_candidates(tmp_path, registry):
    write_safetensors(tmp_path / ".model.safetensors.part")
    write_safetensors(tmp_path / ".hidden.safetensors")
    write_pth(tmp_path / "real.pth")
    assert registry.resolve(tmp_path).path.name == "real.pth"


# -- sharded safetensors ---------------------------------------------------------------------------


def write_sharded(directory, state_dict, shards=2, stem="model"):
    from safetensors.torch import save_file

    names = sorted(state_dict)
    weight_map = {}
    for i in range(shards):
        shard = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state_dict[k] for k in names[i::shards]}
        save_file(part, str(directory / shard), metadata={"shard": str(i)})
        weight_map.update(dict.fromkeys(part, shard))
    index = directory / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 123}, "weight_map": weight_map}))
    return index


def test_sharded_set_loads_as_one_state_dict_and_shards_are_not_ambiguous(tmp_path, registry):
    sd = tiny_state_dict(4)
    write_sharded(tmp_path, sd, shards=3)
    got = registry.resolve(tmp_path)
    assert got.format.name == "safetensors-sharded"
    assert len(got.paths) == 4 and got.paths[0].name == "model.safetensors.index.json"
    assert_same_tensors(got.state_dict, sd)
    assert got.metadata["total_size"] == "123"


def test_sharded_set_beside_stray_single_file_and_pth(tmp_path, registry, info_logs):
    write_sharded(tmp_path, tiny_state_dict(4))
    write_safetensors(
        tmp_path / "model-extra.safetensors"
    )  # a stray file named like a shard, not in the index
    write_pth(tmp_path / "model.pth")
    got = registry.resolve(tmp_path)
    assert got.format.name == "safetensors-sharded"
    assert sorted(c.path.name for c in got.shadowed) == ["model-extra.safetensors", "model.pth"]


def test_sharded_with_missing_shard_is_a_load_error_not_a_fallback(tmp_path, registry):
    write_sharded(tmp_path, tiny_state_dict(4))
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    write_pth(tmp_path / "model.pth")
    with pytest.raises(CheckpointLoadError, match="model-00002-of-00002.safetensors: missing"):
        registry.resolve(tmp_path)


def test_sharded_index_naming_wrong_shards(tmp_path, registry):
    index = write_sharded(tmp_path, tiny_state_dict(4))
    data = json.loads(index.read_text())
    data["weight_map"]["not.in.any.shard"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointLoadError, match="in none of its shards"):
        registry.resolve(tmp_path)


def test_broken_index_json_is_a_load_error(tmp_path, registry):
    (tmp_path / "model.safetensors.index.json").write_text("{ not json")
    with pytest.raises(CheckpointLoadError, match="model.safetensors.index.json"):
        registry.resolve(tmp_path)


def test_resolve_does_not_modify_the_directory(tmp_path, registry):
    write_safetensors(tmp_path / "model.safetensors")
    write_pth(tmp_path / "model.pth")
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    registry.resolve(tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_bfloat16_and_scalar_tensors_round_trip(tmp_path, registry):
    sd = {
        "a": torch.randn(3, 3).to(torch.bfloat16),
        "scalar": torch.tensor(1.5),
        "flag": torch.tensor([True]),
    }
    write_safetensors(tmp_path / "m.safetensors", sd)
    assert_same_tensors(registry.resolve(tmp_path).state_dict, sd)


def test_disabled_format_files_are_named_as_refused_and_restriction_is_not(tmp_path, registry, monkeypatch):
    write_pth(tmp_path / "model.pth")
    write_safetensors(tmp_path / "model.safetensors")
    registry.all_formats()  # plugins already loaded: the policy is applied per call
    monkeypatch.setenv("CKPT_FORMATS_DISABLE", "pickle")
    with pytest.raises(CheckpointNotFoundError) as err:
        registry.resolve(tmp_path, formats=["pickle", "npz"])
    text = str(err.value)
    assert "refused by policy (safe-only or CKPT_FORMATS_DISABLE): model.pth (pickle)" in text
    assert "present but matching no format: model.safetensors" in text
