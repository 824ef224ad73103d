"""Durability in-process: read repair, scrub, lost disks, degraded writes, garbage, full disks."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.model.digests import block_digest
from node.model.manifest import ChunkRef
from tests.harness import (
    HANG_DETECTION,
    LocalCluster,
    LocalPeer,
    chunk_bytes,
    eventually,
    get_manifest,
    internal,
)
from tests.node.shared.test_cluster_files import get, payload, put

BLOCK = 4096
GRACE = 0.5  # seconds before an unreferenced chunk, and one no manifest knows, is garbage


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    """Quick repair and collection; scrub only when a test wakes it."""
    return {
        **HANG_DETECTION,  # one test hangs a peer during a PUT
        "block_size": BLOCK,
        "repair_after": 1.0,
        "repair_interval": 0.3,
        "gc_grace": GRACE,
        "orphan_grace": GRACE,
        "scrub_interval": 3600.0,
        "scrub_rate": 0,
    }


def chunk_file(cluster: LocalCluster, chunk: dict[str, Any]) -> Path:
    return cluster.holder(chunk["holder"]).chunks.path(chunk["id"])


def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


async def chunk_intact(cluster: LocalCluster, chunk: dict[str, Any]) -> bool:
    """The chunk is back on its holder with the bytes its sidecar and manifest promise."""
    peer = cluster.holder(chunk["holder"])
    try:
        meta = await peer.chunks.meta(chunk["id"])
        data = chunk_bytes(peer.chunks.path(chunk["id"]))
    except (KeyError, FileNotFoundError):
        return False
    digests = b"".join(block_digest(data[i : i + BLOCK]) for i in range(0, len(data), BLOCK))
    return digests == meta.block_digests and len(data) == chunk["size"]


async def test_a_read_that_decodes_repairs_what_it_found_broken(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(80_000, 1)
    await put(http, cluster[0].url, "durability/healing", data)
    chunk = (await get_manifest(http, cluster[0].url, "durability/healing"))["chunks"][2]
    flip_byte(chunk_file(cluster, chunk))
    assert await get(http, cluster[3].url, "durability/healing") == data
    await eventually(lambda: chunk_intact(cluster, chunk), what="read repair")
    await eventually(
        lambda: sum(p.repairer.stats.chunks_repaired for p in cluster.peers) == 1,
        what="the repair to be committed",
    )


async def test_scrub_finds_flipped_bytes_and_repair_restores_them(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(50_000, 2)
    await put(http, cluster[0].url, "durability/rotting", data)
    chunk = (await get_manifest(http, cluster[0].url, "durability/rotting"))["chunks"][6]
    holder = cluster.holder(chunk["holder"])
    flip_byte(chunk_file(cluster, chunk))
    holder.scrubber.wake()
    await eventually(lambda: holder.scrubber.stats.errors_found == 1, what="scrub")
    await eventually(lambda: chunk_intact(cluster, chunk), what="repair after scrub")
    async with http.get(f"{holder.url}/scrub") as response:
        report = await response.json()
    assert report["scrub"]["errors_found"] == 1
    assert report["scrub"]["bytes_checked"] > 0
    assert await get(http, cluster[1].url, "durability/rotting") == data


async def test_a_chunk_whose_sidecar_is_damaged_is_removed_and_repaired(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Its sidecar (whose chunk it is) fails its checksum: the scrubber removes it and, the
    fields the chunk's id is a hash of still read, reports it for repair (it was removed
    unreported: an attack found 7 files at 6 of 7 chunks until the hourly anti-entropy).
    Packed chunks' sidecars: ``test_unit_chunk_store``."""
    name = "durability/sidecar"
    await put(http, cluster[0].url, name, payload(50_000, 3))
    chunk = (await get_manifest(http, cluster[0].url, name))["chunks"][6]  # parity: no read
    holder = cluster.holder(chunk["holder"])
    meta = await holder.chunks.meta(chunk["id"])
    path = chunk_file(cluster, chunk)
    at = chunk["size"] + len(meta.to_bytes()) - 1  # stored_at's last byte: it still decodes
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    holder.scrubber.wake()
    await eventually(lambda: holder.scrubber.stats.errors_found == 1, what="scrub")
    await eventually(lambda: chunk_intact(cluster, chunk), what="repair after scrub")


async def lose_a_disk(
    cluster: LocalCluster, http: aiohttp.ClientSession, files: dict[str, bytes]
) -> str:
    """Store ``files``, then wipe peer 4's disk and start it again: a new, empty member,
    the old one down for good. Returns the old one's id."""
    for name, data in files.items():
        await put(http, cluster[0].url, name, data)
    victim = cluster[4]
    old_id = victim.id
    await victim.stop()
    shutil.rmtree(victim.data_dir)
    await victim.start()
    assert victim.id != old_id
    await cluster.wait_converged()
    return old_id


async def on_up_holders(cluster: LocalCluster, http: aiohttp.ClientSession, name: str) -> bool:
    """Whether ``name`` has all 7 chunks, each on a member up."""
    up = cluster[0].membership.up_ids()
    chunks = (await get_manifest(http, cluster[0].url, name))["chunks"]
    return len(chunks) == 7 and all(c["holder"] in up for c in chunks)


