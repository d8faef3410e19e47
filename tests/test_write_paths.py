"""Interrupted writes leave no partial file under the final name; convert's verification really verifies;
a hub fetch places a sharded set index-last and a lone index is not "already fetched".

Interruptions are real: an exception raised inside the write, a write past the process's file-size limit
(RLIMIT_FSIZE, the way a full disk fails), or a child process SIGKILLed while its temporary file exists.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import assert_same_tensors, tiny_state_dict, write_pth

import ckpt_formats_pickle
import ckpt_formats_safetensors
from ckpt_formats import Registry, hookimpl
from ckpt_formats.atomic import is_temp_file, sweep_temps
from ckpt_formats.convert import ConversionError, convert

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, *args: str | os.PathLike, **kwargs) -> subprocess.Popen:
    """A child interpreter running ``code`` (dedented) with ``args`` in sys.argv[1:]."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def temps(folder: Path, target: str) -> list[Path]:
    return [p for p in folder.iterdir() if is_temp_file(p, target)]


KILLED_AT = """
    import resource, runpy, signal, sys
    limit = int(sys.argv.pop(1))
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # past the limit, the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    sys.argv = sys.argv[1:]
    exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"), {"__name__": "__main__"})
"""


def killed_at_byte(
    code: str, limit: int, *args: str | os.PathLike, folder: Path
) -> subprocess.CompletedProcess:
    """Run ``code`` in a child that the kernel kills (SIGXFSZ) the moment a write passes ``limit`` bytes:
    a kill in the middle of a write at a known point, with no timing involved (never a skip)."""
    script = folder.parent / f"{folder.name}-child.py"
    script.write_text(textwrap.dedent(code))
    child = python(KILLED_AT, limit, script, *args)
    out, err = child.communicate(timeout=300)
    script.unlink()
    assert child.returncode == -signal.SIGXFSZ, f"status {child.returncode}, not killed mid-write:\n{err}"
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def assert_only_hidden_leftovers(folder: Path, final: Path, keep: set[str]) -> None:
    """Nothing under the final name; what the killed writer left is hidden (never a candidate), and the
    project's sweep removes its own temporaries."""
    assert not final.exists(), f"a partial file was left under the final name {final}"
    left = {p.name for p in folder.iterdir()} - keep
    assert all(name.startswith(".") for name in left), left
    sweep_temps(folder, final.name)  # what the next write of that file does first
    assert {p.name for p in folder.iterdir()} == keep  # nothing left behind, not even hidden


def big_state_dict(megabytes: int) -> dict[str, torch.Tensor]:
    n = megabytes * (1 << 20) // 4 // 8
    return {f"layer{i}.weight": torch.full((n,), float(i)) for i in range(8)}


# ------------------------------------------------------------------------------------------- convert


def test_convert_killed_mid_write_leaves_no_output(tmp_path: Path) -> None:
    src = write_pth(tmp_path / "big.pth", big_state_dict(4))
    out = tmp_path / "big.safetensors"
    code = "import sys; from ckpt_formats.convert import convert; convert(sys.argv[1], sys.argv[2])"

    killed_at_byte(code, 1 << 20, src, out, folder=tmp_path)

    assert_only_hidden_leftovers(tmp_path, out, {"big.pth"})


def registry_saving_with(save):
    """A third-party-style plugin registering the "safetensors" target with another ``save``."""

    class Plugin:
        @hookimpl
        def ckpt_formats_register_formats(self, register):
            register(replace(ckpt_formats_safetensors.SAFETENSORS, save=save))

    registry = Registry(load_entry_points=False)
    registry.register(ckpt_formats_pickle)
    registry.register(Plugin(), name="third-party-safetensors")
    return registry


def test_convert_exception_inside_the_write_leaves_no_output(tmp_path: Path) -> None:
    def save_half_then_fail(state_dict, path, metadata):
        ckpt_formats_safetensors.save_file(state_dict, path, metadata)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    src = write_pth(tmp_path / "m.pth")
    out = tmp_path / "m.safetensors"
    with pytest.raises(ConversionError) as err:
        convert(src, out, registry=registry_saving_with(save_half_then_fail))
    assert str(err.value) == (
        f"{out}: not enough disk space to write it (No space left on device); nothing was written. Free some "
        f"space in {tmp_path} and retry"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]


def _flip_one_value(state, path, meta):
    state = dict(state)
    state["encoder.bias"] = state["encoder.bias"].clone()
    state["encoder.bias"][0] += 1
    ckpt_formats_safetensors.save_file(state, path, meta)


def _flip_one_bit_of_a_zero(state, path, meta):
    state = dict(state)  # +0.0 -> -0.0: equal as numbers, different bits
    state["encoder.bias"] = torch.zeros_like(state["encoder.bias"]).neg()
    ckpt_formats_safetensors.save_file(state, path, meta)


