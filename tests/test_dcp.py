"""The builtin distributed-checkpoint (DCP) format: real folders written by
``torch.distributed.checkpoint.save`` in this one process (no process group), loaded through the registry and
compared bit for bit."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from conftest import assert_same_tensors, run_main, tiny_state_dict, write_safetensors

import ckpt_formats_dcp
from ckpt_formats import CheckpointLoadError, CheckpointNotFoundError, resolve
from ckpt_formats.cli import main
from ckpt_formats.convert import convert
from ckpt_formats.testing import isolated_registry


def save_dcp(directory: Path, state: dict) -> Path:
    """``torch.distributed.checkpoint.save`` on one process, as a training script without a group does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(directory), no_dist=True)
    return directory


def model_state() -> dict[str, torch.Tensor]:
    """Every dtype a model carries: float32, float16, int64 (tiny_state_dict), bfloat16, a 0-d tensor."""
    g = torch.Generator().manual_seed(3)
    state = tiny_state_dict(1)
    state["head.weight"] = torch.randn(5, 7, generator=g).to(torch.bfloat16)
    state["norm.num_batches_tracked"] = torch.tensor(12)
    return state


def training_state() -> dict:
    """What a training loop saves: the model, an optimizer with state, a step counter."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, generator=torch.Generator().manual_seed(0))).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 7}


def cli(*args):
    return run_main(main, "ckpt-formats", [str(a) for a in args])


def test_a_flat_model_state_dict_resolves_bit_for_bit(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())

    resolved = resolve(tmp_path / "ckpt")

    assert resolved.format.name == "dcp" and resolved.format.plugin == "dcp"
    assert resolved.path == tmp_path / "ckpt" / ".metadata"
    assert [p.name for p in resolved.paths] == [".metadata", "__0_0.distcp"]
    assert_same_tensors(resolved.state_dict, model_state())


def test_several_data_files_of_one_rank(tmp_path):
    writer = dcp.FileSystemWriter(str(tmp_path / "ckpt"), single_file_per_rank=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(model_state(), storage_writer=writer, no_dist=True)

    resolved = resolve(tmp_path / "ckpt")

    assert len(resolved.paths) == 1 + len(model_state())  # one data file per tensor
    assert_same_tensors(resolved.state_dict, model_state())


SHARDED_SAVE = """
import os, sys
import torch, torch.distributed as dist, torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

rank, world, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", rank=rank, world_size=world)
mesh = init_device_mesh("cpu", (world,))
g = torch.Generator().manual_seed(0)
full = {"a.weight": torch.randn(6, 4, generator=g), "b.bias": torch.randn(5, generator=g).to(torch.bfloat16),
        "steps": torch.arange(7)}
if rank == 0:
    torch.save(full, directory + ".expected.pt")
sharded = {k: distribute_tensor(v, mesh, [Shard(0)]) for k, v in full.items()}
dcp.save({"model": sharded}, checkpoint_id=directory)
dist.barrier()  # both ranks done before either tears the group (and rank 0's store) down
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # skip the interpreter's teardown, where gloo's threads can abort a process at random
"""


@pytest.mark.slow
def test_a_checkpoint_sharded_over_two_ranks_is_merged(tmp_path):
    """What FSDP writes: DTensors sharded over the ranks of a process group, each rank its own data file."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "save.py").write_text(textwrap.dedent(SHARDED_SAVE))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    ckpt = tmp_path / "ckpt"
    ranks = [
        subprocess.Popen([sys.executable, str(tmp_path / "save.py"), str(rank), "2", str(ckpt)], env=env)
        for rank in range(2)
    ]
    assert [p.wait(timeout=300) for p in ranks] == [0, 0]

    resolved = resolve(ckpt)

    assert [p.name for p in resolved.paths] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert_same_tensors(resolved.state_dict, torch.load(str(ckpt) + ".expected.pt", weights_only=True))


def test_one_top_level_entry_is_dropped_as_accelerate_merge_weights_does(tmp_path):
    save_dcp(tmp_path / "ckpt", {"model": model_state()})

    assert_same_tensors(resolve(tmp_path / "ckpt").state_dict, model_state())


