"""A cold large GET on a slow disk, and the small GETs other clients make meanwhile.

Holders send a chunk's bytes with sendfile(2) (``node.disk.sendfile``); a cold chunk's
sendfile waits for the disk as it reads, and where that ran on the event loop, every other
request of the peer waited with it. This measures it: for each variant (a source tree,
``--trees base=/tmp/base,new=.``) and round, variants alternating, a fresh cluster of PEERS
real peer processes (production settings) is started on 127.0.0.1, its peers' disk reads
throttled to ``--read-mbps`` MB/s (a blkio cgroup: cgroup v1 ``blkio.throttle.
read_bps_device`` or v2 ``io.max``; root), as a busy or spinning disk would be. One file of
``--size`` bytes and ``--small`` files of 4 KiB are PUT, the large file's chunks dropped
from the page cache (``posix_fadvise(DONTNEED)``, our own files only); then small GETs
(``--clients`` clients, keep-alive, spread over every peer) run alone for ``--seconds``,
then again while one client GETs the large file through peer 0. Measured: the large GET's
MB/s and the peers' CPU seconds during it, and the small GETs' latency (median, 99th
percentile, the largest) and rate alone and during it; every body is compared.

With ``--files N`` (N > 1) the disk is overloaded instead: N large files are PUT, dropped
from the page cache and all GET at once, through the peers in turn, while the small GETs
run; each large GET either ends with every byte right or counts as failed (an error
status, a cut body, ``--give-up`` seconds). Measured then too: how many completed, their
MB/s together (bytes of completed GETs over the time until the last GET ended), and the
MB the peers read from the disk meanwhile (``/proc/PID/io``), against what they delivered.

Figures are printed as a markdown table and saved as JSON + markdown under bench/results/.

    python bench/cold_reads.py                                   # this tree, 256 MiB, 100 MB/s
    git worktree add /tmp/base HEAD~1
    python bench/cold_reads.py --trees base=/tmp/base,new=. --rounds 2
    python bench/cold_reads.py --files 24 --size 50M --read-mbps 20   # 3-4x overload
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import publish, run_benchmark
from bench.small import Cluster, variants
from bench.throughput import parse_size
from tests.harness.access import ADMIN_HEADERS
from tests.harness.disk import evict

CGROUP_V1_BLKIO = Path("/sys/fs/cgroup/blkio")
CGROUP_V2 = Path("/sys/fs/cgroup")
SMALL = 4096


def block_device(path: Path) -> str:
    """``MAJOR:MINOR`` of the disk holding ``path`` (the whole disk for a partition, which
    is where the throttle applies)."""
    dev = os.stat(path).st_dev
    device = f"{os.major(dev)}:{os.minor(dev)}"
    parent = Path(f"/sys/dev/block/{device}/..").resolve() / "dev"
    if Path(f"/sys/dev/block/{device}/partition").exists() and parent.exists():
        return parent.read_text().strip()
    return device


@contextlib.contextmanager
def read_throttled(pids: list[int], device: str, mbps: float) -> Iterator[None]:
    """``pids`` (and the threads and children they start) in a blkio cgroup whose reads of
    ``device`` are held to ``mbps`` MB/s while the block runs; root."""
    rate = int(mbps * 1e6)
    v2_controllers = CGROUP_V2 / "cgroup.subtree_control"
    if (CGROUP_V1_BLKIO / "blkio.throttle.read_bps_device").exists():
        root, limit, line = CGROUP_V1_BLKIO, "blkio.throttle.read_bps_device", f"{device} {rate}"
    elif v2_controllers.exists() and "io" in v2_controllers.read_text().split():
        root, limit, line = CGROUP_V2, "io.max", f"{device} rbps={rate}"
    else:
        raise SystemExit("a read throttle needs cgroup v1's blkio controller or v2's io, as root")
    group = root / f"ringstore-bench-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        (group / limit).write_text(line)
        for pid in pids:
            (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        try:
            for member in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    (root / "cgroup.procs").write_text(member)
        finally:
            group.rmdir()


def drop_chunks(root: Path) -> int:
    """Drop every file under ``root`` but the manifest logs (chunk files, volumes, logs)
    from the page cache; how many."""
    dropped = 0
    for path in root.rglob("*"):
        if not path.is_file() or "manifests" in path.parts:
            continue
        with contextlib.suppress(FileNotFoundError):  # (gone meanwhile)
            evict(path)
            dropped += 1
    return dropped


async def small_gets(
    session: aiohttp.ClientSession,
    urls: list[str],
    names: list[str],
    until: asyncio.Event,
    errors: collections.Counter[str],
) -> list[float]:
    """GET random small files through the peers at ``urls`` until ``until`` is set (at most
    100,000 each); each right answer's latency in seconds, the statuses of the others (or
    the client's error, by name) counted in ``errors`` (a 200 with wrong bytes stops the
    benchmark)."""
    latencies: list[float] = []
    rng = random.Random(len(urls))
    for _ in range(100_000):
        if until.is_set() or not names:
            break
        name = rng.choice(names)
        started = time.perf_counter()
        try:
            async with session.get(f"{rng.choice(urls)}/files/{name}") as response:
                body = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            errors[type(exc).__name__] += 1
            await asyncio.sleep(0.05)  # (a refused connection fails at once: no busy loop)
            continue
        if response.status != 200:
            errors[str(response.status)] += 1
            continue
        latencies.append(time.perf_counter() - started)
        if body != name.encode().ljust(SMALL, b"."):
            raise RuntimeError(f"GET {name}: wrong bytes {body[:100]!r}")
    return latencies


async def with_small_gets(
    session: aiohttp.ClientSession,
    urls: list[str],
    names: list[str],
    clients: int,
    work: asyncio.Future[Any],
) -> tuple[list[float], float, dict[str, int]]:
    """Small GETs from ``clients`` clients until ``work`` is done: the latencies of those
    answered right, the seconds they ran, and how many were answered with each other
    status."""
    until = asyncio.Event()
    errors: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    runs = [
        asyncio.ensure_future(small_gets(session, urls, names, until, errors))
        for _ in range(clients)
    ]
    try:
        await work
    finally:
        until.set()
        results = await asyncio.gather(*runs)
    return [t for run in results for t in run], time.perf_counter() - started, dict(errors)


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:  # (--clients 0: the large GET alone)
        return dict.fromkeys(("gets_s", "p50_ms", "p99_ms", "max_ms"), 0.0)
    return {
        "gets_s": len(ordered) / seconds,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


async def put(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with session.put(url, data=body) as response:
        if response.status != 201:
            raise RuntimeError(f"PUT {url}: {response.status} {await response.text()}")


async def big_get(
    session: aiohttp.ClientSession, url: str, size: int, digest: bytes, give_up: float
) -> str | None:
    """GET a large file (``url`` names it) within ``give_up`` seconds; None when every byte
    came and is right, else what went wrong."""
    check = hashlib.blake2b()
    got = 0
    started = time.perf_counter()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=give_up)) as response:
            if response.status != 200:
                text = await response.text()
                return f"{response.status} after {time.perf_counter() - started:.0f}s: {text}"
            async for piece in response.content.iter_chunked(1 << 20):
                check.update(piece)
                got += len(piece)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return f"{exc!r} after {got} bytes, {time.perf_counter() - started:.0f}s"
    if got != size or check.digest() != digest:
        return f"{response.status}, {got} bytes"
    return None


def disk_read(pids: list[int]) -> int:
    """Bytes the processes ``pids`` made the disk read so far (``read_bytes``)."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                total += int(line.split()[1])
    return total


