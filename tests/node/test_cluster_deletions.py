"""Delayed deletions are journaled: a coordinator restarted before they ran still runs them
(issue 12; before, they were lost and waited for garbage collection)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.harness import LocalCluster, eventually
from tests.node.shared.test_cluster_files import payload, put


async def test_an_overwrites_old_chunks_are_deleted_after_its_coordinator_restarts(
    tmp_path: Path, http: aiohttp.ClientSession, loop_guard: None
) -> None:
    cluster = LocalCluster(tmp_path, block_size=4096, delete_grace=5.0)
    try:
        await cluster.start(7)
        coordinator = cluster[0]
        await put(http, coordinator.url, "deletions/x", payload(30_000, seed=1))
        old = await coordinator.replicas.read("deletions/x")
        assert old is not None
        paths = [
            cluster.holder(ref.holder).chunks.path(old.chunk_id(ref.index)) for ref in old.chunks
        ]
        await put(http, coordinator.url, "deletions/x", payload(30_000, seed=2))
        await coordinator.stop()  # before the delete grace: the deletion is only journaled
        assert all(path.is_file() for path in paths)
        await coordinator.start()
        await eventually(
            lambda: not any(path.is_file() for path in paths),
            timeout=30,
            what="the old version's chunks deleted after the restart",
        )
    finally:
        await cluster.stop()