def test_model_weights_only_by_default_everything_on_request(tmp_path):
    state = training_state()
    save_dcp(tmp_path / "ckpt", state)

    loaded = resolve(tmp_path / "ckpt").state_dict
    everything = ckpt_formats_dcp.load_directory(tmp_path / "ckpt", model_only=False)

    assert_same_tensors(loaded, state["model"])
    assert set(everything) == {f"model.{k}" for k in state["model"]} | {
        f"optimizer.state.{i}.{name}" for i in range(4) for name in ("step", "exp_avg", "exp_avg_sq")
    }  # the learning rate, the param groups and the step counter are pickled objects: never read
    assert torch.equal(everything["optimizer.state.0.exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_several_entries_without_a_model_keep_their_flattened_names(tmp_path):
    save_dcp(tmp_path / "ckpt", {"ema": tiny_state_dict(1), "student": tiny_state_dict(2)})

    loaded = resolve(tmp_path / "ckpt").state_dict

    want = {f"ema.{k}": v for k, v in tiny_state_dict(1).items()}
    want |= {f"student.{k}": v for k, v in tiny_state_dict(2).items()}
    assert_same_tensors(loaded, want)


@pytest.mark.parametrize(
    ("state", "names"),
    [
        # one entry holding nested dicts: dropped, the rest joined with dots
        ({"net": {"encoder": {"w": torch.ones(2)}, "head": {"b": torch.zeros(1)}}}, ["encoder.w", "head.b"]),
        # the model's nested names, without the optimizer and the EMA beside it
        (
            {
                "model": {"encoder": {"w": torch.ones(2)}},
                "ema": {"w": torch.ones(3)},
                "opt": {"m": torch.ones(1)},
            },
            ["encoder.w"],
        ),
        # "model" is a tensor, not an entry holding the model's tensors: everything is kept
        ({"model": torch.ones(2), "scale": torch.ones(1)}, ["model", "scale"]),
        # a tensor beside the model (a step counter) is not the model's
        ({"model": {"w": torch.ones(2)}, "step": torch.tensor(3)}, ["w"]),
        # a tensor beside one other nested entry: nothing is dropped
        ({"net": {"w": torch.ones(2)}, "step": torch.tensor(3)}, ["net.w", "step"]),
    ],
)
def test_how_nested_names_are_flattened(tmp_path, state, names):
    save_dcp(tmp_path / "ckpt", state)

    assert sorted(resolve(tmp_path / "ckpt").state_dict) == names


def test_a_checkpoint_without_tensors_is_one_load_error(tmp_path):
    save_dcp(tmp_path / "ckpt", {"step": 3, "lr": 0.1})

    with pytest.raises(CheckpointLoadError) as err:
        resolve(tmp_path / "ckpt")
    assert str(err.value) == f"{tmp_path / 'ckpt' / '.metadata'}: the distributed checkpoint holds no tensor"


def test_safetensors_beside_it_wins_and_the_dcp_is_shadowed(tmp_path):
    save_dcp(tmp_path, model_state())
    write_safetensors(tmp_path / "model.safetensors", tiny_state_dict(5))

    resolved = resolve(tmp_path)

    assert resolved.format.name == "safetensors"
    assert [c.format for c in resolved.shadowed] == ["dcp"]
    assert_same_tensors(resolved.state_dict, tiny_state_dict(5))


def test_safe_only_refuses_it_like_a_pth(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())

    with pytest.raises(CheckpointNotFoundError, match=r"__0_0\.distcp.*dcp"):
        resolve(tmp_path / "ckpt", safe_only=True)
    with pytest.raises(CheckpointNotFoundError, match=r"refused by policy .*__0_0\.distcp \(dcp\)"):
        convert(tmp_path / "ckpt", tmp_path / "model.safetensors", safe_only=True)  # a folder: as resolve
    with pytest.raises(CheckpointLoadError, match="dcp format is disabled by the safety policy"):
        convert(tmp_path / "ckpt" / ".metadata", tmp_path / "model.safetensors", safe_only=True)
    assert not (tmp_path / "model.safetensors").exists()
    fmt = isolated_registry(entry_points=["dcp"]).get_format("dcp")
    assert (
        fmt.executes_code
        and fmt.priority < isolated_registry(entry_points=["safetensors"]).get_format("safetensors").priority
    )


def test_convert_the_folder_to_one_safetensors_file(tmp_path):
    state = training_state()
    save_dcp(tmp_path / "ckpt", state)

    out = cli("convert", tmp_path / "ckpt", tmp_path / "merged" / "model.safetensors")

    assert out.returncode == 0, out.stderr
    merged = resolve(tmp_path / "merged")
    assert merged.format.name == "safetensors"
    assert_same_tensors(merged.state_dict, state["model"])
    assert merged.metadata["ckpt_formats.source_format"] == "dcp"


def test_convert_with_max_shard_size_writes_a_sharded_set(tmp_path):
    g = torch.Generator().manual_seed(2)
    state = {f"layer{i}.weight": torch.randn(64, 64, generator=g) for i in range(4)}
    save_dcp(tmp_path / "ckpt", {"model": state})

    out = cli(
        "convert", tmp_path / "ckpt", tmp_path / "set" / "model.safetensors", "--max-shard-size", "20kB"
    )

    assert out.returncode == 0, out.stderr
    index = json.loads((tmp_path / "set" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 4  # 16 KB tensors: one per 20 KB shard
    assert_same_tensors(resolve(tmp_path / "set").state_dict, state)


def test_the_metadata_file_or_a_data_file_names_the_folder_too(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())

    for name in (".metadata", "__0_0.distcp"):
        report = convert(tmp_path / "ckpt" / name, tmp_path / f"from{name}.safetensors")
        assert report.source_format == "dcp" and report.tensors == len(model_state())


def test_inspect_the_folder(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())

    out = cli("inspect", tmp_path / "ckpt", "--json")

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["format"] == "dcp"


def test_a_folder_without_metadata_is_an_interrupted_save(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())
    (tmp_path / "ckpt" / ".metadata").unlink()

    with pytest.raises(CheckpointLoadError, match=r"\.metadata: missing"):
        resolve(tmp_path / "ckpt")


def test_a_missing_or_truncated_data_file_is_one_load_error(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())
    save_dcp(tmp_path / "two", training_state())
    data = tmp_path / "ckpt" / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[:100])
    (tmp_path / "two" / "__0_0.distcp").rename(tmp_path / "two" / "gone")

    with pytest.raises(CheckpointLoadError) as err:
        resolve(tmp_path / "ckpt")
    assert str(err.value).startswith(
        f"{tmp_path / 'ckpt'}: a data file of the distributed checkpoint is missing or unreadable (EOFError)"
    )
    with pytest.raises(CheckpointNotFoundError, match=r"\.metadata"):
        resolve(tmp_path / "two")  # no data file left: no candidate (hidden .metadata alone is nothing)


def test_one_missing_data_file_of_several_is_named(tmp_path):
    writer = dcp.FileSystemWriter(str(tmp_path / "ckpt"), single_file_per_rank=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(model_state(), storage_writer=writer, no_dist=True)
    (tmp_path / "ckpt" / "__0_1.distcp").unlink()

    with pytest.raises(CheckpointLoadError) as err:
        resolve(tmp_path / "ckpt")
    assert str(err.value).startswith(
        f"{tmp_path / 'ckpt'}: a data file of the distributed checkpoint is missing or unreadable "
        "(FileNotFoundError: [Errno 2] No such file or directory: "
    )
    assert "__0_1.distcp" in str(err.value)


def test_metadata_that_pickles_something_else_is_refused(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())
    (tmp_path / "ckpt" / ".metadata").write_bytes(pickle.dumps(argparse.Namespace(not_metadata=1)))

    with pytest.raises(
        CheckpointLoadError, match=r"\.metadata: holds Namespace, not distributed-checkpoint metadata"
    ):
        resolve(tmp_path / "ckpt")


def test_metadata_that_is_not_a_pickle_is_refused_before_loading(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())
    (tmp_path / "ckpt" / ".metadata").write_text("{}")

    with pytest.raises(CheckpointLoadError, match=r"\.metadata"):
        resolve(tmp_path / "ckpt")


def test_truncated_metadata_is_one_load_error(tmp_path):
    save_dcp(tmp_path / "ckpt", model_state())
    meta = tmp_path / "ckpt" / ".metadata"
    meta.write_bytes(meta.read_bytes()[:40])

    with pytest.raises(CheckpointLoadError, match="not readable distributed-checkpoint metadata"):
        resolve(tmp_path / "ckpt")


def test_list_shows_the_format_as_executing_code(tmp_path):
    out = cli("list", "--json")

    assert out.returncode == 0
    (dcp_row,) = [f for f in json.loads(out.stdout)["formats"] if f["name"] == "dcp"]
    assert dcp_row["executes_code"] is True and dcp_row["distribution"] == "ckpt-formats"


def test_any_folder_holding_one_checkpoint_is_a_source_and_the_resolve_rules_choose(tmp_path):
    from ckpt_formats.testing import write_sharded_safetensors

    write_sharded_safetensors(tmp_path / "set" / "model.safetensors", tiny_state_dict(4), max_shard_size=64)
    write_safetensors(tmp_path / "two" / "a.safetensors")
    write_safetensors(tmp_path / "two" / "b.safetensors")

    report = convert(tmp_path / "set", tmp_path / "out.safetensors")
    ambiguous = cli("convert", tmp_path / "two", tmp_path / "x.safetensors")

    assert report.source_format == "safetensors-sharded"
    assert_same_tensors(resolve(tmp_path, select="out.safetensors").state_dict, tiny_state_dict(4))
    assert (
        ambiguous.returncode == 1
        and "a.safetensors" in ambiguous.stderr
        and "b.safetensors" in ambiguous.stderr
    )
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.gpu
def test_loads_straight_onto_the_gpu(tmp_path):
    save_dcp(tmp_path / "ckpt", {"model": model_state()})

    loaded = resolve(tmp_path / "ckpt", device="cuda").state_dict

    assert {t.device.type for t in loaded.values()} == {"cuda"}
    assert_same_tensors({k: v.cpu() for k, v in loaded.items()}, model_state())
