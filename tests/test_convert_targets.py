"""Conversion to any format with a ``save``, ``--dtype``, sharded safetensors sets, and writes that race.

Concurrency is tested with real processes: plain concurrent ``ckpt-formats convert`` runs, and children
whose target format waits (inside ``save``) until every child has written its temporary file, so that all of
them are past the early "already exists" check when they publish.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_tensors, run_main, tiny_state_dict, write_pth, write_safetensors

from ckpt_formats import CheckpointFormat, Registry, hookimpl, resolve
from ckpt_formats.atomic import is_temp_file, sweep_temps, temp_path_for, writing_in
from ckpt_formats.cli import main
from ckpt_formats.convert import ConversionError, convert, parse_size


def cli(*args):
    """``ckpt-formats ARGS`` in this process (:func:`conftest.run_main`)."""
    return run_main(main, "ckpt-formats", [str(a) for a in args])


def big_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {f"layer{i}.weight": torch.randn(64, 64, generator=g) for i in range(6)} | {
        "steps": torch.arange(10)
    }


# -- the target format comes from the output's name -------------------------------------------------------


def test_npz_is_a_target_because_its_plugin_can_save(tmp_path, registry):
    src = write_pth(tmp_path / "m.pth", {"model": tiny_state_dict()})

    report = convert(src, tmp_path / "m.npz", registry=registry)

    assert report.target_format == "npz" and report.files == [tmp_path / "m.npz"]
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        back = {k: torch.from_numpy(archive[k]) for k in archive.files}
    assert_same_tensors(back, tiny_state_dict())
    out = cli("convert", tmp_path / "m.npz", tmp_path / "again.safetensors")
    assert out.returncode == 0 and "as safetensors from m.npz (npz)" in out.stdout, out.stderr


def test_a_name_no_saving_format_matches_lists_the_targets(tmp_path):
    src = write_safetensors(tmp_path / "m.safetensors")

    out = cli("convert", src, tmp_path / "m.pt")

    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "no registered format that can save matches this name" in out.stderr
    assert "safetensors (*.safetensors); npz (*.npz)" in out.stderr
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_dtype_casts_floating_tensors_only(tmp_path, registry, dtype):
    src = write_pth(tmp_path / "m.pth")
    out = tmp_path / "m.safetensors"

    report = convert(src, out, registry=registry, dtype=dtype)

    want = getattr(torch, dtype)
    expected = {k: v.to(want) if v.is_floating_point() else v for k, v in tiny_state_dict().items()}
    back = resolve(tmp_path, formats=["safetensors"]).state_dict
    assert_same_tensors(back, expected)  # compared with the cast values, bit for bit
    assert back["head.steps"].dtype == torch.int64 and report.dtype == dtype


def test_cli_dtype_changes_the_written_dtypes(tmp_path):
    src = write_pth(tmp_path / "m.pth")

    plain = cli("convert", src, tmp_path / "a.safetensors", "--json")
    cast = cli("convert", src, tmp_path / "b.safetensors", "--dtype", "bfloat16")

    assert plain.returncode == 0 and cast.returncode == 0, cast.stderr
    assert json.loads(plain.stdout)["dtype"] is None and "cast to bfloat16" in cast.stdout
    dtypes = json.loads(cli("inspect", tmp_path / "b.safetensors", "--json").stdout)["dtypes"]
    assert dtypes == {"bfloat16": 3, "int64": 1}
    assert json.loads(cli("inspect", tmp_path / "a.safetensors", "--json").stdout)["dtypes"] == {
        "float16": 1,
        "float32": 2,
        "int64": 1,
    }
    bad = cli("convert", src, tmp_path / "c.safetensors", "--dtype", "float8")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


# -- sharded safetensors sets ------------------------------------------------------------------------------


def test_max_shard_size_writes_the_hugging_face_layout_and_resolves_bit_identical(tmp_path, registry):
    src = write_safetensors(tmp_path / "src.safetensors", big_state_dict(), {"note": "kept"})
    out = tmp_path / "set" / "model.safetensors"

    report = convert(src, out, registry=registry, max_shard_size=40_000)  # 2 tensors (32 KB) per shard

    names = sorted(p.name for p in (tmp_path / "set").iterdir())
    shards = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert names == sorted([*shards, "model.safetensors.index.json"])
    assert [p.name for p in report.files] == [*shards, "model.safetensors.index.json"]
    index = json.loads((tmp_path / "set" / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(big_state_dict()) and set(
        index["weight_map"].values()
    ) == set(shards)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in big_state_dict().values()
    )
    resolved = resolve(tmp_path / "set")
    assert resolved.format.name == "safetensors-sharded" and resolved.metadata["note"] == "kept"
    assert_same_tensors(resolved.state_dict, big_state_dict())
    assert report.target_format == "safetensors-sharded"


def test_cli_max_shard_size_and_a_set_that_fits_one_shard(tmp_path):
    src = write_safetensors(tmp_path / "src.safetensors", big_state_dict())

    out = cli("convert", src, tmp_path / "set" / "model.safetensors", "--max-shard-size", "50KB")
    one = cli("convert", src, tmp_path / "one" / "model.safetensors", "--max-shard-size", "1GB")

    assert out.returncode == 0, out.stderr
    assert "(3 files) as safetensors-sharded" in out.stdout  # 2 shards of 3 tensors (48 KB) and the index
    assert one.returncode == 0 and [p.name for p in (tmp_path / "one").iterdir()] == ["model.safetensors"]
    assert_same_tensors(resolve(tmp_path / "one").state_dict, big_state_dict())
    bad = cli("convert", src, tmp_path / "x" / "model.safetensors", "--max-shard-size", "lots")
    assert bad.returncode == 1 and "expected a positive size such as 2GB" in bad.stderr
    npz = cli("convert", src, tmp_path / "x" / "model.npz", "--max-shard-size", "1KB")
    assert npz.returncode == 1 and "must be named like model.safetensors" in npz.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GB", 2 * 10**9), ("500MB", 5 * 10**8), ("1GiB", 2**30), ("1.5kb", 1500), ("4096", 4096)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_force_replaces_a_set_and_removes_what_it_replaced(tmp_path, registry, caplog):
    src = write_safetensors(tmp_path / "src.safetensors", big_state_dict())
    folder = tmp_path / "set"
    convert(src, folder / "model.safetensors", registry=registry, max_shard_size=20_000)  # 6 shards
    with pytest.raises(ConversionError, match="already exists"):
        convert(src, folder / "model.safetensors", registry=registry, max_shard_size=40_000)

    with caplog.at_level(logging.INFO, logger="ckpt_formats"):
        convert(src, folder / "model.safetensors", registry=registry, max_shard_size=40_000, force=True)

    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        *(f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)),
        "model.safetensors.index.json",
    ]
    assert_same_tensors(resolve(folder).state_dict, big_state_dict())
    logged = [r.getMessage() for r in caplog.records]
    assert "removing model-00004-of-00006.safetensors, replaced by the new sharded set" in logged
    assert f"wrote {folder / 'model.safetensors'}: 3 shards and model.safetensors.index.json" in logged

    # one shard holds everything: a single file, and the set it replaces is removed (its index would win)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ckpt_formats"):
        convert(src, folder / "model.safetensors", registry=registry, max_shard_size=10**9, force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    logged = [r.getMessage() for r in caplog.records]
    assert "removing model.safetensors.index.json, replaced by model.safetensors" in logged
    convert(src, folder / "model.safetensors", registry=registry, max_shard_size=10**9, force=True)
    assert_same_tensors(resolve(folder).state_dict, big_state_dict())


def _registry_whose_save_fails_on_call(n: int) -> Registry:
    """safetensors whose save raises on its n-th call (an I/O error while writing the n-th shard)."""
    from safetensors.torch import load_file, save_file

    calls = []

    def save(state_dict, path, metadata):
        calls.append(path)
        save_file(dict(state_dict), str(path), metadata=dict(metadata))
        if len(calls) == n:
            raise OSError(5, "Input/output error")

    class Plugin:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            register(
                CheckpointFormat(
                    name="safetensors",
                    priority=100,
                    globs=("*.safetensors",),
                    load=lambda c, d: load_file(str(c.path), device=d),
                    save=save,
                )
            )

    registry = Registry(load_entry_points=False)
    registry.register(Plugin(), name="failing")
    return registry


def test_a_set_that_fails_midway_leaves_nothing_under_final_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_safetensors(src / "m.safetensors", big_state_dict())
    out = tmp_path / "set" / "model.safetensors"

    with pytest.raises(ConversionError, match="writing failed: OSError"):
        convert(
            src / "m.safetensors", out, registry=_registry_whose_save_fails_on_call(2), max_shard_size=40_000
        )

    assert list((tmp_path / "set").iterdir()) == []  # no shard, no index, no temporary


# -- concurrent converts, killed converts ------------------------------------------------------------------

GATED_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from safetensors.torch import load_file, save_file
    from ckpt_formats import CheckpointFormat, Registry, hookimpl
    from ckpt_formats.convert import convert, ConversionError

    src, out, expected, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

    def save(state_dict, path, metadata):
        save_file(dict(state_dict), str(path), metadata=dict(metadata))
        if mode == "hang":
            print(path, flush=True)
            time.sleep(120)
        deadline = time.monotonic() + 60
        # every child is writing (or one has already published, and removed its temporary)
        while len(list(out.parent.glob("." + out.name + ".*.tmp"))) < expected and not out.exists():
            assert time.monotonic() < deadline, "the other converts never started"
            time.sleep(0.02)

    class Gated:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            load = lambda c, d: load_file(str(c.path), device=d)
            register(CheckpointFormat(name="gated", priority=1, globs=("*.gated",), load=load, save=save))
            register(CheckpointFormat(name="st", priority=2, globs=("*.safetensors",), load=load))

    registry = Registry(load_entry_points=False)
    registry.register(Gated(), name="gated")
    try:
        report = convert(src, out, registry=registry)
    except ConversionError as exc:
        print("refused:", exc)
        sys.exit(1)
    print("wrote", report.output)
    """
)


