"""The option values a ``corridorkey`` command line describes: :class:`PostProcessOptions`,
:class:`CheckpointSource`, :class:`KeyOptions`, and the engine loaded from them with the CLI's one-line advice
when no checkpoint is found. Shared by ``infer``, ``demo``, ``export`` and ``preview`` (which turns its
page's settings into an infer command line and back through these very functions). Imports no torch.
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from typing import Any

from ckpt_formats import CheckpointDownloadError, CheckpointNotFoundError

from .cli_args import CHOICE_ADVICE, PUBLISHED, default_io_threads, default_write_threads
from .errors import CliError, UsageError
from .model.source import PUBLISHED_MODELS, CheckpointSource


def load_engine_from(args: argparse.Namespace, source: CheckpointSource) -> Any:
    """The engine, or a one-line error that says where a checkpoint can come from."""
    from .engine import load_engine

    try:
        return load_engine(
            source,
            device=args.device,
            precision=args.precision,
            img_size=args.img_size,
            compile=args.compile or args.compile_mode is not None,
            compile_mode=args.compile_mode,
            low_memory=args.low_memory,
            channels_last=args.channels_last,
        )
    except (CheckpointNotFoundError, CheckpointDownloadError) as exc:
        raise CliError(_checkpoint_advice(str(exc), source)) from exc


def _checkpoint_advice(message: str, source: CheckpointSource) -> str:
    """The registry's message, followed by every way to get a checkpoint (no hub advice with --no-hub)."""
    from .demo.clip import bundled_checkpoint_dir

    demo = f"or try corridorkey with its bundled demo model: `corridorkey demo` ({bundled_checkpoint_dir()})"
    folder = source.directory
    if source.hub is None:
        message = message.removesuffix("; place a checkpoint there or configure a hub source")
        return f"{message}; put a checkpoint in {folder} or pass --checkpoint-dir DIR, {demo}"
    repo = getattr(source.hub, "repo_id", None) or source.hub
    return (
        f"{message.rstrip('. ')}. To key offline: fetch the weights on a connected machine with "
        f"`ckpt-formats fetch {repo} DIR` and pass --checkpoint-dir DIR (or copy it into {folder}), {demo}"
    )


def _fields_from(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """``cls(...)`` from the parsed arguments named like its fields (``overrides`` win)."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **overrides})


def post_options(args: argparse.Namespace) -> Any:
    """The :class:`PostProcessOptions` the ``keying`` flags describe."""
    from .keying.frames import PostProcessOptions

    return _fields_from(PostProcessOptions, args)


def checkpoint_source(args: argparse.Namespace, **overrides: Any) -> CheckpointSource:
    """The :class:`CheckpointSource` the ``model and device`` flags describe, its hub checked; the
    ambiguity error names ``--select``/``--exclude``.

    Raises:
        CliError: ``--hub`` is not a valid repository id.
    """
    source = _fields_from(CheckpointSource, args, advice=CHOICE_ADVICE, **overrides)
    if source.hub == PUBLISHED:
        source = replace(source, hub=PUBLISHED_MODELS[source.screen_color].repo_id)
    try:
        return replace(source, hub=source.hub_source())
    except ValueError as exc:
        raise CliError(f"--hub {source.hub!r}: {exc}") from exc


def key_options(args: argparse.Namespace) -> Any:
    """The clip pipeline's :class:`KeyOptions` for ``corridorkey infer``."""
    from .clips.frameranges import FrameSelection
    from .clips.outputs import parse_format_spec
    from .clips.pipeline import KeyOptions

    readers = args.io_threads or default_io_threads()
    writers = args.io_threads or default_write_threads()
    formats = parse_format_spec(args.format, args.exr_dtype) if args.format else {}
    if args.comp_video and "comp" not in args.outputs:
        raise UsageError("--comp-video is made from the comp output: add comp to --outputs")
    return _fields_from(
        KeyOptions,
        args,
        post=post_options(args),
        exr_half=args.exr_dtype == "half",
        read_threads=readers,
        write_threads=writers,
        formats={k: v for k, v in formats.items() if k in args.outputs},
        frames=FrameSelection.parse(args.frames, args.max_frames),
    )
