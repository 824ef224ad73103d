"""Joins move data only to the newcomer, about its fair share, and lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from node.errors import Unavailable
from node.model.layout import Layout
from node.model.manifest import ChunkRef, Manifest, ReplicaRead
from node.model.version import Version
from node.upkeep.rebalancer import YIELD_EVERY, Progress, Rebalancer
from ring import plan_moves
from tests.harness import LocalCluster, LocalPeer, eventually, sidecar_of

BLOCK = 4096


async def started(tmp_path: Path, count: int) -> AsyncIterator[LocalCluster]:
    cluster = LocalCluster(tmp_path, block_size=BLOCK, rebalance_rate=0)
    try:
        await cluster.start(count)
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def six(tmp_path: Path, loop_guard: None) -> AsyncIterator[LocalCluster]:
    """Fewer peers than a file has chunks: every file is stored degraded, 6 of 7."""
    async for cluster in started(tmp_path, 6):
        yield cluster


@pytest.fixture
async def seven(tmp_path: Path, loop_guard: None) -> AsyncIterator[LocalCluster]:
    async for cluster in started(tmp_path, 7):
        yield cluster


async def store_files(
    http: aiohttp.ClientSession, cluster: LocalCluster, count: int
) -> dict[str, bytes]:
    rng = random.Random(42)
    files = {}
    for i in range(count):
        data = rng.randbytes(rng.choice([1, 700, 5 * BLOCK, 3 * 5 * BLOCK + 17, 60_000]))
        name = f"growth/{i:04d}"
        async with http.put(
            f"{cluster[i % len(cluster.peers)].url}/files/{name}", data=io.BytesIO(data)
        ) as response:
            assert response.status == 201, await response.text()
        files[name] = data
    return files


async def settled(cluster: LocalCluster, names: list[str]) -> bool:
    """Every file's chunks sit on its placement set under the current ring."""
    peer = cluster[0]
    await peer.membership.refresh_ring()
    ring = peer.membership.ring
    if len(ring) != len(cluster.peers):
        return False
    for name in names:
        manifest = await peer.replicas.read(name)
        assert manifest is not None
        if plan_moves(manifest.holders(), ring, manifest.file_id, n=manifest.layout.n):
            return False
    return True


def used(cluster: LocalCluster) -> list[int]:
    """The chunk bytes each peer holds (``used_bytes`` counts their sidecars too)."""
    return [sum(chunk_sizes(peer)) for peer in cluster.peers]


def chunk_sizes(peer: LocalPeer) -> Iterator[int]:
    for path in peer.chunk_files():
        with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
            yield sidecar_of(path).size


