"""Anti-entropy: a chunk gone from its holder, parity included, is found without any read
needing it, and rebuilt where it belongs (issue 12)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.harness import LocalCluster, eventually
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
    await eventually(
        lambda: all(path.is_file() for path in paths),
        timeout=20,
        what="both chunks rebuilt on their holders",
    )
    assert primary.anti_entropy.stats.passes - before <= 2
    assert primary.anti_entropy.stats.missing_found == 2
    after = await manifest_of(http, cluster[0].url, "entropy/lost")
    assert {c["index"]: c["holder"] for c in after["chunks"]} == {
        c["index"]: c["holder"] for c in manifest["chunks"]
    }
    for chunk in after["chunks"][:2]:  # decoding now needs the rebuilt parity chunk
        cluster.holder(chunk["holder"]).chunks.path(chunk["id"]).unlink()
    assert await get(http, cluster[3].url, "entropy/lost") == data