def _drop_a_tensor(state, path, meta):
    ckpt_formats_safetensors.save_file({k: v for k, v in state.items() if k != "head.steps"}, path, meta)


def _add_a_tensor(state, path, meta):
    ckpt_formats_safetensors.save_file({**state, "extra": torch.zeros(1)}, path, meta)


def _change_a_dtype(state, path, meta):
    ckpt_formats_safetensors.save_file(
        {**state, "head.steps": state["head.steps"].to(torch.int32)}, path, meta
    )


def _change_a_shape(state, path, meta):
    ckpt_formats_safetensors.save_file(
        {**state, "encoder.weight": state["encoder.weight"].reshape(3, 4)}, path, meta
    )


@pytest.mark.parametrize(
    ("save", "message"),
    [
        (_flip_one_value, "encoder.bias reloaded with different values"),
        (_flip_one_bit_of_a_zero, "encoder.bias reloaded with different values"),
        (_drop_a_tensor, "reloaded keys differ (missing ['head.steps'], unexpected [])"),
        (_add_a_tensor, "reloaded keys differ (missing [], unexpected ['extra'])"),
        (_change_a_dtype, "head.steps reloaded as torch.int32[5], expected torch.int64[5]"),
        (_change_a_shape, "encoder.weight reloaded as torch.float32[3, 4], expected torch.float32[4, 3]"),
    ],
)
def test_convert_fails_when_the_written_file_differs_from_the_source(tmp_path: Path, save, message) -> None:
    state = tiny_state_dict()
    if save is _flip_one_bit_of_a_zero:
        state["encoder.bias"] = torch.zeros(4)
    src = write_pth(tmp_path / "m.pth", state)
    out = tmp_path / "m.safetensors"

    with pytest.raises(ConversionError) as err:
        convert(src, out, registry=registry_saving_with(save))

    assert str(err.value) == f"{out}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]


def test_convert_with_a_faithful_third_party_target_succeeds(tmp_path: Path) -> None:
    """The same seam with an honest save: the failures above come from the comparison alone."""
    src = write_pth(tmp_path / "m.pth")
    registry = registry_saving_with(ckpt_formats_safetensors.save_file)
    report = convert(src, tmp_path / "m.safetensors", registry=registry)
    assert report.tensors == 4
    from safetensors.torch import load_file

    assert_same_tensors(load_file(tmp_path / "m.safetensors"), tiny_state_dict())


# ----------------------------------------------------------------------------------- save_checkpoint


@contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG (RLIMIT_FSIZE): how a full disk fails, mid-write."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_save_checkpoint_failing_mid_write_leaves_no_file(tmp_path: Path) -> None:
    from engine_helpers import tiny_model

    from corridorkey_engine import save_checkpoint

    model = tiny_model()
    whole = save_checkpoint(model, tmp_path / "whole.safetensors").stat().st_size
    target = tmp_path / "model.safetensors"

    with file_size_limit(whole // 2), pytest.raises(Exception, match="File too large"):
        save_checkpoint(model, target)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.safetensors"]


def test_convert_failing_mid_write_leaves_no_output(tmp_path: Path) -> None:
    src = write_pth(tmp_path / "m.pth", big_state_dict(4))
    out = tmp_path / "m.safetensors"

    with file_size_limit(1 << 20), pytest.raises(ConversionError, match="File too large") as err:
        convert(src, out)

    # EFBIG is reported with ENOSPC and EDQUOT: the output did not fit (ckpt_formats.errors.NO_SPACE_ERRNOS)
    assert str(err.value).startswith(f"{out}: not enough disk space to write it (File too large)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]


BIG_MODEL = """
    import sys
    import torch
    from corridorkey_engine import GreenFormerConfig, build_greenformer, save_checkpoint

    def big_model():  # about 120 MB of weights, filled with a constant (no slow initialisation)
        config = GreenFormerConfig(
            encoder_kwargs={"embed_dim": 112, "num_heads": 2, "stages": [1, 1, 4, 2]},
            img_size=64, decoder_dim=256, refiner_channels=64,
        )
        model = build_greenformer(config).to_empty(device="cpu")
        with torch.no_grad():
            for tensor in model.state_dict().values():
                tensor.fill_(1)
        return model

    if __name__ == "__main__":
        save_checkpoint(big_model(), sys.argv[1])
"""


def test_save_checkpoint_killed_mid_write_leaves_no_file(tmp_path: Path) -> None:
    code = """
        import sys
        from engine_helpers import tiny_model
        from corridorkey_engine import save_checkpoint
        save_checkpoint(tiny_model(), sys.argv[1])
    """
    target = tmp_path / "model.safetensors"

    killed_at_byte(code, 20_000, target, folder=tmp_path)  # the tiny model is about 320 KB

    assert_only_hidden_leftovers(tmp_path, target, set())


# --------------------------------------------------------------------------- hub placement of a set

INDEX = "model.safetensors.index.json"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def sharded_repo() -> dict[str, bytes]:
    from safetensors.torch import save

    state = tiny_state_dict()
    halves = [dict(list(state.items())[:2]), dict(list(state.items())[2:])]
    files = {name: save(half) for name, half in zip(SHARDS, halves, strict=True)}
    weight_map = {key: name for name, half in zip(SHARDS, halves, strict=True) for key in half}
    files[INDEX] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


def hub_source(hub, cache: Path):
    from hub_testing import REPO

    from ckpt_formats import HubSource

    return HubSource(REPO, endpoint=hub.url, cache_dir=cache, token=False, progress=False, timeout=5.0)


def sharded_formats():
    return Registry().formats(names=["safetensors-sharded", "safetensors"])


CRASH_CHILD = """
    import os, signal, sys
    from pathlib import Path
    from ckpt_formats import HubSource, Registry
    from ckpt_formats.hub import fetch

    endpoint, cache, target, repo = sys.argv[1:5]
    real_replace = os.replace

    def crash_after_first_placement(src, dst):  # the machine dies right after one file is placed
        real_replace(src, dst)
        if Path(dst).parent == Path(target):
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = crash_after_first_placement
    source = HubSource(repo, endpoint=endpoint, cache_dir=cache, token=False, progress=False)
    fetch(source, target, Registry().formats(names=["safetensors-sharded", "safetensors"]))
"""


@pytest.mark.slow
def test_a_crash_between_shards_and_index_never_leaves_the_index(hub, cache: Path, tmp_path: Path) -> None:
    from hub_testing import REPO

    from ckpt_formats import resolve
    from ckpt_formats.hub import fetch

    files = sharded_repo()
    hub.add_repo(REPO, files)
    target = tmp_path / "ckpt"

    child = python(CRASH_CHILD, hub.url, cache, target, REPO)
    _, err = child.communicate(timeout=120)

    assert child.returncode == -signal.SIGKILL, err
    placed = sorted(p.name for p in target.iterdir() if not p.name.startswith("."))
    assert INDEX not in placed  # the index goes last: it never names shards that are not there
    assert len(placed) == 1 and placed[0] in SHARDS

    # the next fetch does not take the folder for fetched: it completes the set
    assert fetch(hub_source(hub, cache), target, sharded_formats()) == [target / n for n in (INDEX, *SHARDS)]
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    assert_same_tensors(resolve(target).state_dict, tiny_state_dict())


def test_an_index_without_its_shards_is_not_already_fetched(hub, cache: Path, tmp_path: Path) -> None:
    from hub_testing import REPO

    from ckpt_formats.hub import fetch

    files = sharded_repo()
    hub.add_repo(REPO, files)
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / INDEX).write_bytes(files[INDEX])  # what an index-first crash would leave
    (target / SHARDS[1]).write_bytes(files[SHARDS[1]])

    placed = fetch(hub_source(hub, cache), target, sharded_formats())

    assert placed == [target / n for n in (INDEX, *SHARDS)]
    assert ("cdn", "GET", SHARDS[0]) in hub.seen()
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    before = len(hub.requests)  # now it is fetched: nothing is asked for again
    assert fetch(hub_source(hub, cache), target, sharded_formats()) == placed
    assert len(hub.requests) == before


def test_a_manifest_write_failing_midway_keeps_the_previous_manifest_whole(tmp_path: Path) -> None:
    import errno

    from corridorkey_engine.clips.manifest import MANIFEST_NAME, read_manifest, record_run

    out = tmp_path / "shot"
    out.mkdir()
    record_run(out, {"matte": {"img_size": 64, "despill": 0.5}}, {"program": "first run"})
    before = (out / MANIFEST_NAME).read_bytes()
    changed = {"matte": {"img_size": 64, "despill": 0.25, "note": "x" * 4000}}  # a longer manifest

    with file_size_limit(len(before) + 100), pytest.raises(OSError) as err:
        record_run(out, changed, {"program": "second run"})

    assert err.value.errno == errno.EFBIG
    assert (out / MANIFEST_NAME).read_bytes() == before  # the old one, whole
    assert read_manifest(out)["about"] == {"program": "first run"}
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]  # no temporary, no probe left
    record_run(out, changed, {"program": "second run"})  # the same write, with room, succeeds
    assert read_manifest(out)["outputs"]["matte"]["settings"] == changed["matte"]
