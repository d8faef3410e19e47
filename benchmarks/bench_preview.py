"""How long the preview takes to show a settings change: a post-processing change (despill) reusing the
frame's cached prediction, against a change that re-keys (refiner scale), on a 1920x1080 demo frame with
the bundled model on the CPU, through the HTTP server as the page asks (token, PNG).

    .venv/bin/python benchmarks/bench_preview.py          # ~1 minute on 2 cores
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from preview_testing import demo_clip, running, session_for


def timed(call, runs: int = 7) -> tuple[float, float]:
    seconds = []
    for i in range(runs):
        start = time.perf_counter()
        call(i)
        seconds.append(time.perf_counter() - start)
    return min(seconds) * 1000, statistics.median(seconds) * 1000


def cpu_time(clip: Path) -> tuple[float, float]:
    """Best CPU milliseconds (one torch thread) of the engine's post-processing and of the view + PNG."""
    from dataclasses import replace

    import torch

    from corridorkey_engine.keying.frames import postprocess, to_numpy
    from corridorkey_engine.preview import frames

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    session = session_for([clip])
    session.view("shot", 0, "comp")
    entry = session.clip("shot")
    engine, key = session.engine(entry)
    prepared, opts = session.prepared(entry)
    pred = session.keyer.predict(engine, key, prepared, opts, 0)
    height, width = pred.image.shape[:2]
    post, png = [], []
    for i in range(5):
        start = time.process_time()
        options = replace(opts.post, despill_strength=0.1 * i)
        out = to_numpy(postprocess(pred.alpha, pred.fg, height, width, options), batched=False)
        middle = time.process_time()
        frames.encode_png(frames.view_image("comp", pred, out, False, "checker", opts.post.checker_size))
        post.append(middle - start)
        png.append(time.process_time() - middle)
    torch.set_num_threads(threads)
    return min(post) * 1000, min(png) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clip = demo_clip(Path(tmp) / "shot", frames=1, size=(1080, 1920))
        with running(session_for([clip])) as server:
            base = f"http://{server.address}"

            def post(data: dict) -> None:
                request = urllib.request.Request(
                    f"{base}/api/settings?clip=shot&token={server.token}",
                    json.dumps(data).encode(),
                    {"Content-Type": "application/json"},
                )
                urllib.request.urlopen(request).read()

            def view() -> int:
                url = f"{base}/api/view?clip=shot&frame=0&view=comp&token={server.token}"
                return len(urllib.request.urlopen(url).read())

            view()  # loads the engine, keys the frame once
            post_only = timed(lambda i: (post({"despill": 0.2 + 0.1 * (i % 5)}), view()))
            rekey = timed(lambda i: (post({"refiner_scale": 0.5 + 0.1 * (i % 5)}), view()))
        cpu = cpu_time(clip)
    print("1920x1080 demo frame, bundled model on the CPU, settings change to the comp's PNG, over HTTP:")
    best, median = post_only
    print(f"  post-processing (despill), cached prediction: best {best:.0f} ms, median {median:.0f} ms")
    print(f"  re-key (refiner scale): best {rekey[0]:.0f} ms, median {rekey[1]:.0f} ms")
    print(
        f"  CPU time of a despill change on one thread (load-independent): post-processing {cpu[0]:.0f} ms, "
        f"view and PNG {cpu[1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
