"""How much activation memory a GreenFormer forward needs, counted tensor by tensor.

:class:`ActivationMeter` follows every tensor that torch operators create while it is active and records
the peak of the bytes alive at once (storages are counted once, however many views share them; a storage
is dead when nothing refers to it any more). It sees what the model's code keeps alive, on any device,
the ``meta`` device included: :func:`activation_peak` runs the model on ``meta`` (no memory, no arithmetic)
and so tells in a second what a 2048 forward holds at its peak, on a machine without a GPU. It does not see
what a library allocates for itself (cuDNN workspaces, the caching allocator's rounding and
fragmentation): a GPU's ``torch.cuda.max_memory_allocated`` is the measurement, this is the model's share.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .config import GreenFormerConfig

GIB = 1024**3


class ActivationMeter(TorchDispatchMode):
    """Counts the bytes of the tensors created while active: ``live`` now, ``peak`` at most.

    Tensors that existed before (weights, inputs) are not counted, nor are in-place results written into
    them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, Any] = {}

    def _release(self, key: int, size: int) -> None:
        self._tracked.pop(key, None)
        self.live -= size

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._tracked:
            return
        size = storage.nbytes()
        self._tracked[key] = weakref.finalize(storage, self._release, key, size)
        self.live += size
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for finalizer in list(self._tracked.values()):
            finalizer.detach()  # counting stops here; nothing refers to the meter afterwards
        self._tracked.clear()


def activation_peak(
    config: GreenFormerConfig,
    *,
    dtype: torch.dtype = torch.float16,
    batch: int = 1,
    refiner_tile: int | None = None,
    img_size: int | None = None,
) -> int:
    """The peak bytes of activations a forward of ``config``'s model holds at ``img_size`` (default the
    config's), in ``dtype``, with ``batch`` frames; ``refiner_tile``: the low-memory mode's tile. Counted on
    the ``meta`` device with the normalisation CUDA uses (see the module's docstring); the input itself is not
    counted. Counted once per process for each set of arguments (about 1.5 s for the published model:
    ``low_memory="auto"`` asks at every CUDA engine load, the preview at each model setting)."""
    from dataclasses import asdict, replace

    if img_size is not None and img_size != config.img_size:
        config = replace(config, img_size=img_size)
    key = (json.dumps(asdict(config), sort_keys=True), dtype, batch, refiner_tile)
    with _PEAKS_LOCK:
        if key not in _PEAKS:
            _PEAKS[key] = _count_peak(config, dtype, batch, refiner_tile)
        return _PEAKS[key]


_PEAKS: dict[tuple[str, torch.dtype, int, int | None], int] = {}
_PEAKS_LOCK = threading.Lock()


def _count_peak(config: GreenFormerConfig, dtype: torch.dtype, batch: int, refiner_tile: int | None) -> int:
    from .network import build_greenformer
    from .norm import SpatialGroupNorm

    model = build_greenformer(config, "meta").to(dtype).eval()
    model.refiner_tile = refiner_tile
    for module in model.modules():
        if isinstance(module, SpatialGroupNorm):
            module.kernel = "spatial"  # what runs on CUDA
    size = config.img_size
    inputs = torch.empty((batch, config.in_channels, size, size), dtype=dtype, device="meta")
    with torch.inference_mode(), ActivationMeter() as meter:
        model(inputs)
    return meter.peak
