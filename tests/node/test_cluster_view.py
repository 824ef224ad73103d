"""The cluster view and health of a fresh seven-peer cluster: exact counts, one ring."""

from __future__ import annotations

import random

import aiohttp

from tests.harness import LocalCluster, eventually, put_file


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_cluster_and_health(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    await put_file(http, cluster[0].url, "view/f", payload(10_000))
    async with http.get(f"{cluster[0].url}/health") as response:
        assert response.status == 200
    await eventually(lambda: cluster_chunks_seen(cluster) == 7, what="gossip of chunk counts")
    async with http.get(f"{cluster[1].url}/cluster") as response:
        view = await response.json()
    assert view["self"] == cluster[1].id
    assert len(view["peers"]) == 7
    assert {p["state"] for p in view["peers"]} == {"up"}
    assert sum(p["chunks"] for p in view["peers"]) == 7
    assert view["ring"]["evenness"] >= 1.0
    digests = set()
    for peer in cluster.peers:
        digests.add(peer.membership.ring.digest)
    assert digests == {view["ring"]["digest"]}


def cluster_chunks_seen(cluster: LocalCluster) -> int:
    peer = cluster[1]
    return sum(
        peer.chunks.chunk_count
        if m.id == peer.id
        else peer.membership.liveness(m.id).figures.chunks
        for m in peer.membership.members()
    )
