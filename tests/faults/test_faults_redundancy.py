"""Full redundancy comes back, with real peer processes (issue 12): files written while peers
were down, or before the ring had k+m members, end with k+m chunks on distinct peers and
survive the loss of any m peers."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import pytest

from tests.harness import (
    ProcessCluster,
    check_files,
    eventually,
    get_manifest,
    peer_id_of,
    put_file,
)
from tests.harness.files import fully_redundant

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BLOCK = 4096


def files_of(prefix: str, count: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        f"{prefix}/{i:03d}": rng.randbytes(rng.choice([1, 999, 5 * BLOCK, 3 * 5 * BLOCK + 7]))
        for i in range(count)
    }


async def test_files_written_with_a_peer_down_survive_two_other_lost_peers(
    seven: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    """The issue's sequence: kill one peer, store 10 files (acknowledged, degraded), bring
    it back, wait until every chunk of every file sits on an up peer, kill two *other*
    peers: all 50 files read back (before: 2 of 50 were lost)."""
    urls = seven.urls
    before = files_of("redundancy/before", 40, seed=1)
    for i, (name, data) in enumerate(before.items()):
        await put_file(http, urls[i % 7], name, data)
    await seven.crash(6)
    await seven.wait_seen_down(http, {peer_id_of(seven.peers[6].data_dir)})
    during = files_of("redundancy/during", 10, seed=2)
    for i, (name, data) in enumerate(during.items()):
        reply = await put_file(http, urls[i % 6], name, data)
        assert (reply["chunks"], reply["degraded"]) == (6, True)
    await seven.restart(6, http)
    files = before | during
    await eventually(
        lambda: fully_redundant(http, urls[0], sorted(files)),
        timeout=60,
        what="7 chunks of every file on up peers",
    )
    for name in during:
        holders = [c["holder"] for c in (await get_manifest(http, urls[1], name))["chunks"]]
        assert len(set(holders)) == 7, name
    await seven.crash(0)
    await seven.crash(3)
    await check_files(http, [urls[1], urls[2], urls[4], urls[5], urls[6]], files)


async def test_a_six_peer_cluster_grown_to_seven_gives_every_file_seven_distinct_holders(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = ProcessCluster(tmp_path, 6, f"--block-size={BLOCK}")
    try:
        await cluster.start(http)
        files = files_of("grown", 30, seed=3)
        for i, (name, data) in enumerate(files.items()):
            reply = await put_file(http, cluster.urls[i % 6], name, data)
            assert (reply["chunks"], reply["degraded"]) == (6, True)
        await cluster.add_peer(http)
        ids = {peer_id_of(p.data_dir) for p in cluster.peers}

        async def seven_each() -> bool:
            for name in files:
                manifest = await get_manifest(http, cluster.urls[0], name)
                if {c["holder"] for c in manifest["chunks"]} != ids:
                    return False
            return True

        await eventually(seven_each, timeout=60, what="7 distinct holders for every file")
        await cluster.crash(1)
        await cluster.crash(4)
        await check_files(http, [cluster.urls[i] for i in (0, 2, 3, 5, 6)], files)
    finally:
        await cluster.stop()


async def test_the_cluster_doubles_under_reads_with_no_failed_read(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """6 peer processes holding 40 files; 7 more start at once while a client reads every
    file in turn through the old peers until the cluster settles: every read answers the
    stored bytes, and the old peers never grow (chunks go only to the newcomers)."""
    cluster = ProcessCluster(tmp_path, 6, f"--block-size={BLOCK}", "--rebalance-rate=0")
    try:
        await cluster.start(http)
        files = files_of("doubling", 40, seed=4)
        for i, (name, data) in enumerate(files.items()):
            await put_file(http, cluster.urls[i % 6], name, data)
        before = await cluster.settle(http)
        old = cluster.urls[:6]
        failures: list[str] = []
        reads = 0
        done = asyncio.Event()

        async def reader() -> None:
            nonlocal reads
            names = sorted(files)
            deadline = time.monotonic() + 150
            while not done.is_set() and reads < 20_000 and time.monotonic() < deadline:
                name = names[reads % len(names)]
                async with http.get(f"{old[reads % 6]}/files/{name}") as response:
                    body = await response.read()
                    if response.status != 200 or body != files[name]:
                        failures.append(f"{name}: {response.status}")
                reads += 1

        reading = asyncio.ensure_future(reader())
        try:
            await asyncio.gather(*(cluster.add_peer(http) for _ in range(7)))
            await cluster.wait_converged(http, timeout=60)
            after = await cluster.settle(http)
        finally:
            done.set()
            await reading
        print(f"{reads} reads while 6 peers became 13: {len(failures)} failed")
        assert failures == []
        assert reads >= 40
        for index, (was, now) in enumerate(zip(before, after[:6], strict=True)):
            assert now <= was, f"old peer {index} grew from {was} to {now}"
    finally:
        await cluster.stop()
