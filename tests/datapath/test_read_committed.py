"""``ManifestReplicas.read_committed`` over the in-process grid: the read that decisions
which destroy data rest on (a pack's space taken back, ``node.upkeep.packer``). It answers a
manifest only once a write quorum of the name's replicas holds it, and "none" only when
every home replica itself said so: a stand-in answering for a home out of reach holds
nothing, and a pack whose member "has no manifest" is deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.errors import Unavailable
from node.model.manifest import Manifest
from node.model.version import Version
from tests.harness import eventually
from tests.harness.grid import Grid, GridPeer

BLOCK = 1024


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    grid = Grid(tmp_path, 8, block_size=BLOCK)
    await grid.start()
    grid.settle()
    try:
        yield grid
    finally:
        await grid.close()


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def store(peer: GridPeer, name: str, data: bytes) -> Manifest:
    return await peer.coordinator.put(name, body(data), len(data), "text/plain")


def home(grid: Grid, name: str) -> list[GridPeer]:
    return [grid.peer_of(m) for m in grid[0].membership.home_replicas(name).members]


def outside(grid: Grid, name: str) -> GridPeer:
    """A peer that is not one of ``name``'s home replicas (it coordinates the reads)."""
    homes = home(grid, name)
    return next(peer for peer in grid.peers if peer not in homes)


async def test_none_only_when_every_home_replica_answers_none(grid: Grid) -> None:
    reader = outside(grid, "never-written")
    assert await reader.replicas.read_committed("never-written") is None
    grid.break_peer(home(grid, "never-written")[1])  # a stand-in answers for it: none
    with pytest.raises(Unavailable, match="not every home replica"):
        await reader.replicas.read_committed("never-written")


async def test_a_committed_file_reads_with_a_home_replica_out_of_reach(grid: Grid) -> None:
    written = await store(grid[0], "f", b"small file")
    reader = outside(grid, "f")
    assert await reader.replicas.read_committed("f") == written
    grid.break_peer(home(grid, "f")[2])
    assert await reader.replicas.read_committed("f") == written, "two homes: a write quorum"
    grid.break_peer(home(grid, "f")[1])
    with pytest.raises(Unavailable):
        await reader.replicas.read_committed("f")


async def test_a_write_one_replica_holds_is_not_committed_until_repaired(grid: Grid) -> None:
    """A newer manifest on one home replica alone (its coordinator died after that one
    write) is no answer, neither is the older one the others hold: either may be what the
    next quorum read sees. The read repairs the replicas behind, and then answers it."""
    written = await store(grid[0], "f", b"small file")
    homes = home(grid, "f")
    newer = Manifest(
        "f", Version(written.version.wall_ms + 1, 0, "gone"), written.layout, "etag-newer"
    )
    await homes[0].manifests.put(newer)
    reader = outside(grid, "f")
    with pytest.raises(Unavailable, match="on 1 replicas"):
        await reader.replicas.read_committed("f")

    async def committed() -> bool:
        try:
            return await reader.replicas.read_committed("f") == newer
        except Unavailable:
            return False

    await eventually(committed, what="the read to repair the replicas behind")
    for replica in homes:
        assert await replica.manifests.get("f") == newer


async def test_none_while_replicas_are_handed_over_is_no_answer(tmp_path: Path) -> None:
    """Right after a ring change (the grid's own start: every member it saw come up), a
    name's manifest may still be on a member of an earlier placement: "none" from the
    current homes is no answer until the hand-over is done."""
    grid = Grid(tmp_path, 8, block_size=BLOCK)
    await grid.start()  # not settled
    try:
        reader = outside(grid, "never-written")
        assert reader.membership.previous_replicas("never-written")
        with pytest.raises(Unavailable, match="not every home replica"):
            await reader.replicas.read_committed("never-written")
        grid.settle()
        assert await reader.replicas.read_committed("never-written") is None
    finally:
        await grid.close()
