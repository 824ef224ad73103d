"""Conditional PUT and DELETE over the in-process grid: the condition is decided at the
commit, by the home manifest replicas, and a write that does not get a quorum of them is
taken back without a trace.

The verdict of a set of replica answers is a pure function, tested as a table; the grid
tests race real coordinators against each other, break home replicas and script the order
in which replicas hear racing writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cluster.transport import Address
from node.datapath.replicas import Verdict, conditional_verdict
from node.disk.manifest_store import ManifestStore
from node.errors import (
    FileNotFound,
    PeerUnavailable,
    PreconditionFailed,
    Unavailable,
    WriteContended,
)
from node.model.layout import Layout
from node.model.manifest import Manifest, ReplicaRead, ReplicaWrite
from node.model.preconditions import ANY, EntityTag, Preconditions, TagList
from node.model.version import Version
from tests.harness import eventually
from tests.harness.grid import Grid, GridPeer, home, outside

BLOCK = 1024
NO_FILE = Preconditions(if_none_match=ANY)


def if_match(etag: str) -> Preconditions:
    return Preconditions(if_match=TagList(False, (EntityTag(etag),)))


def v(wall: int) -> Version:
    return Version(wall, 0, "p")


def stored() -> ReplicaWrite:
    return ReplicaWrite(True, v(9), None)


def holding(wall: int) -> ReplicaWrite:
    return ReplicaWrite(False, v(wall), None)


# (answers of the home replicas that answered, verdict) with N = 3, W = 2
VERDICTS = [
    ([stored(), stored(), stored()], Verdict.STORED),
    ([stored(), stored(), holding(1)], Verdict.STORED),
    ([stored(), stored()], Verdict.STORED),  # one replica down
    ([stored(), holding(1), holding(1)], Verdict.REFUSED),
    ([holding(1), holding(1), holding(1)], Verdict.REFUSED),
    ([holding(1), holding(1)], Verdict.REFUSED),  # one down: the two agree
    ([holding(1), holding(2), holding(2)], Verdict.REFUSED),  # one lags behind version 2
    ([stored(), holding(1)], Verdict.UNDECIDED),  # one down: no two agree
    ([holding(1), holding(2)], Verdict.UNDECIDED),
    ([stored(), holding(1), holding(2)], Verdict.UNDECIDED),  # racing writers, no winner
    ([holding(1)], Verdict.UNDECIDED),
    ([stored()], Verdict.UNDECIDED),
    ([], Verdict.UNDECIDED),
]


@pytest.mark.parametrize(("answers", "verdict"), VERDICTS)
def test_conditional_verdicts(answers: list[ReplicaWrite], verdict: Verdict) -> None:
    assert conditional_verdict(answers, 2) is verdict


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    grid = Grid(tmp_path, 8, block_size=BLOCK)
    await grid.start()
    try:
        yield grid
    finally:
        await grid.close()


async def body(data: bytes, gate: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    yield data[:100]
    if gate is not None:
        await gate.wait()
    yield data[100:]


async def store(
    peer: GridPeer, name: str, data: bytes, condition: Preconditions | None = None
) -> Manifest:
    return await peer.coordinator.put(name, body(data), len(data), "text/plain", condition)


async def chunk_ids(grid: Grid) -> set[str]:
    found: set[str] = set()
    for peer in grid.peers:
        found.update(await peer.chunks.chunk_ids())
    return found


def bare(name: str, writer: str, etag: str) -> Manifest:
    """A manifest without chunks, as a writer named ``writer`` would commit it now."""
    return Manifest(name, Version(int(time.time() * 1000), 0, writer), Layout(0, 5, 0), etag)


@contextlib.contextmanager
def scripted(grid: Grid, **calls: Callable[..., Awaitable[object]]) -> Iterator[None]:
    """Replace the grid transport's named calls with ``calls`` while the block runs."""
    for attribute, call in calls.items():
        setattr(grid.transport, attribute, call)
    try:
        yield
    finally:
        for attribute in calls:
            delattr(grid.transport, attribute)


