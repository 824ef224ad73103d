"""A peer SIGKILLed while it packs small files (issue 13): its pack is stored and some of its
members rewritten to name it, the others not; every file still reads right from every peer,
and after its restart the files left inline are packed too."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import pytest

from node.upkeep.packer import MIN_PACK_BYTES
from tests.harness import ProcessCluster, check_files, eventually, put_file
from tests.harness.local import INLINE
from tests.harness.metrics import scrape, value

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PACKING = ("--pack-after=4", "--anti-entropy-interval=1")  # cold once all are written


async def packed(http: aiohttp.ClientSession, cluster: ProcessCluster, name: str) -> bool:
    async with http.get(f"{cluster.urls[0]}/manifests/{name}") as response:
        assert response.status == 200, await response.text()
        return bool((await response.json())["packed"])


async def test_a_peer_killed_while_it_packs_loses_nothing_and_packs_after_its_restart(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = ProcessCluster(tmp_path, 7, f"--inline-max={INLINE['inline_max']}", *PACKING)
    victim = 2
    try:
        await cluster.start(http)
        rng = random.Random(21)
        files = {f"packing/{i}": rng.randbytes(rng.randint(1, 16 << 10)) for i in range(420)}
        names = list(files)
        for start in range(0, len(names), 30):  # 30 at a time, through peers 0 and 1
            batch = names[start : start + 30]
            await asyncio.gather(
                *(put_file(http, cluster.urls[i % 2], n, files[n]) for i, n in enumerate(batch))
            )
        # Kill the victim the moment it has stored a pack: its members' rewrites (one
        # commit each) are under way or just done.
        url = cluster.urls[victim]
        deadline = time.monotonic() + 60
        while True:
            samples = await scrape(http, url)
            if value(samples, "ringstore_packs_written_total") >= 1:
                break
            assert time.monotonic() < deadline, "the victim stored no pack within 60 s"
            await asyncio.sleep(0.005)  # polled: the victim's walk packs within a second
        await cluster.crash(victim)
        rewritten = value(samples, "ringstore_packed_files_total")
        print(f"killed after its first pack with {rewritten:.0f} members rewritten")
        # (its pack holds the ~60 files it is primary for, one commit each)
        assert rewritten < 40, "the kill came after the victim's rewrites, not among them"

        others = [u for i, u in enumerate(cluster.urls) if i != victim]
        await check_files(http, others, files)
        await cluster.restart(victim, http)
        await cluster.wait_converged(http)

        async def packed_but_what_waits() -> bool:
            inline = [len(files[n]) for n in names if not await packed(http, cluster, n)]
            return sum(inline) < len(cluster.peers) * MIN_PACK_BYTES

        # Each primary leaves what it gathers under MIN_PACK_BYTES for its next walk.
        await eventually(packed_but_what_waits, 60, "the files packed once the victim is back")
        await check_files(http, cluster.urls, files)
    finally:
        await cluster.stop()


async def test_files_left_cold_while_two_peers_are_down_survive_a_third_lost_after(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Two peers killed while small files go cold, back, and at once a third killed for
    good: every file reads right. A pack stored during the outage would have had 5 of its 7
    chunks, so the third loss took 27-45 of 150 files for good (an attack on the packer,
    3 runs of 3); the files wait inline, three copies each, until every peer is up."""
    cluster = ProcessCluster(tmp_path, 7, f"--inline-max={INLINE['inline_max']}", *PACKING)
    try:
        await cluster.start(http)
        rng = random.Random(44)
        files = {f"outage/{i}": rng.randbytes(rng.randint(1, 16 << 10)) for i in range(80)}
        names = list(files)
        for start in range(0, len(names), 20):  # (a peer serves 64 requests at once)
            batch = names[start : start + 20]
            await asyncio.gather(*(put_file(http, cluster.urls[0], n, files[n]) for n in batch))
        await cluster.crash(5)
        await cluster.crash(6)

        cold = time.time() + 4  # --pack-after: the files are cold from then on
        await eventually(lambda: time.time() > cold, 10, "the files to go cold")
        walked = [s["anti_entropy"]["passes"] for s in await cluster.scrub_stats(http)]

        async def two_walks_since() -> bool:  # the second wholly after they went cold
            now = [s["anti_entropy"]["passes"] for s in await cluster.scrub_stats(http)]
            return all(after >= before + 2 for before, after in zip(walked, now, strict=True))

        await eventually(two_walks_since, 30, "two walks of every peer up since")
        packs = [stats["packs"] for stats in await cluster.scrub_stats(http)]
        assert sum(p["packs"] + p["files_packed"] for p in packs) == 0, packs

        await cluster.restart(5, http)
        await cluster.restart(6, http)
        await cluster.crash(2)  # a disk lost for good, before any repair could run
        await check_files(http, [u for i, u in enumerate(cluster.urls) if i != 2], files)
    finally:
        await cluster.stop()
