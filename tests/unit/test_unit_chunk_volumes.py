"""Packed chunks: appended to volumes with group commit, read back by range, removed,
replayed after a restart (a torn tail cut, a lost index rebuilt, damage contained) and
compacted, with the store's counters following."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.disk import chunk_store, chunk_volumes
from node.disk.cached import Unsupported
from node.disk.chunk_store import READ_ON_LOOP, VOLUMES_DIR, ChunkStore, seal
from node.disk.chunk_volumes import FRAME, HEAD, VOLUME_MAGIC, Append, Volumes
from node.errors import ChunkNotFound
from node.model.digests import block_digest
from node.model.manifest import ChunkMeta
from tests.harness.disk import evict
from tests.harness.polling import eventually

FILE = "0123456789abcdef0123456789abcdef"
OWNER = ChunkMeta("some/file", "1.0.peer", 0, 4)


def chunk_id(n: int) -> str:
    return f"{FILE}-{n}"


def body(n: int, size: int = 100) -> bytes:
    return bytes((n + i) % 251 for i in range(size))


async def stream(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 64):
        await asyncio.sleep(0)
        yield data[start : start + 64]


async def put(store: ChunkStore, n: int, size: int = 100) -> None:
    data = body(n, size)
    await store.write(chunk_id(n), stream(data), len(data), OWNER)


async def read(store: ChunkStore, n: int, offset: int = 0, length: int = 0) -> bytes:
    async with store.open_range(chunk_id(n), offset, length) as chunk:
        return b"".join([piece async for piece in chunk.iter_any()])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ChunkStore]:
    opened = ChunkStore(tmp_path, pack_max=1 << 20)
    await opened.open()
    yield opened
    await opened.close()


async def reopen(tmp_path: Path, store: ChunkStore) -> ChunkStore:
    await store.close()
    again = ChunkStore(tmp_path, pack_max=1 << 20)
    await again.open()
    return again


def volume_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / VOLUMES_DIR).iterdir())


async def test_concurrent_small_chunks_share_one_volume_and_few_syncs(
    tmp_path: Path, store: ChunkStore
) -> None:
    """Twenty writes at once: one file on disk, fewer batches than writes, every chunk
    read back whole, no chunk file."""
    await asyncio.gather(*(put(store, n) for n in range(20)))
    assert volume_files(tmp_path) == ["000000000001.vol"]
    assert store.volumes.volumes.batches < 20, "writes queued meanwhile share a sync"
    assert not any((tmp_path / "chunks-v2").rglob(f"{FILE}-*"))
    assert [await read(store, n) for n in range(20)] == [body(n) for n in range(20)]
    assert store.chunk_count == 20
    image = len(body(0)) + len(seal(OWNER)) - len(OWNER.to_bytes())  # (sizes vary: digests)
    assert store.used_bytes >= 20 * image


async def test_interleaved_reads_of_chunks_in_one_volume_each_get_their_own_bytes(
    store: ChunkStore,
) -> None:
    """Each read has the volume open on its own: reads of two chunks, a piece at a time
    each in turn (on the loop and in threads), never see each other's offset."""
    await asyncio.gather(put(store, 1, 3000), put(store, 2, 3000))
    async with (
        store.open_range(chunk_id(1), 0, 0) as one,
        store.open_range(chunk_id(2), 0, 0) as two,
    ):
        got: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        for _ in range(3):
            for n, chunk in ((1, one), (2, two)):
                got[n] += await chunk.readexactly(1000)
    assert bytes(got[1]) == body(1, 3000)
    assert bytes(got[2]) == body(2, 3000)


