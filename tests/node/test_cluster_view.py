"""The cluster view and health of a fresh seven-peer cluster: exact counts, one ring."""

from __future__ import annotations

import random

import aiohttp

from ring import ring_balance
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
    # Each member's share of the ring, as ring.balance computes it from the ring itself.
    balance = ring_balance(cluster[1].membership.ring)
    assert view["ring"]["balance"] == {
        "max_ratio": round(balance.max_ratio, 4),
        "min_ratio": round(balance.min_ratio, 4),
        "cv": round(balance.cv, 4),
    }
    for peer in view["peers"]:
        share = balance.share(peer["id"])
        assert share is not None
        assert (peer["token_share"], peer["fair_share"]) == (
            round(share.share, 6),
            round(share.fair, 6),
        )
        # Its own figures, through gossip: no quota here, so fill is of the disk.
        assert peer["max_bytes"] == 0
        assert peer["capacity_bytes"] == peer["disk_total_bytes"] > 0
        used = peer["disk_total_bytes"] - peer["disk_free_bytes"]
        assert peer["fill"] == round(used / peer["capacity_bytes"], 4)
        assert peer["repair_queued"] == peer["deletions_pending"] == 0
        assert peer["scrub"] == {"pass_chunks": 0, "pass_checked": 0}
        age = peer["figures_age_s"]
        assert age == 0.0 if peer["id"] == cluster[1].id else 0 <= age < 10


def cluster_chunks_seen(cluster: LocalCluster) -> int:
    peer = cluster[1]
    return sum(
        peer.chunks.chunk_count
        if m.id == peer.id
        else peer.membership.liveness(m.id).figures.chunks
        for m in peer.membership.members()
    )
