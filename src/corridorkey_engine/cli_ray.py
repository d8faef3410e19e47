"""``corridorkey infer --ray``: the driver. It checks the clips, lists the frames not done yet (the local
resume rules), resolves the checkpoint once (a hub download happens here, once), runs the Ray Data stages of
:mod:`corridorkey_engine.clips.ray_stages` and prints the local run's summary. Ray is imported only here,
only for ``--ray``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ckpt_formats.atomic import sweep_temps

from .cli_args import PROG
from .cli_clips import prepare_clips
from .clips.pipeline import OUTPUTS, Clip, KeyOptions
from .clips.ray_stages import (
    RESUME,
    EngineSpec,
    RayRun,
    _one_line,
    connect,
    import_ray,
    key_on_ray,
    quiet_native_logs,
    worker_layout,
)
from .errors import RayRunError
from .model.source import CheckpointSource


def run_infer(
    args: Any, roots: Sequence[Any], opts: KeyOptions, source: CheckpointSource, output: Path | None
) -> int:
    """``corridorkey infer --ray``: check clips, fetch the checkpoint once, plan with the local resume rules
    (the manifest's settings included), key on Ray, write the comp movies, summarise.

    Returns the exit status: 0, 1 when a clip or a frame failed (each failure printed on one line), or 2 when
    ``--frames`` selects none of a clip's frames (a usage error, as in a local run).
    """
    from tqdm import tqdm

    from .clips.fingerprint import checkpoint_settings, program_version
    from .clips.pipeline import begin_clip, finish_clip, plan_frames
    from .device import resolve_dtype
    from .model.config import GreenFormerConfig

    if args.ray_gpus_per_worker is not None and args.ray_gpus_per_worker < 0:
        raise RayRunError(f"--ray-gpus-per-worker must be at least 0, got {args.ray_gpus_per_worker:g}")
    ray = import_ray()
    usage: list[BaseException] = []  # --frames selecting none of a clip's frames: status 2, as locally
    clips, failed = prepare_clips(args, roots, opts, output, usage)
    if not clips:
        return 2 if usage else 1
    # Workers on other nodes see the same absolute path; the driver fetches once, the workers never.
    resolved = source.resolve()
    source = replace(source, checkpoint_dir=source.directory.resolve(), hub=None)
    img_size = GreenFormerConfig.from_metadata(resolved.metadata).with_img_size(args.img_size).img_size
    import torch

    threads = torch.get_num_threads()  # what a local run uses; CPU workers use as many (the same sums)

    with quiet_native_logs(not args.verbose):
        started = connect(ray, args.ray, extra_cpus=args.ray_workers or 1, verbose=args.verbose)
        try:  # the cluster's GPUs decide the defaults
            gpus = ray.cluster_resources().get("GPU", 0.0)
            layout = worker_layout(args.device, gpus, args.ray_workers, args.ray_gpus_per_worker)
            device, workers, gpw = layout
            dtype = resolve_dtype(torch.device(device), args.precision)
            settings, about = checkpoint_settings(resolved, img_size, dtype)
            opts = replace(opts, model=settings, about={**about, "program": program_version()})
            plans = [plan_frames(c, opts) for c in clips]
            total, frames = sum(len(p) for p in plans), sum(len(c) for c in clips)
            if total == 0 and not failed and not opts.comp_video:
                if not args.quiet:
                    done = f"all {frames} frames of {len(clips)} clip(s) are done"
                    print(f"nothing to do: {done} (--overwrite redoes them)")
                return 2 if usage else 0
            spec = EngineSpec(
                source,
                device,
                args.precision,
                args.img_size,
                args.compile or args.compile_mode is not None,
                args.compile_mode,
                args.low_memory,
                args.channels_last,
                threads,
            )
            bar = tqdm(total=total, unit="frame", disable=args.quiet, dynamic_ncols=True, file=sys.stderr)
            bar.set_description(f"ray x{workers}")
            for clip, todo in zip(clips, plans, strict=True):
                if todo:
                    begin_clip(clip, opts, todo)
            start = time.perf_counter()
            try:
                run = key_on_ray(ray, clips, plans, opts, spec, workers, gpw, bar.update)
            except Exception as exc:
                raise RayRunError(f"the Ray job failed ({_one_line(exc)[:300]}); {RESUME}") from exc
            except KeyboardInterrupt:
                bar.close()
                print(f"{PROG}: interrupted after {bar.n} frame(s); {RESUME}", file=sys.stderr)
                return 130
            finally:
                bar.close()
            seconds = time.perf_counter() - start
        finally:
            if started:
                ray.shutdown()
    for folder in (c.out_dir / OUTPUTS[k].folder for c in clips for k in opts.outputs):
        sweep_temps(folder)  # what killed writers left (after the job, never during)
    for clip in clips:
        finish_clip(clip, opts)
    if not args.quiet:
        _summary(clips, opts, plans, run, seconds)
    for ci, index, message in sorted(run.failed):
        clip = clips[ci]
        print(f"{PROG}: error: {clip.name}: frame {clip.input.names[index]}: {message}", file=sys.stderr)
    return 2 if usage else 1 if run.failed or failed else 0


def _summary(
    clips: Sequence[Clip], opts: KeyOptions, plans: Sequence[list[int]], run: RayRun, seconds: float
) -> None:
    """The local run's summary lines (keyed, already done, outside the selection, failed), with the
    workers and each clip's count."""
    from .cli_report import ClipTally, counts
    from .clips.frameranges import select_frames

    stopped = {ci for ci, _, _ in run.failed}
    tallies = [
        ClipTally(c.name, len(c), len(select_frames(c.input, opts.frames)), len(todo), n, ci in stopped)
        for ci, (c, todo, n) in enumerate(zip(clips, plans, run.keyed, strict=True))
    ]
    keyed = sum(run.keyed)
    fps = keyed / seconds if seconds > 0 else float("inf")
    print(
        f"keyed {keyed} frames ({counts(tallies)}) from {len(clips)} clip(s) in {seconds:.2f} s: "
        f"{fps:.2f} frames/s (model load {run.load_s:.1f} s) on {run.workers} Ray worker(s)"
    )
    print(run.engine)
    folders = " ".join(f"{OUTPUTS[k].folder}/" for k in opts.outputs)
    for clip, n in zip(clips, run.keyed, strict=True):
        print(f"outputs in {clip.out_dir}/: {folders} ({n} frame(s) keyed)")