async def test_a_range_of_a_packed_chunk_is_exactly_its_bytes(store: ChunkStore) -> None:
    await put(store, 3, 500)
    assert await read(store, 3, 10, 20) == body(3, 500)[10:30]
    assert await read(store, 3, 490, 100) == body(3, 500)[490:]
    async with store.open_range(chunk_id(3), 0, 0) as chunk:
        chunk.narrow(100, 110)
        assert await chunk.readexactly(10) == body(3, 500)[100:110]


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no preadv2 RWF_NOWAIT here")
async def test_a_cached_packed_chunk_is_read_at_once_as_a_range_reads_it(
    tmp_path: Path, store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_now`` gives what ``open_range`` gives for the same range (all of it, within
    it, cut at its end, nothing at its end), or None for ``open_range`` to read or report:
    past its end, past ``READ_ON_LOOP``, a chunk stored as a file, an unknown id, a volume
    gone, a volume out of the page cache, a system that cannot tell (asked once). It
    leaves no descriptor open."""
    await put(store, 3, 500)
    await put(store, 4, READ_ON_LOOP + 1)
    await store.write(chunk_id(5), stream(body(5)), None, OWNER)  # no size: a file
    if store.read_now(chunk_id(3), 0, 0) is None:
        pytest.skip("this system cannot read from the kernel's caches alone")
    descriptors = open_descriptors()
    for offset, length in [(0, 0), (10, 20), (490, 100), (500, 10), (7, 0)]:
        now = store.read_now(chunk_id(3), offset, length)
        assert now == await read(store, 3, offset, length), (offset, length)
    assert store.read_now(chunk_id(4), 1, READ_ON_LOOP) == body(4, READ_ON_LOOP + 1)[1:]
    assert store.read_now(chunk_id(3), 501, 1) is None
    assert store.read_now(chunk_id(4), 0, 0) is None  # past READ_ON_LOOP
    assert store.read_now(chunk_id(5), 0, 0) is None  # a file
    assert store.read_now(chunk_id(6), 0, 0) is None  # none
    volumes = store.volumes.volumes
    with monkeypatch.context() as patched:
        patched.setattr(volumes, "path", lambda number: tmp_path / "gone.vol")
        assert store.read_now(chunk_id(3), 0, 0) is None
    deadline = time.monotonic() + 5
    while (now := store.read_now(chunk_id(3), 0, 0)) is not None:
        assert now == body(3, 500)  # never part of it, nor what it was read into
        if time.monotonic() > deadline:
            pytest.skip("this file system keeps the pages of a file told to drop them")
        evict(volumes.path(volumes.chunks[chunk_id(3)].volume))
        await asyncio.sleep(0.01)
    assert await read(store, 3) == body(3, 500)  # read from the disk
    assert store.read_now(chunk_id(3), 0, 0) == body(3, 500)  # (back in the cache)
    asked = []

    def unsupported(*args: object) -> int:
        asked.append(args)
        raise Unsupported(errno.EOPNOTSUPP, "no RWF_NOWAIT here")

    monkeypatch.setattr(chunk_store, "preadinto_cached", unsupported)
    assert [store.read_now(chunk_id(3), 0, 0) for _ in range(3)] == [None] * 3
    assert len(asked) == 1  # asked once, never again
    assert not store._on_loop
    assert open_descriptors() == descriptors  # every one it opened, closed


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_meta_and_digest_checks_of_a_packed_chunk(store: ChunkStore) -> None:
    await put(store, 4, 10)
    meta = await store.meta(chunk_id(4))
    assert (meta.name, meta.size) == ("some/file", 10)
    assert meta.block_digests == b"".join(
        block_digest(body(4, 10)[i : i + 4]) for i in range(0, 10, 4)
    )
    assert await store.matches(chunk_id(4), meta)
    assert await store.missing([chunk_id(4), chunk_id(5)]) == [chunk_id(5)]
    assert await store.chunk_ids() == [chunk_id(4)]


async def test_a_deleted_packed_chunk_stays_deleted_after_a_restart(
    tmp_path: Path, store: ChunkStore
) -> None:
    await asyncio.gather(put(store, 1), put(store, 2))
    await store.delete(chunk_id(1))
    with pytest.raises(ChunkNotFound):
        await store.delete(chunk_id(1))
    assert (store.chunk_count, await store.chunk_ids()) == (1, [chunk_id(2)])
    used = store.used_bytes
    again = await reopen(tmp_path, store)
    try:
        assert await again.chunk_ids() == [chunk_id(2)]
        assert (again.chunk_count, again.used_bytes) == (1, used)
        assert await read(again, 2) == body(2)
        with pytest.raises(ChunkNotFound):
            await read(again, 1)
    finally:
        await again.close()


async def test_a_rewrite_replaces_a_chunk_file_of_the_same_id_and_counts_once(
    tmp_path: Path,
) -> None:
    """A chunk stored as a file (by a store that did not pack) written again packed: the
    file goes, the chunk counts once, a restart agrees."""
    files = ChunkStore(tmp_path)
    await files.open()
    await put(files, 7)
    await files.close()
    packing = ChunkStore(tmp_path, pack_max=1 << 20)
    await packing.open()
    assert packing.chunk_count == 1
    await put(packing, 7)
    assert not any((tmp_path / "chunks-v2").rglob(chunk_id(7)))
    assert packing.chunk_count == 1
    used = packing.used_bytes
    again = await reopen(tmp_path, packing)
    try:
        assert (again.chunk_count, again.used_bytes) == (1, used)
        assert await read(again, 7) == body(7)
    finally:
        await again.close()


async def test_a_chunk_written_as_a_file_supersedes_its_packed_copy(tmp_path: Path) -> None:
    """A write of unknown size goes to a file: a packed copy of the same id goes with its
    commit, so reads, deletes, counters and a restart see the file alone."""
    store = ChunkStore(tmp_path, pack_max=1 << 20)
    await store.open()
    try:
        await put(store, 5, 200)
        data = body(5, 200)
        await store.write(chunk_id(5), stream(data), None, OWNER)  # unknown size: a file
        assert store.volumes.find(chunk_id(5)) is None
        assert store.chunk_count == 1
        assert store.path(chunk_id(5)).is_file()
        used = store.used_bytes
        assert used == store.path(chunk_id(5)).stat().st_size
    finally:
        await store.close()
    again = ChunkStore(tmp_path, pack_max=1 << 20)
    await again.open()
    try:
        assert (again.chunk_count, again.used_bytes) == (1, used)
        assert await read(again, 5) == body(5, 200)
        await again.delete(chunk_id(5))
        assert (again.chunk_count, await again.chunk_ids()) == (0, [])
    finally:
        await again.close()


async def test_a_record_hidden_in_a_chunk_is_never_taken_for_one_after_a_crash(
    tmp_path: Path, store: ChunkStore
) -> None:
    """A client's file may hold bytes that look like a record (a volume stored as a file,
    or crafted): when a crash tears the record of such a chunk, the scan that looks past
    the damage must not take them for one. Checksums are seeded with the volume's random
    salt and the record's offset, which no client knows."""
    await put(store, 1, 64)  # the real chunk 1
    await store.close()
    volume = tmp_path / VOLUMES_DIR / "000000000001.vol"
    end = volume.stat().st_size
    fake = Append(chunk_volumes.KEEP, chunk_id(1), (b"EVIL" * 16,), 64)
    inside = end + FRAME.size + HEAD.size + 100  # where the fake lies in chunk 2's image
    forged = [b"".join(fake.frame(salt, inside)) for salt in (0, 1, 2**63)]  # guesses
    image = b"\x00" * 100 + b"".join(forged) + b"\x00" * 100
    torn = b"".join(Append(chunk_volumes.KEEP, chunk_id(2), (image,), len(image)).frame(0, end))
    with volume.open("ab") as file:
        file.write(torn[: len(torn) - 50])  # the crash: the end of chunk 2's record is missing
    again = ChunkStore(tmp_path, pack_max=1 << 20)
    await again.open()
    try:
        assert await again.chunk_ids() == [chunk_id(1)]
        assert await read(again, 1) == body(1, 64)
        assert volume.stat().st_size == end, "the torn record cut off whole"
    finally:
        await again.close()