async def test_a_lost_disk_is_rebuilt_on_handoffs(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = {f"lost/{i}": payload(30_000 + i, 10 + i) for i in range(6)}
    await lose_a_disk(cluster, http, files)

    async def redundant() -> bool:
        return all([await on_up_holders(cluster, http, name) for name in files])

    await eventually(redundant, timeout=30, what="full redundancy after a lost disk")
    for name, data in files.items():
        assert await get(http, cluster[2].url, name) == data


async def test_a_member_lost_for_good_is_swept_for_once_not_every_interval(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Members are never removed: one whose disk is lost stays down forever. Its chunks are
    rebuilt by one look over every primary name (a quorum read each) per state of the
    cluster, not one every repair interval for as long as the cluster runs; a manifest
    that places a chunk on it and arrives after that look is queued by its primary on
    storing it, or found by the next anti-entropy pass."""
    files = {f"gone/{i}": payload(20_000 + i, 30 + i) for i in range(6)}
    dead = await lose_a_disk(cluster, http, files)

    async def redundant() -> bool:
        return all([await on_up_holders(cluster, http, name) for name in files])

    await eventually(redundant, timeout=30, what="full redundancy after a lost disk")

    def totals() -> tuple[list[int], int]:
        stats = [peer.repairer.stats for peer in cluster.peers]
        return [s.sweeps for s in stats], sum(s.names_checked for s in stats)

    names = set().union(*(peer.manifests.names() for peer in cluster.peers))
    sweeps, checked = totals()
    await eventually(
        lambda: all(now >= then + 3 for now, then in zip(totals()[0], sweeps, strict=True)),
        timeout=30,
        what="three more sweeps on every peer",
    )
    # At most the rest of one sweep of every name (a peer that had not swept them all under
    # this state yet); one every interval would be three of them at least.
    assert 0 <= totals()[1] - checked <= len(names)

    # Manifests placing a chunk on the lost member (as a write that placed it before the
    # member went down and committed after the sweep would). One committed through the
    # replicas: its primary queues it on storing it. One written into each home replica's
    # store directly, no peer told: the next anti-entropy pass finds it.
    for name, committed in (("gone/0", True), ("gone/1", False)):
        current = await cluster[0].replicas.read(name)
        assert current is not None
        chunks = [r if r.index != 6 else ChunkRef(6, dead, r.block_digests) for r in current.chunks]
        stale = dataclasses.replace(current, chunks=tuple(chunks), revision=current.revision + 1)
        if committed:
            await cluster[0].replicas.commit(stale, base=current)
        else:
            homes = set(cluster[0].membership.home_replicas(name).members)
            for peer in cluster.peers:
                if peer.id in homes:  # (the lost member may be one)
                    assert (await peer.manifests.put(stale, current.precedence)).stored
        assert not await on_up_holders(cluster, http, name)
        if not committed:
            for peer in cluster.peers:
                peer.anti_entropy.wake()
        await eventually(
            partial(on_up_holders, cluster, http, name), timeout=30, what=f"{name} repaired"
        )
        assert await get(http, cluster[2].url, name) == files[name]


async def test_a_degraded_write_is_completed_later(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(200_000, 3)
    # The namespace first: making it reads and writes its record on every replica, and a
    # hung one is given up on and seen down, so the file's chunks would all go to the
    # peers still up (a whole write, not a degraded one).
    await put(http, cluster[0].url, "durability/first", b"x")
    cluster[5].hang()
    try:
        reply = await put(http, cluster[0].url, "durability/partial", data)
    finally:
        cluster[5].unhang()
    assert reply["degraded"] is True

    async def complete() -> bool:
        return len((await get_manifest(http, cluster[1].url, "durability/partial"))["chunks"]) == 7

    await eventually(complete, timeout=30, what="the missing chunk to be rebuilt")
    assert await get(http, cluster[2].url, "durability/partial") == data


async def test_unreferenced_chunks_are_collected_after_the_grace(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await put(http, cluster[0].url, "durability/kept", payload(20_000, 4))
    stray = "0123456789abcdef0123456789abcdef-3"
    headers = {
        "X-Ringstore-Name": "ghost",
        "X-Ringstore-Version": "1.0.x",
        "X-Ringstore-Block-Size": str(BLOCK),
    }
    async with internal(
        http, cluster[2], "PUT", f"/internal/chunks/{stray}", data=b"orphan" * 100, headers=headers
    ) as response:
        assert response.status == 201
    peer = cluster[2]
    await asyncio.sleep(0)  # nothing to wait for: the grace is checked against stored_at

    async def collected() -> bool:
        # The file goes (in a thread) a moment before the scrubber counts it: wait for both.
        peer.scrubber.wake()
        gone = stray not in await peer.chunks.chunk_ids()
        return gone and peer.scrubber.stats.garbage_removed >= 1

    await eventually(collected, timeout=20, what="the orphan to be collected and counted")
    for p in cluster.peers:  # referenced chunks stay
        p.scrubber.wake()
    await eventually(
        lambda: all(p.scrubber.stats.passes >= 2 for p in cluster.peers), what="scrub passes"
    )
    assert await get(http, cluster[5].url, "durability/kept") == payload(20_000, 4)


async def test_a_chunk_whose_manifest_homes_are_all_down_is_not_collected(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """The scrubber collects a chunk whose name has no manifest on every replica; with the
    name's three home replicas down, the handoffs standing in for them hold nothing of it,
    and their "none" is no proof (``ManifestReplicas._check_absent``): the chunk stays."""
    data = payload(20_000, 7)
    await put(http, cluster[0].url, "durability/homeless", data)
    chunks = (await get_manifest(http, cluster[0].url, "durability/homeless"))["chunks"]
    homes = set(cluster[0].membership.home_replicas("durability/homeless").members)
    chunk = next(c for c in chunks if c["holder"] not in homes)
    holder = cluster.holder(chunk["holder"])
    for home in homes:
        await cluster.holder(home).stop()
    for home in homes:
        await cluster.wait_down(cluster.holder(home))
    stored_at = (await holder.chunks.meta(chunk["id"])).stored_at
    await eventually(
        lambda: (
            time.monotonic() - holder.membership.ring_changed_at > GRACE
            and time.time() - stored_at > GRACE
        ),
        what="the ring and the chunk to be older than the graces",
    )
    passes = holder.scrubber.stats.passes
    holder.scrubber.wake()
    await eventually(lambda: holder.scrubber.stats.passes >= passes + 1, what="a scrub pass")
    assert holder.scrubber.stats.garbage_removed == 0
    assert chunk["id"] in await holder.chunks.chunk_ids()


async def test_an_orphan_stays_while_a_hand_over_of_its_name_is_under_way(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every replica saying "none" is no proof while a member of an earlier placement, up
    or down, may still hold the name's manifest (``Membership.handing_over``: a handoff
    that took a write while a home was down, and went down before handing it back). Once
    the hand-over is done, the orphan goes."""
    stray = "fedcba9876543210fedcba9876543210-2"
    headers = {
        "X-Ringstore-Name": "ghost-moving",
        "X-Ringstore-Version": "1.0.x",
        "X-Ringstore-Block-Size": str(BLOCK),
    }
    peer = cluster[3]
    async with internal(
        http, peer, "PUT", f"/internal/chunks/{stray}", data=b"moving" * 100, headers=headers
    ) as response:
        assert response.status == 201
    monkeypatch.setattr(peer.membership, "handing_over", lambda name: True)
    stored_at = (await peer.chunks.meta(stray)).stored_at
    await eventually(
        lambda: (
            time.monotonic() - peer.membership.ring_changed_at > GRACE
            and time.time() - stored_at > GRACE
        ),
        what="the ring and the chunk to be older than the graces",
    )
    for _ in range(2):  # (the first may have begun before the graces passed)
        passes = peer.scrubber.stats.passes
        peer.scrubber.wake()
        await eventually(lambda p=passes: peer.scrubber.stats.passes > p, what="a scrub pass")
    assert stray in await peer.chunks.chunk_ids()
    monkeypatch.undo()

    async def collected() -> bool:
        peer.scrubber.wake()
        return stray not in await peer.chunks.chunk_ids()

    await eventually(collected, timeout=20, what="the orphan to be collected after")


async def test_a_full_disk_is_507_with_nothing_half_written(
    tmp_path: Path, http: aiohttp.ClientSession, loop_guard: None
) -> None:
    small = LocalCluster(tmp_path, block_size=BLOCK, max_bytes=100_000)
    try:
        await small.start(7)
        await put(http, small[0].url, "durability/fits", payload(200_000, 5))  # ~57 KB per peer
        async with http.put(
            f"{small[1].url}/files/durability/too-big", data=io.BytesIO(payload(400_000, 6))
        ) as response:
            assert response.status == 507, await response.text()
            assert (await response.json())["error"]["code"] == "insufficient_storage"
        async with http.get(f"{small[2].url}/files/durability/too-big") as response:
            assert response.status == 404
        assert await get(http, small[3].url, "durability/fits") == payload(200_000, 5)
        await eventually(
            lambda: all(len(p.chunk_files()) == 1 for p in small.peers),
            what="partial chunks of the refused file to be deleted",
        )
    finally:
        await small.stop()


async def test_concurrent_overwrites_end_with_one_whole_winner(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    versions = {payload(30_000, 100 + i) for i in range(10)}
    ordered = sorted(versions)

    async def writer(peer: LocalPeer, mine: list[bytes]) -> None:
        for data in mine:
            await put(http, peer.url, "durability/contended", data)

    await asyncio.gather(writer(cluster[0], ordered[:5]), writer(cluster[4], ordered[5:]))
    final = await get(http, cluster[2].url, "durability/contended")
    assert final in versions
    for peer in cluster.peers:  # every coordinator agrees on the winner
        assert await get(http, peer.url, "durability/contended") == final
