"""``ManifestReplicas.read_committed`` over the in-process grid: the read that decisions
which destroy data rest on (a pack's space taken back, ``node.upkeep.packer``). It answers a
manifest only once a write quorum of the name's replicas holds it, and "none" only when
every home replica itself said so: a stand-in answering for a home out of reach holds
nothing, and a pack whose member "has no manifest" is deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.errors import Unavailable, Undecided
from node.model.manifest import Manifest
from node.model.preconditions import EntityTag, Preconditions, TagList
from node.model.version import Version
from tests.harness import eventually
from tests.harness.grid import Grid, GridPeer, home, outside, settled_grid, store

BLOCK = 1024


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    async with settled_grid(tmp_path, block_size=BLOCK) as grid:
        yield grid


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
        with pytest.raises(Unavailable, match="hand-over"):
            await reader.replicas.read_committed("never-written")
        grid.settle()
        assert await reader.replicas.read_committed("never-written") is None
    finally:
        await grid.close()


async def test_none_while_a_handoff_that_took_a_write_is_down_is_no_answer(grid: Grid) -> None:
    """Two homes down: a write goes to the third and to handoffs standing in (a sloppy
    quorum), and the third loses it (its write failed). The two come back (a placement
    remembered: a hand-over is due) and the handoffs go down before handing it over. Every
    home answers "none", and the only replicas that know better are out of reach: a hand-
    over under way from a member up or down is no answer (a pack holding the file would
    give its space back on that "none")."""
    homes = home(grid, "f")
    writer = outside(grid, "f")
    for down in homes[:2]:
        grid.break_peer(down)
        for _ in range(writer.config.down_after):
            writer.membership.report_failure(down.id, "a test")
    written = await store(writer, "f", b"small file")
    stand_ins = [
        grid.peer_of(m)
        for m in writer.membership.replicas("f").members
        if m != homes[2].id and await grid.peer_of(m).manifests.get("f") == written
    ]
    assert stand_ins, "the write went to handoffs"
    assert writer not in stand_ins  # (it reads on after they go down)
    assert await homes[2].manifests.retract("f", written.precedence)  # (its write failed)
    for back in homes[:2]:
        grid.mend_peer(back)
        writer.membership.report_success(back.id)
    for gone in stand_ins:
        grid.break_peer(gone)
        for _ in range(writer.config.down_after):
            writer.membership.report_failure(gone.id, "a test")
    assert not writer.membership.previous_replicas("f")  # (none up to ask)
    with pytest.raises(Unavailable, match="hand-over"):
        await writer.replicas.read_committed("f")


def conditional(written: Manifest) -> Manifest:
    """A conditional write over ``written`` (If-Match its etag), one moment later."""
    return Manifest(
        "f", Version(written.version.wall_ms + 1, 0, "cond"), written.layout, "etag-cond"
    )


async def offer(homes: list[GridPeer], written: Manifest, newer: Manifest) -> None:
    """Each home replica takes ``newer`` as its coordinator offered it: provisional."""
    condition = Preconditions(if_match=TagList(False, (EntityTag(written.etag),)))
    for replica in homes:
        assert (await replica.holder.put_manifest(newer, None, condition)).stored


async def test_a_write_whose_confirmation_one_replica_lost_is_committed(grid: Grid) -> None:
    """Two home replicas heard the verdict, the third's confirmation was lost: the write
    was confirmed (a holder unmarked says so), and the packer must not wait for a verdict
    nobody will send (the name's next write would be the first to clear it)."""
    written = await store(grid[0], "f", b"small file")
    homes, newer = home(grid, "f"), conditional(written)
    await offer(homes, written, newer)
    for replica in homes[:2]:
        await replica.manifests.confirm("f", newer.precedence)
    assert await outside(grid, "f").replicas.read_committed("f") == newer


async def test_an_overdue_write_nobody_decided_is_decided_for_the_next_call(grid: Grid) -> None:
    """Every holder has it provisional and its verdict is overdue (its coordinator died):
    the call decides it as a read would (held by all three: confirmed) and says
    "undecided"; the next finds it committed."""
    written = await store(grid[0], "f", b"small file")
    homes, newer = home(grid, "f"), conditional(written)
    await offer(homes, written, newer)
    for replica in homes:
        replica.manifests.provisional_for = 0.0
    reader = outside(grid, "f")
    with pytest.raises(Undecided):
        await reader.replicas.read_committed("f")
    assert await reader.replicas.read_committed("f") == newer