async def repairs_since(before: set[asyncio.Task[Any]]) -> None:
    """Wait for the replica repairs started since ``before`` (``asyncio.all_tasks()``)."""
    await asyncio.gather(
        *(
            task
            for task in asyncio.all_tasks() - before
            if task.get_coro().__qualname__.endswith(("._repair", "._hear_out"))  # type: ignore[union-attr]
        )
    )


class Race:
    """Two writers holding one etag: the winner's write (the older version) heard first by
    the second and third home replicas, the loser's (newer) by the first."""

    def __init__(self, homes: list[GridPeer]) -> None:
        self.winner = bare("f", "writer-a", "etag-a")
        later = Version(self.winner.version.wall_ms + 1, 0, "writer-b")
        self.loser = dataclasses.replace(bare("f", "writer-b", "etag-b"), version=later)
        self._first = {replica.url: self.winner.version for replica in homes[1:]}
        self._first[homes[0].url] = self.loser.version
        self._heard = {replica.url: asyncio.Event() for replica in homes}
        self.retracting, self.release = asyncio.Event(), asyncio.Event()

    async def in_order(
        self,
        put: Callable[..., Awaitable[ReplicaWrite]],
        to: Address,
        manifest: Manifest,
        *args: object,
    ) -> ReplicaWrite:
        """``put`` the manifest to a replica, a racer only once the other has been heard."""
        if manifest.version not in (self.winner.version, self.loser.version):
            return await put(to, manifest, *args)
        if self._first[to.url] != manifest.version:
            await self._heard[to.url].wait()
        written = await put(to, manifest, *args)
        self._heard[to.url].set()
        return written

    def commit(
        self, coordinators: list[GridPeer], condition: Preconditions
    ) -> tuple[asyncio.Future[None], asyncio.Future[None]]:
        """The winner's commit through the first coordinator and the loser's through the
        second, both started."""
        return (
            asyncio.ensure_future(
                coordinators[0].replicas.commit(self.winner, condition=condition)
            ),
            asyncio.ensure_future(coordinators[1].replicas.commit(self.loser, condition=condition)),
        )

    @contextlib.contextmanager
    def retractions_held(self, grid: Grid) -> Iterator[None]:
        """While the block runs, replicas hear the racers ``in_order`` and every retraction
        sets ``retracting``, then waits for ``release``."""
        put, retract = grid.transport.put_manifest, grid.transport.retract_manifest

        async def scripted_put(to: Address, manifest: Manifest, *args: object) -> ReplicaWrite:
            return await self.in_order(put, to, manifest, *args)

        async def scripted_retract(to: Address, manifest: Manifest, *args: object) -> None:
            self.retracting.set()
            await self.release.wait()
            await retract(to, manifest, *args)  # type: ignore[arg-type]

        with scripted(grid, put_manifest=scripted_put, retract_manifest=scripted_retract):
            yield


async def test_if_none_match_any_creates_once(grid: Grid) -> None:
    first = await store(grid[0], "f", b"a" * 3000, NO_FILE)
    with pytest.raises(PreconditionFailed, match=r"If-None-Match: \*"):
        await store(grid[3], "f", b"b" * 3000, NO_FILE)
    assert (await grid[5].coordinator.stat("f")).version == first.version


async def test_a_create_only_write_racing_undecided_ones_is_not_told_the_file_exists(
    grid: Grid,
) -> None:
    """Each home replica holds a different racer's create-only write, none decided (each a
    loser to be retracted): the name has no version. A create-only PUT then is told to
    try again (503), not 412, which says a version exists and which a client does not
    retry (an attack on real peers: 6 of 406 rounds of seven racers left the name unwritten
    and some clients told 412)."""
    for i, replica in enumerate(home(grid, "f")):
        kept = await replica.manifests.put(bare("f", f"racer-{i}", f"e{i}"), condition=NO_FILE)
        assert kept.stored
    with pytest.raises(Unavailable):
        await store(outside(grid, "f"), "f", b"c" * 3000, NO_FILE)