async def big_gets(
    session: aiohttp.ClientSession,
    urls: list[str],
    names: list[str],
    size: int,
    digest: bytes,
    give_up: float,
) -> tuple[float, int, list[str]]:
    """GET every file of ``names`` at once, through ``urls`` in turn: the MB/s of those that
    completed together, how many did, and what went wrong with the others."""
    started = time.perf_counter()
    ends = await asyncio.gather(
        *(
            big_get(session, f"{urls[i % len(urls)]}/files/{name}", size, digest, give_up)
            for i, name in enumerate(names)
        )
    )
    seconds = time.perf_counter() - started
    completed = sum(end is None for end in ends)
    return completed * size / seconds / 1e6, completed, [end for end in ends if end]


async def round_of(
    variant: str, tree: Path, options: list[str], args: argparse.Namespace
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ringstore-cold-") as tmp:
        cluster = Cluster(tree, Path(tmp), args.peers, *options)
        connector = aiohttp.TCPConnector(limit=args.clients + args.files + 1)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=ADMIN_HEADERS
        ) as session:
            try:
                await cluster.start(session)
                urls = [p.url for p in cluster.processes.peers]
                big = os.urandom(args.size)
                large = [f"bench/big-{i}" for i in range(args.files)]
                for i, name in enumerate(large):  # (the same bytes: each file its own chunks)
                    await put(session, f"{urls[i % len(urls)]}/files/{name}", big)
                digest = hashlib.blake2b(big).digest()
                del big
                names = [f"bench/small-{i}" for i in range(args.small)]
                for name in names:
                    await put(session, f"{urls[1]}/files/{name}", name.encode().ljust(SMALL, b"."))
                dropped = drop_chunks(Path(tmp))
                with read_throttled(cluster.pids, block_device(Path(tmp)), args.read_mbps):
                    alone, seconds, errors_alone = await with_small_gets(
                        session,
                        urls,
                        names,
                        args.clients,
                        asyncio.ensure_future(asyncio.sleep(args.seconds)),
                    )
                    cpu, read = cluster.cpu(), disk_read(cluster.pids)
                    reading = asyncio.ensure_future(
                        big_gets(session, urls, large, args.size, digest, args.give_up)
                    )
                    during, spent, errors = await with_small_gets(
                        session, urls, names, args.clients, reading
                    )
                    cpu, read = cluster.cpu() - cpu, disk_read(cluster.pids) - read
                    mbps, completed, failures = reading.result()
            finally:
                await cluster.processes.stop()
    row: dict[str, object] = {
        "variant": variant,
        "size": args.size,
        "read_mbps": args.read_mbps,
        "files": args.files,
        "completed": completed,
        "failures": failures,
        "cold_get_MBps": mbps,
        "disk_read_MB": read / 1e6,
        "cpu_s_during": cpu,
        "files_dropped": dropped,
        "alone": summary(alone, seconds),
        "during": summary(during, spent),
        "small_errors_alone": errors_alone,
        "small_errors_during": errors,
    }
    print(row, flush=True)
    return row


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| variant | cold GETs completed | their MB/s | disk read MB | CPU-s of all peers "
        "during them | small GETs/s alone / during | p50 ms alone / during "
        "| p99 ms alone / during | max ms alone / during | small GETs not answered 200, "
        "alone / during (status or error: count) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        alone, during = row["alone"], row["during"]
        assert isinstance(alone, dict)
        assert isinstance(during, dict)
        cells = [
            f"{row['completed']} of {row['files']}",
            f"{row['cold_get_MBps']:.0f}",
            f"{row['disk_read_MB']:.0f}",
            f"{row['cpu_s_during']:.1f}",
        ] + [
            f"{alone[key]:.1f} / {during[key]:.1f}"
            for key in ("gets_s", "p50_ms", "p99_ms", "max_ms")
        ]
        counted = []
        for key in ("small_errors_alone", "small_errors_during"):
            errors = row[key]
            assert isinstance(errors, dict)
            counted.append(", ".join(f"{what}: {n}" for what, n in sorted(errors.items())))
        cells.append(" / ".join(text or "none" for text in counted))
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--trees", default="this=.", help="name=path,... source trees")
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--size", type=parse_size, default=256 << 20, help="bytes of each large file (256M)"
    )
    parser.add_argument("--files", type=int, default=1, help="large files GET at once")
    parser.add_argument("--give-up", type=float, default=300.0, help="seconds a large GET may take")
    parser.add_argument("--small", type=int, default=200, help="4 KiB files read meanwhile")
    parser.add_argument("--clients", type=int, default=4, help="clients of the small files")
    parser.add_argument("--seconds", type=float, default=5.0, help="small GETs alone")
    parser.add_argument("--read-mbps", type=float, default=100.0, help="the peers' disk reads")
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        for variant, tree, options in variants(args.trees):  # alternating: noise hits all
            rows.append(await round_of(variant, tree, options, args))
    note = (
        f"{args.peers} peers, disk reads held to {args.read_mbps:g} MB/s, "
        f"{args.files} files of {args.size >> 20} MiB, "
        f"{args.clients} clients of {args.small} 4 KiB files"
    )
    publish("cold-reads", rows, table(rows), note)


if __name__ == "__main__":
    run_benchmark(main())
