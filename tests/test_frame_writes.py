"""Deterministic interruption of every clip output write (each output, each file type): a file size limit
(RLIMIT_FSIZE) fails the write halfway (EFBIG). No timing is involved, so these tests never skip: a writer
that wrote to the final name would leave a partial file there (over the previous whole one), and fail."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_ckpt import TINY_IMG_SIZE, run_cli
from test_write_paths import file_size_limit

from ckpt_formats.atomic import is_temp_file

FOLDERS = {"matte": "Matte", "fg": "FG", "processed": "Processed", "comp": "Comp"}


def noise_clip(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for part in ("Input", "AlphaHint"):
        (root / part).mkdir(parents=True)
    assert cv2.imwrite(str(root / "Input" / "f_1.png"), rng.integers(0, 256, (192, 256, 3), np.uint8))
    assert cv2.imwrite(str(root / "AlphaHint" / "f_1.png"), rng.integers(0, 256, (192, 256), np.uint8))
    return root


@pytest.mark.parametrize("filetype", ["exr", "png"])
@pytest.mark.parametrize("kind", list(FOLDERS))
def test_a_frame_write_cut_halfway_leaves_the_previous_file_whole(tmp_path, ckpt_dir, kind, filetype):
    clip = noise_clip(tmp_path / "shot")
    args = ["infer", clip, "--checkpoint-dir", ckpt_dir, "--img-size", TINY_IMG_SIZE, "--outputs", kind,
            "--format", f"{kind}={filetype}", "--no-despeckle"]  # fmt: skip
    assert run_cli(*args).returncode == 0
    final = clip / FOLDERS[kind] / f"f_1.{filetype}"
    whole = final.read_bytes()
    manifest = (clip / "corridorkey.json").stat().st_size
    limit = len(whole) // 2
    assert limit > 2 * manifest, "the output must be larger than the manifest for the cut to hit it"

    with file_size_limit(limit):
        cut = run_cli(*args, "--overwrite")

    assert cut.returncode == 1
    error = cut.stderr.splitlines()[-1]
    assert error.startswith(f"corridorkey: error: {final}: could not write the {kind} output ("), error
    assert "File too large" in error and ".tmp" not in error and "--output DIR" in error, error
    assert final.read_bytes() == whole  # the previous file, whole: never a partial one under the name
    assert [p for p in final.parent.iterdir() if is_temp_file(p)] == []
