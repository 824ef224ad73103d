"""The manifest store alone: replica writes per second and syncs per write, by concurrency.

Writes 4 KiB inline manifests (new names) into a fresh store for SECONDS at each level of
concurrency (writers each awaiting their own put, as a peer's request handlers do) and
counts the data syncs of the log (group commit: one per batch) and the process's CPU per
write (its writes' thread hops included). The previous layout made two fsyncs per replica
write (the file and its directory), whatever the concurrency.

    python bench/manifest_log.py --writers 1,16,64 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_benchmark
from node.disk.manifest_log import SegmentIO
from node.disk.manifest_store import ManifestStore
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.version import Version


class CountingIO(SegmentIO):
    def __init__(self) -> None:
        self.syncs = 0

    def sync(self, fd: int, metadata: bool) -> None:
        self.syncs += 1
        super().sync(fd, metadata)


async def level(writers: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ringstore-mlog-", dir=".") as tmp:
        io = CountingIO()
        store = ManifestStore(Path(tmp), io=io)
        await store.open()
        body, done = bytes(4096), 0
        deadline = time.monotonic() + seconds
        syncs, started, cpu = io.syncs, time.monotonic(), time.process_time()

        async def writer(number: int) -> None:
            nonlocal done
            step = 0
            while time.monotonic() < deadline:
                name = f"bench/{number}/{step}"
                version = Version(1, step, "bench")
                await store.put(Manifest(name, version, Layout(4096, 5, 2), "0" * 32, inline=body))
                step, done = step + 1, done + 1

        await asyncio.gather(*(writer(n) for n in range(writers)))
        wall, cpu = time.monotonic() - started, time.process_time() - cpu
        await store.close()
    return {
        "writers": writers,
        "puts_s": round(done / wall),
        "syncs_per_put": round((io.syncs - syncs) / max(done, 1), 3),
        "cpu_us_per_put": round(cpu / max(done, 1) * 1e6),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    for writers in map(int, args.writers.split(",")):
        print(await level(writers, args.seconds), flush=True)


if __name__ == "__main__":
    run_benchmark(main())