@pytest.mark.slow
def test_of_concurrent_converts_past_the_check_exactly_one_writes(tmp_path):
    src = write_safetensors(tmp_path / "m.safetensors", big_state_dict())
    out = tmp_path / "out" / "model.gated"
    out.parent.mkdir()
    n = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GATED_CHILD, str(src), str(out), str(n), "gate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = [p.communicate(timeout=120) for p in procs]

    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1, 1, 1], results
    outputs = [stdout for stdout, _ in results]
    assert sum(o.startswith("wrote") for o in outputs) == 1
    refusals = [o for o in outputs if o.startswith("refused")]
    assert all("already exists (another convert placed it first)" in o for o in refusals), refusals
    assert [p.name for p in out.parent.iterdir()] == ["model.gated"]  # no temporary left
    assert_same_tensors(load_safetensors(out), big_state_dict())


def load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_concurrent_cli_converts_one_writes_the_others_refuse(tmp_path):
    src = write_pth(tmp_path / "m.pth", big_state_dict())
    out = tmp_path / "model.safetensors"
    command = [sys.executable, "-m", "ckpt_formats.cli", "convert", str(src), str(out)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]

    assert sorted(p.returncode for p in procs) == [0, 1, 1, 1], results
    assert sum("verified bit for bit" in stdout for stdout, _ in results) == 1
    assert all("already exists" in err for (_, err), p in zip(results, procs, strict=True) if p.returncode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth", "model.safetensors"]
    assert_same_tensors(load_safetensors(out), big_state_dict())


@pytest.mark.slow
def test_the_next_convert_sweeps_the_temporary_of_a_killed_one(tmp_path):
    src = write_safetensors(tmp_path / "m.safetensors", big_state_dict())
    out = tmp_path / "out" / "model.gated"
    out.parent.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", GATED_CHILD, str(src), str(out), "1", "hang"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        tmp = Path(child.stdout.readline().strip())
        assert is_temp_file(tmp, out.name) and tmp.stat().st_size > 0
        assert sweep_temps(out.parent, out.name) == 0  # its writer is alive: not swept
        assert tmp.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL and tmp.exists()  # the killed convert's leftover

    other = out.parent / "other.safetensors"  # another target's temporary is not this convert's to sweep
    other_tmp = temp_path_for(other)
    other_tmp.write_bytes(b"partial")
    done = cli("convert", src, out.with_suffix(".safetensors"))

    assert done.returncode == 0, done.stderr
    assert tmp.exists()  # a convert to another destination leaves it
    proc = subprocess.run(
        [sys.executable, "-c", GATED_CHILD, str(src), str(out), "1", "gate"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert not tmp.exists() and other_tmp.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["model.gated", "model.safetensors", other_tmp.name]
    )


def test_a_live_writer_in_the_folder_blocks_the_sweep(tmp_path):
    leftover = temp_path_for(tmp_path / "model.safetensors")
    leftover.write_bytes(b"partial")

    with writing_in(tmp_path):  # what every atomic write holds while it writes
        assert sweep_temps(tmp_path) == 0
    assert leftover.exists()
    assert sweep_temps(tmp_path) == 1 and not leftover.exists()


def test_an_exclusive_write_where_hard_links_are_refused_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from ckpt_formats.atomic import atomic_write

    def refuse(src, dst):  # what FAT or some network file systems answer
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    with pytest.raises(OSError, match="cannot make hard links.*--force") as err:
        atomic_write(tmp_path / "model.safetensors", lambda tmp: tmp.write_bytes(b"whole"), replace=False)
    assert err.value.errno == errno.EPERM and list(tmp_path.iterdir()) == []
    atomic_write(tmp_path / "model.safetensors", lambda tmp: tmp.write_bytes(b"whole"))  # replace works
    assert (tmp_path / "model.safetensors").read_bytes() == b"whole"


def test_a_disabled_format_is_not_a_target(tmp_path, registry, monkeypatch):
    src = write_safetensors(tmp_path / "m.safetensors")
    monkeypatch.setenv("CKPT_FORMATS_DISABLE", "npz")

    with pytest.raises(ConversionError, match=r"the conversion targets are: safetensors \(\*.safetensors\)$"):
        convert(src, tmp_path / "m.npz", registry=registry)
    assert not (tmp_path / "m.npz").exists()
