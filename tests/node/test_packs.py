"""Packs (issue 13): cold small files leave their manifests for an erasure-coded pack, read
back whole and in ranges, around lost pack chunks, and never at another file's expense."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any

import aiohttp
import pytest

from node.errors import FileNotFound, InsufficientStorage
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.packs import PACKS, is_pack_name, read_directory
from node.model.preconditions import EntityTag, Preconditions, TagList
from node.upkeep.packer import Packer
from tests.harness import LocalCluster, eventually
from tests.harness.metrics import scrape, value
from tests.node.shared.test_cluster_files import get, payload, put
from tests.node.shared.test_s3 import client
from tests.node.test_cluster_faults import manifest_of

# Walks run when a test says so (anti-entropy's own loop waits an hour first), each checking
# every pack; small files inline as in production (test clusters cut every file into chunks).
OVERRIDES = {
    "inline_max": 16 << 10,
    "pack_after": 0.001,
    "anti_entropy_interval": 3600.0,
    "pack_check_interval": 3600.0,
    "delete_grace": 0.2,
}


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    return OVERRIDES


@pytest.fixture(autouse=True)
def any_pack_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each primary packs what it gathered, however little (a test's few files)."""
    monkeypatch.setattr("node.upkeep.packer.MIN_PACK_BYTES", 1)


async def store(
    http: aiohttp.ClientSession, cluster: LocalCluster, count: int, seed: int
) -> dict[str, bytes]:
    """PUT ``count`` small files through peer 0, then wait until no hand-over of their
    replicas is under way (the cluster just formed): until then nothing is packed."""
    rng = random.Random(seed)
    files = {
        f"packs/{seed}/{n:03d}": payload(rng.randint(1, 16 << 10), seed * 1000 + n)
        for n in range(count)
    }
    for name, data in files.items():
        await put(http, cluster[0].url, name, data)

    def handed_over() -> bool:
        return all(
            len(p.membership.home_replicas_since(n)) == 3 for p in cluster.peers for n in files
        )

    await eventually(handed_over, timeout=30, what="the replicas' hand-overs done")
    return files


async def walk(cluster: LocalCluster) -> None:
    """One anti-entropy walk on every peer at once, as each runs its own."""
    await asyncio.gather(*(p.anti_entropy.check_pass() for p in cluster.peers))


async def replicas_of(cluster: LocalCluster, name: str) -> list[Manifest | None]:
    homes = cluster[0].membership.replicas(name).members
    return [await cluster.holder(m).manifests.get(name) for m in homes]


async def all_packed(cluster: LocalCluster, names: list[str]) -> bool:
    for name in names:
        if not all(r is not None and r.packed for r in await replicas_of(cluster, name)):
            return False
    return True


async def pack_all(cluster: LocalCluster, names: list[str]) -> None:
    async def packed_after_a_walk() -> bool:
        await walk(cluster)
        return await all_packed(cluster, names)

    await eventually(packed_after_a_walk, timeout=30, what="every file packed on every replica")


async def stored_and_packed(
    http: aiohttp.ClientSession, cluster: LocalCluster, count: int, seed: int
) -> dict[str, bytes]:
    files = await store(http, cluster, count, seed)
    await pack_all(cluster, list(files))
    return files


async def packs_of(cluster: LocalCluster, names: list[str]) -> dict[str, list[str]]:
    """Each pack the files ``names`` are in, with those files."""
    members: dict[str, list[str]] = {}
    for name in names:
        pack = (await cluster[0].coordinator.stat(name)).segments[0].name
        members.setdefault(pack, []).append(name)
    return members


