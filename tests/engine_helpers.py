"""Helpers for the engine tests: tiny real GreenFormers, and checkpoints of them on disk in any layout."""

from __future__ import annotations

from pathlib import Path

import torch

from corridorkey_engine.model.config import GreenFormerConfig
from corridorkey_engine.model.network import GreenFormer

TINY = GreenFormerConfig(
    encoder_kwargs={"embed_dim": 8, "num_heads": 1, "stages": [1, 1, 1, 1]},
    img_size=64,
    decoder_dim=16,
    refiner_channels=8,
)


def tiny_model(seed: int = 0, config: GreenFormerConfig = TINY) -> GreenFormer:
    """A randomly initialised tiny GreenFormer in eval mode, with non-trivial BatchNorm statistics and a
    refiner whose corrections are not negligible (so every tensor of a checkpoint matters)."""
    torch.manual_seed(seed)
    model = GreenFormer(config).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
        model.refiner.final.weight.normal_(0.0, 0.05)
    return model


def state_dict_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_safetensors(folder: Path, state_dict: dict[str, torch.Tensor], metadata=None, name="model") -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, str(folder / f"{name}.safetensors"), metadata=metadata)
    return folder


def write_pth(folder: Path, obj, name: str = "model") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(obj, folder / f"{name}.pth")
    return folder


def frame(height: int = 48, width: int = 80, seed: int = 0) -> tuple:
    """A float32 sRGB plate (a reddish disc on a green screen, noisy) and a soft hint for it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = np.clip(min(height, width) * 0.3 - np.hypot(xx - width * 0.45, yy - height * 0.5), 0.0, 1.0)
    screen = np.array([0.15, 0.65, 0.25], np.float32)
    subject = np.array([0.8, 0.45, 0.35], np.float32)
    image = disc[..., None] * subject + (1 - disc[..., None]) * screen
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1).astype(np.float32)
    return image, disc.astype(np.float32)


def tiny_engine(folder: Path, seed: int = 0):
    """A CPU CorridorKeyEngine loaded from a tiny checkpoint written to ``folder`` (through the registry)."""
    from corridorkey_engine import CorridorKeyEngine, save_checkpoint

    save_checkpoint(tiny_model(seed=seed), folder / "tiny.safetensors")
    return CorridorKeyEngine(folder, device="cpu")