async def test_a_torn_tail_is_cut_off_and_the_chunks_before_it_kept(
    tmp_path: Path, store: ChunkStore
) -> None:
    """A crash in the middle of a batch: its half-written record is cut off at the next
    start (never acknowledged), every acknowledged chunk is there."""
    await asyncio.gather(*(put(store, n) for n in range(5)))
    await store.close()
    volume = tmp_path / VOLUMES_DIR / "000000000001.vol"
    whole = volume.stat().st_size
    torn = b"".join(Append(chunk_volumes.KEEP, chunk_id(9), (b"x" * 300,), 300).frame(0, 0))
    with volume.open("ab") as file:
        file.write(torn[: len(torn) // 2])
    again = ChunkStore(tmp_path, pack_max=1 << 20)
    await again.open()
    try:
        assert volume.stat().st_size == whole
        assert await again.chunk_ids() == [chunk_id(n) for n in range(5)]
        assert [await read(again, n) for n in range(5)] == [body(n) for n in range(5)]
        await put(again, 9)  # appends after the cut
        assert await read(again, 9) == body(9)
    finally:
        await again.close()


@pytest.mark.parametrize("where", ["body", "frame", "length"])
async def test_a_flipped_byte_in_the_newest_volume_loses_that_chunk_only(
    tmp_path: Path, store: ChunkStore, where: str
) -> None:
    """Damage is not a torn tail: a flipped byte in a record's body skips that record by
    its length, one in its frame is passed over to the next record that checks out. The
    chunks after it are kept at a restart, and appends go on after the last record."""
    for n in range(6):
        await put(store, n, 300)
    where_3 = store.volumes.find(chunk_id(3))
    assert where_3 is not None
    await store.close()
    volume = tmp_path / VOLUMES_DIR / "000000000001.vol"
    size = volume.stat().st_size
    frame = where_3.offset - HEAD.size - FRAME.size
    # A byte of the body; of the magic; of the length (still inside the volume: 300 -> 302).
    at, mask = {"body": (where_3.offset + 10, 0xFF), "frame": (frame + 1, 0xFF)}.get(
        where, (frame + 4, 0x02)
    )
    with volume.open("r+b") as file:
        file.seek(at)
        old = file.read(1)
        file.seek(at)
        file.write(bytes([old[0] ^ mask]))
    again = ChunkStore(tmp_path, pack_max=1 << 20)
    await again.open()
    try:
        assert volume.stat().st_size == size, "nothing cut off"
        assert await again.chunk_ids() == [chunk_id(n) for n in (0, 1, 2, 4, 5)]
        assert [await read(again, n) for n in (0, 1, 2, 4, 5)] == [
            body(n, 300) for n in (0, 1, 2, 4, 5)
        ]
        await put(again, 3, 300)  # repair brings it back
        assert await read(again, 3) == body(3, 300)
    finally:
        await again.close()


async def test_a_damaged_byte_of_the_newest_volumes_salt_is_put_right(
    tmp_path: Path, store: ChunkStore
) -> None:
    """Every record is checked with its volume's salt: one damaged byte of it failed them
    all, and a restart cut the newest volume back to its header as a torn tail (an attack:
    64 MB lost). The salt one byte away that checks the first record is taken back."""
    for n in range(6):
        await put(store, n, 300)
    await store.close()
    volume = tmp_path / VOLUMES_DIR / "000000000001.vol"
    size, header = volume.stat().st_size, volume.read_bytes()[: len(VOLUME_MAGIC) + 8]
    flip(volume, len(VOLUME_MAGIC) + 3)
    again = ChunkStore(tmp_path, pack_max=1 << 20)
    await again.open()
    try:
        assert volume.stat().st_size == size, "nothing cut off"
        assert [await read(again, n) for n in range(6)] == [body(n, 300) for n in range(6)]
        assert volume.read_bytes()[: len(header)] == header, "the salt written back"
    finally:
        await again.close()


async def test_more_than_a_crash_can_tear_is_never_cut_off(
    tmp_path: Path, store: ChunkStore
) -> None:
    """A crash tears at most one group commit (``MAX_TORN``): bytes past the last checked
    record that are more than that are damage (here a salt wholly overwritten), kept, and
    the volume takes records after them."""
    count = chunk_volumes.MAX_TORN // (300 << 10) + 2
    for n in range(count):
        await put(store, n, 300 << 10)
    await store.close()
    volume = tmp_path / VOLUMES_DIR / "000000000001.vol"
    size = volume.stat().st_size
    with volume.open("r+b") as file:
        file.seek(len(VOLUME_MAGIC))
        file.write(bytes(8))
    again = ChunkStore(tmp_path, pack_max=1 << 20)
    await again.open()
    try:
        assert volume.stat().st_size == size, "nothing cut off"
        assert await again.chunk_ids() == []
        await put(again, count, 300)
        assert await read(again, count) == body(count, 300)
    finally:
        await again.close()
    third = ChunkStore(tmp_path, pack_max=1 << 20)
    await third.open()
    try:
        assert await read(third, count) == body(count, 300)
    finally:
        await third.close()


def flip(path: Path, at: int) -> None:
    with path.open("r+b") as file:
        file.seek(at)
        old = file.read(1)
        file.seek(at)
        file.write(bytes([old[0] ^ 0xFF]))


async def test_sealed_volumes_are_indexed_and_read_by_their_index_or_rescanned(
    tmp_path: Path,
) -> None:
    """Volumes roll over at their size: each sealed one gets an index. A lost or damaged
    index is rebuilt by a scan, and damage inside a sealed volume scanned again loses only
    the damaged chunk (missing: repair's), never serves wrong bytes."""
    volumes = Volumes(tmp_path / "v", volume_bytes=2000)
    volumes.open()
    for n in range(12):
        image = body(n, 300)
        number, entries, _ = volumes.append(
            [Append(chunk_volumes.KEEP, chunk_id(n), (image,), 300)]
        )
        volumes.apply(number, entries)
    volumes.close()
    names = sorted(p.name for p in (tmp_path / "v").iterdir())
    assert "000000000001.idx" in names
    assert "000000000002.vol" in names
    newest = sorted(n for n in names if n.endswith(".vol"))[-1]
    assert newest.replace(".vol", ".idx") not in names, "the newest volume has no index"

    (tmp_path / "v" / "000000000001.idx").unlink()  # lost: scanned, and written again
    with (tmp_path / "v" / "000000000002.idx").open("r+b") as file:
        file.write(b"\xff")  # damaged: fails its checksum, scanned
    again = Volumes(tmp_path / "v", volume_bytes=2000)
    again.open()
    try:
        assert sorted(again.chunks) == sorted(chunk_id(n) for n in range(12))
        assert all(again.read(again.chunks[chunk_id(n)]) == body(n, 300) for n in range(12))
        assert (tmp_path / "v" / "000000000001.idx").exists()
        second = [n for n in range(12) if again.chunks[chunk_id(n)].volume == 2]
    finally:
        again.close()

    # A flipped byte in the second record of volume 2, whose index is gone again.
    (tmp_path / "v" / "000000000002.idx").unlink()
    victim = Volumes(tmp_path / "v", volume_bytes=2000)
    victim.open()
    where = victim.chunks[chunk_id(second[1])]
    victim.close()
    (tmp_path / "v" / "000000000002.idx").unlink()  # (the scan wrote it again)
    with (tmp_path / "v" / "000000000002.vol").open("r+b") as file:
        file.seek(where.offset + 5)
        file.write(b"\x00" if body(second[1], 300)[5] else b"\x01")
    damaged = Volumes(tmp_path / "v", volume_bytes=2000)
    damaged.open()
    try:
        assert sorted(damaged.chunks) == sorted(chunk_id(n) for n in range(12) if n != second[1])
        for kept_id, where in damaged.chunks.items():
            assert damaged.read(where) == body(int(kept_id.split("-")[1]), 300)
    finally:
        damaged.close()


async def compacting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, volume_bytes: int
) -> ChunkStore:
    """An open packing store whose volumes are sealed at ``volume_bytes`` and compacted
    once half dead, however little that is."""
    monkeypatch.setattr(chunk_volumes, "COMPACT_MIN", 0)
    store = ChunkStore(tmp_path, pack_max=1 << 20)
    store.volumes.volumes.volume_bytes = volume_bytes
    await store.open()
    return store


async def test_a_mostly_dead_volume_is_compacted_and_its_chunks_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await compacting(tmp_path, monkeypatch, 4000)
    try:
        for n in range(10):
            await put(store, n, 600)
        assert store.volumes.volumes.chunks[chunk_id(0)].volume == 1
        for n in (0, 1, 2, 4, 5):
            await store.delete(chunk_id(n))
        await put(store, 20, 600)  # a batch after the deletes starts the compaction
        first = store.volumes.volumes
        await eventually(lambda: 1 not in first.sizes, 20, "volume 1 to be compacted")
        assert not (tmp_path / VOLUMES_DIR / "000000000001.vol").exists()
        live = [n for n in (*range(10), 20) if n not in (0, 1, 2, 4, 5)]
        assert await store.chunk_ids() == sorted(chunk_id(n) for n in live)
        assert [await read(store, n) for n in live] == [body(n, 600) for n in live]
        count, used = store.chunk_count, store.used_bytes
    finally:
        await store.close()
    again = ChunkStore(tmp_path, pack_max=1 << 20)
    await again.open()
    try:
        assert await again.chunk_ids() == sorted(chunk_id(n) for n in live)
        assert (again.chunk_count, again.used_bytes) == (count, used)
    finally:
        await again.close()


async def test_a_read_open_while_its_volume_is_compacted_away_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await compacting(tmp_path, monkeypatch, 2000)
    try:
        for n in range(6):
            await put(store, n, 600)
        async with store.open_range(chunk_id(1), 0, 0) as held:
            for n in (0, 2):
                await store.delete(chunk_id(n))
            await store.volumes.compact(1)
            assert not (tmp_path / VOLUMES_DIR / "000000000001.vol").exists()
            assert await held.readexactly(600) == body(1, 600)
        assert await read(store, 1) == body(1, 600)
    finally:
        await store.close()


async def test_after_a_failed_sync_chunks_are_files_until_a_restart(
    tmp_path: Path, store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed fdatasync what the kernel kept of the volume is unknown: that write
    fails, later ones are chunk files (none refused, none appended there) until a restart
    scans the volume."""
    await put(store, 1)
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        await put(store, 2)
    monkeypatch.setattr(os, "fdatasync", real)
    await put(store, 3)
    assert store.path(chunk_id(3)).is_file()
    assert await store.missing([chunk_id(1), chunk_id(2), chunk_id(3)]) == [chunk_id(2)]
    assert store.chunk_count == 2
    again = await reopen(tmp_path, store)
    try:
        found = await again.chunk_ids()  # 2, never acknowledged, may be whole in the volume
        assert found in ([chunk_id(1), chunk_id(3)], [chunk_id(n) for n in (1, 2, 3)])
        await put(again, 4)
        assert again.volumes.find(chunk_id(4)) is not None, "packed again"
    finally:
        await again.close()


def test_a_record_is_its_frame_head_and_image() -> None:
    record = b"".join(Append(chunk_volumes.KEEP, chunk_id(1), (b"a", b"bc"), 3).frame(7, 16))
    assert len(record) == FRAME.size + HEAD.size + 3
    assert record.endswith(b"abc")
    assert len(VOLUME_MAGIC) == 8


def test_a_batch_of_more_pieces_than_one_pwritev_takes_is_written_whole(tmp_path: Path) -> None:
    """Records go down as pieces (never joined): a batch of more than IOV_MAX of them is
    written in several calls, every byte once, in order."""
    volumes = Volumes(tmp_path / "v")
    volumes.open()
    records = [
        Append(chunk_volumes.KEEP, chunk_id(n % 1000), (b"ab", b"", bytes([n % 256]) * 3), 5)
        for n in range(chunk_volumes.IOV_MAX + 300)
    ]
    number, entries, _ = volumes.append(records)
    volumes.apply(number, entries)
    volumes.close()
    again = Volumes(tmp_path / "v")
    again.open()
    try:
        assert len(again.chunks) == 1000
        last = len(records) - 1
        assert again.read(again.chunks[chunk_id(last % 1000)]) == b"ab" + bytes([last % 256]) * 3
    finally:
        again.close()
