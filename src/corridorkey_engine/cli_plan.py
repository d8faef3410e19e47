"""Whether ``corridorkey infer`` has anything to do, decided before the model is loaded.

The settings a run's outputs are made with (the checkpoint's sha256, the model's resolution and precision:
:func:`.clips.fingerprint.checkpoint_settings`) are known without loading the weights: the checkpoint is
the one discovery picks (its sha256 is cached), its config is in its metadata, the precision follows the
device. When every selected frame of every clip is already done with exactly those settings, the run says
so (and writes a ``Comp.mp4`` that is due) without loading the model. Anything uncertain (a folder to fetch
from the hub, a checkpoint without metadata reading) answers "unknown", and the run goes the usual way.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from .model.source import CheckpointSource

log = logging.getLogger(__name__)


def settings_before_loading(args: argparse.Namespace, source: CheckpointSource) -> tuple[dict, dict] | None:
    """``(settings, about)`` as the loaded engine would record them, or None when not known for sure."""
    import ckpt_formats

    from .clips.fingerprint import checkpoint_settings
    from .device import resolve_device, resolve_dtype
    from .errors import CorridorKeyError
    from .model.config import GreenFormerConfig

    options = source.resolve_options()
    try:
        found = ckpt_formats.get_registry().discover(
            source.directory,
            formats=options["formats"],
            exclude=options["exclude"],
            select=options["select"],
            safe_only=options["safe_only"],
        )
        fmt, candidate, _ = found.choose(options["select"])
        if fmt.read_metadata is None:
            return None
        metadata = fmt.read_metadata(candidate)
        config = GreenFormerConfig.from_metadata(metadata).with_img_size(args.img_size)
        logging.disable(logging.WARNING)  # resolve_dtype's CPU note is said again when the model loads
        try:
            dtype = resolve_dtype(resolve_device(args.device), args.precision)
        finally:
            logging.disable(logging.NOTSET)
        checkpoint = SimpleNamespace(paths=candidate.paths, path=candidate.path, format=fmt)
        return checkpoint_settings(checkpoint, config.img_size, dtype)
    except (OSError, ValueError, ckpt_formats.CheckpointError, CorridorKeyError) as exc:
        log.debug("what the run would record is not known before loading (%s)", exc)
        return None


def nothing_to_do(
    args: argparse.Namespace, source: CheckpointSource, clips: list[Any], opts: Any
) -> list | None:
    """The movies written when every selected frame is done with the settings this run would use (every
    clip then needs nothing but, with ``--comp-video``, its movie); None when the model has work to do or
    that is not known before loading it."""
    from .clips.fingerprint import program_version
    from .clips.pipeline import finish_clip, plan_frames

    known = settings_before_loading(args, source)
    if known is None:
        return None
    settings, about = known
    opts = replace(opts, model=settings, about={**about, "program": program_version()})
    if any(plan_frames(clip, opts) for clip in clips):
        return None
    return [movie for movie in (finish_clip(clip, opts) for clip in clips) if movie is not None]
