"""The ``corridorkey`` options shared by its commands: value parsers and the option groups (engine and
checkpoint, screen colour, common flags), and the I/O thread defaults. Imports no torch.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .model.config import COMPILE_MODES
from .model.source import CHECKPOINT_DIR_ENV, PUBLISHED_MODELS, SCREEN_COLORS

CHOICE_ADVICE = "--select NAME or --exclude GLOB"
"""What the registry's ambiguity error tells a ``corridorkey`` user (its --select/--exclude flags)."""
PUBLISHED = "published"
"""``--hub``'s default: the published model of ``--screen-color`` (:data:`PUBLISHED_MODELS`)."""

DEVICE_HELP = (
    "cuda, cuda:N, mps, cpu or auto (default: $CORRIDORKEY_DEVICE, else auto: cuda when available, "
    "else mps, else cpu)"
)


def default_io_threads() -> int:
    """Reader (and writer) threads: half the CPU cores, at least 2, at most 8. Writing a 4K frame's four
    outputs takes about a CPU-second, so a fast GPU needs several writers to never wait."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def default_write_threads() -> int:
    """Writer threads: one per CPU core (at least 2, at most 16): encoding four 1080p EXR/PNG outputs is
    CPU work that can take longer than the GPU's frame."""
    return max(2, min(16, os.cpu_count() or 2))


def _outputs_arg(text: str) -> tuple[str, ...]:
    from .clips.pipeline import OUTPUTS  # light: no torch

    names = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if not names:
        raise argparse.ArgumentTypeError("give at least one output")
    if "all" in names:
        return tuple(OUTPUTS)
    bad = [n for n in names if n not in OUTPUTS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown output {bad[0]!r}; choose from {', '.join(OUTPUTS)} or all"
        )
    return names


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse ``type`` that keeps the text once ``check(text)`` accepts it; its ``ValueError`` (the
    engine's ``ConfigError`` is one) becomes argparse's usage error with the same message."""

    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def _frames(text: str) -> object:
    from .clips.frameranges import FrameSelection

    return FrameSelection.parse(text)


def _format(text: str) -> object:
    from .clips.outputs import parse_format_spec

    return parse_format_spec(text)


def _precision_name(text: str) -> object:
    from .device import precision_name  # torch: only when --precision is given

    return precision_name(text)


_frames_arg = _checked(_frames)
_format_arg = _checked(_format)
_precision = _checked(_precision_name)
"""``--frames``, ``--format`` and ``--precision``: checked by the rules that later apply them."""


def _number(kind: type, low: float | None = None, high: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)``, at least ``low`` and at most ``high`` when given."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if low is not None and high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {value}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


_positive_int = _number(int, low=1)


def _img_size(text: str) -> int:
    """An argparse ``type``: a model resolution, a positive multiple of 32 (Hiera's mask units)."""
    value = _positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 (Hiera's mask units), got {value}")
    return value


_unit_float = _number(float, low=0.0, high=1.0)
_float = _number(float)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log details; show tracebacks on errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary; errors only")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar per clip on stderr (default: only when stderr is a terminal)",
    )


def _add_screen_color(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--screen-color",
        choices=SCREEN_COLORS,
        default="green",
        help="the screen the clips are shot on: chooses the model (file names containing 'blue' are the "
        "blue-screen model), the despill channel and the --hint chroma key (green)",
    )


def _add_choice_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--select",
        metavar="NAME",
        help="the checkpoint file to use when the folder holds several (a name or a glob)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="ignore checkpoint files matching GLOB (repeatable); MLX weights (names containing 'mlx') "
        "are always ignored",
    )


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and device")
    g.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="folder holding the checkpoint (any registered format); fetched from the hub on first run "
        f"when empty (default: ${CHECKPOINT_DIR_ENV}, else ~/.cache/corridorkey/CorridorKey_v1.0, or "
        "CorridorKeyBlue_1.0 beside it with --screen-color blue)",
    )
    _add_screen_color(g)
    _add_choice_options(g)
    hub = g.add_mutually_exclusive_group()
    green, blue = PUBLISHED_MODELS["green"].repo_id, PUBLISHED_MODELS["blue"].repo_id
    hub.add_argument(
        "--hub",
        default=PUBLISHED,
        metavar="REPO_ID",
        help=f"Hugging Face repository to fetch from when the folder is empty ({green}; with "
        f"--screen-color blue {blue})",
    )
    hub.add_argument("--no-hub", dest="hub", action="store_const", const=None, help="never download")
    g.add_argument("--device", help=DEVICE_HELP)
    g.add_argument(
        "--precision",
        type=_precision,
        help="inference precision, e.g. fp16, bf16, fp32 (default: the engine's choice)",
    )
    g.add_argument("--img-size", type=_img_size, metavar="N", help="model resolution (multiple of 32)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first frame)")
    g.add_argument(
        "--compile-backend",
        dest="compile",
        metavar="BACKEND",
        help="torch.compile with this backend (implies --compile; default inductor): e.g. cudagraphs, eager",
    )
    g.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        help="torch.compile mode (implies --compile; default: default); compiled kernels are cached per user",
    )
    g.add_argument(
        "--low-vram",
        dest="low_memory",
        action=argparse.BooleanOptionalAction,
        default="auto",
        help="low-memory mode: the same output in under half the GPU memory, a little slower "
        "(default: chosen from the free GPU memory)",
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default="auto",
        help="run the refiner in the channels_last memory layout (default: on CUDA in half precision)",
    )
    g.add_argument(
        "--safe-only",
        action="store_true",
        default=None,
        help="never load a checkpoint format that can execute code (legacy .pth pickles)",
    )
