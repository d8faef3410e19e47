"""The builtin ``onnx`` format: an ONNX model's initializers as a checkpoint (protobuf only), external data
read from inside the model's folder only, names mapped back when the export wrote the mapping."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import assert_same_tensors, run_main
from onnx import TensorProto, helper, numpy_helper

import ckpt_formats_onnx
from ckpt_formats import CheckpointError, CheckpointLoadError, resolve
from corridorkey_engine.export import targets


def tiny_model(path: Path, *, names: dict[str, str] | None = None, extra: dict | None = None) -> dict:
    """A two-initializer ONNX graph (y = x @ w + b) at ``path``; the arrays it holds."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    b = np.array([0.5, -1.0, 2.0, 1e-30], np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph)
    props = {"corridorkey.img_size": "128"}
    if names is not None:
        props[ckpt_formats_onnx.NAMES_KEY] = json.dumps(names)
    if extra is not None:
        props[ckpt_formats_onnx.EXTRA_TENSORS_KEY] = json.dumps(
            {
                k: base64.b64encode(numpy_helper.from_array(v).SerializeToString()).decode()
                for k, v in extra.items()
            }
        )
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return {"w": w, "b": b}


def test_the_keys_the_export_writes_are_the_ones_the_plugin_reads():
    assert targets.NAMES_KEY == ckpt_formats_onnx.NAMES_KEY
    assert targets.EXTRA_TENSORS_KEY == ckpt_formats_onnx.EXTRA_TENSORS_KEY


def test_initializers_under_their_graph_names_without_a_mapping(tmp_path):
    arrays = tiny_model(tmp_path / "m.onnx")
    resolved = resolve(tmp_path, hub=None)
    assert resolved.format.name == "onnx"
    assert_same_tensors(resolved.state_dict, {k: torch.from_numpy(v) for k, v in arrays.items()})
    assert resolved.metadata == {"corridorkey.img_size": "128"}


def test_a_mapping_names_the_weights_back_and_leaves_graph_constants_out(tmp_path):
    count = np.array(7, np.int64)
    arrays = tiny_model(
        tmp_path / "m.onnx", names={"w": "head.weight"}, extra={"head.bn.num_batches_tracked": count}
    )
    resolved = resolve(tmp_path, hub=None)
    expected = {"head.weight": torch.from_numpy(arrays["w"]), "head.bn.num_batches_tracked": torch.tensor(7)}
    assert_same_tensors(resolved.state_dict, expected)
    assert set(resolved.metadata) == {"corridorkey.img_size"}  # the mapping is the loader's business


def test_external_data_is_read_from_beside_the_model(tmp_path):
    arrays = tiny_model(tmp_path / "src.onnx")
    model = onnx.load(str(tmp_path / "src.onnx"))
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(
        model, str(folder / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0
    )
    assert (folder / "m.onnx.data").stat().st_size >= 64
    resolved = resolve(folder, hub=None)
    assert_same_tensors(resolved.state_dict, {k: torch.from_numpy(v) for k, v in arrays.items()})

    data = folder / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:20])
    with pytest.raises(CheckpointLoadError, match="truncated"):
        resolve(folder, hub=None)
    data.unlink()
    with pytest.raises(CheckpointLoadError, match="m.onnx.data of initializer .* is missing"):
        resolve(folder, hub=None)


def external_model(folder: Path, info: dict[str, str]) -> dict:
    """``folder/m.onnx`` whose first initializer (``w``, 48 bytes) is external data described by ``info``."""
    folder.mkdir(exist_ok=True)
    arrays = tiny_model(folder / "m.onnx")
    model = onnx.load(str(folder / "m.onnx"))
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.ClearField("float_data")
    init.data_location = TensorProto.EXTERNAL
    for key, value in info.items():
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    (folder / "m.onnx").write_bytes(model.SerializeToString())
    return arrays


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin", "sub/../inside.bin"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path, location):
    folder = tmp_path / "m"
    (tmp_path / "secret.bin").write_bytes(bytes(64))
    external_model(folder, {"location": location, "offset": "0", "length": "48"})
    (folder / "sub").mkdir()
    (folder / "inside.bin").write_bytes(bytes(64))  # inside, but named through "..": refused all the same
    message = f"an initializer's external data location {location!r} is outside the model's folder; refusing"
    with pytest.raises(CheckpointLoadError, match=re.escape(message)):
        resolve(folder, hub=None)


