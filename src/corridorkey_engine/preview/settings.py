"""The page's settings: checked values, the exact ``corridorkey infer`` command line they are, and the
clip's saved settings (``corridorkey-preview.json`` in the clip folder).

The command line is the settings' one source of truth: a preview frame and a render use the
:class:`~corridorkey_engine.clips.planning.KeyOptions` and the engine that ``corridorkey infer`` builds from
exactly that command line (the CLI hands the preview the functions that do it).
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ckpt_formats.atomic import atomic_write

from ..clips.frameranges import FrameSelection
from ..errors import ConfigError
from ..keying.frames import PostProcessOptions
from ..model.source import SCREEN_COLORS
from .render import one_line

log = logging.getLogger(__name__)

SETTINGS_FILE = "corridorkey-preview.json"
"""The file in a clip folder that holds the settings saved from the preview."""
PRECISIONS = ("float32", "float16", "bfloat16")
_DEFAULT_POST = PostProcessOptions()


@dataclass(frozen=True)
class Settings:
    """Every setting the page shows. ``img_size``/``precision`` None: the engine's choice; ``linear``
    None: EXR input is linear, anything else sRGB; ``frames``: the render's frame ranges (None: all)."""

    despill: float = _DEFAULT_POST.despill_strength
    despeckle: bool = _DEFAULT_POST.auto_despeckle
    despeckle_size: int = _DEFAULT_POST.despeckle_size
    refiner_scale: float = 1.0
    screen_color: str = "green"
    img_size: int | None = None
    precision: str | None = None
    hint: str = "alphahint"
    linear: bool | None = None
    frames: str | None = None

    def __post_init__(self) -> None:
        def fail(name: str, wanted: str) -> None:
            raise ConfigError(f"setting {name}: {wanted}, got {getattr(self, name)!r}")

        number = (int, float)
        if (
            isinstance(self.despill, bool)
            or not isinstance(self.despill, number)
            or not 0 <= self.despill <= 1
        ):
            fail("despill", "a number from 0 to 1")
        if not isinstance(self.despeckle, bool):
            fail("despeckle", "true or false")
        if isinstance(self.despeckle_size, bool) or not isinstance(self.despeckle_size, int):
            fail("despeckle_size", "a whole number of pixels")
        if self.despeckle_size < 1:
            fail("despeckle_size", "at least 1")
        if isinstance(self.refiner_scale, bool) or not isinstance(self.refiner_scale, number):
            fail("refiner_scale", "a number")
        if self.screen_color not in SCREEN_COLORS:
            fail("screen_color", f"one of {', '.join(SCREEN_COLORS)}")
        if self.img_size is not None and (
            isinstance(self.img_size, bool) or not isinstance(self.img_size, int) or self.img_size < 32
        ):
            fail("img_size", "a whole number of at least 32, or null for the checkpoint's")
        if self.precision is not None and self.precision not in PRECISIONS:
            fail("precision", f"one of {', '.join(PRECISIONS)}, or null for the engine's choice")
        if self.hint not in ("alphahint", "chroma"):
            fail("hint", "alphahint or chroma")
        if self.linear is not None and not isinstance(self.linear, bool):
            fail("linear", "true, false or null")
        if self.frames is not None:
            try:
                FrameSelection.parse(self.frames if isinstance(self.frames, str) else None)
            except ValueError as exc:
                raise ConfigError(f"setting frames: {exc}") from None
            if not isinstance(self.frames, str):
                fail("frames", "frame ranges such as 1001-1050,1060, or null")

    @classmethod
    def from_json(cls, data: Any, base: Settings | None = None) -> Settings:
        """``base`` (default: the defaults) with the fields ``data`` (a JSON object) gives.

        Raises:
            ConfigError: not an object, an unknown setting or a bad value (one line).
        """
        if not isinstance(data, dict):
            raise ConfigError("settings must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if values.get("frames") is not None and not str(values["frames"]).strip():
            values["frames"] = None
        return replace(base or cls(), **values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def model_args(self) -> list[str]:
        """The ``infer`` flags that choose the engine (a change loads another model and re-keys)."""
        args: list[str] = []
        if self.screen_color != "green":
            args += ["--screen-color", self.screen_color]
        if self.img_size is not None:
            args += ["--img-size", str(self.img_size)]
        if self.precision is not None:
            args += ["--precision", self.precision]
        return args

    def keying_args(self) -> list[str]:
        """The ``infer`` flags of the keying settings, each only when it differs from infer's default."""
        args: list[str] = []
        if self.linear is not None:
            args.append("--linear" if self.linear else "--srgb")
        if self.despill != _DEFAULT_POST.despill_strength:
            args += ["--despill", _number(self.despill)]
        if not self.despeckle:
            args.append("--no-despeckle")
        if self.despeckle_size != _DEFAULT_POST.despeckle_size:
            args += ["--despeckle-size", str(self.despeckle_size)]
        if self.refiner_scale != 1.0:
            args += ["--refiner-scale", _number(self.refiner_scale)]
        if self.hint != "alphahint":
            args += ["--hint", self.hint]
        return args


def _number(value: float) -> str:
    """A float as the shortest text that reads back as the same value (``0.3``, ``1``)."""
    return repr(float(value)).removesuffix(".0")


def infer_argv(clip: Path, settings: Settings, engine_args: list[str], *, frames: bool = True) -> list[str]:
    """The ``corridorkey infer`` arguments (without the program name) that key ``clip`` with ``settings``;
    ``engine_args`` are the checkpoint options the preview was started with. ``frames``: include the
    render's frame ranges."""
    argv = ["infer", str(clip), *engine_args, *settings.model_args(), *settings.keying_args()]
    if frames and settings.frames:
        argv += ["--frames", settings.frames]
    return argv


def command_line(argv: list[str]) -> str:
    """The shell command line of ``corridorkey ARGV`` (quoted so it pastes into a POSIX shell)."""
    return shlex.join(["corridorkey", *argv])


def save_settings(clip: Path, settings: Settings, command: str) -> Path:
    """Write ``settings`` and their command line to the clip's :data:`SETTINGS_FILE`, whole or not at all."""
    path = clip / SETTINGS_FILE
    text = json.dumps({"settings": settings.to_json(), "command": command}, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def load_settings(clip: Path, base: Settings) -> tuple[Settings, str | None]:
    """The clip's saved settings over ``base`` (``base`` when there are none), and a one-line warning when
    the file cannot be used."""
    path = clip / SETTINGS_FILE
    if not path.is_file():
        return base, None
    try:
        data = json.loads(path.read_text())
        return Settings.from_json(data.get("settings") if isinstance(data, dict) else None, base), None
    except (OSError, ValueError, TypeError, ConfigError) as exc:
        return base, f"{path}: ignored ({one_line(exc)})"
