"""Memory of one peer under many requests at once: peak RSS, and RSS a while after.

For each variant (a source tree: ``--trees base=/tmp/base,new=.``), a fresh cluster of 7
peer processes is started on 127.0.0.1 from that tree, and each scenario runs against peer 0:

- ``puts``: N concurrent PUTs of 1 MiB with a Content-Length;
- ``trickle``: N concurrent chunked PUTs that send 1 KiB every 0.1 s for SECONDS, then end;
- ``slow-get``: N concurrent GETs of a 64 MiB file (put before any scenario) that read 64 KiB
  every 0.1 s for SECONDS, then close;
- ``get``: N concurrent GETs of that 64 MiB file read as fast as they come (MB/s: what
  read-ahead is for).

A variant may give its peers options: ``--trees budget0=.@--buffer-memory=0``.

Measured: peer 0's RSS idle (once the cluster has started, before any file), its RSS
before each scenario, its peak (VmHWM, reset per scenario through
/proc/PID/clear_refs) and its RSS AFTER seconds later; the statuses the requests got. Figures
are printed as a markdown table and saved as JSON + markdown under bench/results/.

    python bench/memory.py --trees base=/tmp/base,new=. --clients 200
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import publish, rss_mib, run_benchmark
from bench.small import Cluster, variants
from tests.harness.access import ADMIN_HEADERS

MIB = 1 << 20


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (proc(5): clear_refs, value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def puts(session: aiohttp.ClientSession, url: str, n: int, seconds: float) -> Counter[str]:
    data = bytes(MIB)

    async def one(i: int) -> str:
        async with session.put(f"{url}/files/mem/put-{i}", data=io.BytesIO(data)) as response:
            await response.read()
            return str(response.status)

    return Counter(await asyncio.gather(*(one(i) for i in range(n))))


async def trickle(session: aiohttp.ClientSession, url: str, n: int, seconds: float) -> Counter[str]:
    async def body() -> object:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            yield bytes(1024)
            await asyncio.sleep(0.1)  # pacing the upload, not waiting for a condition

    async def one(i: int) -> str:
        try:
            async with session.put(f"{url}/files/mem/trickle-{i}", data=body()) as response:
                await response.read()
                return str(response.status)
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    return Counter(await asyncio.gather(*(one(i) for i in range(n))))


async def slow_get(
    session: aiohttp.ClientSession, url: str, n: int, seconds: float
) -> Counter[str]:
    async def one(i: int) -> str:
        deadline = time.monotonic() + seconds
        try:
            async with session.get(f"{url}/files/mem/big") as response:
                while time.monotonic() < deadline:
                    if not await response.content.read(64 << 10):
                        break
                    await asyncio.sleep(0.1)  # a slow reader, not waiting for a condition
                response.close()
                return str(response.status)
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    return Counter(await asyncio.gather(*(one(i) for i in range(n))))


async def get(session: aiohttp.ClientSession, url: str, n: int, seconds: float) -> Counter[str]:
    async def one(i: int) -> str:
        async with session.get(f"{url}/files/mem/big") as response:
            got = 0
            async for piece in response.content.iter_chunked(1 << 20):
                got += len(piece)
            return str(response.status) if got == 64 * MIB else f"{response.status}: {got} bytes"

    started = time.monotonic()
    statuses = Counter(await asyncio.gather(*(one(i) for i in range(n))))
    statuses[f"MB/s={n * 64 * MIB / 1e6 / (time.monotonic() - started):.0f}"] = 1
    return statuses


SCENARIOS = {"puts": puts, "trickle": trickle, "slow-get": slow_get, "get": get}


async def run(
    tree: Path, variant: str, options: list[str], args: argparse.Namespace
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="ringstore-memory-") as tmp:
        cluster = Cluster(tree, Path(tmp), 7, *options)
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=ADMIN_HEADERS
        ) as session:
            try:
                await cluster.start(session)
                peer = cluster.processes.peers[0]
                assert peer.process is not None
                pid = peer.process.pid
                idle = rss_mib(pid)
                big = io.BytesIO(bytes(64 * MIB))  # what the GETs read, put before measuring
                async with session.put(f"{peer.url}/files/mem/big", data=big) as response:
                    assert response.status == 201, await response.text()
                for name in args.scenarios.split(","):
                    before = rss_mib(pid)
                    reset_peak(pid)
                    started = time.monotonic()
                    statuses = await SCENARIOS[name](session, peer.url, args.clients, args.seconds)
                    took = time.monotonic() - started
                    peak = rss_mib(pid, "VmHWM")
                    await asyncio.sleep(args.after)  # the span after a burst, measured
                    after = rss_mib(pid)
                    row = {
                        "variant": variant,
                        "scenario": name,
                        "clients": args.clients,
                        "seconds": round(took, 1),
                        "statuses": dict(statuses),
                        "rss_idle_mib": round(idle, 1),
                        "rss_before_mib": round(before, 1),
                        "peak_rss_mib": round(peak, 1),
                        "rss_after_mib": round(after, 1),
                        "after_per_idle": round(after / idle, 2),
                    }
                    print(row, flush=True)
                    rows.append(row)
            finally:
                await cluster.processes.stop()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default="this=.", help="name=path,... source trees")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--after", type=float, default=20.0, help="wait before RSS after")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    rows = []
    for variant, tree, options in variants(args.trees):
        rows += await run(tree, variant, options, args)
    lines = [
        "| variant | scenario | clients | statuses | RSS idle | RSS before | peak | RSS after "
        "| after ÷ idle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['scenario']} | {r['clients']} | {r['statuses']} "
            f"| {r['rss_idle_mib']} | {r['rss_before_mib']} | {r['peak_rss_mib']} "
            f"| {r['rss_after_mib']} | {r['after_per_idle']} |"
        )
    publish("memory", rows, "\n".join(lines))


if __name__ == "__main__":
    run_benchmark(main())
