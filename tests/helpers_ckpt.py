"""Test helpers: a small random-weight GreenFormer checkpoint, and small generated green-screen clips.

The checkpoint is a real one (safetensors, config in its metadata) of a tiny Hiera at a small ``img_size``,
so the real engine loads it and runs it on the CPU in milliseconds per frame.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

TINY_IMG_SIZE = 64
TINY_ENCODER_KWARGS = {"embed_dim": 8, "num_heads": 1, "stages": (1, 1, 1, 1)}


def tiny_config(img_size: int = TINY_IMG_SIZE):
    from corridorkey_engine.model.config import GreenFormerConfig

    return GreenFormerConfig(
        encoder_kwargs=TINY_ENCODER_KWARGS, img_size=img_size, decoder_dim=16, refiner_channels=8
    )


def write_tiny_checkpoint(folder: Path, img_size: int = TINY_IMG_SIZE, seed: int = 0) -> Path:
    """Save a random-weight tiny GreenFormer as ``folder/model.safetensors``; returns the folder."""
    import torch
    from safetensors.torch import save_file

    from corridorkey_engine.model.network import GreenFormer

    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(img_size)
    torch.manual_seed(seed)
    model = GreenFormer(config)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata=config.to_metadata())
    return folder


# ------------------------------------------------------------------------------------------------ clips


def plate(h: int, w: int, t: int, screen: str = "green") -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` of a moving-disc shot: (uint8 RGB image, float32 true alpha)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, r = w * (0.3 + 0.1 * t), h * 0.5, min(h, w) * 0.25
    alpha = np.clip(r - np.hypot(xx - cx, yy - cy) + 0.5, 0.0, 1.0)
    bg = np.array([40, 180, 60] if screen == "green" else [30, 60, 190], np.float32)
    fg = np.array([200, 120, 90], np.float32) + 20.0 * np.sin(xx / 3.0)[..., None]
    img = alpha[..., None] * fg + (1.0 - alpha[..., None]) * bg
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), alpha.astype(np.float32)


def write_png_rgb(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_clip(
    root: Path,
    names: list[str],
    size: tuple[int, int] = (40, 56),
    *,
    hint: bool = True,
    screen: str = "green",
) -> Path:
    """A clip folder ``root`` with ``Input/<name>.png`` (and ``AlphaHint/<name>.png``) per name.

    Frame ``i`` (in the order given) shows the disc at position ``i``; its hint is the true alpha, dilated
    a little, so every frame (and its hint) differs and a mis-paired frame is visible.
    """
    h, w = size
    (root / "Input").mkdir(parents=True, exist_ok=True)
    if hint:
        (root / "AlphaHint").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        img, alpha = plate(h, w, i, screen)
        write_png_rgb(root / "Input" / f"{name}.png", img)
        if hint:
            mask = cv2.dilate((alpha > 0.5).astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
            assert cv2.imwrite(str(root / "AlphaHint" / f"{name}.png"), mask)
    return root


def run_cli(
    *args: str | os.PathLike,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    in_process: bool | None = None,
) -> subprocess.CompletedProcess:
    """Run ``corridorkey`` with ``args``; returns a CompletedProcess (exit status, stdout, stderr).

    By default in this process (``corridorkey_engine.cli.main``: the real parsing, pipeline, engine and
    writers, without a second interpreter start, and visible to mutation testing); in a subprocess through
    the real console script when ``env`` is given (variables read at import), for ``--ray`` (the driver is
    its own process), or when ``in_process=False``.
    """
    argv = [str(a) for a in args]
    if in_process is None:
        in_process = env is None and "--ray" not in argv
    if in_process:
        from conftest import run_main

        from corridorkey_engine.cli import main

        return run_main(main, "corridorkey", argv, {"CORRIDORKEY_DEVICE": "cpu"})
    exe = Path(sys.executable).with_name("corridorkey")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "corridorkey_engine.cli"]
    full_env = {**os.environ, "CORRIDORKEY_DEVICE": "cpu", **(env or {})}
    return subprocess.run(
        [*cmd, *argv], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )
