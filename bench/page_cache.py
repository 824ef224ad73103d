"""What writing into the page cache costs this machine: fresh pages against reused ones.

A buffered write copies into page-cache pages. On a virtual machine whose balloon device
reports free pages to the host (virtio-balloon ``VIRTIO_BALLOON_F_REPORTING``; Linux
``mm/page_reporting.c``), a page the guest has not used lately has no host memory behind it:
its first touch is a fault taken by the host, and the guest sees its copy take that long,
counted as the writer's *system* CPU. Every benchmark that writes more than the guest
recently freed pays it (a peer's chunks, manifests, a volume file), so a write-heavy
figure depends on how much of the guest's memory is fresh, not only on the code.

Variants, alternated round by round, each writing SIZE in 1 MiB blocks to a new file on
the directory's file system with one ``fdatasync`` per 8 MiB:

- ``fresh``: the pages stay cached (kept until the end), so each round grows the page
  cache into memory the guest has not touched lately, as a peer's first writes do;
- ``reused``: after each sync the range just written is dropped from the cache
  (``posix_fadvise(POSIX_FADV_DONTNEED)``, what OpenStack Swift's object server does after a
  PUT), so the next blocks reuse the pages just freed.

Figures per variant (medians): MB/s, and the writer's system CPU milliseconds per MiB
(``getrusage``). Saved as JSON + markdown under bench/results/.

    python bench/page_cache.py --size 512M --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import publish
from bench.throughput import parse_size

BLOCK = 1 << 20
SYNC_EVERY = 8 << 20  # bytes written between two fdatasyncs
VARIANTS = ("fresh", "reused")


def write(path: Path, size: int, drop: bool) -> dict[str, float]:
    """Write ``size`` bytes to a new file at ``path``; its MB/s and system CPU ms per MiB."""
    block = os.urandom(BLOCK)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        synced = written = 0
        while written < size:
            written += os.write(fd, block[: min(BLOCK, size - written)])
            if written - synced >= SYNC_EVERY or written == size:
                os.fdatasync(fd)
                if drop:
                    os.posix_fadvise(fd, synced, written - synced, os.POSIX_FADV_DONTNEED)
                synced = written
    finally:
        os.close(fd)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    mib = size / BLOCK
    return {
        "mb_s": round(size / wall / 1e6, 1),
        "system_ms_per_mib": round((after.ru_stime - before.ru_stime) * 1000 / mib, 3),
        "user_ms_per_mib": round((after.ru_utime - before.ru_utime) * 1000 / mib, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512M", help="bytes written per round (K, M, G)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=".", help="where the files go (its file system)")
    args = parser.parse_args()
    size = parse_size(args.size)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="ringstore-pagecache-", dir=args.dir) as tmp:
        for round_ in range(args.rounds):
            for variant in VARIANTS:  # the fresh files stay (cached) until the directory goes
                figures = write(Path(tmp) / f"{variant}-{round_}", size, variant == "reused")
                rows.append({"variant": variant, "round": round_, "bytes": size, **figures})
                print(rows[-1], flush=True)
                if variant == "reused":
                    (Path(tmp) / f"{variant}-{round_}").unlink()
    lines = [
        "| variant | MB/s | system CPU ms per MiB | user CPU ms per MiB |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        mine = [row for row in rows if row["variant"] == variant]

        def median(key: str, mine: list[dict[str, object]] = mine) -> float:
            return round(statistics.median(float(str(row[key])) for row in mine), 3)

        lines.append(
            f"| {variant} | {median('mb_s')} | {median('system_ms_per_mib')} "
            f"| {median('user_ms_per_mib')} |"
        )
    note = f"{args.rounds} rounds of {args.size} each, alternated; medians"
    publish("page_cache", rows, "\n".join(lines), note)


if __name__ == "__main__":
    main()