async def test_a_condition_broken_during_the_upload_is_refused_at_the_commit(
    grid: Grid,
) -> None:
    gate = asyncio.Event()
    data = b"slow" * 2000
    slow = asyncio.ensure_future(
        grid[1].coordinator.put("f", body(data, gate), len(data), "text/plain", NO_FILE)
    )
    await eventually(lambda: len(grid.transport.calls) > 0, what="the slow upload started")
    fast = await store(grid[2], "f", b"fast" * 1000)  # after the slow one read "no file"
    kept = fast.placed_chunks()
    gate.set()
    with pytest.raises(PreconditionFailed):
        await slow
    assert (await grid[6].coordinator.stat("f")).version == fast.version
    wanted = {chunk for _, chunk in kept}

    async def only_the_fast_files_chunks() -> bool:
        return await chunk_ids(grid) == wanted

    await eventually(only_the_fast_files_chunks, what="the refused upload's chunks deleted")


@pytest.mark.parametrize("attempt", range(3))
async def test_two_writers_holding_one_etag_one_wins(grid: Grid, attempt: int) -> None:
    first = await store(grid[0], "f", b"first")
    results = await asyncio.gather(
        store(grid[1], "f", b"second from 1", if_match(first.etag)),
        store(grid[2 + attempt], "f", b"second from 2", if_match(first.etag)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Manifest)]
    assert len(winners) == 1, results
    assert [type(r) for r in results if not isinstance(r, Manifest)] == [PreconditionFailed]
    assert (await grid[7].coordinator.stat("f")).version == winners[0].version


async def test_handoffs_are_neither_asked_nor_counted(grid: Grid) -> None:
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    for down in homes[:2]:
        grid.break_peer(down)
    coordinator = next(p for p in grid.peers if p not in homes)
    before = grid.transport.calls.copy()
    # A handoff has never seen "f": counted, it would accept a create over an existing file.
    with pytest.raises(Unavailable, match="1 of its 3 replicas answered and 0 accepted") as too_few:
        await coordinator.replicas.commit(bare("f", "w", "e"), condition=NO_FILE)
    assert not isinstance(too_few.value, WriteContended)  # down, not contended: no retry
    # A write whose condition holds, with too few home replicas up, is not stored either.
    with pytest.raises(Unavailable):
        await coordinator.replicas.commit(bare("f", "w", "e2"), condition=if_match(existing.etag))
    asked = {url for (call, url), n in (grid.transport.calls - before).items() if n}
    assert asked <= {p.url for p in homes} | {coordinator.url}
    assert await homes[2].manifests.get("f") == existing, "taken back to what it held"


async def test_with_one_home_replica_down_the_other_two_decide(grid: Grid) -> None:
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    grid.break_peer(homes[0])
    coordinator = next(p for p in grid.peers if p not in homes)
    with pytest.raises(PreconditionFailed):
        await coordinator.replicas.commit(bare("f", "w", "e"), condition=NO_FILE)
    update = bare("f", "w", "e2")
    await coordinator.replicas.commit(update, condition=if_match(existing.etag))
    for replica in homes[1:]:
        assert (await replica.manifests.get("f")) == update


async def test_racing_writers_without_a_winner_leave_the_file_as_it_was(grid: Grid) -> None:
    """Three writers holding one etag, each heard first by a different home replica: each is
    stored once and refused twice, by replicas holding the others' writes. None is
    committed (503: try again), and each replica gets back what it held; dropping the
    writes instead would leave the file with no replica at all."""
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    writers = [bare("f", f"writer-{i}", f"etag-{i}") for i in range(3)]
    owner = {replica.url: writer.version for replica, writer in zip(homes, writers, strict=True)}
    owned = {replica.url: asyncio.Event() for replica in homes}
    refusals_done = asyncio.Event()
    refusals: list[bool] = []
    transport = grid.transport
    put, retract = transport.put_manifest, transport.retract_manifest

    async def scripted_put(to: Address, manifest: Manifest, *args: object) -> ReplicaWrite:
        if owner[to.url] == manifest.version:  # this replica hears this writer first
            written = await put(to, manifest, *args)  # type: ignore[arg-type]
            owned[to.url].set()
            return written
        await asyncio.gather(*(event.wait() for event in owned.values()))
        written = await put(to, manifest, *args)  # type: ignore[arg-type]
        refusals.append(written.stored)
        if len(refusals) == 6:
            refusals_done.set()
        return written

    async def scripted_retract(to: Address, manifest: Manifest, *args: object) -> None:
        await refusals_done.wait()  # every replica has refused the others' writes by now
        await retract(to, manifest, *args)  # type: ignore[arg-type]

    with scripted(grid, put_manifest=scripted_put, retract_manifest=scripted_retract):
        coordinators = [p for p in grid.peers if p not in homes][:3]
        results = await asyncio.gather(
            *(
                peer.replicas.commit(writer, condition=if_match(existing.etag))
                for peer, writer in zip(coordinators, writers, strict=True)
            ),
            return_exceptions=True,
        )
    assert refusals == [False] * 6
    assert [type(r) for r in results] == [WriteContended] * 3, results
    for replica in homes:
        assert await replica.manifests.get("f") == existing
    assert (await grid[7].coordinator.stat("f")).version == existing.version


