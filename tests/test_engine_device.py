"""Device and precision choice: explicit > $CORRIDORKEY_DEVICE > auto; never a slow dtype on the CPU."""

from __future__ import annotations

import logging

import pytest
import torch

from corridorkey_engine.device import DeviceUnavailableError, auto_device, resolve_device, resolve_dtype
from corridorkey_engine.errors import ConfigError


def test_explicit_argument_beats_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CORRIDORKEY_DEVICE", "cuda:7")  # would fail if it were consulted
    assert resolve_device("cpu") == torch.device("cpu")


def test_environment_beats_auto(monkeypatch) -> None:
    monkeypatch.setenv("CORRIDORKEY_DEVICE", "cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setenv("CORRIDORKEY_DEVICE", "auto")
    assert resolve_device(None) == auto_device()


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch) -> None:
    monkeypatch.delenv("CORRIDORKEY_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device(None).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_requested_without_cuda_is_one_clear_error(monkeypatch) -> None:
    with pytest.raises(DeviceUnavailableError, match=r"CUDA was requested .* --device cpu"):
        resolve_device("cuda")
    monkeypatch.setenv("CORRIDORKEY_DEVICE", "cuda")
    with pytest.raises(DeviceUnavailableError, match=r"\$CORRIDORKEY_DEVICE"):
        resolve_device(None)


def test_unknown_device_name() -> None:
    with pytest.raises(DeviceUnavailableError, match="not a device name"):
        resolve_device("gpu-please")


def test_precision_defaults_and_choices() -> None:
    cuda, mps = torch.device("cuda"), torch.device("mps")
    assert resolve_dtype(cuda) == torch.float16 and resolve_dtype(mps) == torch.float16
    assert resolve_dtype(cuda, "bf16") == torch.bfloat16
    assert resolve_dtype(cuda, "float32") == torch.float32
    assert resolve_dtype(cuda, torch.bfloat16) == torch.bfloat16
    with pytest.raises(ConfigError, match="precision must be one of") as err:
        resolve_dtype(cuda, "int8")
    assert isinstance(err.value, ValueError)  # what callers before ConfigError caught


def test_cpu_always_runs_float32(caplog) -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype(cpu) == torch.float32
    caplog.set_level(logging.WARNING, logger="corridorkey_engine")
    assert resolve_dtype(cpu, "float16") == torch.float32
    assert "float16 is slow on the CPU" in caplog.text
