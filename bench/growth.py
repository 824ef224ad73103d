"""Growth: store data on 6 peers, add peers one by one, measure what moves and what it costs.

A cluster of real peer processes on 127.0.0.1 is filled with files of mixed sizes. Then
peers join one at a time. For each join the script reports: bytes the newcomer received
against its ideal share (weight / total weight x stored bytes), the fraction of moved bytes
that went to newcomers (old peers must only lose), max/mean fill afterwards, rebalance time
and MB/s, and foreground PUT/GET MB/s of a probe file while the rebalance runs, next to the
same probe before it (same run, same machine). Every file is read back at the end.

    python bench/growth.py                        # 1 GiB on 6 peers, add 2, 50 MB/s moves
    python bench/growth.py --data 4G --joins 4 --rate 100
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_benchmark
from bench.throughput import body, label, parse_size
from tests.harness import ProcessCluster, eventually
from tests.harness.access import ADMIN_HEADERS

MIB = 1 << 20
SIZES = [64 << 10, 256 << 10, 1 * MIB, 4 * MIB]


def peer_args(rate: float) -> list[str]:
    """Production timeouts (not the test suite's quick ones), moves paced at ``rate`` MB/s."""
    return [
        f"--rebalance-rate={rate}",
        "--heartbeat-interval=0.5",
        "--peer-timeout=10",
        "--stall-timeout=30",
        "--delete-grace=1",
        "--log-level=warning",
    ]


async def used_by_url(session: aiohttp.ClientSession, cluster: ProcessCluster) -> dict[str, int]:
    """Used bytes per peer URL once rebalancing and its deletions are done."""
    used = await cluster.settle(session, timeout=3600, unchanged_for=2.0)
    return dict(zip(cluster.urls, used, strict=True))


async def probe(session: aiohttp.ClientSession, url: str, size: int) -> tuple[float, float]:
    """PUT then GET one file through ``url``; return (PUT MB/s, GET MB/s)."""
    sent = xxhash.xxh3_128()
    started = time.perf_counter()
    async with session.put(
        f"{url}/files/growth/probe.bin",
        data=body(size, sent),
        headers={"Content-Length": str(size)},
    ) as response:
        if response.status != 201:
            raise RuntimeError(await response.text())
    put = size / (time.perf_counter() - started) / 1e6
    started = time.perf_counter()
    async with session.get(f"{url}/files/growth/probe.bin") as response:
        async for _ in response.content.iter_any():
            pass
    get = size / (time.perf_counter() - started) / 1e6
    return round(put, 1), round(get, 1)


async def fill(session: aiohttp.ClientSession, urls: list[str], total: int) -> dict[str, str]:
    rng = random.Random(7)
    digests = {}
    stored = 0
    index = 0
    while stored < total:
        size = min(rng.choice(SIZES), total - stored)
        name = f"growth/{index:05d}"
        digest = xxhash.xxh3_128()
        url = urls[index % len(urls)]
        async with session.put(
            f"{url}/files/{name}", data=body(size, digest), headers={"Content-Length": str(size)}
        ) as response:
            if response.status != 201:
                raise RuntimeError(await response.text())
        digests[name] = digest.hexdigest()
        stored += size
        index += 1
    return digests


async def verify(session: aiohttp.ClientSession, url: str, digests: dict[str, str]) -> int:
    wrong = 0
    for name, expected in digests.items():
        got = xxhash.xxh3_128()
        async with session.get(f"{url}/files/{name}") as response:
            async for piece in response.content.iter_any():
                got.update(piece)
        wrong += got.hexdigest() != expected
    return wrong


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="1G", help="bytes stored before the joins")
    parser.add_argument("--joins", type=int, default=2)
    parser.add_argument("--rate", type=float, default=50.0, help="rebalance MB/s per peer")
    parser.add_argument("--probe", default="64M", help="foreground probe file size")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    total, probe_size = parse_size(args.data), parse_size(args.probe)
    rows = []
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    with tempfile.TemporaryDirectory(prefix="ringstore-growth-") as tmp:
        cluster = ProcessCluster(Path(tmp), 6, *peer_args(args.rate))
        async with aiohttp.ClientSession(timeout=timeout, headers=ADMIN_HEADERS) as session:
            try:
                await cluster.start(session)
                digests = await fill(session, cluster.urls, total)
                print(f"stored {label(total)} in {len(digests)} files on 6 peers", flush=True)
                for join in range(args.joins):
                    first = cluster.urls[0]
                    before_probe = await probe(session, first, probe_size)
                    await probe_cleanup(session, first)
                    before = await used_by_url(session, cluster)
                    started = time.perf_counter()
                    newcomer = await cluster.add_peer(session)
                    await cluster.wait_converged(session, 60)
                    during_probe = await probe(session, first, probe_size)
                    await probe_cleanup(session, first)
                    await eventually(lambda: cluster.quiet(session), 3600, "rebalancing", 0.25)
                    seconds = time.perf_counter() - started
                    after = await used_by_url(session, cluster)
                    rows.append(
                        report(
                            join, before, after, newcomer.url, seconds, before_probe, during_probe
                        )
                    )
                    print(json.dumps(rows[-1]), flush=True)
                wrong = await verify(session, cluster.urls[-1], digests)
                print(f"read back {len(digests)} files through the last newcomer: {wrong} wrong")
            finally:
                await cluster.stop()
    table = markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"growth-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (args.out / f"growth-{stamp}.md").write_text(table + "\n")
    print(f"saved to {args.out}/growth-{stamp}.{{json,md}}")


async def probe_cleanup(session: aiohttp.ClientSession, url: str) -> None:
    async with session.delete(f"{url}/files/growth/probe.bin"):
        pass


def report(
    join: int,
    before: dict[str, int],
    after: dict[str, int],
    newcomer: str,
    seconds: float,
    before_probe: tuple[float, float],
    during_probe: tuple[float, float],
) -> dict[str, Any]:
    stored = sum(before.values())
    received = after[newcomer]
    gained_by_old = sum(max(0, after[u] - before[u]) for u in before)
    ideal = stored / len(after)
    fills = list(after.values())
    return {
        "join": join + 1,
        "peers": len(after),
        "stored_bytes": stored,
        "newcomer_bytes": received,
        "moved_over_ideal": round(received / ideal, 3),
        "fraction_to_newcomer": round(received / (received + gained_by_old), 4),
        "old_peers_grew_bytes": gained_by_old,
        "max_over_mean_fill": round(max(fills) / (sum(fills) / len(fills)), 3),
        "newcomer_over_mean_fill": round(received / (sum(fills) / len(fills)), 3),
        "rebalance_seconds": round(seconds, 1),
        "rebalance_mb_s": round(received / seconds / 1e6, 1),
        "put_mb_s_before": before_probe[0],
        "get_mb_s_before": before_probe[1],
        "put_mb_s_during": during_probe[0],
        "get_mb_s_during": during_probe[1],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| join | peers | moved/ideal | to newcomer | max/mean fill | newcomer/mean "
        "| rebalance s | MB/s | PUT before/during | GET before/during |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['join']} | {r['peers']} | {r['moved_over_ideal']} | {r['fraction_to_newcomer']} "
        f"| {r['max_over_mean_fill']} | {r['newcomer_over_mean_fill']} "
        f"| {r['rebalance_seconds']} | {r['rebalance_mb_s']} "
        f"| {r['put_mb_s_before']} / {r['put_mb_s_during']} "
        f"| {r['get_mb_s_before']} / {r['get_mb_s_during']} |"
        for r in rows
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_benchmark(main())
