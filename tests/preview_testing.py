"""Helpers of the preview tests: a demo clip, a preview session built by the CLI's own functions (the
bundled demo model), a real server on 127.0.0.1 in a thread, and reading output folders."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from corridorkey_engine.demo.clip import bundled_checkpoint_dir, write_demo_clip

ENGINE_ARGS = ["--checkpoint-dir", str(bundled_checkpoint_dir()), "--device", "cpu"]
"""The checkpoint flags of the tests' previews: the bundled model on the CPU (where the references run, so
the comparisons are exact on a machine with a GPU too)."""
OUTPUT_FOLDERS = ("Matte", "FG", "Processed", "Comp")


def demo_clip(folder: Path, frames: int = 3, size: int | tuple[int, int] = 128, spill: bool = False) -> Path:
    """A synthetic green-screen clip (Input/ + AlphaHint/) in ``folder``; returns ``folder``. ``spill``:
    the subject's green is raised 60/255 above the mean of its red and blue (screen light spilling onto it),
    so despill has something to remove."""
    import cv2
    import numpy as np

    write_demo_clip(folder, frames=frames, size=size)
    for path in sorted((folder / "Input").iterdir()) if spill else []:
        bgr = cv2.imread(str(path)).astype(np.float32)
        subject = cv2.imread(str(folder / "AlphaHint" / path.name), cv2.IMREAD_GRAYSCALE) > 128
        spilled = np.maximum(bgr[..., 1], (bgr[..., 0] + bgr[..., 2]) / 2 + 60.0)
        bgr[subject, 1] = np.minimum(spilled[subject], 255.0)
        cv2.imwrite(str(path), np.round(bgr).astype(np.uint8))
    return folder


def session_for(paths: list[Path], **base):
    """A :class:`PreviewSession` over ``paths`` with the bundled model, built from the CLI's functions
    (the same command-line-to-options and command-line-to-engine code as ``corridorkey infer``)."""
    from corridorkey_engine.cli_preview import infer_engine, infer_options
    from corridorkey_engine.preview.session import PreviewSession
    from corridorkey_engine.preview.settings import Settings

    return PreviewSession(paths, Settings(**base), ENGINE_ARGS, infer_options, infer_engine)


@contextmanager
def running(session) -> Iterator:
    """A :class:`PreviewServer` for ``session`` serving on 127.0.0.1 (a free port) in a thread."""
    from corridorkey_engine.preview.server import PreviewServer

    server = PreviewServer(session)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.server.started:
            thread.join(0.02)
            assert thread.is_alive(), "the preview server did not start"
        yield server
    finally:
        server.stop()
        thread.join(30)


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    """Status and body of one request (errors included; 0 when nothing answers)."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""


def output_files(clip: Path) -> dict[str, bytes]:
    """Every file of the clip's output folders, relative name -> bytes."""
    found = {}
    for folder in OUTPUT_FOLDERS:
        for path in sorted((clip / folder).glob("*")) if (clip / folder).is_dir() else []:
            found[f"{folder}/{path.name}"] = path.read_bytes()
    return found


def chromium() -> str | None:
    """The system's Chromium (Debian's ``chromium`` package), or None."""
    path = os.environ.get("CORRIDORKEY_CHROMIUM", "/usr/bin/chromium")
    return path if Path(path).is_file() else None
