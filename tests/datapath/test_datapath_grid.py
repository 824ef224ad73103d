"""The data path over the in-process grid: no sockets, real stores, real quorums and codes.

Each test breaks or hangs grid peers the way the cluster tests stop or hang real ones, and
checks what the coordinator, the replica quorums, the rebuilder and liveness do about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import xxhash

from node.cluster.transport import Address
from node.datapath import coordinator as coordinator_module
from node.datapath.hedging import CEILING, FLOOR
from node.datapath.rebuild import Rebuilder
from node.errors import FileNotFound, InsufficientStorage, Unavailable, WriteContended
from node.model.manifest import Manifest, ReplicaWrite
from node.model.preconditions import ANY, Preconditions
from node.model.version import Version
from node.upkeep.repairer import Repairer
from tests.harness.disk import flip_byte
from tests.harness.grid import Grid, GridPeer
from tests.harness.polling import eventually

BLOCK = 1024  # one stripe is 5 KiB: small files span several stripes


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    """Eight peers with the production timeouts: nothing here waits on one, and a loaded
    machine must not turn a slow thread-pool read into a 'broken' chunk."""
    grid = Grid(tmp_path, 8, block_size=BLOCK)
    await grid.start()
    try:
        yield grid
    finally:
        await grid.close()


async def body(data: bytes, piece: int = 3000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


async def read(peer: GridPeer, name: str, start: int = 0, end: int | None = None) -> bytes:
    manifest = await peer.coordinator.stat(name)
    return await read_manifest(peer, manifest, start, manifest.size if end is None else end)


async def read_manifest(peer: GridPeer, manifest: Manifest, start: int, end: int) -> bytes:
    return b"".join([bytes(p) async for p in peer.coordinator.stream(manifest, start, end)])


async def store(peer: GridPeer, name: str, data: bytes) -> Manifest:
    return await peer.coordinator.put(name, body(data), len(data), "application/octet-stream")


def holders_of(grid: Grid, manifest: Manifest, indexes: Iterable[int]) -> list[GridPeer]:
    return [grid.peer_of(manifest.holders()[i]) for i in indexes]


@pytest.mark.parametrize("size", [0, 1, 4, 5, 6, BLOCK * 5 - 1, BLOCK * 5, BLOCK * 17 + 3])
async def test_round_trip_through_different_coordinators(grid: Grid, size: int) -> None:
    data = os.urandom(size)
    manifest = await store(grid[1], "f", data)
    assert len(manifest.chunks) == 7
    assert len(set(manifest.holders().values())) == 7, "every chunk on a different peer"
    assert await read(grid[6], "f") == data
    assert await read(grid[3], "f", size // 3, size // 2) == data[size // 3 : size // 2]
    assert manifest.etag == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("etag", ["md5", "xxh3"])
async def test_the_etag_hashes_every_stripe_in_order(tmp_path: Path, etag: str) -> None:
    """Stripes of 80 KiB are hashed in worker threads (MD5) while the next is read and
    encoded; the etag is still the hash of the content in order, short last stripe included."""
    grid = Grid(tmp_path, 7, block_size=16 << 10, etag=etag)
    await grid.start()
    try:
        data = os.urandom(5 * (80 << 10) + 12345)
        manifest = await grid[0].coordinator.put(
            "f", body(data, piece=7000), None, "application/octet-stream"
        )
        expected = (
            hashlib.md5(data).hexdigest()
            if etag == "md5"
            else f"xxh3-{xxhash.xxh3_128_hexdigest(data)}"
        )
        assert manifest.etag == expected
        assert (await grid[4].coordinator.stat("f")).etag == expected
        assert await read(grid[2], "f") == data
    finally:
        await grid.close()


async def test_two_broken_data_holders_are_decoded_around_and_reported(grid: Grid) -> None:
    data = os.urandom(BLOCK * 12 + 7)
    manifest = await store(grid[0], "f", data)
    broken = holders_of(grid, manifest, range(2))
    reader = next(p for p in grid.peers if p not in broken)
    # The manifest is read first: a manifest call to a broken replica would count against
    # it, and a holder already seen down is read last, so nothing would need decoding.
    found = await reader.coordinator.stat("f")
    for peer in broken:
        grid.break_peer(peer)
    pieces = [bytes(p) async for p in reader.coordinator.stream(found, 0, found.size)]
    assert b"".join(pieces) == data
    assert reader.broken_reports == [("f", {0, 1})]


async def test_three_broken_holders_fail_loudly(grid: Grid) -> None:
    # A file whose manifest replicas are not among the broken chunk holders: this is about
    # chunks. (With every manifest replica down a read answers 404, not 503: a known limit,
    # docs/durability.md.)
    for attempt in range(50):
        name = f"f{attempt}"
        manifest = await store(grid[0], name, os.urandom(BLOCK * 6))
        broken = holders_of(grid, manifest, range(3))
        if not {p.id for p in broken} & set(grid[0].membership.replicas(name).members):
            break
    for peer in broken:
        grid.break_peer(peer)
    reader = next(p for p in grid.peers if p not in broken)
    with pytest.raises(Unavailable, match="readable"):
        await read(reader, name)


async def test_a_holder_that_dies_mid_put_gives_a_degraded_file_and_one_failure(
    grid: Grid,
) -> None:
    coordinator, victim = grid[0], grid[3]
    grid.fail_midway(victim)
    data = os.urandom(BLOCK * 9)
    # Names whose manifests the victim does not keep: its (healthy) manifest answers would
    # count for it and hide how often the broken upload was counted against it.
    names = (f"f{i}" for i in range(1000))
    stored = []
    for name in names:
        if victim.id in coordinator.membership.replicas(name).members:
            continue
        stored.append(await store(coordinator, name, data))
        if stored[-1].degraded or len(stored) == 40:
            break
    assert stored[-1].degraded, "the dying peer was in a placement set within 40 files"
    assert len(stored[-1].chunks) == 6
    assert victim.id not in stored[-1].holders().values()
    assert coordinator.membership.liveness(victim.id).failures == 1, "counted exactly once"
    for manifest in stored:
        assert await read(grid[5], manifest.name) == data


async def test_a_hung_holder_is_dropped_after_the_stall_timeout(tmp_path: Path) -> None:
    """Seven peers: every placement set has them all, so the hung one is always in it."""
    grid = Grid(tmp_path, 7, block_size=BLOCK, stall_timeout=0.5, peer_timeout=1.0)
    await grid.start()
    try:
        hung = grid[2]
        grid.hang_peer(hung)
        data = os.urandom(BLOCK * 5 * 20)  # 20 blocks per chunk: more than a writer queues
        manifest = await store(grid[0], "f", data)
        assert manifest.degraded
        assert hung.id not in manifest.holders().values()
        assert grid[0].membership.liveness(hung.id).failures >= 1, "the stall counts"
        assert await read(grid[4], "f") == data
    finally:
        await grid.close()


@pytest.mark.parametrize("size_known", [True, False], ids=["content-length", "chunked"])
async def test_a_put_reads_no_further_once_holders_refuse_it(
    tmp_path: Path, size_known: bool
) -> None:
    """Holders over their quota refuse at once: the coordinator must stop reading and coding
    the body then, not read all of it first (it once read 730 MB that every peer refused)."""
    grid = Grid(tmp_path, 7, block_size=BLOCK, max_bytes=BLOCK)  # no chunk past one block fits
    await grid.start()
    pieces, read = 1000, 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(pieces):
            read += 1
            await asyncio.sleep(0)  # a client's pieces arrive one at a time
            yield b"x" * BLOCK

    try:
        size = pieces * BLOCK if size_known else None
        with pytest.raises(InsufficientStorage, match="out of space"):
            await grid[0].coordinator.put("f", body(), size, "application/octet-stream")
        assert read < 50, f"{read} of {pieces} pieces read after every holder refused"
        assert all(peer.chunks.chunk_count == 0 for peer in grid.peers)
        await eventually(  # the holders discard what they had received as their streams end
            lambda: not any(any((p.config.data_dir / "incoming").iterdir()) for p in grid.peers),
            what="the holders to discard the partial chunks",
        )
        with pytest.raises(FileNotFound):
            await grid[1].coordinator.stat("f")
    finally:
        await grid.close()


Outcome = type[Exception] | None  # what a write raises (None: it is stored)


def full_disks(grid: Grid, refusing: set[str]) -> Callable[..., Awaitable[Any]]:
    """The grid's put_manifest, but peers at the URLs in ``refusing`` have no room."""
    put_manifest = grid.transport.put_manifest

    async def put(to: Address, manifest: Manifest, *args: Any) -> Any:
        if to.url in refusing:
            raise InsufficientStorage("no room left for manifests: [Errno 28] (scripted)")
        return await put_manifest(to, manifest, *args)

    return put