def test_external_data_without_offset_or_length_starts_at_the_beginning(tmp_path):
    arrays = external_model(tmp_path, {"location": "w.bin"})
    (tmp_path / "w.bin").write_bytes(arrays["w"].tobytes())
    state = resolve(tmp_path, hub=None).state_dict
    assert_same_tensors(state, {k: torch.from_numpy(v) for k, v in arrays.items()})


@pytest.mark.parametrize("names", ['{"w": 3}', '["w"]', "{not json"])
def test_a_broken_name_mapping_is_a_clear_error(tmp_path, names):
    tiny_model(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    helper.set_model_props(model, {ckpt_formats_onnx.NAMES_KEY: names})
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(CheckpointLoadError, match=f"m.onnx: metadata {ckpt_formats_onnx.NAMES_KEY} is not"):
        resolve(tmp_path, hub=None)


def test_corrupt_extra_tensors_name_the_file(tmp_path):
    tiny_model(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    helper.set_model_props(model, {ckpt_formats_onnx.EXTRA_TENSORS_KEY: '{"a": "!!not base64 of a tensor"}'})
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(
        CheckpointLoadError, match=f"m.onnx: metadata {ckpt_formats_onnx.EXTRA_TENSORS_KEY} is corrupt"
    ):
        resolve(tmp_path, hub=None)


@pytest.mark.parametrize(
    ("head", "onnx_like"), [(b"\x08\x08", True), (b"\x08\x00", False), (b"\x08\x80", False)]
)
def test_the_content_check_wants_a_small_ir_version_first(tmp_path, head, onnx_like):
    (tmp_path / "m.onnx").write_bytes(head + bytes(30))
    assert ckpt_formats_onnx.looks_like_onnx(tmp_path / "m.onnx") is onnx_like


def test_a_file_named_onnx_that_is_not_onnx_is_refused(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"PK\x03\x04 not a model at all")
    with pytest.raises(CheckpointError, match="m.onnx"):
        resolve(tmp_path, hub=None)


@pytest.mark.slow
def test_checkpoint_export_convert_round_trip_is_bit_equal(tmp_path):
    from ckpt_formats.cli import main as formats_main
    from corridorkey_engine.cli import main as corridorkey_main
    from corridorkey_engine.demo.clip import bundled_checkpoint_dir

    source = bundled_checkpoint_dir()
    exported = tmp_path / "k.onnx"
    proc = run_main(
        corridorkey_main,
        "corridorkey",
        ["export", str(exported), "--to", "onnx", "--checkpoint-dir", str(source), "-q"],
        {"CORRIDORKEY_DEVICE": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr
    inspected = run_main(formats_main, "ckpt-formats", ["inspect", str(exported)])
    assert "onnx" in inspected.stdout and "163" in inspected.stdout, inspected.stdout
    out = tmp_path / "x.safetensors"
    proc = run_main(formats_main, "ckpt-formats", ["convert", str(exported), str(out)])
    assert proc.returncode == 0, proc.stderr
    from safetensors.torch import load_file

    assert_same_tensors(load_file(out), load_file(source / "corridorkey_demo.safetensors"))


def test_reading_onnx_without_the_export_extra_names_it(tmp_path, monkeypatch):
    tiny_model(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed: import fails
    with pytest.raises(
        CheckpointLoadError, match=r"needs the 'export' extra: pip install 'ckpt-formats\[export\]'"
    ):
        resolve(tmp_path, hub=None)
