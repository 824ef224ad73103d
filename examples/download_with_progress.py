"""Download one file with a progress line (percent, rate, ETA) on stderr.

    python examples/download_with_progress.py videos/talk.mp4 talk.mp4

The file is streamed into a temporary file beside PATH and renamed when complete, so memory
stays small whatever the size. Peers come from --peer, else $RINGSTORE_PEERS, else
http://127.0.0.1:8000 (``make up``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path, PurePosixPath

from client import Client, RingstoreError


class ProgressLine:
    """A ``progress`` callback that redraws one line at most ten times a second."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.1 and done != total:
            return
        self.drawn = now
        rate = done / max(now - self.started, 1e-6)
        line = f"{done / 2**20:8.1f} MiB at {rate / 2**20:6.1f} MiB/s"
        if total:
            eta = (total - done) / rate if rate else 0.0
            line = f"{100 * done / total:5.1f}%  {line}  ETA {eta:4.0f}s"
        print(f"\r{line}", end="", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the file's name in the store")
    parser.add_argument("path", nargs="?", type=Path, help="where to write (default: NAME's base)")
    parser.add_argument(
        "--peer", action="append", metavar="URL", help="a peer URL (repeatable for failover)"
    )
    args = parser.parse_args()
    path = args.path or Path(PurePosixPath(args.name).name)

    with Client(args.peer) as client:
        try:
            stat = client.download(args.name, path, progress=ProgressLine())
        except RingstoreError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 1
    print(f"\n{path}: {stat.size} bytes, version {stat.version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