async def test_a_read_never_copies_a_losing_write_over_the_winner(grid: Grid) -> None:
    """Two writers holding one etag: the winner's write (the older version) is kept by two
    home replicas, the loser's (newer) by the third, which heard it first. Until the loser
    is retracted there, that replica holds it provisional: a read meeting it passes it over
    for the winner (confirmed before its writer heard) and copies it nowhere (copied over
    the winner on the other two, it would outlive the retraction as the newest version: an
    acknowledged write lost). Once the loser is gone, reads repair the third replica."""
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    race = Race(homes)
    winner, loser = race.winner, race.loser
    coordinators = [p for p in grid.peers if p not in homes]
    reader = coordinators[2]
    with race.retractions_held(grid):
        won, lost = race.commit(coordinators, if_match(existing.etag))
        await won  # acknowledged
        await race.retracting.wait()  # the loser is refused by two, not yet taken back
        before = asyncio.all_tasks()
        assert await reader.replicas.read("f", every_replica=True) == winner  # loser passed over
        with pytest.raises(Unavailable, match="not yet decided"):  # work on it waits
            await reader.replicas.read("f", decided=True)
        await repairs_since(before)  # any a read set off has done its work
        for replica in homes[1:]:
            assert await replica.manifests.get("f") == winner
        assert await homes[0].manifests.read("f") == ReplicaRead(loser, provisional=True)
        race.release.set()
        with pytest.raises(PreconditionFailed):
            await lost
    assert await homes[0].manifests.get("f") == existing  # put back where the loser was
    assert await reader.replicas.read("f", decided=True) == winner

    async def repaired() -> bool:
        return await homes[0].manifests.get("f") == winner

    await eventually(repaired, what="the read repaired the third replica with the winner")
    for replica in homes:
        assert not (await replica.holder.get_manifest("f")).provisional


async def restart_manifests(grid: Grid, peer: GridPeer, clock: Callable[[], float]) -> None:
    """Close ``peer``'s manifest store and open its data again, as a restarted peer does:
    what it knew only in memory is gone."""
    await peer.manifests.close()
    again = ManifestStore(grid.root / f"peer-{grid.peers.index(peer)}", peer.config.m, clock=clock)
    await again.open()
    peer.manifests = peer.holder.manifests = again


