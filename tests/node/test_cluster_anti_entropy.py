"""Anti-entropy: a chunk gone from its holder, parity included, is found without any read
needing it, and rebuilt where it belongs (issue 12)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aiohttp
import pytest

from tests.harness import LocalCluster, LocalPeer, eventually
from tests.node.shared.test_cluster_files import get, payload, put
from tests.node.test_cluster_faults import manifest_of


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    return {"anti_entropy_interval": 1.0, "repair_interval": 60.0}


async def test_chunk_files_deleted_by_hand_come_back_within_two_passes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(80_000, seed=9)
    await put(http, cluster[0].url, "entropy/lost", data)
    manifest = await manifest_of(http, cluster[0].url, "entropy/lost")
    lost = [c for c in manifest["chunks"] if c["index"] in (1, 6)]  # one data, one parity
    paths = [cluster.holder(c["holder"]).chunks.path(c["id"]) for c in lost]
    for path in paths:
        path.unlink()
    primary = next(
        p for p in cluster.peers if p.membership.replicas("entropy/lost").primary == p.id
    )
    before = primary.anti_entropy.stats.passes
    await eventually(  # (a pass under way at the unlink may be the first: the second is whole)
        lambda: primary.anti_entropy.stats.passes - before >= 2, timeout=20, what="two passes"
    )
    assert primary.anti_entropy.stats.missing_found >= 2  # (more: found again mid-rebuild)
    await eventually(
        lambda: all(path.is_file() for path in paths),
        timeout=20,
        what="both chunks rebuilt on their holders",
    )
    after = await manifest_of(http, cluster[0].url, "entropy/lost")
    assert {c["index"]: c["holder"] for c in after["chunks"]} == {
        c["index"]: c["holder"] for c in manifest["chunks"]
    }
    for chunk in after["chunks"][:2]:  # decoding now needs the rebuilt parity chunk
        cluster.holder(chunk["holder"]).chunks.path(chunk["id"]).unlink()
    assert await get(http, cluster[3].url, "entropy/lost") == data


@pytest.mark.parametrize(
    "cluster_overrides", [{"anti_entropy_interval": 0.3, "tombstone_grace": 0}]
)
async def test_a_tombstone_every_home_replica_holds_is_purged_and_stays_deleted(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await put(http, cluster[0].url, "entropy/gone", b"soon deleted")
    async with http.delete(f"{cluster[1].url}/files/entropy/gone") as response:
        assert response.status == 204

    async def held() -> list[LocalPeer]:
        return [p for p in cluster.peers if await p.manifests.get("entropy/gone") is not None]

    await eventually(lambda: _none(held()), timeout=20, what="the tombstone purged everywhere")
    # The replicas drop it before their answers reach the purging peer, which counts it then.
    await eventually(
        lambda: sum(p.anti_entropy.stats.tombstones_purged for p in cluster.peers) >= 1,
        timeout=5,
        what="the purge counted",
    )
    async with http.get(f"{cluster[2].url}/files/entropy/gone") as response:
        assert response.status == 404
    async with http.get(f"{cluster[3].url}/files", params={"prefix": "entropy/"}) as response:
        assert (await response.json())["files"] == []


@pytest.mark.parametrize(
    "cluster_overrides", [{"anti_entropy_interval": 0.3, "tombstone_grace": 0}]
)
async def test_a_tombstone_is_kept_while_a_home_replica_is_down(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A home replica that is down may hold the file's live version: purging the tombstone
    would let it come back."""
    name = "entropy/kept"
    homes = cluster[0].membership.home_replicas(name).members
    victim = cluster.holder(homes[2])
    await victim.stop()
    await cluster.wait_down(victim)
    up = [p for p in cluster.peers if p.running]
    await put(http, up[0].url, name, b"x")
    async with http.delete(f"{up[1].url}/files/{name}") as response:
        assert response.status == 204
    primary = next(p for p in up if p.membership.replicas(name).primary == p.id)
    passes = primary.anti_entropy.stats.passes
    await eventually(
        lambda: primary.anti_entropy.stats.passes >= passes + 3, timeout=20, what="3 passes"
    )
    assert primary.anti_entropy.stats.tombstones_purged == 0
    kept = [await p.manifests.get(name) for p in up]
    assert any(m is not None and m.deleted for m in kept)


async def _none(held: Awaitable[list[LocalPeer]]) -> bool:
    return not await held
