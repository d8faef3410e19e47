"""Which device the engine runs on, and in which dtype.

Device: the explicit argument, else ``CORRIDORKEY_DEVICE``, else the best available (cuda > mps > cpu).
Dtype: float16 on CUDA and MPS by default (float32 and bfloat16 selectable); always float32 on the CPU,
where half precision has no fast kernels (upstream's float16 autocast took minutes per frame there).
"""

from __future__ import annotations

import logging
import os

import torch

from .errors import ConfigError, DeviceUnavailableError

logger = logging.getLogger(__name__)

DEVICE_ENV = "CORRIDORKEY_DEVICE"
PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def auto_device() -> torch.device:
    """The best device present: cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def cuda_unavailable_reason() -> str:
    """Why CUDA cannot be used here, consistent with the PyTorch build: a CPU-only build, or a CUDA build
    that finds no driver or GPU (with the driver's own words)."""
    build = f"PyTorch {torch.__version__}"
    if not torch.version.cuda:
        return (
            f"{build} is a CPU-only build; install a CUDA build of PyTorch "
            "(https://pytorch.org/get-started/locally/)"
        )
    try:
        torch.cuda.init()
        why = f"it sees {torch.cuda.device_count()} CUDA device(s)"
    except Exception as exc:  # torch raises RuntimeError/AssertionError with the driver's reason
        text = str(exc).strip().splitlines()
        why = text[0].rstrip(".") if text else type(exc).__name__
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    mask = f", CUDA_VISIBLE_DEVICES={hidden!r}" if hidden is not None else ""
    return (
        f"{build} is built for CUDA {torch.version.cuda}, but no usable NVIDIA GPU or driver was found "
        f"({why}{mask}); check the driver with `nvidia-smi`"
    )


def resolve_device(requested: str | torch.device | None = None) -> torch.device:
    """``requested`` > ``$CORRIDORKEY_DEVICE`` > :func:`auto_device`; ``"auto"`` means auto.

    Raises :class:`DeviceUnavailableError` when the device named is not usable here.
    """
    source = "device argument"
    if requested is None or str(requested).strip() == "":
        requested, source = os.environ.get(DEVICE_ENV, "").strip() or None, f"${DEVICE_ENV}"
    if requested is None or str(requested).strip().lower() == "auto":
        return auto_device()
    try:
        device = torch.device(str(requested).strip().lower())
    except RuntimeError as exc:
        raise DeviceUnavailableError(
            f"{source}: {requested!r} is not a device name; use cuda, cuda:N, mps, cpu or auto"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"{source}: CUDA was requested ({requested!r}) but is not available: "
                f"{cuda_unavailable_reason()}; or choose --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"{source}: {requested!r} does not exist: this machine has {torch.cuda.device_count()} "
                "CUDA device(s), numbered from 0"
            )
    elif device.type == "mps" and not _mps_available():
        raise DeviceUnavailableError(f"{source}: MPS was requested but is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailableError(f"{source}: unsupported device {requested!r}; use cuda, mps or cpu")
    return device


def resolve_dtype(device: torch.device, precision: str | torch.dtype | None = None) -> torch.dtype:
    """The weights' dtype: ``precision`` (float16/bfloat16/float32) on CUDA and MPS, float16 when None;
    float32 on the CPU whatever is asked (a request for half precision there logs a warning)."""
    if isinstance(precision, torch.dtype):
        dtype = precision
        if dtype not in PRECISIONS.values():
            raise _precision_error(precision)
    elif precision is None:
        dtype = torch.float32 if device.type == "cpu" else torch.float16
    else:
        dtype = PRECISIONS[precision_name(precision)]
    if device.type == "cpu" and dtype != torch.float32:
        logger.warning("%s is slow on the CPU: running in float32 instead", str(dtype).removeprefix("torch."))
        dtype = torch.float32
    return dtype


def precision_name(precision: str) -> str:
    """``float16``, ``bfloat16`` or ``float32`` for a precision name or alias (``fp16``, ``bf16``...).

    Raises:
        ConfigError: not a precision this engine runs in.
    """
    name = _ALIASES.get(precision.strip().lower(), precision.strip().lower())
    if name not in PRECISIONS:
        raise _precision_error(precision)
    return name


def _precision_error(precision: object) -> ConfigError:
    names = ", ".join(sorted(PRECISIONS))
    return ConfigError(f"precision must be one of {names} (or {', '.join(_ALIASES)}), got {precision!r}")