@pytest.mark.parametrize(
    ("full", "down", "plain", "conditional"),
    [
        # every disk full: 507, not "try again"
        ("all", "none", InsufficientStorage, InsufficientStorage),
        # handoffs with room stand in for full homes; a conditional write asks homes only
        ("homes", "none", None, InsufficientStorage),
        # one home full, one down: a handoff stands in; without one, trying again may do
        ("one home", "one home", None, Unavailable),
        # too few answered, not for want of room
        ("one home", "the rest", Unavailable, Unavailable),
    ],
)
async def test_a_manifest_refused_for_want_of_room_is_507(
    grid: Grid,
    monkeypatch: pytest.MonkeyPatch,
    full: str,
    down: str,
    plain: Outcome,
    conditional: Outcome,
) -> None:
    """A small PUT on a full disk once answered 503 (its manifest replicas refused, and the
    coordinator counted them as unreachable): a client retries that forever. Where full
    disks are all that kept the write from its quorum it is a 507, and nothing is left;
    where a replica was also out of reach, it stays a 503 (it may succeed when it is back)."""
    for condition, outcome in [(None, plain), (Preconditions(if_none_match=ANY), conditional)]:
        name = f"f-{condition is None}"
        homes = grid[0].membership.home_replicas(name).members
        if full == "all":
            refusing = {p.url for p in grid.peers}
        elif full == "homes":
            refusing = {grid.peer_of(member).url for member in homes}
        else:
            refusing = {grid.peer_of(homes[0]).url}
        coordinator = next(p for p in grid.peers if p.id not in homes)  # (not a home)
        if down == "the rest":
            for peer in grid.peers:
                if peer.url not in refusing:
                    grid.break_peer(peer)
        elif down == "one home":
            grid.break_peer(grid.peer_of(homes[1]))
        with monkeypatch.context() as patched:
            patched.setattr(grid.transport, "put_manifest", full_disks(grid, refusing))
            data = b"small!"
            put = coordinator.coordinator.put(name, body(data), len(data), "text/plain", condition)
            if outcome is None:
                await put
            else:
                with pytest.raises(outcome):
                    await put
        for peer in grid.peers:
            grid.mend_peer(peer)
        if outcome is None:
            assert await read(grid[1], name) == data
        else:
            with pytest.raises(FileNotFound):
                await grid[1].coordinator.stat(name)