async def test_a_join_moves_only_to_the_newcomer_about_its_share(
    seven: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await store_files(http, seven, 120)
    before = used(seven)
    total = sum(before)

    newcomer = await seven.add_peer(rebalance_rate=0)
    await seven.wait_converged()
    await eventually(lambda: settled(seven, list(files)), timeout=60, what="rebalancing to settle")
    # The old copies go after the delete grace.
    await eventually(lambda: sum(used(seven)) == total, timeout=30, what="old copies deleted")

    after = used(seven)
    for old, (was, now) in enumerate(zip(before, after[:7], strict=True)):
        assert now <= was, f"old peer {old} grew from {was} to {now}"
    # The newcomer holds exactly the chunks the committed manifests place on it: no strays.
    placed = 0
    for name in files:
        manifest = await seven[0].replicas.read(name)
        assert manifest is not None
        placed += manifest.layout.chunk_size * list(manifest.holders().values()).count(newcomer.id)
    moved = after[7]
    assert moved == placed
    # About its share: 120 files of mixed sizes on random peer ids and versions give a sample
    # spread of about 7% (five local runs: 0.79..1.07 of the ideal), so the bound here is wide.
    # How evenly the ring itself shares keys is asserted tightly on 20,000 keys with fixed
    # ids in tests/ring/test_ring_balance.py. 7 chunks of a file on 8 peers: 1/8 each.
    ideal = total / 8
    print(f"moved {moved} bytes, ideal {ideal:.0f}, ratio {moved / ideal:.3f}; fill {after}")
    assert 0.6 <= moved / ideal <= 1.4
    for name, data in files.items():
        async with http.get(f"{newcomer.url}/files/{name}") as response:
            assert await response.read() == data, name


async def test_a_move_whose_source_lost_its_copy_is_rebuilt_then_made(
    seven: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A chunk a join moves is gone from its source (a lost file on a peer still up): the
    move reports it for repair instead of failing on every retry, the repairer rebuilds it,
    and the move is then made. (Seen once: a rebalance retried a vanished copy for a minute.)"""
    # 120 files: the victim holds a chunk of each (7 chunks on 7 peers), and a join moves it
    # to the newcomer with chance 1/8, so that none moves (the check below) is ~1e-7 (60: 3e-4)
    files = await store_files(http, seven, 120)
    names = sorted(files)
    victim = seven[3]
    lost: dict[str, int] = {}  # name -> index of the chunk the victim held
    for name in names:
        manifest = await seven[0].replicas.read(name)
        assert manifest is not None
        for index, holder in manifest.holders().items():
            if holder == victim.id:
                lost[name] = index
                victim.chunks.path(manifest.chunk_id(index)).unlink()
    assert lost

    newcomer = await seven.add_peer(rebalance_rate=0)
    await seven.wait_converged()
    await eventually(lambda: settled(seven, names), timeout=60, what="rebalancing to settle")

    moved_from_victim = 0
    for name, index in lost.items():
        manifest = await seven[0].replicas.read(name)
        assert manifest is not None
        if manifest.holders()[index] == newcomer.id:
            moved_from_victim += 1
            newcomer.chunks.path(manifest.chunk_id(index))  # raises ChunkNotFound if absent
    assert moved_from_victim > 0, "no move had the victim as its source: pick another"
    for name, data in files.items():
        async with http.get(f"{newcomer.url}/files/{name}") as response:
            assert await response.read() == data, name


async def test_a_six_peer_cluster_grown_to_seven_places_every_files_seventh_chunk(
    six: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Stored 6 of 7 while the ring had 6 members, every file gets its 7th chunk on the
    newcomer once it joins; nothing moves off the old peers, and everything reads back."""
    files = await store_files(http, six, 40)
    before = used(six)
    newcomer = await six.add_peer(rebalance_rate=0)
    await six.wait_converged()
    ids = {p.id for p in six.peers}

    async def whole() -> bool:
        for name in files:
            manifest = await six[0].replicas.read(name)
            assert manifest is not None
            if set(manifest.holders().values()) != ids:
                return False
        return True

    await eventually(whole, timeout=60, what="7 chunks of every file on 7 distinct peers")
    assert used(six)[:6] == before, "chunks moved off the old peers"
    sizes = 0
    for name in files:
        manifest = await six[0].replicas.read(name)
        assert manifest is not None
        assert not manifest.degraded
        sizes += manifest.layout.chunk_size
    assert used(six)[6] == sizes  # exactly one chunk of every file on the newcomer
    for name, data in files.items():
        async with http.get(f"{newcomer.url}/files/{name}") as response:
            assert await response.read() == data, name


async def test_restarting_a_peer_moves_nothing(
    six: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await store_files(http, six, 30)
    before = used(six)
    await six[2].stop()
    await six.wait_down(six[2])
    await six[2].start()
    await six.wait_converged()
    assert await settled(six, list(files))
    assert [p.rebalancer.progress.moves for p in six.peers] == [0] * 6
    assert used(six) == before


async def test_doubling_under_reads_fails_no_read_and_fills_only_the_newcomers(
    six: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Issue 12 (3): 7 peers join a 6-peer cluster at once while a client reads random
    files through the old peers. Every read answers the stored bytes, though the
    manifests' new home replicas are newcomers that do not have them yet; the old peers
    never grow."""
    files = await store_files(http, six, 60)
    before = used(six)
    old = [p.url for p in six.peers]
    names = sorted(files)
    failures: list[str] = []
    reads = 0
    done = asyncio.Event()

    async def reader() -> None:
        nonlocal reads
        rng = random.Random(7)
        deadline = time.monotonic() + 90
        while not done.is_set() and reads < 5000 and time.monotonic() < deadline:
            name = rng.choice(names)
            async with http.get(f"{rng.choice(old)}/files/{name}") as response:
                body = await response.read()
                if response.status != 200 or body != files[name]:
                    failures.append(f"{name}: {response.status}")
            reads += 1

    reading = asyncio.ensure_future(reader())
    try:
        for _ in range(7):
            await six.add_peer(rebalance_rate=0)
        await six.wait_converged()
        await eventually(lambda: settled(six, names), timeout=60, what="rebalancing to settle")
    finally:
        done.set()
        await reading
    print(f"{reads} reads during the doubling, {len(failures)} failed")
    assert reads >= 20
    assert failures == []
    after = used(six)
    for index, (was, now) in enumerate(zip(before, after[:6], strict=True)):
        assert now <= was, f"old peer {index} grew from {was} to {now}"


async def test_an_idle_cluster_makes_no_rebalance_pass_however_many_files_it_holds(
    tmp_path: Path, http: aiohttp.ClientSession, loop_guard: None
) -> None:
    """Passes over every manifest follow changes (ring, peers up), not the clock: once
    settled, peers pass over nothing for many ``rebalance_interval``s (issue 13: the idle
    cost of a peer used to grow with its files, every manifest read every 30 s)."""
    cluster = LocalCluster(tmp_path, block_size=BLOCK, rebalance_interval=0.1)
    try:
        await cluster.start(7)
        await store_files(http, cluster, 20)

        def quiet() -> bool:
            return all(
                p.rebalancer.progress.pending == 0
                and p.membership.settled_ring == p.membership.ring.digest
                for p in cluster.peers
            )

        await eventually(quiet, 15, "every peer's rebalancer to settle")
        passes = [p.rebalancer.progress.passes for p in cluster.peers]
        await asyncio.sleep(1.0)  # a span to observe: 10 intervals, nothing to wait for
        assert [p.rebalancer.progress.passes for p in cluster.peers] == passes
    finally:
        await cluster.stop()


async def test_a_pass_reads_only_the_manifests_with_chunks_this_peer_is_primary_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop_guard: None
) -> None:
    """A secondary replica has nothing to do for a name whatever its manifest says, nor has
    the primary of a file kept in its manifest or a tombstone: a pass (after any ring or
    liveness change, over every name) decides those from the name and the index, and turns
    the loop every YIELD_EVERY names, so thousands of names never hold it up."""
    cluster = LocalCluster(tmp_path, block_size=BLOCK)
    try:
        await cluster.start(3)  # 3 replicas on 3 peers: every peer holds every name
        names = [f"pass/{i:05d}" for i in range(3000)]
        now = Version(int(time.time() * 1000), 0, "peer")
        layout = Layout(BLOCK, 1, 1, BLOCK)  # 2 chunks, where the ring places them

        def stored(n: str, i: int) -> Manifest:
            if i % 3 == 0:
                return Manifest(n, now, Layout(3, 5, 2), inline=b"abc")
            if i % 3 == 1:
                return Manifest(n, now, Layout(0, 5, 0), deleted=True)
            key = Manifest(n, now, layout).file_id
            holders = cluster[0].membership.placement(key, layout.n).members
            digest = bytes(16 * layout.stripes)
            chunks = tuple(ChunkRef(c, holder, digest) for c, holder in enumerate(holders))
            return Manifest(n, now, layout, chunks=chunks)

        for peer in cluster.peers:
            await asyncio.gather(*(peer.manifests.put(stored(n, i)) for i, n in enumerate(names)))
        peer = cluster[0]
        read, real = [], peer.manifests.read
        passing = asyncio.current_task()

        async def counted(name: str) -> ReplicaRead:
            if asyncio.current_task() is passing:  # (not the peer's own rebalancing loop)
                read.append(name)
            return await real(name)

        monkeypatch.setattr(peer.manifests, "read", counted)
        peer.rebalancer._pending.update(names)
        await peer.rebalancer.rebalance_pass()
        chunked = names[2::3]
        primary = [n for n in chunked if peer.membership.replicas(n).primary == peer.id]
        assert 100 < len(primary) < 900  # about a third
        assert sorted(read) == primary
        progress = peer.rebalancer.progress
        assert progress.planned_bytes == 0, "the chunks were where the ring puts them"
    finally:
        await cluster.stop()


async def own_rebalancer(peer: LocalPeer, names: list[str]) -> Rebalancer:
    """A rebalancer of ``peer``'s parts, for a test to drive pass by pass (the peer's own
    loop, left alone, would react to the test's changes too), once ``peer`` holds an inline
    file's manifest for each of ``names``."""
    now = Version(int(time.time() * 1000), 0, "peer")
    await asyncio.gather(
        *(peer.manifests.put(Manifest(n, now, Layout(3, 5, 2), inline=b"abc")) for n in names)
    )
    running = peer.rebalancer
    return Rebalancer(
        running._config,
        running._membership,
        running._manifests,
        running._replicas,
        running._peers,
        Progress(),
        running._report_broken,
    )


async def test_a_change_during_a_pass_queues_again_only_the_names_already_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop_guard: None
) -> None:
    """The ring or the members up change while a pass is under way (as when peers find
    each other at start): every name the pass will not come to is queued again (those
    judged before; for a pass over a few names, every other name held) and the pass goes on
    under the new state, so it costs one pass over every name, not the rest of a stale
    one and then a whole new one."""
    cluster = LocalCluster(tmp_path, block_size=BLOCK)
    try:
        await cluster.start(3)
        names = [f"pass/{i:05d}" for i in range(3000)]
        peer = cluster[0]
        rebalancer = await own_rebalancer(peer, names)
        judged: list[str] = []
        real_rebalance, real_state = rebalancer._rebalance, rebalancer._state
        changed = ("another ring", frozenset({peer.id}))
        state = [real_state()]

        async def counted(name: str) -> None:
            judged.append(name)
            if len(judged) == 1000:
                state[0] = changed
            await real_rebalance(name)

        monkeypatch.setattr(rebalancer, "_rebalance", counted)
        monkeypatch.setattr(rebalancer, "_state", lambda: state[0])
        rebalancer._pending.update(names)
        ended_under = await rebalancer.rebalance_pass(real_state())
        noticed = next(i for i in range(1000, 3000) if i % YIELD_EVERY == YIELD_EVERY - 1)
        assert judged == names, "the pass went on to the end"
        assert ended_under == changed
        again = sorted(set(peer.manifests.names()) - set(names[noticed:]))  # cluster records too
        assert [n for n in again if n.startswith("pass/")] == names[:noticed]
        assert sorted(rebalancer._pending) == again
        assert rebalancer.progress.pending == len(again)
        judged.clear()
        assert await rebalancer.rebalance_pass(changed) == changed
        assert judged == again
        assert not rebalancer._pending

        # A pass over a few names (retries, or the names just queued again): the change
        # concerns every name held, not only those.
        judged.clear()
        state[0] = real_state()
        rebalancer._pending.update(names[:1000] + names[2000:2200])  # changes at the 1000th
        assert await rebalancer.rebalance_pass(state[0]) == changed
        noticed = next(i for i in range(1000, 1200) if i % YIELD_EVERY == YIELD_EVERY - 1)
        ahead = (names[:1000] + names[2000:2200])[noticed:]
        assert sorted(rebalancer._pending) == sorted(set(peer.manifests.names()) - set(ahead))
    finally:
        await cluster.stop()


async def test_a_name_that_failed_or_waited_and_was_queued_again_is_judged_once_when_it_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop_guard: None
) -> None:
    """A name whose rebalancing failed, or whose move waited for a crowded target, is looked
    at again after the retry interval; if a change of state queues it again first and it
    goes through, it is done: nothing left behind to judge it a second time, and
    ``pending`` does not count it."""
    cluster = LocalCluster(tmp_path, block_size=BLOCK)
    try:
        await cluster.start(3)
        names = [f"retry/{i}" for i in range(4)]
        peer = cluster[0]
        rebalancer = await own_rebalancer(peer, names)
        real_rebalance = rebalancer._rebalance
        failing = {names[1]}
        judged: list[str] = []

        async def flaky(name: str) -> None:
            judged.append(name)
            if name in failing:
                raise Unavailable(f"{name}: a holder did not answer")
            await real_rebalance(name)

        monkeypatch.setattr(rebalancer, "_rebalance", flaky)
        state = rebalancer._state()
        rebalancer._pending.update(names)
        await rebalancer.rebalance_pass(state)
        assert rebalancer._retry == {names[1]}
        assert rebalancer.progress.pending == 1

        failing.clear()
        judged.clear()
        rebalancer._deferred.add(names[2])  # as if a move of it had waited for a crowded peer
        rebalancer._pending.update(names)  # a change of state queues every name again
        await rebalancer.rebalance_pass(state)
        assert judged == names
        assert not rebalancer._retry, "it succeeded: nothing to retry"
        assert not rebalancer._deferred, "judged again with nothing deferred: nothing to look at"
        assert rebalancer.progress.pending == 0
    finally:
        await cluster.stop()
