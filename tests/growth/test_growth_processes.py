"""Growth end to end with real processes: joins by seed and by mDNS alone, weights, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ring import Member, Ring
from tests.harness import ProcessCluster, own_record

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BLOCK = 4096
FILES = 600
NETNS = os.environ.get("RINGSTORE_TEST_NETNS") == "1"


async def moves(http: aiohttp.ClientSession, cluster: ProcessCluster) -> list[int]:
    """Each peer's count of rebalance moves since it started."""
    return [own_record(view)["rebalance"]["moves"] for view in await cluster.views(http)]


@pytest.fixture
async def seven(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[ProcessCluster]:
    """As many peers as a file has chunks: every file is stored whole, 7 of 7."""
    service = f"_rs{random.getrandbits(32):08x}._tcp.local." if NETNS else None
    cluster = ProcessCluster(
        tmp_path,
        7,
        f"--block-size={BLOCK}",
        "--rebalance-rate=0",
        service_type=service,
    )
    try:
        await cluster.start(http)
        yield cluster
    finally:
        await cluster.stop()


async def store(http: aiohttp.ClientSession, cluster: ProcessCluster) -> dict[str, str]:
    """Store FILES files of random sizes through every peer in turn, 8 PUTs at a time."""
    rng = random.Random(5)
    files = {f"grow/{i:04d}": rng.randbytes(rng.randint(1, 6 * 5 * BLOCK)) for i in range(FILES)}
    slots = asyncio.Semaphore(8)

    async def put(i: int, name: str, data: bytes) -> None:
        async with slots, http.put(f"{cluster.urls[i % 7]}/files/{name}", data=data) as response:
            assert response.status == 201, await response.text()

    await asyncio.gather(*(put(i, name, data) for i, (name, data) in enumerate(files.items())))
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


async def check_files(http: aiohttp.ClientSession, url: str, digests: dict[str, str]) -> None:
    """Read every file back through ``url``, 8 GETs at a time; fail on any difference."""
    slots = asyncio.Semaphore(8)

    async def check(name: str, digest: str) -> None:
        async with slots, http.get(f"{url}/files/{name}") as response:
            assert response.status == 200
            assert hashlib.sha256(await response.read()).hexdigest() == digest, name

    await asyncio.gather(*(check(name, digest) for name, digest in digests.items()))


async def test_joins_move_only_to_newcomers_about_their_share(
    seven: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    digests = await store(http, seven)
    before = await seven.settle(http)
    joins = [("--join", True)]
    if NETNS:  # mDNS alone, only inside the test's private network namespace
        joins.append(("mdns", False))
    for how, seeded in joins:
        newcomer = await seven.add_peer(http, seeded=seeded)
        await seven.wait_converged(http)
        after = await seven.settle(http)
        stored = sum(before)
        for index, (was, now) in enumerate(zip(before, after[:-1], strict=True)):
            assert now <= was, f"join by {how}: old peer {index} grew from {was} to {now}"
        moved = after[-1]
        ideal = stored / len(after)
        mean = sum(after) / len(after)
        print(
            f"join by {how}: moved/ideal {moved / ideal:.3f}, newcomer/mean "
            f"{after[-1] / mean:.3f}, max/mean {max(after) / mean:.3f}"
        )
        assert sum(after) == stored, f"moves must not create or lose bytes: {before} -> {after}"
        assert 0.9 <= moved / ideal <= 1.2, f"join by {how}: moved/ideal {moved / ideal:.3f}"
        assert abs(after[-1] - mean) / mean <= 0.10
        await check_files(http, newcomer.url, digests)
        before = after


async def test_a_weight_2_newcomer_gets_the_share_its_ring_ownership_says(
    seven: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    await store(http, seven)
    await seven.settle(http)
    heavy = await seven.add_peer(http, "--weight=2")
    await seven.wait_converged(http)
    after = await seven.settle(http)
    # A file has 7 chunks and a peer holds at most one chunk of a file, so with 8 peers a
    # weight can only do so much: the newcomer's bytes follow the weighted ring's exact
    # ownership of 7-wide placement sets (docs/operations.md, "Weights").
    view = (await seven.views(http))[0]
    ring = Ring(Member(p["id"], p["url"], p["weight"], p["zone"]) for p in view["peers"])
    ids = [v["self"] for v in await seven.views(http)]
    share = ring.ownership(7)[ids[-1]] / 7
    measured = after[-1] / sum(after)
    print(f"weight-2 newcomer: {measured:.4f} of all bytes, ring says {share:.4f}")
    assert abs(measured - share) / share <= 0.1
    assert measured > 1 / 8  # more than an equal share, though not twice
    del heavy


async def test_killing_and_restarting_a_peer_moves_nothing(
    seven: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    digests = await store(http, seven)
    before = await seven.settle(http)
    moves_before = await moves(http, seven)  # a peer seen down while storing can cause some
    seven.kill(3)
    await seven.peers[3].process.wait()  # type: ignore[union-attr]
    await seven.peers[3].start()
    await seven.peers[3].wait_healthy(http, 30)
    after = await seven.settle(http)
    assert after == before  # not one byte changed peers
    moves_before[3] = 0  # the restarted peer counts from its start
    assert await moves(http, seven) == moves_before
    await check_files(http, seven.urls[3], digests)