async def test_a_conditional_write_declined_by_a_replica_is_not_507(
    grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One home full, one declining (it holds another version: If-None-Match: * fails
    there), one taking the write: room is not all it lacked (with room it would still be
    contended), so no 507 but a contended write, tried again by a client."""
    homes = grid[0].membership.home_replicas("f").members
    full, declining = grid.peer_of(homes[0]).url, grid.peer_of(homes[1]).url
    put_manifest = grid.transport.put_manifest

    async def scripted(to: Address, manifest: Manifest, *args: Any) -> Any:
        if to.url == full:
            raise InsufficientStorage("no room left for manifests (scripted)")
        if to.url == declining:
            return ReplicaWrite(False, Version(manifest.version.wall_ms + 1, 0, "other"), None)
        return await put_manifest(to, manifest, *args)

    monkeypatch.setattr(grid.transport, "put_manifest", scripted)
    coordinator = next(p for p in grid.peers if p.id not in homes)
    condition = Preconditions(if_none_match=ANY)
    with pytest.raises(WriteContended):
        await coordinator.coordinator.put("f", body(b"new"), 3, "text/plain", condition)


async def test_rebuild_moves_a_lost_chunk_to_a_spare_and_commits_it(grid: Grid) -> None:
    data = os.urandom(BLOCK * 8 + 11)
    manifest = await store(grid[0], "f", data)
    lost = grid.peer_of(manifest.holders()[2])
    grid.break_peer(lost)
    spare = next(p for p in grid.peers if p.id not in manifest.holders().values())
    rebuilt = await grid[0].rebuilder.rebuild(manifest, {2: spare.id})
    assert rebuilt.holders()[2] == spare.id
    assert rebuilt.revision == manifest.revision + 1
    reader = grid[7] if grid[7] is not lost else grid[6]
    assert (await reader.coordinator.stat("f")).holders()[2] == spare.id
    assert await read(reader, "f") == data
    assert reader.broken_reports == [], "nothing left to decode around"


async def test_a_repair_that_failed_is_tried_again_in_seconds_not_a_sweep_later(
    grid: Grid,
) -> None:
    """A rebuild that fails for a moment (a holder that stalled) is retried after
    RETRY_FIRST seconds, not after the next --repair-interval sweep (10 minutes here)."""
    manifest = await store(grid[0], "f", os.urandom(BLOCK * 7))
    holder = grid.peer_of(manifest.holders()[2])
    await holder.holder.delete_chunk(manifest.chunk_id(2))
    peer = grid[1]
    attempts = 0
    rebuild = peer.rebuilder.rebuild

    async def flaky(
        manifest: Manifest, targets: dict[int, str], base: Manifest | None = None
    ) -> Manifest:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Unavailable("the target stalled (test)")
        return await rebuild(manifest, targets, base)

    config = dataclasses.replace(peer.config, repair_interval=600.0)
    rebuilder = cast(Rebuilder, SimpleNamespace(rebuild=flaky))
    repairer = Repairer(config, peer.membership, peer.manifests, peer.replicas, rebuilder)
    running = asyncio.ensure_future(repairer.run())
    try:
        repairer.report(manifest, {2})
        await eventually(lambda: repairer.stats.chunks_repaired == 1, timeout=20, what="retry")
        assert attempts == 2
        assert repairer.stats.failures == 1
        assert repairer.stats.queued == 0
        assert await read(grid[3], "f") == await read(grid[4], "f")
        assert holder.chunks.path(manifest.chunk_id(2)).exists()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_names_that_fail_to_repair_log_one_warning_a_sweep(
    grid: Grid, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer cut off from the others (locked out by a rotation it missed) failed every
    repair every sweep, a WARNING each: 1,680 lines in 44 s for 136 names (an attack)."""
    peer = grid[1]
    manifests = [await store(grid[0], f"cut/{i}", os.urandom(BLOCK * 7)) for i in range(5)]

    async def cut_off(
        manifest: Manifest, targets: dict[int, str], base: Manifest | None = None
    ) -> Manifest:
        raise Unavailable("only 1 of 2 manifest replicas answered (test)")

    rebuilder = cast(Rebuilder, SimpleNamespace(rebuild=cut_off))
    repairer = Repairer(peer.config, peer.membership, peer.manifests, peer.replicas, rebuilder)
    for manifest in manifests:
        repairer.report(manifest, {2})
    with caplog.at_level(logging.WARNING, logger="node.upkeep.repairer"):
        await repairer.sweep(scan=False)
    warnings = [r.getMessage() for r in caplog.records if r.name == "node.upkeep.repairer"]
    assert len(warnings) == 1, warnings
    assert "5 name(s) failed" in warnings[0]
    assert "'cut/0'" in warnings[0]
    assert "and 4 more" in warnings[0]
    assert repairer.stats.failures == 5
    assert repairer.stats.queued == 5  # (kept for the retry)


REPAIR_AFTER = 60.0


def counting_repairer(peer: GridPeer, rebuilt: list[dict[int, str]] | None = None) -> Repairer:
    """A repairer on ``peer`` (``--repair-after`` a minute) whose rebuilds move nothing:
    what is counted is the names its looks read (and, into ``rebuilt``, the targets of
    each rebuild)."""

    async def rebuild(
        manifest: Manifest, targets: dict[int, str], base: Manifest | None = None
    ) -> Manifest:
        if rebuilt is not None:
            rebuilt.append(dict(targets))
        return manifest

    config = dataclasses.replace(peer.config, repair_after=REPAIR_AFTER)
    rebuilder = cast(Rebuilder, SimpleNamespace(rebuild=rebuild))
    return Repairer(config, peer.membership, peer.manifests, peer.replicas, rebuilder)


async def count_looks(
    repairer: Repairer, between: Callable[[int], None] = lambda _: None, sweeps: int = 4
) -> list[int]:
    """The names each of ``sweeps`` sweeps read, ``between(i)`` run before sweep ``i``."""
    looked: list[int] = []
    start = repairer.stats.names_checked
    for i in range(sweeps):
        between(i)
        await repairer.sweep()
        looked.append(repairer.stats.names_checked - start - sum(looked))
    return looked


def set_down(peer: GridPeer, member: str, long: bool = False) -> None:
    """``member`` seen down by ``peer``; ``long``: since twice ``REPAIR_AFTER`` ago."""
    for _ in range(peer.config.down_after):
        peer.membership.report_failure(member, "down (test)")
    if long:
        peer.membership.liveness(member).down_since -= 2 * REPAIR_AFTER


async def test_a_member_that_flaps_costs_no_look_a_new_spell_down_does(grid: Grid) -> None:
    """The look for chunks on members down past --repair-after is taken once per spell
    down of such a member, and reads the other replicas only of the names whose replica
    here places a chunk on one: a member that misses heartbeats and is back (the look left
    nothing for want of room) costs none; the lost member back and down again (chunks may
    have been written to it meanwhile) costs one."""
    for i in range(12):
        await store(grid[0], f"f{i}", os.urandom(BLOCK * 6))
    peer = max(grid.peers, key=lambda p: len(primaries(p)))
    me = peer.membership.me.id
    # lost: a member one of the peer's files has no chunk on (each file misses one of 8)
    ids = {p.membership.me.id for p in grid.peers}
    missing = [ids - await holding(peer, name) for name in primaries(peer)]
    lost = next(m for gap in missing for m in sorted(gap) if m != me)
    flapping = next(p.membership.me.id for p in grid.peers if p.membership.me.id not in {me, lost})
    set_down(peer, lost, long=True)

    def between(sweep: int) -> None:
        if sweep == 1:
            set_down(peer, flapping)
        elif sweep == 2:
            peer.membership.report_success(flapping)
        elif sweep == 3:
            peer.membership.report_success(lost)
            set_down(peer, lost, long=True)

    on_lost = len([n for n in primaries(peer) if lost in await holding(peer, n)])
    assert on_lost < len(primaries(peer)), "a name with nothing on the lost member"
    assert await count_looks(counting_repairer(peer), between) == [on_lost, 0, 0, on_lost]


async def holding(peer: GridPeer, name: str) -> set[str]:
    """The members ``peer``'s replica of ``name`` places its chunks on."""
    manifest = await peer.manifests.get(name)
    assert manifest is not None
    return set(manifest.holders().values())


async def test_a_look_that_lacked_room_is_taken_again_when_a_member_comes_up(
    grid: Grid,
) -> None:
    """A look during which the only member that could take a lost chunk was down (8
    members: a file's 7 chunks on 7, the 8th its only room) passes that repair over; the
    look is taken again when that member is back, not before, and once."""
    for i in range(12):
        await store(grid[0], f"f{i}", os.urandom(BLOCK * 6))
    peer = max(grid.peers, key=lambda p: len(primaries(p)))
    ids = {p.membership.me.id for p in grid.peers}
    me = peer.membership.me.id
    chosen = None
    for name in primaries(peer):
        manifest = await peer.manifests.get(name)
        assert manifest is not None
        held = set(manifest.holders().values())
        (room,) = ids - held
        lost = next((h for h in sorted(held) if h != me), None)
        if room != me and lost is not None:
            chosen = lost, room
            break
    assert chosen is not None, "a file whose only room is another member"
    lost, room = chosen
    set_down(peer, lost, long=True)
    set_down(peer, room)

    rebuilt: list[dict[int, str]] = []
    before_return = 0

    def between(sweep: int) -> None:
        nonlocal before_return
        if sweep == 2:
            peer.membership.report_success(room)
            before_return = len(rebuilt)

    async def on_lost() -> int:  # (the member back may be the primary of some names again)
        return len([n for n in primaries(peer) if lost in await holding(peer, n)])

    while_down = await on_lost()
    looked = await count_looks(counting_repairer(peer, rebuilt), between)
    assert looked == [while_down, 0, await on_lost(), 0]
    assert all(room not in targets.values() for targets in rebuilt[:before_return])
    assert any(room in targets.values() for targets in rebuilt[before_return:])


async def test_a_write_degraded_during_a_flap_costs_no_look(grid: Grid) -> None:
    """A write while a member is down a moment (not past --repair-after) and another is
    lost is degraded (6 members up for 7 chunks); its missing chunk finds no room, but no
    lost chunk lacked room: the flapping member's return owes no look over every name
    (the sweep of degraded files retries that write)."""
    for i in range(12):
        await store(grid[0], f"f{i}", os.urandom(BLOCK * 6))
    peer = max(grid.peers, key=lambda p: len(primaries(p)))
    lost, flapping = [p.membership.me.id for p in grid.peers if p is not peer][:2]
    set_down(peer, lost, long=True)
    repairer = counting_repairer(peer)
    await repairer.sweep()  # the look for the lost member
    set_down(peer, flapping)
    me = peer.membership.me.id
    name = next(f"g{i}" for i in range(1000) if peer.membership.replicas(f"g{i}").primary == me)
    written = await store(peer, name, os.urandom(BLOCK * 6))
    assert len(written.chunks) == 6, "a degraded write"

    def between(sweep: int) -> None:
        if sweep == 1:
            peer.membership.report_success(flapping)

    checked = await count_looks(repairer, between, sweeps=3)
    assert checked == [1, 1, 1], "the degraded name each sweep, no look over every name"


async def test_a_name_considered_for_a_lost_holder_is_not_rebuilt_in_place_once_it_is_back(
    grid: Grid,
) -> None:
    """``Repairer.consider`` queues a name whose manifest places a chunk on a holder down
    past --repair-after. Should the holder be back before the repair runs, nothing is
    rebuilt (its chunk is there); while it is still down, that chunk is rebuilt elsewhere."""
    await store(grid[0], "f", os.urandom(BLOCK * 6))
    peer = grid.peer_of(grid[0].membership.replicas("f").primary)
    manifest = await peer.manifests.get("f")
    assert manifest is not None
    index, holder = next((i, h) for i, h in manifest.holders().items() if h != peer.id)
    rebuilt: list[dict[int, str]] = []
    repairer = counting_repairer(peer, rebuilt)

    set_down(peer, holder, long=True)
    repairer.consider(manifest)
    peer.membership.report_success(holder)
    await repairer.sweep(scan=False)
    assert rebuilt == [], "a holder back holds its chunk"

    set_down(peer, holder, long=True)
    repairer.consider(manifest)
    await repairer.sweep(scan=False)
    assert len(rebuilt) == 1
    assert set(rebuilt[0]) == {index}
    assert rebuilt[0][index] not in set(manifest.holders().values())


def primaries(peer: GridPeer) -> list[str]:
    me = peer.membership.me.id
    return [n for n in peer.manifests.names() if peer.membership.replicas(n).primary == me]


async def test_a_failed_manifest_replica_is_stood_in_for_by_a_handoff(grid: Grid) -> None:
    replicas = grid[0].membership.replicas("f")
    first = grid.peer_of(replicas.members[0])
    grid.break_peer(first)
    await store(grid[1] if grid[1] is not first else grid[2], "f", b"hello")
    holding = [p for p in grid.peers if p.manifests.names() == ["f"]]
    assert first not in holding
    assert len(holding) == 3
    assert next(replicas.handoffs()) in {p.id for p in holding}


async def test_a_read_asks_r_replicas_itself_first_when_it_is_one(grid: Grid) -> None:
    """R = 2 of the N = 3 replicas are asked, not all three: the third call was a third
    of a small GET's peer calls. A replica reading takes its own replica first (from its
    page cache, with no call at all) and asks the first other one in ring order; any
    other peer asks the first two."""
    await store(grid[0], "f", b"hello")
    members = grid[0].membership.replicas("f").members
    inside = grid.peer_of(members[2])
    outside = next(p for p in grid.peers if p.id not in members)
    own = {members[0]} if inside.manifests._log._nowait else {members[2], members[0]}  # (tmpfs)
    for reader, expected in ((inside, own), (outside, set(members[:2]))):
        reader.replicas.hedge.seconds = CEILING  # a slow thread hop here is not a hung replica
        grid.transport.calls.clear()
        found = await reader.replicas.read("f")
        assert found is not None
        assert found.size == 5
        asked = {url for (call, url), n in grid.transport.calls.items() if call == "get_manifest"}
        replicas = {grid.peer_of(m).url for m in members}  # (not those of earlier placements)
        assert asked & replicas == {grid.peer_of(m).url for m in expected}
        assert reader.replicas.hedge.hedged == 0


async def test_a_reader_whose_own_replica_is_damaged_asks_it_writes_it_off_and_repairs_it(
    grid: Grid,
) -> None:
    """A replica's own record that fails its checksum is not taken from the page cache:
    it is read as any replica's (which writes it off, answering none), the read is
    answered from the others, and read repair puts a good copy back."""
    written = await store(grid[0], "f", b"hello")
    members = grid[0].membership.replicas("f").members
    reader = grid.peer_of(members[1])
    reader.replicas.hedge.seconds = CEILING
    where = reader.manifests._index.where("f")
    assert where is not None
    [segment] = (reader.config.data_dir / "manifests" / "log").glob("*.log")
    flip_byte(segment, where.offset + where.length - 40)  # inside the record's payload
    grid.transport.calls.clear()
    found = await reader.replicas.read("f")
    assert found is not None
    assert found.precedence == written.precedence
    assert grid.transport.calls["get_manifest", reader.url] == 1  # asked: not in place

    async def repaired() -> bool:
        return (await reader.manifests.get("f")) == found

    await eventually(repaired, timeout=10, what="the damaged replica to be repaired")


async def test_a_hung_replica_is_hedged_around_then_heard_out_and_repaired(grid: Grid) -> None:
    """A replica asked first that does not answer (hung, not yet seen down) does not hold
    the read for the peer timeout: once most reads would have answered, the third replica
    is asked. The hung call is left to finish (cancelling it mid-answer would close its
    connection) and, found behind, its replica is repaired."""
    old = await store(grid[0], "f", b"old")
    new = await store(grid[0], "f", b"new")
    members = grid[0].membership.replicas("f").members
    late = grid.peer_of(members[0])
    assert await late.manifests.retract("f", new.precedence, restore=old)  # it missed v2
    assert (await late.manifests.get("f")) == old
    reader = next(p for p in grid.peers if p.id not in members)  # asks members[0] first
    grid.hang_peer(late)
    found = await reader.replicas.read("f")
    assert found is not None
    assert found.version == new.version
    assert reader.replicas.hedge.hedged == 1
    assert (await late.manifests.get("f")) == old  # not answered yet
    grid.unhang_peer(late)

    async def repaired() -> bool:
        held = await late.manifests.get("f")
        return held is not None and held.version == new.version

    await eventually(repaired, timeout=10, what="the late replica to be repaired")


@pytest.mark.parametrize("every_replica", [False, True])
async def test_slow_replicas_are_waited_for_never_hedged_to_a_handoff(
    grid: Grid, every_replica: bool
) -> None:
    """A hedge asks another of the N replicas, never a handoff: a handoff holds only what
    was written while a replica was down, so its quick "none" must not decide a read while
    the replicas that hold the file are only slow. (Hedging to handoffs made a read of a
    file whose replicas were busy answer 404, and an every-replica read, which decides what
    to destroy, "none".)"""
    await store(grid[0], "f", b"hello")
    members = grid[0].membership.replicas("f").members
    reader = next(p for p in grid.peers if p.id not in members)
    reader.replicas.hedge.seconds = FLOOR
    slow = [grid.peer_of(m) for m in members]
    for peer in slow:
        grid.hang_peer(peer)
    grid.transport.calls.clear()
    reading = asyncio.ensure_future(reader.replicas.read("f", every_replica=every_replica))
    try:
        with pytest.raises(asyncio.TimeoutError):  # 40 hedge delays: it waits for the replicas
            await asyncio.wait_for(asyncio.shield(reading), 0.2)
        asked = {url for (call, url), n in grid.transport.calls.items() if call == "get_manifest"}
        assert asked == {peer.url for peer in slow}, "only the replicas are asked"
        for peer in slow:
            grid.unhang_peer(peer)
        found = await reading
    finally:
        reading.cancel()
    assert found is not None
    assert found.size == 5
    assert reader.replicas.hedge.hedged == (0 if every_replica else 1)


async def test_delete_leaves_a_tombstone_every_coordinator_sees(grid: Grid) -> None:
    await store(grid[0], "f", b"x" * 100)
    await grid[3].coordinator.delete("f")
    for peer in (grid[1], grid[6]):
        with pytest.raises(FileNotFound):
            await peer.coordinator.stat("f")
    assert (await grid[2].coordinator.delete("f")).deleted, "deleting again succeeds"


async def test_liveness_comes_from_every_call(grid: Grid) -> None:
    watcher, target = grid[0], grid[1]
    grid.break_peer(target)
    for _ in range(2):  # down_after = 2
        with pytest.raises(Unavailable):
            await watcher.peers.get_manifest(target.id, "anything")
    assert target.id in watcher.membership.down_ids()
    grid.mend_peer(target)
    assert (await watcher.peers.get_manifest(target.id, "anything")).manifest is None
    assert target.id in watcher.membership.up_ids()


async def test_a_healthy_read_opens_only_the_data_chunks(grid: Grid) -> None:
    manifest = await store(grid[0], "f", os.urandom(BLOCK * 7))
    grid.transport.calls.clear()
    assert await read(grid[1], "f") == (await read(grid[2], "f"))
    opened = {url for (call, url), n in grid.transport.calls.items() if call == "open_chunk"}
    data_holders = {grid.peer_of(manifest.holders()[i]).url for i in range(5)}
    assert opened == data_holders, "parity chunks are read only when a data chunk fails"


@pytest.mark.parametrize("budget", [0, 1 << 20], ids=["on-demand", "read-ahead"])
@pytest.mark.parametrize("index", [1, 4])
async def test_a_data_block_failing_after_earlier_ones_went_out_is_decoded_around(
    tmp_path: Path, index: int, budget: int
) -> None:
    """Blocks are handed out one by one while the data chunks read (a slow client then holds
    one, not a stripe): when block ``index`` of stripe 6 fails its digest, the blocks of that
    stripe already handed out are read again to decode it, and every byte comes out once, in
    order; from there the read decodes stripe by stripe, and reports the chunk."""
    grid = Grid(tmp_path, 8, block_size=BLOCK, buffer_memory=budget)
    await grid.start()
    try:
        data = os.urandom(BLOCK * 5 * 12 - 100)  # 12 stripes, the last one short
        manifest = await store(grid[0], "f", data)
        holder = grid.peer_of(manifest.holders()[index])
        path = holder.chunks.path(manifest.chunk_id(index))
        with path.open("r+b") as chunk:
            chunk.seek(manifest.layout.chunk_offset(6) + 10)
            chunk.write(b"rot")
        reader = next(p for p in grid.peers if p is not holder)
        found = await reader.coordinator.stat("f")
        assert await read(reader, "f") == data
        assert reader.coordinator.decoded_stripes == 6  # stripes 6 to 11
        assert reader.coordinator.decoded_reads["corrupt"] == 1
        assert reader.broken_reports == [("f", {index})]
        assert reader.buffers.held == 0
        assert (
            await read(reader, "f", BLOCK * 31 + 7, BLOCK * 33) == data[BLOCK * 31 + 7 : BLOCK * 33]
        )
        assert found.size == len(data)
    finally:
        await grid.close()


async def test_the_blocks_read_again_to_decode_a_stripe_are_read_at_once(grid: Grid) -> None:
    """When block 4 of a stripe fails after blocks 0-3 went out, those four are read again
    to decode it: all four at once (one round trip), not one after another. Each such read
    waits (up to 2 s) for the others to start: read one by one, none ever sees more than
    itself in flight."""
    data = os.urandom(BLOCK * 5 * 3)
    manifest = await store(grid[0], "f", data)
    holder = grid.peer_of(manifest.holders()[4])
    with holder.chunks.path(manifest.chunk_id(4)).open("r+b") as chunk:
        chunk.seek(manifest.layout.chunk_offset(1) + 10)
        chunk.write(b"rot")
    stripe_one = manifest.layout.chunk_offset(1)
    opened = grid.transport.open_chunk
    in_flight, most = 0, 0
    all_in = asyncio.Event()

    @contextlib.asynccontextmanager
    async def counted(to: Address, chunk_id: str, offset: int, length: int) -> AsyncIterator[Any]:
        nonlocal in_flight, most
        again = offset == stripe_one and 0 < length <= BLOCK  # one block, read apart
        if again:
            in_flight += 1
            most = max(most, in_flight)
            if in_flight == 4:
                all_in.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(all_in.wait(), 2.0)
        try:
            async with opened(to, chunk_id, offset, length) as stream:
                yield stream
        finally:
            in_flight -= again

    grid.transport.open_chunk = counted  # type: ignore[method-assign]
    reader = next(p for p in grid.peers if p is not holder)
    assert await read(reader, "f") == data
    assert reader.coordinator.decoded_reads["corrupt"] == 1
    assert most == 4, f"at most {most} of the 4 blocks read again were in flight at once"


async def test_a_holder_that_breaks_off_mid_read_is_counted_once_per_read(grid: Grid) -> None:
    """An open stream is not a success: a holder that answers and then breaks off every
    read must reach down_after (2), not bounce between 0 and 1 failures."""
    manifest = await store(grid[0], "f", os.urandom(BLOCK * 20))
    flaky = grid.peer_of(manifest.holders()[0])
    grid.fail_midway(flaky)
    reader = next(p for p in grid.peers if p is not flaky)
    found = await reader.coordinator.stat("f")  # once: a manifest answer is a success
    for expected in (1, 2):
        async for _ in reader.coordinator.stream(found, 0, found.size):
            pass
        assert reader.membership.liveness(flaky.id).failures == expected
    assert flaky.id in reader.membership.down_ids()


async def test_a_move_whose_source_is_gone_does_not_blame_its_target(grid: Grid) -> None:
    manifest = await store(grid[0], "f", os.urandom(BLOCK * 6))
    source = grid.peer_of(manifest.holders()[4])
    target = next(p for p in grid.peers if p.id not in manifest.holders().values())
    grid.break_peer(source)
    mover = next(p for p in grid.peers if p not in (source, target))
    ref = manifest.chunks[4]
    with pytest.raises(Unavailable, match="source"):
        await mover.peers.pull_chunk(
            target.id,
            manifest.chunk_id(4),
            source.id,
            manifest.chunk_owner(4),
            manifest.layout.chunk_size,
            ref.digest,
        )
    assert mover.membership.liveness(target.id).failures == 0
    assert target.id in mover.membership.up_ids()


def blocks_read(grid: Grid, manifest: Manifest) -> set[tuple[int, int]]:
    """The ``(stripe, chunk index)`` blocks of ``manifest`` read since the transport's
    chunk ranges were last cleared (whole blocks: a reader asks for a run of them)."""
    layout, found = manifest.layout, set()
    for chunk_id, offset, length in grid.transport.chunk_ranges:
        index = next(i for i in range(layout.n) if manifest.chunk_id(i) == chunk_id)
        for stripe in range(layout.stripes):
            if offset <= layout.chunk_offset(stripe) < offset + length:
                found.add((stripe, index))
    return found


@pytest.mark.parametrize(
    ("start", "end", "first"),
    [
        (BLOCK * 5 + BLOCK * 2 + 10, BLOCK * 5 + BLOCK * 2 + 20, (1, 2)),  # inside a block
        (BLOCK * 5 + BLOCK - 1, BLOCK * 5 + BLOCK + 1, (1, 0)),  # across two blocks
        (BLOCK * 10 - 1, BLOCK * 10 + 1, (1, 4)),  # across two stripes
        (BLOCK * 3 + 5, BLOCK * 5 * 2 + BLOCK + 5, (0, 3)),  # over three, partly the ends
        (BLOCK * 5 * 3 + 130, BLOCK * 5 * 3 + 131, (3, 0)),  # the short last stripe's block 0
        (BLOCK * 5 * 3 + 699, BLOCK * 5 * 3 + 700, (3, 4)),  # its last byte (140 B blocks)
    ],
)
async def test_a_range_reads_only_the_blocks_it_lies_in(
    grid: Grid, monkeypatch: pytest.MonkeyPatch, start: int, end: int, first: tuple[int, int]
) -> None:
    """A ranged GET asks each data chunk's holder once, for the blocks of that chunk that
    hold bytes of the range: 4 KiB of a large file is one block from one holder, not the
    stripe's k (5 blocks of 512 KiB); the blocks of its first and last stripes outside the
    range are never read. A range within one block is read with no ``StripeRead`` (no
    reader, no read-ahead)."""
    data = os.urandom(BLOCK * 5 * 3 + 700)
    manifest = await store(grid[0], "f", data)
    reader, layout = grid[1], manifest.layout
    grid.transport.chunk_ranges.clear()
    reads: list[range] = []  # the stripes of each StripeRead made

    class Counted(coordinator_module.StripeRead):
        def __init__(self, *args: Any) -> None:
            reads.append(args[2])
            super().__init__(*args)

    monkeypatch.setattr(coordinator_module, "StripeRead", Counted)
    assert await read(reader, "f", start, end) == data[start:end]
    wanted = {
        (stripe, index)
        for stripe in layout.stripes_covering(start, end)
        for index in layout.blocks_covering(stripe, start, end)
    }
    assert min(wanted) == first
    assert len(reads) == (0 if len(wanted) == 1 else 1)
    assert blocks_read(grid, manifest) == wanted
    assert len(grid.transport.chunk_ranges) == len({index for _, index in wanted})
    assert reader.coordinator.decoded_stripes == 0
    assert reader.buffers.held == 0


@pytest.mark.parametrize(
    ("first", "past"),
    [(BLOCK + 5, BLOCK * 3 + 9), (BLOCK * 2 + 5, BLOCK * 2 + 9)],
    ids=["three-blocks", "within-one"],
)
@pytest.mark.parametrize("failure", ["corrupt", "unreachable", "absent", "slow", "down"])
async def test_a_wanted_block_that_fails_is_decoded_around_every_byte_once(
    tmp_path: Path, failure: str, first: int, past: int
) -> None:
    """A range over blocks 1-3 of a stripe whose block 2 cannot be read (after block 1 went
    out, or from the start when its holder is seen down): the stripe is read from k chunks
    and decoded, and the rest of the range comes out once, in order; the chunk is reported
    (unless it was never stored, or its holder is down: then it was not read). The same
    for a range within block 2, which is read at once, with no reader
    (``Coordinator._read_alone``), and decoded around the same way when that fails."""
    short = {"peer_timeout": 1.0} if failure == "slow" else {}  # the production one else
    grid = Grid(tmp_path, 8, block_size=BLOCK, **short)
    await grid.start()
    try:
        data = os.urandom(BLOCK * 5 * 4)
        manifest = await store(grid[0], "f", data)
        holder = grid.peer_of(manifest.holders()[2])
        reader = next(p for p in grid.peers if p is not holder and p is not grid[0])
        found = await reader.coordinator.stat("f")
        if failure == "corrupt":
            with holder.chunks.path(manifest.chunk_id(2)).open("r+b") as chunk:
                chunk.seek(manifest.layout.chunk_offset(1) + 3)
                chunk.write(b"rot")
        elif failure == "unreachable":
            grid.break_peer(holder)
        elif failure == "slow":
            grid.transport.timeout = 60.0  # its call hangs on past the read's 1 s wait
            grid.hang_peer(holder)
        elif failure == "down":
            grid.break_peer(holder)
            for _ in range(2):  # down_after
                reader.membership.report_failure(holder.id)
        else:  # a degraded write: the manifest never had chunk 2
            kept = tuple(ref for ref in found.chunks if ref.index != 2)
            found = dataclasses.replace(found, chunks=kept)
        start, end = BLOCK * 5 + first, BLOCK * 5 + past
        grid.transport.calls.clear()
        assert await read_manifest(reader, found, start, end) == data[start:end]
        assert reader.coordinator.decoded_stripes == 1
        assert reader.coordinator.decoded_reads[failure] == 1
        not_read = failure in ("absent", "down")
        assert reader.broken_reports == ([] if not_read else [("f", {2})])
        assert grid.transport.calls["open_chunk", holder.url] == (0 if not_read else 1)
        assert reader.buffers.held == 0
    finally:
        await grid.close()


def rot(peer: GridPeer, manifest: Manifest, index: int, stripes: range) -> None:
    """Flip bytes of chunk ``index``'s blocks of ``stripes`` on ``peer``."""
    with peer.chunks.path(manifest.chunk_id(index)).open("r+b") as chunk:
        for stripe in stripes:
            chunk.seek(manifest.layout.chunk_offset(stripe))
            chunk.write(b"rot")


@pytest.mark.parametrize(
    ("rotten", "refusing", "seen_down"),
    [
        ({1: range(9)}, [2], []),  # a data chunk corrupt throughout, another holder refusing
        ({3: range(4, 5)}, [], []),  # one block corrupt: decoding begins mid-range
        ({0: range(2, 3)}, [5], []),  # a parity holder refusing: the other parity decodes
        # three holders seen down but serving: the k chunks started to decode are the data
        # chunks, read stripe by stripe, none falling behind
        ({}, [], [3, 5, 6]),
    ],
    ids=["corrupt-and-refused", "one-block", "one-parity-left", "seen-down-serving"],
)
async def test_every_range_comes_out_whole_around_broken_chunks(
    grid: Grid, rotten: dict[int, range], refusing: list[int], seen_down: list[int]
) -> None:
    """Ranges of a file (250, seeded: within a block, over stripe boundaries, over up to
    five stripes, empty) read back exact while chunks are corrupt or their holders refuse
    (and, after two refusals, are seen down) or are seen down: wherever a wanted block
    fails, the decoding finds what it needs of that stripe, reading apart the blocks no
    byte of the range is in, and no byte comes out twice or goes missing."""
    data = os.urandom(BLOCK * 5 * 8 + 333)
    manifest = await store(grid[0], "f", data)
    for index, stripes in rotten.items():
        rot(grid.peer_of(manifest.holders()[index]), manifest, index, stripes)
    refused = holders_of(grid, manifest, refusing + seen_down)
    reader = next(p for p in grid.peers if p not in refused and p is not grid[0])
    refused = holders_of(grid, manifest, refusing)
    found = await reader.coordinator.stat("f")
    for peer in refused:
        grid.break_peer(peer)
    for peer in holders_of(grid, manifest, seen_down):
        for _ in range(2):  # down_after
            reader.membership.report_failure(peer.id)
    sample = random.Random(13)
    for _ in range(250):
        start = sample.randrange(len(data))
        end = sample.randrange(start, min(len(data), start + BLOCK * 25) + 1)
        assert await read_manifest(reader, found, start, end) == data[start:end], (start, end)
    assert reader.buffers.held == 0
