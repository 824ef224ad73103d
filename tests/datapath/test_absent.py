"""A quorum read (``ManifestReplicas.read``, what GET, HEAD and DELETE read) says a file does
not exist only on the word of enough of its home replicas: N - W + 1 (2 of 3), so that any
write quorum meets one of them. Stand-ins for homes out of reach (failing, or seen down: a
peer under load is) hold nothing of what was written before, and their "none" made a
stored file answer 404 while two of its homes were slow (``bench/cold_reads.py --files 24
--read-mbps 20``: a 4 KiB file read 404 under a disk held to a third of what it was asked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.errors import FileNotFound, Unavailable
from tests.harness.grid import Grid, GridPeer, home, outside, settled_grid, store

BLOCK = 1024


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    async with settled_grid(tmp_path, block_size=BLOCK) as grid:
        yield grid


async def test_a_stored_file_whose_homes_all_fail_is_unavailable_not_absent(grid: Grid) -> None:
    written = await store(grid[0], "f", b"small file")
    reader = outside(grid, "f")
    for replica in home(grid, "f"):
        grid.break_peer(replica)  # stand-ins (handoffs) answer for them: none
    with pytest.raises(Unavailable, match="0 of the 3 home replicas"):
        await reader.replicas.read("f")
    with pytest.raises(Unavailable):
        await reader.coordinator.stat("f")  # a 503, not a 404
    back = home(grid, "f")[0]
    grid.mend_peer(back)
    reader.membership.report_success(back.membership.me.id)  # (as its next heartbeat would)
    assert await reader.replicas.read("f") == written  # one home holding it is enough


async def test_a_file_on_two_homes_both_out_of_reach_is_unavailable(grid: Grid) -> None:
    """The case the rule is for: a write quorum of two homes took the file and the third
    missed it (down then, or its write failed); with those two out of reach, the third's
    "none" and the handoffs' prove nothing."""
    written = await store(grid[0], "f", b"small file")
    homes = home(grid, "f")
    assert await homes[2].manifests.retract("f", written.precedence)  # it missed the write
    reader = outside(grid, "f")
    grid.break_peer(homes[0])
    grid.break_peer(homes[1])
    with pytest.raises(Unavailable, match="1 of the 3 home replicas"):
        await reader.replicas.read("f")
    grid.mend_peer(homes[1])  # (before: a read that found it would repair the third)
    reader.membership.report_success(homes[1].membership.me.id)
    assert await reader.replicas.read("f") == written  # one of the two is enough


async def test_homes_seen_down_are_asked_before_a_503(grid: Grid) -> None:
    """Homes the reader's membership sees down are not asked at first (the placement has
    handoffs in their place); where nothing asked holds the name, they are asked before the
    read gives up: gossip's word of a peer under load can be wrong. Only homes out of reach
    in fact leave the read unavailable."""
    written = await store(grid[0], "f", b"small file")
    for name, stored in (("f", written), ("never-written", None)):
        reader = outside(grid, name)
        homes = home(grid, name)
        grid.break_peer(homes[0])
        _see_down(reader, homes[1:])  # wrongly: they are up
        assert await reader.replicas.read(name) == stored
        for replica in homes[1:]:
            grid.break_peer(replica)
        _see_down(reader, homes[1:])  # rightly
        with pytest.raises(Unavailable, match="0 of the 3 home replicas"):
            await reader.replicas.read(name)
        for replica in homes:
            grid.mend_peer(replica)
            reader.membership.report_success(replica.membership.me.id)


async def test_homes_down_past_repair_after_are_not_asked(tmp_path: Path) -> None:
    """A home down past --repair-after is taken as lost (maybe for good: a call to a host
    that is gone waits out the connect timeout on every read), and not asked before a 503;
    and no replica whose call failed is asked again in the same read (a hung one would
    cost the peer timeout twice)."""
    async with settled_grid(tmp_path, block_size=BLOCK, repair_after=0.0) as grid:
        name = "never-written"
        reader = outside(grid, name)
        homes = home(grid, name)
        for replica in homes[1:]:
            grid.break_peer(replica)
        _see_down(reader, homes[1:])  # down past --repair-after (0 s here)
        asked = grid.transport.calls
        with pytest.raises(Unavailable, match="1 of the 3 home replicas"):
            await reader.replicas.read(name)
        assert [asked["get_manifest", r.url] for r in homes] == [1, 0, 0]
        for replica in homes[1:]:
            reader.membership.report_success(replica.id)  # (seen up: asked, and they fail)
        with pytest.raises(Unavailable, match="1 of the 3 home replicas"):
            await reader.replicas.read(name)
        assert [asked["get_manifest", r.url] for r in homes] == [2, 1, 1]


def _see_down(reader: GridPeer, replicas: list[GridPeer]) -> None:
    """``reader``'s membership sees ``replicas`` down (their calls failed ``down_after``
    times), whatever they are."""
    for replica in replicas:
        for _ in range(reader.config.down_after):
            reader.membership.report_failure(replica.membership.me.id, "a test")
    assert {r.membership.me.id for r in replicas} <= set(reader.membership.down_ids())


async def test_none_on_the_word_of_two_homes_and_not_of_one(grid: Grid) -> None:
    name = "never-written"
    reader = outside(grid, name)
    homes = home(grid, name)
    assert await reader.replicas.read(name) is None
    grid.break_peer(homes[0])
    assert await reader.replicas.read(name) is None  # 2 of 3: every write quorum meets one
    with pytest.raises(FileNotFound):
        await reader.coordinator.stat(name)
    grid.break_peer(homes[2])
    with pytest.raises(Unavailable, match="1 of the 3 home replicas"):
        await reader.replicas.read(name)
    with pytest.raises(Unavailable):
        await reader.replicas.read(name, every_replica=True)
