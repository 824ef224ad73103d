"""Disk faults under real peer processes: a wiped data directory, flipped bytes in chunks and
manifest replicas, and a full disk. Every acknowledged file is read back byte for byte."""

from __future__ import annotations

import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.disk.manifest_log import FRAME
from node.model.digests import block_digest, chunk_digest
from tests.harness import (
    ProcessCluster,
    check_files,
    chunk_files_in,
    eventually,
    flip_byte,
    fully_redundant,
    get_file,
    get_manifest,
    incoming_files_in,
    manifest_record,
    manifest_replica,
    own_record,
    peer_id_of,
    put_file,
    sidecar_of,
)
from tests.harness.disk import flip_chunk_byte, stored_chunk

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BLOCK = 4096


def random_files(prefix: str, count: int, seed: int, largest: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"{prefix}/{i}": rng.randbytes(rng.randint(1, largest)) for i in range(count)}


async def store(
    http: aiohttp.ClientSession, cluster: ProcessCluster, files: dict[str, bytes]
) -> None:
    for i, (name, data) in enumerate(files.items()):
        await put_file(http, cluster.urls[i % len(cluster.urls)], name, data)


async def test_a_wiped_data_directory_comes_back_as_a_new_member_and_repair_refills_it(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # No reads until redundancy is back: the repair sweeps alone (every second here, and
    # treating a member as gone at once) must rebuild what the wiped disk held.
    cluster = ProcessCluster(
        tmp_path,
        7,
        f"--block-size={BLOCK}",
        "--repair-after=0",
        "--repair-interval=1",
        "--rebalance-interval=1",
    )
    try:
        await cluster.start(http)
        files = random_files("wiped", 30, 3, 30 * BLOCK)
        await store(http, cluster, files)
        victim = cluster.peers[4]
        old_id = peer_id_of(victim.data_dir)
        await cluster.crash(4)
        shutil.rmtree(victim.data_dir)
        await cluster.restart(4, http)  # same port, empty disk: a new member
        new_id = peer_id_of(victim.data_dir)
        assert new_id != old_id
        await cluster.wait_converged(http)
        await cluster.wait_seen_down(http, {old_id})

        names = sorted(files)
        await eventually(
            lambda: fully_redundant(http, cluster.urls[0], names), 60, "full redundancy"
        )
        for name in names:
            manifest = await get_manifest(http, cluster.urls[1], name)
            holders = [c["holder"] for c in manifest["chunks"]]
            assert old_id not in holders
            assert len(set(holders)) == 7, f"{name}: two chunks on one peer: {holders}"
        assert own_record((await cluster.views(http))[4])["used_bytes"] > 0
        await check_files(http, cluster.urls[1:] + cluster.urls[:1], files)

        # Repair sweeps come every second, as asked, where the defaults wait 30 s: each peer
        # sweeps twice more within a few seconds. (Rebalance passes follow changes, not the
        # clock: tests/growth checks that an idle cluster makes none.)
        async def rounds() -> list[int]:
            return [s["repair"]["sweeps"] for s in await cluster.scrub_stats(http)]

        first = await rounds()

        async def two_more() -> bool:
            return all(now >= then + 2 for now, then in zip(await rounds(), first, strict=True))

        await eventually(two_more, 15, "two more repair sweeps")
    finally:
        await cluster.stop()


@pytest.fixture(params=["files", "packed"])
async def scrubbed(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> AsyncIterator[ProcessCluster]:
    """Seven peers that scrub every second at full speed, their chunks in files or packed."""
    layout = ["--pack-max=0"] if request.param == "files" else []
    cluster = ProcessCluster(
        tmp_path, 7, f"--block-size={BLOCK}", "--scrub-interval=1", "--scrub-rate=0", *layout
    )
    try:
        await cluster.start(http)
        yield cluster
    finally:
        await cluster.stop()


def holder_dir(cluster: ProcessCluster, chunk: dict[str, Any]) -> Path:
    return cluster.peers[cluster.index_of(chunk["holder"])].data_dir


def chunk_matches_manifest(cluster: ProcessCluster, chunk: dict[str, Any]) -> bool:
    """The chunk is whole again: its block digests hash to the manifest's digest."""
    data = stored_chunk(holder_dir(cluster, chunk), chunk["id"])
    if data is None:
        return False
    blocks = b"".join(block_digest(data[i : i + BLOCK]) for i in range(0, len(data), BLOCK))
    return len(data) == chunk["size"] and chunk_digest(blocks).hex() == chunk["digest"]


async def test_flipped_bytes_in_chunks_are_found_by_scrub_and_repaired(
    scrubbed: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    files = random_files("rot", 10, 4, 12 * BLOCK)
    await store(http, scrubbed, files)
    names = sorted(files)
    # Two chunks of one file (its parity can still rebuild both), then one chunk of each of
    # three others, each on a peer not yet damaged: the damage is spread over five peers.
    chunks = {n: (await get_manifest(http, scrubbed.urls[0], n))["chunks"] for n in names[:4]}
    flipped = [(names[0], chunks[names[0]][0]), (names[0], chunks[names[0]][6])]
    for name in names[1:4]:
        damaged = {chunk["holder"] for _, chunk in flipped}
        flipped.append((name, next(c for c in chunks[name] if c["holder"] not in damaged)))
    for _, chunk in flipped:
        flip_chunk_byte(holder_dir(scrubbed, chunk), chunk["id"])
    holders = {scrubbed.index_of(chunk["holder"]) for _, chunk in flipped}
    assert len(holders) == 5

    async def found() -> bool:
        stats = await scrubbed.scrub_stats(http)
        return sum(s["scrub"]["errors_found"] for s in stats) >= len(flipped)

    await eventually(found, 30, "scrubbers to find every flipped chunk")

    async def restored() -> bool:
        for name, chunk in flipped:
            now = (await get_manifest(http, scrubbed.urls[0], name))["chunks"][chunk["index"]]
            if not chunk_matches_manifest(scrubbed, now):
                return False
        return True

    await eventually(restored, 30, "every damaged chunk to be rebuilt")
    stats = await scrubbed.scrub_stats(http)
    for index in holders:
        assert stats[index]["scrub"]["errors_found"] >= 1
    # Not one repair per flip: two peers rebuilding chunks of one file race, the loser's
    # commit is refused and retried, and a rebuilt chunk may land before its commit.
    assert sum(s["repair"]["chunks_repaired"] for s in stats) > 0
    for name, chunk in flipped:  # rebuilt where it was: the holder is up, only its copy was bad
        now = (await get_manifest(http, scrubbed.urls[0], name))["chunks"][chunk["index"]]
        assert now["holder"] == chunk["holder"]
    for url in scrubbed.urls:
        await check_files(http, [url], files)


def replicas_of(cluster: ProcessCluster, name: str) -> list[Path]:
    """Data directories of the peers whose manifest log holds a replica of ``name``."""
    return [p.data_dir for p in cluster.peers if manifest_record(p.data_dir, name)]


def damage(data_dir: Path, name: str, offset: int = FRAME.size) -> None:
    """Flip a byte of the peer's current record of ``name``, ``offset`` bytes into the
    record (by default the first byte of its payload: the record no longer decodes)."""
    where = manifest_record(data_dir, name)
    assert where is not None
    path, start, _ = where
    flip_byte(path, start + offset)


def decodes(data_dir: Path, name: str) -> bool:
    return manifest_record(data_dir, name) is not None


async def test_an_undecodable_manifest_replica_is_passed_over_and_replaced_by_a_write(
    scrubbed: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    data = random.Random(7).randbytes(9 * BLOCK)
    await put_file(http, scrubbed.urls[0], "disks/ledger", data)
    replicas = replicas_of(scrubbed, "disks/ledger")
    assert len(replicas) == 3
    damage(replicas[0], "disks/ledger")
    assert not decodes(replicas[0], "disks/ledger")
    for url in scrubbed.urls:  # the other two replicas answer for it
        assert await get_file(http, url, "disks/ledger") == data
    newer = random.Random(8).randbytes(7 * BLOCK)
    await put_file(http, scrubbed.urls[1], "disks/ledger", newer)
    kept = manifest_replica(replicas[0], "disks/ledger")
    assert kept is not None
    assert kept.size == len(newer)
    for url in scrubbed.urls:
        assert await get_file(http, url, "disks/ledger") == newer


async def test_an_undecodable_manifest_replica_is_repaired_by_reads(
    scrubbed: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    data = random.Random(9).randbytes(9 * BLOCK)
    await put_file(http, scrubbed.urls[0], "disks/ledger", data)
    replica = replicas_of(scrubbed, "disks/ledger")[0]
    damage(replica, "disks/ledger")

    async def repaired() -> bool:
        for url in scrubbed.urls:
            assert await get_file(http, url, "disks/ledger") == data
        return decodes(replica, "disks/ledger")

    await eventually(repaired, 8, "reads to repair the damaged replica")


def version_offset(raw: bytes) -> int:
    """Offset of the most significant byte of the version's wall clock (a msgpack uint64)."""
    at = raw.index(b"\xa7version") + len(b"\xa7version")
    assert raw[at : at + 2] == b"\x93\xcf", "version is [uint64 wall_ms, counter, peer]"
    return at + 2


async def test_a_manifest_replica_with_a_flipped_version_bit_never_wins(
    scrubbed: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    data = random.Random(10).randbytes(9 * BLOCK)
    await put_file(http, scrubbed.urls[0], "disks/ledger", data)
    replica = replicas_of(scrubbed, "disks/ledger")[0]
    where = manifest_record(replica, "disks/ledger")
    assert where is not None
    path, start, length = where
    with path.open("rb") as file:
        file.seek(start)
        record = file.read(length)
    damage(replica, "disks/ledger", version_offset(record))
    assert not decodes(replica, "disks/ledger")  # the checksum over the record catches the flip
    for url in scrubbed.urls:
        assert await get_file(http, url, "disks/ledger") == data


@pytest.fixture
async def small(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[ProcessCluster]:
    """Seven peers that may each hold 100,000 bytes of chunks."""
    # Chunk files: the test counts them, and what incoming/ holds, after refused writes.
    cluster = ProcessCluster(
        tmp_path, 7, f"--block-size={BLOCK}", "--max-bytes=100000", "--pack-max=0"
    )
    try:
        await cluster.start(http)
        yield cluster
    finally:
        await cluster.stop()


FITS = random.Random(11).randbytes(200_000)  # 40,000 bytes per peer
TOO_BIG = random.Random(12).randbytes(400_000)  # 80,000 more per peer: past every limit


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length: peers learn it is too big part-way."""
    for start in range(0, len(data), 32_768):
        yield data[start : start + 32_768]


async def test_a_full_disk_is_507_and_leaves_nothing_behind(
    small: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    await put_file(http, small.urls[0], "disks/fits", FITS)
    # With a Content-Length every holder refuses at once; without, each one part-way. Each
    # goes through its own coordinator (see the test below for why).
    refused = [(1, "disks/too-big", TOO_BIG), (2, "disks/too-big-chunked", chunked(TOO_BIG))]
    for coordinator, name, body in refused:
        async with http.put(f"{small.urls[coordinator]}/files/{name}", data=body) as response:
            reply = await response.json()
            assert response.status == 507, f"{name}: {response.status} {reply}"
            assert reply["error"]["code"] == "insufficient_storage"
        for url in small.urls:
            async with http.get(f"{url}/files/{name}") as response:
                assert response.status == 404
    for url in small.urls:
        assert await get_file(http, url, "disks/fits") == FITS

    async def only_the_first_file() -> bool:
        used = await small.used_bytes(http)
        files = [chunk_files_in(p.data_dir) for p in small.peers]
        leftovers = [incoming_files_in(p.data_dir) for p in small.peers]
        if [len(found) for found in files] != [1] * 7 or any(leftovers):
            return False
        sizes = [path.stat().st_size for [path] in files]
        return used == sizes and [sidecar_of(path).size for [path] in files] == [40_000] * 7

    await eventually(only_the_first_file, 20, "partial chunks of refused files to go")


async def test_refusals_of_a_full_disk_do_not_make_peers_look_down(
    small: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    await put_file(http, small.urls[0], "disks/fits", FITS)
    for name in ("disks/too-big", "disks/too-big-again"):
        async with http.put(f"{small.urls[1]}/files/{name}", data=TOO_BIG) as response:
            assert response.status == 507
    async with http.get(f"{small.urls[1]}/files/disks/fits") as response:
        assert response.status == 200, await response.text()
        assert await response.read() == FITS
    view = (await small.views(http))[1]
    assert all(p["state"] == "up" for p in view["peers"]), view["peers"]
