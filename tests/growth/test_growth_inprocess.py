"""Joins move data only to the newcomer, about its fair share, and lose nothing."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ring import plan_moves
from tests.harness import LocalCluster, eventually

BLOCK = 4096


@pytest.fixture
async def six(tmp_path: Path, loop_guard: None) -> AsyncIterator[LocalCluster]:
    cluster = LocalCluster(tmp_path, block_size=BLOCK, rebalance_rate=0)
    try:
        await cluster.start(6)
        yield cluster
    finally:
        await cluster.stop()


async def store_files(
    http: aiohttp.ClientSession, cluster: LocalCluster, count: int
) -> dict[str, bytes]:
    rng = random.Random(42)
    files = {}
    for i in range(count):
        data = rng.randbytes(rng.choice([1, 700, 5 * BLOCK, 3 * 5 * BLOCK + 17, 60_000]))
        name = f"growth/{i:04d}"
        async with http.put(
            f"{cluster[i % len(cluster.peers)].url}/files/{name}", data=io.BytesIO(data)
        ) as response:
            assert response.status == 201, await response.text()
        files[name] = data
    return files


async def settled(cluster: LocalCluster, names: list[str]) -> bool:
    """Every file's chunks sit on its placement set under the current ring."""
    peer = cluster[0]
    await peer.membership.refresh_ring()
    ring = peer.membership.ring
    if len(ring) != len(cluster.peers):
        return False
    for name in names:
        manifest = await peer.replicas.read(name)
        assert manifest is not None
        if plan_moves(manifest.holders(), ring, manifest.file_id):
            return False
    return True


def used(cluster: LocalCluster) -> list[int]:
    return [p.chunks.used_bytes for p in cluster.peers]


async def test_a_join_moves_only_to_the_newcomer_about_its_share(
    six: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await store_files(http, six, 120)
    before = used(six)
    total = sum(before)

    newcomer = await six.add_peer(rebalance_rate=0)
    await six.wait_converged()
    await eventually(lambda: settled(six, list(files)), timeout=60, what="rebalancing to settle")
    # The old copies go after the delete grace.
    await eventually(lambda: sum(used(six)) == total, timeout=30, what="old copies deleted")

    after = used(six)
    for old, (was, now) in enumerate(zip(before, after[:6], strict=True)):
        assert now <= was, f"old peer {old} grew from {was} to {now}"
    # The newcomer holds exactly the chunks the committed manifests place on it: no strays.
    placed = 0
    for name in files:
        manifest = await six[0].replicas.read(name)
        assert manifest is not None
        placed += manifest.layout.chunk_size * list(manifest.holders().values()).count(newcomer.id)
    moved = after[6]
    assert moved == placed
    # About its share: 120 files of mixed sizes on random peer ids and versions give a sample
    # spread of about 7% (five local runs: 0.79..1.07 of the ideal), so the bound here is wide.
    # How evenly the ring itself shares keys is asserted tightly on 20,000 keys with fixed
    # ids in tests/ring/test_ring_balance.py.
    ideal = total / 7
    print(f"moved {moved} bytes, ideal {ideal:.0f}, ratio {moved / ideal:.3f}; fill {after}")
    assert 0.6 <= moved / ideal <= 1.4
    for name, data in files.items():
        async with http.get(f"{newcomer.url}/files/{name}") as response:
            assert await response.read() == data, name


async def test_restarting_a_peer_moves_nothing(
    six: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await store_files(http, six, 30)
    before = used(six)
    await six[2].stop()
    await six.wait_down(six[2])
    await six[2].start()
    await six.wait_converged()
    assert await settled(six, list(files))
    assert [p.rebalancer.progress.moves for p in six.peers] == [0] * 6
    assert used(six) == before