async def test_cold_small_files_are_packed_and_read_back_whole_and_in_ranges(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await store(http, cluster, 60, seed=1)
    etags = {name: (await manifest_of(http, cluster[1].url, name))["etag"] for name in files}
    await pack_all(cluster, list(files))
    stats = [p.packer.stats for p in cluster.peers]
    assert sum(s.files_packed for s in stats) == len(files)
    assert sum(s.bytes_packed for s in stats) == sum(len(d) for d in files.values())
    assert sum(s.files_passed + s.failures for s in stats) == 0

    rng = random.Random(5)
    for n, (name, data) in enumerate(files.items()):
        url = cluster[n % 7].url
        shown = await manifest_of(http, url, name)
        assert shown["packed"] is True
        assert shown["inline"] is False
        assert shown["etag"] == etags[name]  # the same version, as it was written
        assert await get(http, url, name) == data
        start = rng.randrange(len(data))
        end = rng.randrange(start, len(data))
        async with http.get(f"{url}/files/{name}", headers={"Range": f"bytes={start}-{end}"}) as r:
            assert r.status == 206
            assert await r.read() == data[start : end + 1]

    # Every pack ends with a directory of exactly the members that point into it.
    coordinator = cluster[2].coordinator
    members: dict[str, list[tuple[str, int, int]]] = {}
    for name in files:
        segment = (await coordinator.stat(name)).segments[0]
        members.setdefault(segment.name, []).append((name, segment.offset, segment.size))
    assert all(is_pack_name(pack) for pack in members)
    for pack_name_, pointing in members.items():
        pack = await coordinator.stat(pack_name_)
        assert pack.chunked
        assert len(pack.chunks) == 7
        body = b"".join([bytes(p) async for p in coordinator.stream(pack, 0, pack.size)])
        directory = read_directory(body)
        assert sorted((e.name, e.offset, e.size) for e in directory) == sorted(pointing)
        for entry in directory:
            assert body[entry.offset : entry.offset + entry.size] == files[entry.name]

    # Listings show the files as they were, and never the packs.
    async with http.get(f"{cluster[3].url}/files", params={"prefix": "packs/"}) as response:
        listed = (await response.json())["files"]
    assert {f["name"]: f["size"] for f in listed} == {n: len(d) for n, d in files.items()}


async def test_a_file_changed_while_its_pack_is_written_keeps_its_change(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await store(http, cluster, 12, seed=2)
    names = list(files)
    packer = cluster[4].packer
    for name in names:  # gathered as a walk gathers them, from a replica
        manifest = await cluster.holder(
            cluster[0].membership.replicas(name).members[0]
        ).manifests.get(name)
        assert manifest is not None
        await eventually(lambda m=manifest: packer.wants(m, time.time()), timeout=5)
        await packer.offer(manifest)
    overwritten, deleted, grown = names[0], names[1], names[2]
    await put(http, cluster[1].url, overwritten, b"a newer small version")
    big = payload(200_000, seed=77)
    await put(http, cluster[2].url, grown, big)
    async with http.delete(f"{cluster[3].url}/files/{deleted}") as response:
        assert response.status == 204
    await packer.flush(at_least=0)
    assert packer.stats.files_passed == 3
    assert packer.stats.files_packed == len(names) - 3

    assert await get(http, cluster[5].url, overwritten) == b"a newer small version"
    assert await get(http, cluster[5].url, grown) == big
    async with http.get(f"{cluster[5].url}/files/{deleted}") as response:
        assert response.status == 404
    for name in names[3:]:
        assert (await manifest_of(http, cluster[6].url, name))["packed"] is True
        assert await get(http, cluster[6].url, name) == files[name]


async def test_changing_packed_files_never_retires_their_pack(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await stored_and_packed(http, cluster, 20, seed=3)
    names = list(files)
    packs = set(await packs_of(cluster, names))
    for name in names[:5]:
        async with http.delete(f"{cluster[1].url}/files/{name}") as response:
            assert response.status == 204
    for name in names[5:10]:
        await put(http, cluster[2].url, name, b"changed")
    # Superseded versions are retired after --delete-grace (0.2 s): let every one run.
    await eventually(
        lambda: _settled(http, cluster), timeout=15, what="every retirement carried out"
    )
    for pack in packs:
        manifest = await cluster[3].coordinator.stat(pack)  # raises FileNotFound if retired
        assert not manifest.deleted
    for name in names[10:]:
        assert await get(http, cluster[4].url, name) == files[name]


async def _settled(http: aiohttp.ClientSession, cluster: LocalCluster) -> bool:
    for peer in cluster.peers:
        if value(await scrape(http, peer.url), "ringstore_deletions_pending"):
            return False
    return True


async def test_a_packed_file_reads_through_two_lost_pack_chunks(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await stored_and_packed(http, cluster, 15, seed=4)
    names = list(files)
    coordinator = cluster[0].coordinator
    packs = set(await packs_of(cluster, names))
    for pack_name_ in packs:
        pack = await coordinator.stat(pack_name_)
        for ref in pack.chunks[:2]:  # two data chunks
            await cluster.holder(ref.holder).chunks.delete(pack.chunk_id(ref.index))
    before = sum(sum(p.coordinator.decoded_reads.values()) for p in cluster.peers)
    for n, name in enumerate(names):
        assert await get(http, cluster[n % 7].url, name) == files[name]
    assert sum(sum(p.coordinator.decoded_reads.values()) for p in cluster.peers) > before


async def test_a_pack_of_changed_files_is_deleted_and_a_half_dead_one_repacked(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.upkeep.packer.CHECK_AFTER", 0.0)  # every walk checks every pack
    files = await stored_and_packed(http, cluster, 70, seed=6)
    coordinator = cluster[0].coordinator
    members = await packs_of(cluster, list(files))
    assert len(members) >= 3
    emptied, halved, kept = sorted(members, key=lambda p: -len(members[p]))[:3]
    for name in members[emptied]:
        async with http.delete(f"{cluster[1].url}/files/{name}") as response:
            assert response.status == 204
    dead: set[str] = set()
    for name in sorted(members[halved], key=lambda n: -len(files[n])):
        if sum(len(files[n]) for n in dead) * 2 >= sum(len(files[n]) for n in members[halved]):
            break
        await put(http, cluster[2].url, name, b"overwritten")  # changed: stays inline
        dead.add(name)
    survivors = [n for n in members[halved] if n not in dead]
    assert survivors
    changed = min(members[kept], key=lambda name: len(files[name]))
    assert 2 * len(files[changed]) < sum(len(files[name]) for name in members[kept])
    await put(http, cluster[2].url, changed, b"one of many")  # under half: kept
    kept_pack = await coordinator.stat(kept)
    emptied_pack = await coordinator.stat(emptied)
    placed = [
        (cluster.holder(r.holder), emptied_pack.chunk_id(r.index)) for r in emptied_pack.chunks
    ]

    async def reclaimed() -> bool:
        # A check that cannot decide a member now (a replica slow to answer under load) is
        # made again at the next walk: walks until both packs are gone, within a deadline.
        await walk(cluster)
        for pack in (emptied, halved):
            try:
                await coordinator.stat(pack)
            except FileNotFound:
                continue
            return False
        return True

    await eventually(reclaimed, timeout=30, what="the emptied and the half-dead pack deleted")
    assert (await coordinator.stat(kept)).precedence == kept_pack.precedence
    stats = [p.packer.stats for p in cluster.peers]
    assert sum(s.packs_deleted for s in stats) == 2
    assert sum(s.files_repacked for s in stats) == len(survivors)
    for name in survivors:  # in a new pack, the same version and bytes
        shown = await manifest_of(http, cluster[3].url, name)
        assert shown["packed"] is True
        assert (await coordinator.stat(name)).segments[0].name not in members
        assert await get(http, cluster[4].url, name) == files[name]
    for name in members[kept]:
        if name != changed:
            assert await get(http, cluster[5].url, name) == files[name]
    # The deleted packs' chunks go after --delete-grace, as a deleted file's do.
    await eventually(lambda: _settled(http, cluster), timeout=15, what="retirements done")
    for holder, chunk in placed:
        assert await holder.chunks.missing([chunk]) == [chunk]


async def test_a_rewrite_that_reached_one_replica_keeps_its_pack(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member's rewrite into a pack taken by one replica only (its coordinator died before
    retracting it) wins as soon as a read sees it: the pack must not go while that can
    happen."""
    monkeypatch.setattr("node.upkeep.packer.CHECK_AFTER", 0.0)
    files = await stored_and_packed(http, cluster, 40, seed=7)
    coordinator = cluster[0].coordinator
    pack, names = max((await packs_of(cluster, list(files))).items(), key=lambda i: len(i[1]))
    survivor = min(names, key=lambda name: len(files[name]))  # its pack half dead without it
    assert 2 * len(files[survivor]) <= sum(len(files[name]) for name in names)
    packed = await coordinator.stat(survivor)
    inline = dataclasses.replace(
        packed, inline=files[survivor], segments=(), revision=packed.revision - 1
    )
    homes = [cluster.holder(m) for m in cluster[0].membership.replicas(survivor).members]
    for home in homes[:2]:  # as if the rewrite had reached only the third
        assert await home.manifests.retract(survivor, packed.precedence, inline)
    for name in names:
        if name != survivor:
            async with http.delete(f"{cluster[1].url}/files/{name}") as response:
                assert response.status == 204

    # The pack's check asks every replica: while the rewrite is on one only it may not be
    # committed, so nothing is decided and the pack stays; reads bring the others up to
    # date (a read of the survivor elsewhere in the walk may do so first). Then the
    # survivor is in the pack, and repacked: the rest is dead.
    async def repacked() -> bool:
        await walk(cluster)
        for peer in cluster.peers:  # readable after every walk, whatever it decided
            assert await get(http, peer.url, survivor) == files[survivor]
        return sum(p.packer.stats.packs_deleted for p in cluster.peers) == 1

    await eventually(repacked, timeout=30, what="the survivor repacked, its pack deleted")
    assert sum(p.packer.stats.fences for p in cluster.peers) == 0
    assert sum(p.packer.stats.files_repacked for p in cluster.peers) == 1
    with pytest.raises(FileNotFound):
        await coordinator.stat(pack)
    await eventually(lambda: _settled(http, cluster), timeout=15, what="retirements done")
    for peer in cluster.peers:
        assert await get(http, peer.url, survivor) == files[survivor]
    newest = await coordinator.stat(survivor)
    assert newest.packed
    assert not (await coordinator.stat(newest.segments[0].name)).deleted


@pytest.mark.parametrize("cluster_overrides", [{**OVERRIDES, "s3_port": 0}])
async def test_packed_objects_are_the_objects_s3_clients_wrote(cluster: LocalCluster) -> None:
    s3 = await asyncio.to_thread(client, cluster[0].s3_url)
    try:
        await asyncio.to_thread(s3.create_bucket, Bucket="packed")
        rng = random.Random(8)
        written = {}
        for n in range(24):
            data = rng.randbytes(rng.randint(1, 16 << 10))
            put = await asyncio.to_thread(
                s3.put_object,
                Bucket="packed",
                Key=f"k/{n}",
                Body=data,
                Metadata={"n": str(n)},
                ChecksumAlgorithm="CRC32",
            )
            written[f"k/{n}"] = (data, put["ETag"], put["ChecksumCRC32"])
        await pack_all(cluster, [f"packed/{key}" for key in written])

        other = await asyncio.to_thread(client, cluster[3].s3_url)
        for key, (data, etag, crc) in written.items():
            head = await asyncio.to_thread(
                other.head_object, Bucket="packed", Key=key, ChecksumMode="ENABLED"
            )
            assert head["ETag"] == etag
            assert head["Metadata"] == {"n": key.partition("/")[2]}
            assert head["ChecksumCRC32"] == crc
            part = await asyncio.to_thread(
                other.head_object, Bucket="packed", Key=key, PartNumber=1
            )
            assert "PartsCount" not in part  # one PUT, not a multipart upload
            assert part["ContentLength"] == len(data)
            got = await asyncio.to_thread(other.get_object, Bucket="packed", Key=key)
            assert await asyncio.to_thread(got["Body"].read) == data
        await asyncio.to_thread(
            other.copy_object, Bucket="packed", Key="copy", CopySource="packed/k/5"
        )
        copied = await asyncio.to_thread(other.get_object, Bucket="packed", Key="copy")
        assert await asyncio.to_thread(copied["Body"].read) == written["k/5"][0]
        listed = await asyncio.to_thread(other.list_objects_v2, Bucket="packed", Prefix="k/")
        assert {o["Key"]: (o["Size"], o["ETag"]) for o in listed["Contents"]} == {
            key: (len(data), etag) for key, (data, etag, _) in written.items()
        }
        other.close()
    finally:
        s3.close()


async def test_a_pack_is_kept_while_a_conditional_write_over_its_last_file_is_undecided(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conditional DELETE of a pack's last file held on every replica, its verdict not in:
    a retraction would put back the manifest naming the pack, so the pack must stay."""
    monkeypatch.setattr("node.upkeep.packer.CHECK_AFTER", 0.0)
    files = await stored_and_packed(http, cluster, 20, seed=31)
    coordinator = cluster[0].coordinator
    members = await packs_of(cluster, list(files))
    pack, names = max(members.items(), key=lambda item: len(item[1]))
    survivor = names[0]
    for name in names[1:]:
        async with http.delete(f"{cluster[1].url}/files/{name}") as response:
            assert response.status == 204
    packed = await coordinator.stat(survivor)
    condition = Preconditions(if_match=TagList(False, (EntityTag(packed.etag),)))
    tombstone = Manifest(
        survivor, cluster[0].clock.now(), Layout(0, packed.layout.k, 0), deleted=True
    )
    homes = [cluster.holder(m) for m in cluster[0].membership.replicas(survivor).members]
    for home in homes:  # provisional on every replica, no verdict yet
        assert (await home.manifests.put(tombstone, condition=condition)).stored
    await walk(cluster)
    assert not (await coordinator.stat(pack)).deleted
    for home in homes:  # the write missed its quorum after all: retracted everywhere
        assert await home.manifests.retract(survivor, tombstone.precedence)
    await eventually(lambda: _settled(http, cluster), timeout=15, what="retirements done")
    for peer in cluster.peers:
        assert await get(http, peer.url, survivor) == files[survivor]


async def test_a_packed_file_has_nothing_to_repair(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = await stored_and_packed(http, cluster, 6, seed=32)
    for name in files:
        primary = cluster.holder(cluster[0].membership.replicas(name).primary)
        await primary.repairer.repair(name, set())  # raised Unavailable: 0 of 5 chunks
        assert await get(http, primary.url, name) == files[name]


async def test_a_rewrite_that_never_committed_is_fenced_before_its_pack_goes(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite of a file into a pack was retracted from every replica a read sees, but
    a copy may sit where no read looks (a handoff, a peer down): before the pack goes, the
    file is committed above it, so that copy, back later, never wins."""
    monkeypatch.setattr("node.upkeep.packer.CHECK_AFTER", 0.0)
    files = await stored_and_packed(http, cluster, 20, seed=33)
    coordinator = cluster[0].coordinator
    pack, names = max((await packs_of(cluster, list(files))).items(), key=lambda i: len(i[1]))
    survivor = names[0]
    rewrite = await coordinator.stat(survivor)
    inline = dataclasses.replace(
        rewrite, inline=files[survivor], segments=(), revision=rewrite.revision - 1
    )
    homes = [cluster.holder(m) for m in cluster[0].membership.replicas(survivor).members]
    for home in homes:
        assert await home.manifests.retract(survivor, rewrite.precedence, inline)
    for name in names[1:]:
        async with http.delete(f"{cluster[1].url}/files/{name}") as response:
            assert response.status == 204

    monkeypatch.setattr(Packer, "wants", lambda *_: False)  # walks only check packs

    async def deleted() -> bool:  # (a check that cannot decide now is made at the next walk)
        await walk(cluster)
        try:
            await coordinator.stat(pack)
        except FileNotFound:
            return True
        return False

    await eventually(deleted, timeout=30, what="the pack deleted")
    # One fence, counted where its commit reached a quorum in time (one that missed it may
    # still have been kept by a slow replica, and win through read repair: counted 0).
    assert sum(p.packer.stats.fences for p in cluster.peers) <= 1
    fence = await coordinator.stat(survivor)
    assert fence.precedence > rewrite.precedence
    assert not fence.packed
    assert fence.inline == files[survivor]
    await eventually(lambda: _settled(http, cluster), timeout=15, what="retirements done")
    for home in homes:  # the lost copy comes back: it is behind, kept nowhere
        assert not (await home.manifests.put(rewrite)).stored
    for peer in cluster.peers:
        assert await get(http, peer.url, survivor) == files[survivor]


async def only_inline(
    http: aiohttp.ClientSession, cluster: LocalCluster, files: dict[str, bytes]
) -> None:
    """Every file of ``files`` is still kept inline, and reads back whole from every peer up."""
    for name, data in files.items():
        assert (await manifest_of(http, cluster[0].url, name))["inline"] is True, name
        for peer in cluster.peers:
            if peer.running:
                assert await get(http, peer.url, name) == data


async def test_nothing_is_packed_while_a_peer_is_down(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A pack stored with a chunk missing would hold its files one lost disk or two from
    losing them, where their three inline copies survive two: with a peer down nothing is
    packed, and once it is back the files are packed whole. (An attack killed two peers
    while files went cold, then a third once they were back: 27-45 of 150 files lost.)"""
    files = await store(http, cluster, 24, seed=41)
    down = cluster[6]
    await down.stop()
    await cluster.wait_down(down)
    up = [peer for peer in cluster.peers if peer is not down]
    await asyncio.gather(*(peer.anti_entropy.check_pass() for peer in up))
    stats = [peer.packer.stats for peer in up]
    assert sum(s.packs + s.files_packed + s.failures for s in stats) == 0
    assert sum(s.files_passed for s in stats) > 0  # gathered, then left as they were
    await only_inline(http, cluster, files)

    await down.start()
    await cluster.wait_converged()
    await pack_all(cluster, list(files))
    for pack in await packs_of(cluster, list(files)):
        assert len((await cluster[0].coordinator.stat(pack)).chunks) == 7


async def test_a_pack_stored_short_is_deleted_unused(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder up but refusing its chunk (out of space) leaves a pack with 6 of its 7
    chunks: no file is rewritten into it, it is deleted, and a later walk packs them whole."""
    files = await store(http, cluster, 24, seed=42)
    refusing = cluster[6]
    full = True
    write_chunk = refusing.holder.write_chunk

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        if full:
            raise InsufficientStorage("out of space")
        return await write_chunk(*args, **kwargs)

    monkeypatch.setattr(refusing.holder, "write_chunk", refuse)
    await walk(cluster)
    stats = [peer.packer.stats for peer in cluster.peers]
    assert sum(s.failures for s in stats) > 0
    assert sum(s.packs + s.files_packed for s in stats) == 0
    await only_inline(http, cluster, files)
    short = [m for peer in cluster.peers for m in peer.manifests.list(PACKS, "", 1000)[0]]
    assert short  # every replica of every short pack is a tombstone now
    assert all(manifest.deleted for manifest in short), short

    full = False
    await pack_all(cluster, list(files))
    for pack in await packs_of(cluster, list(files)):
        assert len((await cluster[0].coordinator.stat(pack)).chunks) == 7