async def test_a_replica_restarted_before_the_losers_retraction_still_never_copies_it(
    grid: Grid,
) -> None:
    """As above, but the replica holding the loser restarts before its retraction and
    misses it. The mark must survive the restart (it is in the loser's record): forgotten,
    the loser would be the newest settled replica and reads would copy it over the
    acknowledged winner. Once overdue, a read decides it (too few holders: retracted) and
    puts back what it replaced, then repair brings the winner."""
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    race = Race(homes)
    winner, loser = race.winner, race.loser
    now = [time.monotonic()]
    coordinators = [p for p in grid.peers if p not in homes]
    reader = coordinators[2]
    with race.retractions_held(grid):
        won, lost = race.commit(coordinators, if_match(existing.etag))
        await won
        await race.retracting.wait()
        await restart_manifests(grid, homes[0], lambda: now[0])
        grid.break_peer(homes[0])  # down while the retraction is sent: it never arrives
        race.release.set()
        with pytest.raises(PreconditionFailed):
            await lost
    grid.mend_peer(homes[0])
    assert await homes[0].manifests.read("f") == ReplicaRead(loser, provisional=True)
    before = asyncio.all_tasks()
    assert await reader.replicas.read("f", every_replica=True) == winner
    await repairs_since(before)
    for replica in homes[1:]:
        assert await replica.manifests.get("f") == winner, "the loser was copied"
    now[0] += homes[0].manifests.provisional_for  # overdue: the next read decides it

    async def decided() -> bool:
        await reader.replicas.read("f", every_replica=True)
        return await homes[0].manifests.get("f") == winner

    try:
        await eventually(decided, what="the loser retracted and the winner repaired in its place")
    except AssertionError as exc:  # seen once under tox (py313), not reproduced: say more
        held = [await replica.manifests.read("f") for replica in homes]
        undecidable = reader.replicas._undecidable
        raise AssertionError(f"{exc}; homes hold {held}; waits to decide: {undecidable}") from None
    for replica in homes:
        assert await replica.manifests.read("f") == ReplicaRead(winner)


@pytest.mark.parametrize("retraction", ["heard", "lost", "lost, a home replica down"])
async def test_a_loser_whose_answer_was_lost_is_taken_back(grid: Grid, retraction: str) -> None:
    """The replica that kept the loser's write answered, but the answer was lost: the
    loser's coordinator retracts from it anyway, and the replica puts back what the write
    replaced (it kept that with its mark). If that retraction is lost too, the replica's
    write stays provisional (read, never copied) until a read finds its verdict overdue and
    decides it from the home replicas: held by one of three, it was never committed. With
    a home replica down it might have been (one holder and one silent make two): it waits,
    and work that acts on it with it."""
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    race = Race(homes)
    winner, loser = race.winner, race.loser
    transport = grid.transport
    put, retract = transport.put_manifest, transport.retract_manifest

    async def scripted_put(to: Address, manifest: Manifest, *args: object) -> ReplicaWrite:
        written = await race.in_order(put, to, manifest, *args)
        if manifest.version == loser.version and written.stored:
            raise PeerUnavailable(to.url, "connection reset before the answer (scripted)")
        return written

    async def scripted_retract(to: Address, manifest: Manifest, *args: object) -> None:
        if retraction != "heard" and manifest.version == loser.version:
            raise PeerUnavailable(to.url, "connection reset (scripted)")
        await retract(to, manifest, *args)  # type: ignore[arg-type]

    coordinators = [p for p in grid.peers if p not in homes]
    with scripted(grid, put_manifest=scripted_put, retract_manifest=scripted_retract):
        results = await asyncio.gather(
            coordinators[0].replicas.commit(winner, condition=if_match(existing.etag)),
            coordinators[1].replicas.commit(loser, condition=if_match(existing.etag)),
            return_exceptions=True,
        )
    reader = coordinators[2]
    assert results[0] is None, results
    assert isinstance(results[1], PreconditionFailed), results
    if retraction == "heard":
        assert await homes[0].manifests.read("f") == ReplicaRead(existing)
    else:
        assert await homes[0].manifests.read("f") == ReplicaRead(loser, provisional=True)
        assert await reader.replicas.read("f", every_replica=True) == winner  # passed over
        for replica in homes[1:]:
            assert await replica.manifests.get("f") == winner
        homes[0].manifests.provisional_for = 0.0  # its verdict is overdue now
        if retraction != "lost":
            grid.break_peer(homes[1])
            with pytest.raises(Unavailable, match="not yet decided"):
                await reader.replicas.read("f", decided=True)
            assert await homes[0].manifests.read("f") == ReplicaRead(loser, True, overdue=True)
            grid.mend_peer(homes[1])
            reader = coordinators[3]  # (the first tries again only a peer timeout later)
        assert await reader.replicas.read("f", every_replica=True) == winner
    assert await reader.replicas.read("f", decided=True) == winner

    async def repaired() -> bool:
        await reader.replicas.read("f", every_replica=True)  # a read that meets it behind
        return await homes[0].manifests.read("f") == ReplicaRead(winner)

    await eventually(repaired, what="reads to repair the third replica with the winner")


