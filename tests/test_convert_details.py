"""What ``convert`` reports and logs, to the detail (written to kill the mutants scripts/mutation found
surviving in ckpt_formats.convert)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import tiny_state_dict, write_pth
from test_write_paths import registry_saving_with

import ckpt_formats_safetensors
from ckpt_formats.convert import ConversionError, convert


def test_report_and_log_name_the_files_tensors_and_bytes(tmp_path: Path, registry, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ckpt_formats")
    src = write_pth(tmp_path / "m.pth", {**tiny_state_dict(), "lr": 0.1})
    out = tmp_path / "nested" / "deeper" / "m.safetensors"  # folders are created

    report = convert(src, out, registry=registry)

    assert report.output == out and report.source == src and report.source_format == "pickle"
    assert report.tensors == 4 and report.bytes == 12 * 4 + 4 * 4 + 8 * 2 + 5 * 8
    assert report.skipped == ["lr"] and report.unshared == []
    messages = [r.getMessage() for r in caplog.records if r.name == "ckpt_formats.convert"]
    assert "m.pth: skipping non-tensor entry 'lr'" in messages
    assert f"converted {src} (pickle) to {out} (safetensors): 4 tensors, 120 bytes" in messages


def test_empty_tensors_do_not_count_as_sharing_storage(tmp_path: Path, registry) -> None:
    src = write_pth(tmp_path / "m.pth", {"a": torch.zeros(0), "b": torch.zeros(0, 3), "c": torch.ones(2)})

    report = convert(src, tmp_path / "m.safetensors", registry=registry)

    assert report.unshared == []


def test_keys_that_collide_once_prefixes_are_stripped_name_the_file(tmp_path: Path, registry) -> None:
    src = write_pth(tmp_path / "twice.pth", {"w": torch.ones(2), "module.w": torch.zeros(2)})

    with pytest.raises(ConversionError) as err:
        convert(src, tmp_path / "twice.safetensors", registry=registry)

    assert str(err.value) == f"{src}: two entries become 'w' once prefixes are stripped"
    assert not (tmp_path / "twice.safetensors").exists()


def test_key_differences_list_the_first_three_names(tmp_path: Path) -> None:
    def drop_four(state, path, meta):
        kept = {k: v for k, v in state.items() if not k.startswith("drop")}
        ckpt_formats_safetensors.save_file(
            {**kept, **{f"new{i}": torch.zeros(1) for i in range(4)}}, path, meta
        )

    registry = registry_saving_with(drop_four)
    src = write_pth(tmp_path / "m.pth", {f"drop{i}": torch.ones(1) for i in range(4)})
    out = tmp_path / "m.safetensors"

    with pytest.raises(ConversionError) as err:
        convert(src, out, registry=registry)

    assert str(err.value) == (
        f"{out}: reloaded keys differ (missing ['drop0', 'drop1', 'drop2'], "
        "unexpected ['new0', 'new1', 'new2'])"
    )


def test_state_dict_cleanup_details(caplog) -> None:
    from ckpt_formats.statedict import clean_state_dict, strip_prefixes, unwrap

    assert strip_prefixes("module._orig_mod.module.w") == "w"
    with pytest.raises(TypeError) as err:
        clean_state_dict([torch.ones(1)])
    assert str(err.value) == "expected a mapping of tensors, got list"

    caplog.set_level(logging.DEBUG, logger="ckpt_formats.statedict")
    inner = {"w": torch.ones(1)}
    wrapped = {"epoch": 1, "a": 2, "b": 3, "c": 4, "d": 5, "model": inner}
    assert unwrap(wrapped) is inner
    assert caplog.messages == ["unwrapping checkpoint wrapper (keys: epoch, a, b, c, d)"]
