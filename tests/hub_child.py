"""Child process for the hub tests: ``resolve(DIR, hub=HubSource(REPO, ...))`` with the client configured
only by the environment (HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE), as a user's process would be.

Prints one JSON line {path, format, keys, sha256, downloaded} on success; ``error: ...`` on stderr and exit
status 1 on a checkpoint error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys

from ckpt_formats import CheckpointError, HubSource, resolve


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("repo_id")
    parser.add_argument("--revision")
    parser.add_argument("--name", action="append", default=[], help="FORMAT=REMOTE_NAME")
    parser.add_argument("--progress", choices=["auto", "on", "off"], default="off")
    parser.add_argument("--max-file-size", type=int, help="RLIMIT_FSIZE: writes past it fail with EFBIG")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    if args.max_file_size:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.max_file_size, args.max_file_size))
    names: dict[str, list[str]] = {}
    for item in args.name:
        fmt, _, name = item.partition("=")
        names.setdefault(fmt, []).append(name)
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    source = HubSource(args.repo_id, revision=args.revision, filenames=names or None, progress=progress)
    try:
        resolved = resolve(args.directory, hub=source)
    except CheckpointError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(resolved.path.read_bytes()).hexdigest()
    result = {
        "path": str(resolved.path),
        "format": resolved.format.name,
        "keys": sorted(resolved.state_dict),
        "sha256": digest,
        "downloaded": resolved.downloaded,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