async def test_a_committed_write_whose_confirmations_were_lost_is_decided_by_a_read(
    grid: Grid,
) -> None:
    """A conditional write kept by two home replicas (the third never got it) is committed,
    but neither hears so: both hold it provisional. Reads pass it over for the version
    before it when a replica answers that one, repair nothing with it, and work that acts
    on it waits. Once its verdict is overdue a read decides it from the home replicas
    (held by two of three: committed), confirms it, and repairs the third."""
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    update = bare("f", "writer", "etag-new")
    transport = grid.transport
    put = transport.put_manifest

    async def scripted_put(to: Address, manifest: Manifest, *args: object) -> ReplicaWrite:
        if manifest.version == update.version and to.url == homes[2].url:
            raise PeerUnavailable(to.url, "connection refused (scripted)")
        return await put(to, manifest, *args)  # type: ignore[arg-type]

    async def lost(to: Address, manifest: Manifest) -> None:
        raise PeerUnavailable(to.url, "connection reset (scripted)")

    coordinator = next(p for p in grid.peers if p not in homes)
    with scripted(grid, put_manifest=scripted_put, confirm_manifest=lost):
        await coordinator.replicas.commit(update, condition=if_match(existing.etag))
    reader = grid.peers[-1] if grid.peers[-1] not in homes else coordinator
    for replica in homes[:2]:
        assert await replica.manifests.read("f") == ReplicaRead(update, provisional=True)
    assert await reader.replicas.read("f", every_replica=True) == existing
    # The first home replica reads itself and the next: two provisional answers, nothing else.
    assert await homes[0].replicas.read("f") == update
    with pytest.raises(Unavailable, match="not yet decided"):
        await homes[0].replicas.read("f", decided=True)
    assert await homes[2].manifests.get("f") == existing, "not repaired with it yet"
    for replica in homes:
        replica.manifests.provisional_for = 0.0
    assert await reader.replicas.read("f", decided=True) == update
    for replica in homes[:2]:
        assert await replica.manifests.read("f") == ReplicaRead(update)

    async def repaired() -> bool:
        await reader.replicas.read("f", every_replica=True)  # a read that meets it behind
        return await homes[2].manifests.get("f") == update

    await eventually(repaired, what="reads to repair the third replica")


async def test_a_decision_counts_a_replica_holding_a_newer_write_as_silent(grid: Grid) -> None:
    """Z was kept by two home replicas (committed, its confirmations lost); on one of them
    Q, conditional on Z's etag, now sits over it (Q's coordinator gone). Deciding Z must
    not take that replica for one that lacks Z: Q may be retracted and put Z back there."""
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    z = bare("f", "writer-z", "etag-z")
    later = Version(z.version.wall_ms + 1, 0, "writer-q")
    q = dataclasses.replace(bare("f", "writer-q", "etag-q"), version=later)
    for replica in homes[:2]:
        assert (await replica.holder.put_manifest(z, None, if_match(existing.etag))).stored
    assert (await homes[0].holder.put_manifest(q, None, if_match(z.etag))).stored
    for replica in homes:
        replica.manifests.provisional_for = 0.0
    reader = next(p for p in grid.peers if p not in homes)
    assert not await reader.replicas.decide("f", z)  # one holder, one silent: undecided
    assert await homes[1].manifests.read("f") == ReplicaRead(z, True, overdue=True)


