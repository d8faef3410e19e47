"""The viewer's state without any web framework: the clips given, each clip's settings, the engine for the
current model settings, frames keyed for the views, renders. :mod:`.server` maps requests onto it.

A clip is named by an id the server made (its folder's name, made unique), never by a path a request
gives; every file it reads or writes must resolve inside the folder given on the command line
(:mod:`.confine`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clips.frameranges import frame_numbers
from ..clips.layout import expand_clip_paths
from ..clips.outputs import OUTPUTS
from ..errors import ClipError, CorridorKeyError
from . import frames as frame_views
from .confine import check_inside
from .render import LockedEngine, Renderer, one_line, run_clip
from .settings import Settings, command_line, infer_argv, load_settings, save_settings

log = logging.getLogger(__name__)


class UnknownClip(KeyError):
    """A request named no clip of this session."""


@dataclass
class ClipEntry:
    """One clip of the session: ``root`` is the command-line folder it was found in (its confinement)."""

    id: str
    path: Path
    root: Path
    settings: Settings
    error: str | None = None
    numbers: list[int] = field(default_factory=list)
    warning: str | None = None


class PreviewSession:
    """Clips, settings, engine and renders of one ``corridorkey preview``.

    Args:
        paths: the clip folders or folders of clips of the command line.
        base: the settings every clip starts from (a clip's saved settings override them).
        engine_args: the checkpoint flags of the command line, repeated in every ``infer`` command line.
        options_for: ``infer`` arguments -> the ``KeyOptions`` ``corridorkey infer`` keys with.
        engine_for: ``infer`` arguments -> the engine ``corridorkey infer`` loads.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        base: Settings,
        engine_args: list[str],
        options_for: Callable[[list[str]], Any],
        engine_for: Callable[[list[str]], Any],
    ) -> None:
        self.engine_args = list(engine_args)
        self.options_for = options_for
        self.engine_for = engine_for
        self.lock = threading.Lock()  # one engine call at a time (viewer and render)
        self._load_lock = threading.Lock()
        self.keyer = frame_views.FrameKeyer(self.lock)
        self.renderer = Renderer()
        self.compress_views = False  # PNG compression for a viewer on another machine (see frames.encode_png)
        self._engine: tuple[Any, Any] | None = None
        self._prepared = frame_views.LRU(16)
        self.clips: dict[str, ClipEntry] = {}
        for given in paths:
            for found in expand_clip_paths([Path(given)]):
                self._add(found.path, Path(given).absolute(), base, found.error)

    def _add(self, path: Path, root: Path, base: Settings, error: str | None) -> None:
        name, n = path.name, 2
        while name in self.clips:
            name, n = f"{path.name}-{n}", n + 1
        entry = ClipEntry(name, path, root, base, error)
        if error is None:
            try:
                check_inside([path], root, "the clip folder")
                entry.settings, entry.warning = load_settings(path, base)
            except CorridorKeyError as exc:
                entry.error = str(exc)
        self.clips[name] = entry

    def clip(self, clip_id: str) -> ClipEntry:
        """The clip named ``clip_id`` (exactly an id of this session, nothing else)."""
        entry = self.clips.get(clip_id)
        if entry is None:
            raise UnknownClip(clip_id)
        return entry

    def argv(self, entry: ClipEntry, *, frames: bool = True) -> list[str]:
        return infer_argv(entry.path, entry.settings, self.engine_args, frames=frames)

    def command(self, entry: ClipEntry) -> str:
        return command_line(self.argv(entry))

    def engine(self, entry: ClipEntry) -> tuple[Any, Any]:
        """The engine for the clip's model settings and its key (one loaded at a time)."""
        key = (*self.engine_args, *entry.settings.model_args())
        with self._load_lock:
            if self._engine is None or self._engine[0] != key:
                self._engine = None  # let the previous model go before loading the next
                self._engine = (key, self.engine_for(self.argv(entry, frames=False)))
            return self._engine[1], key

    def prepared(self, entry: ClipEntry) -> tuple[Any, Any]:
        """The clip as the pipeline sees it with its settings (checked, its frames confined), and the
        ``KeyOptions``."""
        from ..clips.planning import prepare_clip

        if entry.error is not None:
            raise ClipError(entry.error)
        opts = self.options_for(self.argv(entry, frames=False))

        def make() -> Any:
            clip = prepare_clip(entry.path, opts)
            files = [*clip.input.paths, *([clip.input.video] if clip.input.video else [])]
            if clip.hint is not None:
                files += [*clip.hint.paths, *([clip.hint.video] if clip.hint.video else [])]
            check_inside(files, entry.root, "a frame file")
            if not entry.numbers:
                try:
                    entry.numbers = frame_numbers(clip.input)
                except ClipError:
                    entry.numbers = list(range(1, len(clip) + 1))
            return clip

        clip = self._prepared.get((entry.id, opts.hint, opts.input_is_linear), make)
        return clip, opts

    def _frame(self, clip_id: str, index: int, names: Sequence[str]) -> tuple[ClipEntry, Any, Any, Any, Any]:
        entry = self.clip(clip_id)
        clip, opts = self.prepared(entry)
        if not 0 <= index < len(clip):
            raise ValueError(f"{entry.id} has frames 0 to {len(clip) - 1} (by index), not {index}")
        engine, key = self.engine(entry)
        pred, outputs = self.keyer.outputs(engine, key, clip, opts, index, names)
        return entry, clip, opts, pred, outputs

    def view(self, clip_id: str, index: int, view: str, background: str = "checker") -> bytes:
        """The PNG the viewer shows for ``view`` of frame ``index`` (see :mod:`.frames`)."""
        if view not in frame_views.VIEWS:
            raise ValueError(f"unknown view {view!r}; choose from {', '.join(frame_views.VIEWS)}")
        if background not in frame_views.BACKGROUNDS:
            raise ValueError(f"unknown background {background!r}; choose from checker, black, white")
        _, clip, opts, pred, outputs = self._frame(clip_id, index, frame_views.VIEW_OUTPUTS[view])
        image = frame_views.view_image(
            view, pred, outputs, clip.input_is_linear, background, opts.post.checker_size
        )
        return frame_views.encode_png(image, self.compress_views)

    def pixel(self, clip_id: str, index: int, x: int, y: int) -> dict[str, list[float]]:
        _, _, _, pred, outputs = self._frame(clip_id, index, frame_views.PIXEL_OUTPUTS)
        return frame_views.pixel(pred, outputs, x, y)

    def set_settings(self, clip_id: str, data: Any) -> ClipEntry:
        """Replace the clip's settings with ``data`` over its current ones (checked first)."""
        entry = self.clip(clip_id)
        entry.settings = Settings.from_json(data, entry.settings)
        return entry

    def save(self, clip_id: str) -> Path:
        """Save the clip's settings and command line in the clip folder."""
        entry = self.clip(clip_id)
        if entry.error is not None:
            raise ClipError(entry.error)
        check_inside([entry.path], entry.root, "the clip folder")
        return save_settings(entry.path, entry.settings, self.command(entry))

    def render(self, clip_id: str) -> None:
        """Start keying the clip (its frame ranges) as ``corridorkey infer`` with its command line does."""
        entry = self.clip(clip_id)
        if entry.error is not None:
            raise ClipError(entry.error)
        self.prepared(entry)  # the frame files are confined
        argv = self.argv(entry)
        opts = self.options_for(argv)
        folders = [entry.path / OUTPUTS[k].folder for k in opts.outputs]
        check_inside([*folders, entry.path / "corridorkey.json"], entry.root, "an output folder or file")

        def job(on_frame: Callable[[int], None], on_plan: Callable[[int], None]) -> tuple[int, Path | None]:
            engine, _ = self.engine(entry)
            return run_clip(LockedEngine(engine, self.lock), entry.path, opts, on_frame, on_plan)

        self.renderer.start(entry.id, command_line(argv), job)

    def state(self) -> dict[str, Any]:
        """Everything the page needs to draw its controls."""
        clips = []
        for entry in self.clips.values():
            item: dict[str, Any] = {"id": entry.id, "path": str(entry.path), "error": entry.error}
            if entry.error is None:
                try:
                    clip, _ = self.prepared(entry)
                    item["frames"] = len(clip)
                    item["numbers"] = entry.numbers
                except (CorridorKeyError, OSError) as exc:
                    item["error"] = one_line(exc)
            item.update(settings=entry.settings.to_json(), command=self.command(entry), warning=entry.warning)
            clips.append(item)
        return {
            "clips": clips,
            "views": list(frame_views.VIEWS),
            "backgrounds": list(frame_views.BACKGROUNDS),
        }

    def describe_engine(self, clip_id: str) -> str:
        engine, _ = self.engine(self.clip(clip_id))
        return engine.describe()

    def close(self) -> None:
        """Stop a render between engine calls and wait for its files to be whole."""
        self.renderer.cancel()
        self.renderer.join()