async def test_a_tombstone_not_yet_decided_is_not_purged(
    grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Purging retracts a tombstone from its replicas; a provisional one retracted puts
    back what it deleted. So only a decided tombstone is purged."""
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    tombstone = dataclasses.replace(bare("f", "writer", ""), deleted=True)
    for replica in homes:  # a conditional DELETE kept by all three, confirmations lost
        assert (await replica.holder.put_manifest(tombstone, None, if_match(existing.etag))).stored
    # (The grid's peers keep the placements of their start: no hand-over is under way.)
    monkeypatch.setattr(grid[0].membership, "handing_over", lambda name: False)
    assert not await grid[0].replicas.purge_tombstone(tombstone)
    for replica in homes:
        await replica.manifests.confirm("f", tombstone.precedence)
    assert await grid[0].replicas.purge_tombstone(tombstone)
    for replica in homes:
        assert await replica.manifests.get("f") is None
    with pytest.raises(FileNotFound):
        await grid[5].coordinator.stat("f")


async def test_a_delete_writes_over_a_tombstone_not_yet_decided(grid: Grid) -> None:
    """A conditional DELETE's tombstone kept by one home replica, its verdict not heard (it
    may be a loser): a DELETE that reads it must still write its own tombstone. Taken for
    "already deleted", its 204 would be a lie once that tombstone is retracted."""
    existing = await store(grid[0], "f", b"exists")
    homes = home(grid, "f")
    offered = dataclasses.replace(bare("f", "writer", ""), deleted=True)
    assert (await homes[0].holder.put_manifest(offered, None, if_match(existing.etag))).stored
    deleted = await homes[0].coordinator.delete("f")  # reads its own replica first
    assert deleted.deleted
    assert deleted.precedence > offered.precedence
    await homes[0].holder.retract_manifest("f", offered.precedence)  # its loser's verdict
    for peer in grid.peers:
        with pytest.raises(FileNotFound):
            await peer.coordinator.stat("f")


async def test_conditional_deletes(grid: Grid) -> None:
    existing = await store(grid[0], "f", b"exists")
    with pytest.raises(PreconditionFailed):
        await grid[1].coordinator.delete("f", if_match("not-it"))
    assert (await grid[2].coordinator.stat("f")).version == existing.version
    tombstone = await grid[3].coordinator.delete("f", if_match(existing.etag))
    assert tombstone.deleted
    with pytest.raises(PreconditionFailed):  # deleted: no current version to match
        await grid[4].coordinator.delete("f", if_match(existing.etag))
    assert await grid[4].coordinator.delete("f", NO_FILE) == tombstone  # nothing to do
    with pytest.raises(FileNotFound):  # never existed: 404 before any condition (13.2.1)
        await grid[4].coordinator.delete("never", if_match("x"))


async def test_if_unmodified_since_on_put(grid: Grid) -> None:
    existing = await store(grid[0], "f", b"exists")
    second = existing.version.wall_ms // 1000
    with pytest.raises(PreconditionFailed):
        await store(grid[1], "f", b"late", Preconditions(if_unmodified_since=second - 1))
    updated = await store(grid[1], "f", b"in time", Preconditions(if_unmodified_since=second))
    assert (await grid[2].coordinator.stat("f")).version == updated.version
    created = await store(grid[1], "new", b"x", Preconditions(if_unmodified_since=second - 1))
    assert created.size == 1, "no version, no date to compare: the condition is ignored"


async def test_a_delayed_delete_that_meets_an_undecided_newest_tries_again_soon(
    grid: Grid,
) -> None:
    """An overwrite's old chunks are deleted once a read says which manifest is current; a
    conditional write still awaiting its verdict makes that read wait. The verdict comes in
    milliseconds (or is overdue after three peer timeouts): the delete tries again within
    an eighth of a peer timeout, not after the 5 minutes a holder that does not answer gets."""
    existing = await store(grid[0], "f", b"old" * 2000)
    old_chunks = {existing.chunk_id(ref.index) for ref in existing.chunks}
    homes = home(grid, "f")

    async def lost(to: Address, manifest: Manifest) -> None:
        raise PeerUnavailable(to.url, "connection reset (scripted)")

    with scripted(grid, confirm_manifest=lost):  # committed, every confirmation lost
        update = await store(grid[2], "f", b"new" * 2000, if_match(existing.etag))
    assert (await homes[0].manifests.read("f")).provisional
    assert old_chunks <= await chunk_ids(grid), "kept while the newest is undecided"
    for replica in homes:
        await replica.manifests.confirm("f", update.precedence)

    async def deleted() -> bool:
        return old_chunks.isdisjoint(await chunk_ids(grid))

    await eventually(deleted, timeout=grid[0].config.peer_timeout, what="the retry deleted them")
