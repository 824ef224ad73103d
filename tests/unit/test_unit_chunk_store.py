"""The on-disk chunk store: all-or-nothing writes, honest counters, clean restarts, a sidecar
that no crash parts from its chunk, and the earlier layout converted."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from node.disk import chunk_store
from node.disk.cached import Unsupported
from node.disk.chunk_store import CHUNKS_DIR, TRAILER, WRITE_BATCH, ChunkStore, seal
from node.errors import (
    ChunkNotFound,
    CorruptData,
    IncompleteBody,
    InsufficientStorage,
    InvalidRequest,
)
from node.model.digests import block_digest
from node.model.manifest import ChunkMeta, file_id
from node.model.manifest import chunk_id as chunk_id_of
from node.model.version import Version
from tests.harness.disk import ThreadHops, evict
from tests.harness.polling import eventually

FILE = "0123456789abcdef0123456789abcdef"
CHUNK = f"{FILE}-0"
OTHER = f"{FILE}-1"


class SourceBroke(Exception):
    """What a body stream raises when the client goes away mid-upload."""


async def stream(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


async def breaking_stream(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    async for piece in stream(pieces):
        yield piece
    raise SourceBroke("connection reset by peer")


OWNER = ChunkMeta("some/file", "1.0.peer", 0, 4)


async def write(
    store: ChunkStore, chunk_id: str, pieces: AsyncIterator[bytes], size: int | None
) -> int:
    """Write a chunk with a fixed owner and return its stored size."""
    return (await store.write(chunk_id, pieces, size, OWNER)).size


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


async def data(store: ChunkStore, chunk_id: str) -> bytes:
    """A stored chunk's bytes, read as a peer reads them."""
    async with store.open_range(chunk_id, 0, 0) as chunk:
        return b"".join([piece async for piece in chunk.iter_any()])


def on_disk(store: ChunkStore, *chunk_ids: str) -> int:
    """The bytes the files of ``chunk_ids`` take: what ``used_bytes`` counts."""
    return sum(store.path(chunk_id).stat().st_size for chunk_id in chunk_ids)


@pytest.fixture
async def store(tmp_path: Path) -> ChunkStore:
    opened = ChunkStore(tmp_path)
    await opened.open()
    return opened


async def test_open_creates_an_empty_store(tmp_path: Path, store: ChunkStore) -> None:
    assert (tmp_path / CHUNKS_DIR).is_dir()
    assert (tmp_path / "incoming").is_dir()
    assert (store.used_bytes, store.chunk_count) == (0, 0)


async def test_written_pieces_are_the_chunk(tmp_path: Path, store: ChunkStore) -> None:
    pieces = [b"hello ", b"", b"chunk", bytes(range(256))]
    size = await write(store, CHUNK, stream(pieces), sum(map(len, pieces)))
    assert size == sum(map(len, pieces))
    path = store.path(CHUNK)
    assert await data(store, CHUNK) == b"".join(pieces)
    assert path == tmp_path / CHUNKS_DIR / CHUNK[:2] / CHUNK
    meta = await store.meta(CHUNK)
    assert path.read_bytes() == b"".join(pieces) + seal(meta)  # bytes, sidecar, trailer
    assert path.read_bytes()[-TRAILER.size :].startswith(b"RSC\x01")
    assert files_under(tmp_path / "incoming") == []


async def test_size_is_optional(store: ChunkStore) -> None:
    assert await write(store, CHUNK, stream([b"abc", b"de"]), None) == 5
    assert await data(store, CHUNK) == b"abcde"


async def test_an_empty_chunk_is_stored(store: ChunkStore) -> None:
    assert await write(store, CHUNK, stream([]), 0) == 0
    assert await data(store, CHUNK) == b""
    assert (store.used_bytes, store.chunk_count) == (on_disk(store, CHUNK), 1)


async def test_writes_larger_than_a_batch_arrive_whole(store: ChunkStore) -> None:
    piece = bytes(range(256)) * 1024  # 256 KiB
    count = 2 * WRITE_BATCH // len(piece) + 1
    size = await write(store, CHUNK, stream([piece] * count), len(piece) * count)
    assert size == len(piece) * count
    assert await data(store, CHUNK) == piece * count


async def test_counters_follow_writes_and_deletes(store: ChunkStore) -> None:
    await write(store, CHUNK, stream([b"x" * 10]), 10)
    await write(store, OTHER, stream([b"y" * 7]), 7)
    other = on_disk(store, OTHER)
    assert (store.used_bytes, store.chunk_count) == (on_disk(store, CHUNK) + other, 2)
    assert other > 7  # the sidecar counts: the chunk's file is what takes the disk
    await store.delete(CHUNK)
    assert (store.used_bytes, store.chunk_count) == (other, 1)
    await store.delete(OTHER)
    assert (store.used_bytes, store.chunk_count) == (0, 0)


async def test_writing_the_same_chunk_twice_counts_it_once(store: ChunkStore) -> None:
    await write(store, CHUNK, stream([b"x" * 10]), 10)
    await write(store, CHUNK, stream([b"z" * 4]), 4)
    assert (store.used_bytes, store.chunk_count) == (on_disk(store, CHUNK), 1)
    assert await data(store, CHUNK) == b"zzzz"


async def test_a_short_body_raises_and_leaves_nothing(tmp_path: Path, store: ChunkStore) -> None:
    with pytest.raises(IncompleteBody):
        await write(store, CHUNK, stream([b"abc"]), 10)
    assert files_under(tmp_path) == []
    assert (store.used_bytes, store.chunk_count) == (0, 0)
    with pytest.raises(ChunkNotFound):
        store.path(CHUNK)


async def test_a_long_body_raises_and_leaves_nothing(tmp_path: Path, store: ChunkStore) -> None:
    with pytest.raises(IncompleteBody):
        await write(store, CHUNK, stream([b"abc", b"def"]), 4)
    assert files_under(tmp_path) == []
    assert (store.used_bytes, store.chunk_count) == (0, 0)


async def test_a_failed_rewrite_keeps_the_stored_copy(store: ChunkStore) -> None:
    await write(store, CHUNK, stream([b"good"]), 4)
    with pytest.raises(IncompleteBody):
        await write(store, CHUNK, stream([b"ba"]), 4)
    assert await data(store, CHUNK) == b"good"
    assert (store.used_bytes, store.chunk_count) == (on_disk(store, CHUNK), 1)


@pytest.mark.parametrize("pieces", [[], [b"partial"], [b"x" * WRITE_BATCH, b"more"]])
async def test_a_source_error_mid_stream_leaves_nothing(
    tmp_path: Path, store: ChunkStore, pieces: list[bytes]
) -> None:
    with pytest.raises(SourceBroke):
        await write(store, CHUNK, breaking_stream(pieces), None)
    assert files_under(tmp_path) == []
    assert (store.used_bytes, store.chunk_count) == (0, 0)


def open_files() -> list[str]:
    """What this process's descriptors point at (Linux)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
    return found


@pytest.mark.parametrize(
    "size", [10, WRITE_BATCH + 10], ids=["created-at-the-seal", "opened-early"]
)
async def test_a_disk_full_at_the_seal_leaves_nothing_and_says_so(
    tmp_path: Path, store: ChunkStore, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """The last bytes, the sidecar and the fsync go in one hop; a small chunk's file is even
    created there. Failing in it leaves no file behind, open or on disk, and no count."""

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InsufficientStorage):
        await write(store, CHUNK, stream([b"x" * size]), size)
    monkeypatch.undo()
    assert files_under(tmp_path) == []
    assert (store.used_bytes, store.chunk_count) == (0, 0)
    assert not [fd for fd in open_files() if fd.startswith(str(tmp_path))]  # none left open
    await write(store, CHUNK, stream([b"y" * 5]), 5)  # and the store goes on
    assert await data(store, CHUNK) == b"yyyyy"


async def test_a_write_that_would_leave_less_than_the_reserve_free_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What frees a full disk needs room itself (a packed chunk's removal is a record, and
    compaction copies before it deletes): chunk writes leave ``reserve_bytes`` free, and
    removals may use them."""
    monkeypatch.setattr(chunk_store, "FREE_TTL", 0.0)
    free = [10_000_000]  # (a chunk of 50,000 bytes in blocks of 4 takes ~250,000 with digests)
    store = ChunkStore(
        tmp_path, pack_max=1 << 20, reserve_bytes=1_000_000, free_bytes=lambda: free[0]
    )
    await store.open()
    try:
        await write(store, CHUNK, stream([b"x" * 50_000]), 50_000)
        free[0] = 1_050_000
        with pytest.raises(InsufficientStorage, match="kept free"):
            await write(store, OTHER, stream([b"y" * 50_000]), 50_000)  # known size
        with pytest.raises(InsufficientStorage, match="kept free"):  # chunked: as it comes
            await write(store, OTHER, stream([b"y" * 20_000] * 3), None)
        assert await store.chunk_ids() == [CHUNK]
        free[0] = 0  # past the reserve (another process filled it): removals still go
        assert await store.delete(CHUNK)

        def no_room(chunk_id: str) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        free[0] = 10_000_000
        await write(store, CHUNK, stream([b"x" * 50_000]), 50_000)
        monkeypatch.setattr(store.volumes, "remove", no_room)
        with pytest.raises(InsufficientStorage, match="no room to record the removal"):
            await store.delete(CHUNK)  # (was an OSError: a 500 to the peer deleting)
    finally:
        await store.close()


async def test_the_reserve_counts_each_byte_once_and_every_write_that_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free bytes as a disk counts them (what the files under the store take): a chunked
    write's bytes on disk are not counted again (it was refused at half the room), and a
    write that ended is seen at once, not a cached figure later (writes ended within it
    were missed: at GB/s, more than the whole reserve)."""
    monkeypatch.setattr(chunk_store, "FREE_TTL", 3600.0)  # only an ended write refreshes it
    base, reserve = 40 << 20, 1 << 20

    def free() -> int:
        return base - sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())

    store = ChunkStore(tmp_path, reserve_bytes=reserve, free_bytes=free)
    await store.open()
    try:
        owner = ChunkMeta("some/file", "1.0.peer", 0, 1 << 16)
        big = 24 << 20  # chunked: 16 MiB of room is left after it, 24 taken as it goes
        await store.write(CHUNK, stream([b"x" * (1 << 20)] * 24), None, owner)
        assert (await store.meta(CHUNK)).size == big
        left = free() - reserve  # now: a known-size write of more is refused
        with pytest.raises(InsufficientStorage, match="kept free"):
            await store.write(OTHER, stream([b"y" * (left + 1)]), left + 1, owner)
        half = left // 2
        await store.write(OTHER, stream([b"y" * half]), half, owner)
        with pytest.raises(InsufficientStorage, match="kept free"):  # seen once it ended
            await store.write(f"{FILE}-2", stream([b"z" * (half + 4096)]), half + 4096, owner)
    finally:
        await store.close()


async def test_a_write_over_a_packed_copy_the_disk_has_no_room_to_remove_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A packed copy's removal needs room for its record: where there is none, the new
    copy (a file) is stored all the same and both are known, so a delete removes both (the
    write failed as 507 after its commit, and a delete then left the file)."""
    store = ChunkStore(tmp_path, pack_max=1 << 20)
    await store.open()
    try:
        await write(store, CHUNK, stream([b"a" * 100]), 100)
        assert store.volumes.find(CHUNK) is not None

        async def no_room(chunk_id: str) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with monkeypatch.context() as patched:
            patched.setattr(store.volumes, "remove", no_room)
            # The same chunk again (a repair), of unknown size: a file.
            await write(store, CHUNK, stream([b"a" * 100]), None)
            assert store.path(CHUNK).exists()
            assert await data(store, CHUNK) == b"a" * 100
            with pytest.raises(InsufficientStorage, match="no room to record the removal"):
                await store.delete(CHUNK)  # (was an OSError: a 500 to the peer deleting)
        assert await store.delete(CHUNK)
        assert await store.chunk_ids() == []
        assert files_under(tmp_path / CHUNKS_DIR) == []
    finally:
        await store.close()


@pytest.mark.parametrize("pack_max", [0, 1 << 20], ids=["file", "packed"])
async def test_a_damaged_sidecar_still_says_whose_chunk_it_was_when_the_id_proves_it(
    tmp_path: Path, pack_max: int
) -> None:
    """``salvage_owner``: what the scrubber reports for repair. The name, version and index
    are taken only where the chunk's id is their hash."""
    store = ChunkStore(tmp_path, pack_max=pack_max)
    await store.open()
    try:
        owner = ChunkMeta("ns/f", "1.0.peer", 2, 4)
        proper = chunk_id_of(file_id(owner.name, Version.parse(owner.version)), owner.index)
        for chunk_id in (proper, OTHER):
            await store.write(chunk_id, stream([b"abcd" * 10]), 40, owner)
            where = store.volumes.find(chunk_id)
            if where is None:
                path, end = store.path(chunk_id), 40 + len((await store.meta(chunk_id)).to_bytes())
            else:
                path = store.volumes.volumes.path(where.volume)
                end = where.offset + 40 + len((await store.meta(chunk_id)).to_bytes())
            with path.open("r+b") as file:  # the last byte of stored_at: it still decodes
                file.seek(end - 1)
                old = file.read(1)
                file.seek(end - 1)
                file.write(bytes([old[0] ^ 0x01]))
            with pytest.raises(CorruptData):
                await store.meta(chunk_id)
        salvaged = await store.salvage_owner(proper)
        assert salvaged is not None
        assert (salvaged.name, salvaged.version, salvaged.index) == ("ns/f", "1.0.peer", 2)
        assert await store.salvage_owner(OTHER) is None  # its id is not that owner's
    finally:
        await store.close()


async def test_a_new_shard_is_made_durable_once_and_again_after_a_failed_sync(
    tmp_path: Path, store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard's entry in chunks-v2/ is synced by the first write into it, before that write
    is acknowledged; a failed sync fails the write (nothing left) and the next write syncs
    again; shards found when a store opens are not synced again."""
    shards, real = tmp_path / CHUNKS_DIR, chunk_store.fsync_dir
    synced: list[Path] = []
    failures = [OSError(errno.EIO, os.strerror(errno.EIO))]

    def fsync_dir(path: Path) -> None:
        synced.append(path)
        if path == shards and failures:
            raise failures.pop()
        real(path)

    monkeypatch.setattr(chunk_store, "fsync_dir", fsync_dir)
    with pytest.raises(OSError, match="Input/output error"):
        await write(store, CHUNK, stream([b"abc"]), 3)
    assert files_under(tmp_path) == []
    assert (store.used_bytes, store.chunk_count) == (0, 0)
    synced.clear()
    await write(store, CHUNK, stream([b"abc"]), 3)
    assert synced == [shards, shards / CHUNK[:2]]
    synced.clear()
    await write(store, OTHER, stream([b"de"]), 2)  # the same shard
    assert synced == [shards / CHUNK[:2]]
    reopened = ChunkStore(tmp_path)
    await reopened.open()
    synced.clear()
    await write(reopened, CHUNK, stream([b"xyz"]), 3)
    assert synced == [shards / CHUNK[:2]]


async def test_writes_into_a_new_shard_wait_until_its_entry_is_durable(
    tmp_path: Path, store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two chunks of one new shard (two locks): the second is not acknowledged while the
    first write's sync of the shard's entry is still under way."""
    shards, real = tmp_path / CHUNKS_DIR, chunk_store.fsync_dir
    entered, release = threading.Event(), threading.Event()

    def fsync_dir(path: Path) -> None:
        if path == shards:
            entered.set()
            release.wait(10)
        real(path)

    monkeypatch.setattr(chunk_store, "fsync_dir", fsync_dir)
    first = asyncio.ensure_future(write(store, CHUNK, stream([b"abc"]), 3))
    await eventually(entered.is_set)
    second = asyncio.ensure_future(write(store, OTHER, stream([b"de"]), 2))
    done, _ = await asyncio.wait({second}, timeout=0.3)  # (a bounded look: it must wait)
    assert not done
    release.set()
    assert await asyncio.gather(first, second) == [3, 2]


@pytest.mark.parametrize("replacing", [False, True], ids=["new", "rewrite"])
async def test_a_failed_directory_sync_after_the_rename_fails_the_write_but_counts_the_file(
    tmp_path: Path, store: ChunkStore, monkeypatch: pytest.MonkeyPatch, replacing: bool
) -> None:
    """Once renamed the chunk is visible whether or not its directory's fsync worked: the
    write is not acknowledged (the rename may not survive a crash), and the counters say
    what the disk holds, as a restart's scan finds it."""
    if replacing:
        await write(store, CHUNK, stream([b"old"]), 3)

    shard, synced = tmp_path / "chunks-v2" / CHUNK[:2], chunk_store.fsync_dir

    def failing(path: Path) -> None:  # the chunk's own directory only, after the rename
        if path != shard:
            return synced(path)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(chunk_store, "fsync_dir", failing)
    with pytest.raises(OSError, match="Input/output error"):
        await write(store, CHUNK, stream([b"x" * 10]), 10)
    monkeypatch.undo()
    assert await data(store, CHUNK) == b"x" * 10
    restarted = ChunkStore(tmp_path)
    await restarted.open()
    counted = (restarted.used_bytes, restarted.chunk_count)
    assert (store.used_bytes, store.chunk_count) == counted == (on_disk(store, CHUNK), 1)


@pytest.mark.parametrize(
    "first", [b"first part", b"x" * WRITE_BATCH], ids=["in-memory", "file-open"]
)
async def test_a_cancelled_write_leaves_nothing(
    tmp_path: Path, store: ChunkStore, first: bytes
) -> None:
    proceed = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        yield first
        proceed.set()
        await asyncio.Event().wait()  # the client hangs
        yield b"never"

    task = asyncio.ensure_future(write(store, CHUNK, stalling(), None))
    await proceed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(tmp_path) == []
    assert not [fd for fd in open_files() if fd.startswith(str(tmp_path))]
    assert (store.used_bytes, store.chunk_count) == (0, 0)


async def test_a_write_cancelled_while_its_file_opens_leaves_nothing(
    tmp_path: Path, store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk past WRITE_BATCH opens its file at the first full batch, in a worker thread
    that a cancellation cannot stop: the file it opens anyway is closed and removed."""
    opening, release = threading.Event(), threading.Event()
    create = chunk_store._create

    def held(temp: Path) -> Any:
        opening.set()
        assert release.wait(10), "the test never released the open"
        return create(temp)

    monkeypatch.setattr(chunk_store, "_create", held)
    size = WRITE_BATCH + 10
    task = asyncio.ensure_future(write(store, CHUNK, stream([b"x" * WRITE_BATCH, b"y" * 10]), size))
    assert await asyncio.to_thread(opening.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await eventually(lambda: files_under(tmp_path) == [], what="the opened file to go")
    await eventually(
        lambda: not [fd for fd in open_files() if fd.startswith(str(tmp_path))],
        what="the opened file to close",
    )
    assert (store.used_bytes, store.chunk_count) == (0, 0)


async def test_a_chunk_of_exactly_one_batch_is_written_in_one_hop(
    store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = []
    real = asyncio.to_thread

    async def counted(func: Any, /, *args: Any) -> Any:
        hops.append(func)
        return await real(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    await write(store, CHUNK, stream([b"x" * (WRITE_BATCH // 2)] * 2), WRITE_BATCH)
    assert len(hops) == 1
    await write(store, OTHER, stream([b"x" * WRITE_BATCH, b"y"]), WRITE_BATCH + 1)
    assert len(hops) == 1 + 3  # open at the first full batch, write it, then the seal
    monkeypatch.undo()
    assert await data(store, CHUNK) == b"x" * WRITE_BATCH


async def test_a_write_cancelled_while_it_commits_still_commits_whole(
    store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the rename may happen the commit is the write's end: cancelling the write then
    must neither remove the file under the commit nor leave the counters behind it."""
    started, release = threading.Event(), threading.Event()
    commit = chunk_store._Sealing.run

    def held_commit(sealing: chunk_store._Sealing) -> tuple[int | None, int]:
        started.set()
        release.wait(10)
        return commit(sealing)

    monkeypatch.setattr(chunk_store._Sealing, "run", held_commit)
    task = asyncio.ensure_future(write(store, CHUNK, stream([b"whole"]), 5))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await eventually(lambda: store.chunk_count == 1, timeout=10, what="the commit to end")
    assert await data(store, CHUNK) == b"whole"
    assert store.used_bytes == on_disk(store, CHUNK)


async def test_a_chunk_is_invisible_while_it_is_being_written(store: ChunkStore) -> None:
    halfway = asyncio.Event()
    finish = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first"
        halfway.set()
        await finish.wait()
        yield b"second"

    task = asyncio.ensure_future(write(store, CHUNK, slow(), 11))
    await halfway.wait()
    with pytest.raises(ChunkNotFound):
        store.path(CHUNK)
    finish.set()
    assert await task == 11
    assert await data(store, CHUNK) == b"firstsecond"


async def test_reopening_removes_interrupted_writes_and_counts_chunks(tmp_path: Path) -> None:
    first = ChunkStore(tmp_path)
    await first.open()
    await write(first, CHUNK, stream([b"a" * 5]), 5)
    await write(first, OTHER, stream([b"b" * 3]), 3)
    leftover = tmp_path / "incoming" / f"{FILE}-2.abcdef012345"
    leftover.write_bytes(b"half a chunk")  # as a crash mid-write leaves it

    restarted = ChunkStore(tmp_path)
    await restarted.open()
    assert not leftover.exists()
    assert (tmp_path / "incoming").is_dir()
    assert (restarted.used_bytes, restarted.chunk_count) == (on_disk(first, CHUNK, OTHER), 2)
    assert await data(restarted, CHUNK) == b"aaaaa"


async def test_open_creates_missing_directories(tmp_path: Path) -> None:
    root = tmp_path / "not" / "there" / "yet"
    store = ChunkStore(root)
    await store.open()
    await write(store, CHUNK, stream([b"x"]), 1)
    assert await data(store, CHUNK) == b"x"


async def test_missing_chunks_raise_chunk_not_found(store: ChunkStore) -> None:
    with pytest.raises(ChunkNotFound):
        store.path(CHUNK)
    with pytest.raises(ChunkNotFound):
        await store.delete(CHUNK)
    await write(store, CHUNK, stream([b"x"]), 1)
    await store.delete(CHUNK)
    with pytest.raises(ChunkNotFound):
        await store.delete(CHUNK)
    assert (store.used_bytes, store.chunk_count) == (0, 0)


def test_chunk_not_found_is_a_key_error() -> None:
    assert issubclass(ChunkNotFound, KeyError)


MALFORMED = [
    "",
    FILE,  # no index
    f"{FILE}-",
    f"{FILE}-1234",  # index of more than 3 digits
    f"{FILE[:-1]}-0",  # 31 hex digits
    f"{FILE}0-0",  # 33 hex digits
    f"{FILE.upper()}-0",
    f"{FILE}-x",
    f"{FILE}_0",
    f"../{FILE}-0",
    f"{FILE}-0/../../x",
    f"{FILE}-0.tmp",
    f" {FILE}-0",
]


@pytest.mark.parametrize("chunk_id", MALFORMED)
async def test_malformed_chunk_ids_are_invalid_requests(
    tmp_path: Path, store: ChunkStore, chunk_id: str
) -> None:
    with pytest.raises(InvalidRequest):
        store.path(chunk_id)
    with pytest.raises(InvalidRequest):
        await store.delete(chunk_id)
    with pytest.raises(InvalidRequest):
        await write(store, chunk_id, stream([b"x"]), 1)
    assert files_under(tmp_path) == []


async def test_a_trailing_newline_is_a_malformed_chunk_id(
    tmp_path: Path, store: ChunkStore
) -> None:
    with pytest.raises(InvalidRequest):
        await write(store, f"{CHUNK}\n", stream([b"x"]), 1)
    assert files_under(tmp_path) == []


async def test_concurrent_writes_of_one_chunk_count_it_once(
    store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold each commit just before its rename until the other one gets there too (or 1 s
    # passes, so a store that serialises commits still finishes): the race made deterministic.
    both_checked = threading.Barrier(2, timeout=1)
    replace = os.replace

    def rendezvous_then_replace(source: str, target: str) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait()
        replace(source, target)

    monkeypatch.setattr(os, "replace", rendezvous_then_replace)
    await asyncio.gather(
        write(store, CHUNK, stream([b"x" * 10]), 10),
        write(store, CHUNK, stream([b"x" * 10]), 10),
    )
    assert (store.used_bytes, store.chunk_count) == (on_disk(store, CHUNK), 1)


async def test_repr_shows_the_counters(store: ChunkStore) -> None:
    await write(store, CHUNK, stream([b"abc"]), 3)
    assert "chunks=1" in repr(store)
    assert f"used={on_disk(store, CHUNK)}" in repr(store)


async def test_every_chunk_has_a_sidecar_with_its_owner_and_block_digests(
    store: ChunkStore,
) -> None:
    data = b"0123456789"  # blocks of 4: "0123", "4567", "89"
    await write(store, CHUNK, stream([data[:3], data[3:]]), len(data))
    meta = await store.meta(CHUNK)
    assert (meta.name, meta.version, meta.index, meta.block_size) == ("some/file", "1.0.peer", 0, 4)
    assert meta.size == len(data)
    assert meta.block_digests == b"".join(
        block_digest(data[i : i + 4]) for i in range(0, len(data), 4)
    )
    assert meta.stored_at > 0
    assert ChunkMeta.from_bytes(meta.to_bytes()) == meta
    await store.delete(CHUNK)
    with pytest.raises(ChunkNotFound):
        await store.meta(CHUNK)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "trailer", "sidecar", "size"],
)
async def test_a_damaged_sidecar_or_trailer_reads_as_corrupt(
    store: ChunkStore, damage: str
) -> None:
    """Whatever breaks the end of a chunk's file, its sidecar is never misread: the scrubber
    sees CorruptData (and removes the chunk), a reader a failed open (and reads another)."""
    await write(store, CHUNK, stream([b"0123456789"]), 10)
    path = store.path(CHUNK)
    raw = bytearray(path.read_bytes())
    if damage == "truncated":  # a file cut short (never possible by a crash: a rename)
        raw = raw[: len(raw) - 3]
    elif damage == "trailer":
        raw[-TRAILER.size] ^= 0xFF  # its magic
    elif damage == "sidecar":
        raw[-TRAILER.size - 2] ^= 0x01  # a bit of the sidecar: its checksum fails
    else:  # a byte more of chunk: the sidecar checks, but the sizes disagree
        raw[10:10] = b"x"
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptData):
        await store.meta(CHUNK)
    if damage in ("truncated", "trailer"):  # (reads check the whole sidecar too)
        with pytest.raises(CorruptData):
            await data(store, CHUNK)
    path.write_bytes(b"RSC")  # shorter than any trailer
    with pytest.raises(CorruptData):
        await store.meta(CHUNK)
    with pytest.raises(CorruptData):
        await data(store, CHUNK)


def earlier_layout(root: Path, chunk_id: str, body: bytes, meta: ChunkMeta | None) -> Path:
    """Write a chunk as the earlier layout did (``chunks/``: bytes alone, the sidecar in
    ``<id>.meta``; none when ``meta`` is None); its path."""
    path = root / "chunks" / chunk_id[:2] / chunk_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    if meta is not None:
        path.with_name(path.name + ".meta").write_bytes(meta.to_bytes())
    return path


def owner(index: int, size: int) -> ChunkMeta:
    return ChunkMeta("some/file", "1.0.peer", index, 4, size, b"d" * 16 * -(-size // 4), 1.5)


EARLIER = {f"{FILE}-{i}": bytes([65 + i]) * (9 + i) for i in range(4)}


async def test_the_earlier_layout_is_moved_in_and_its_leftovers_removed(tmp_path: Path) -> None:
    """Each chunk beside its sidecar is sealed with it and moved into the new directory; a
    chunk already sealed (a start that crashed after its sync) moves as it is; that layout's
    crash leftovers go as its start removed them; someone else's file stays."""
    metas = {chunk_id: owner(i, len(body)) for i, (chunk_id, body) in enumerate(EARLIER.items())}
    first, second, third, fourth = EARLIER
    earlier_layout(tmp_path, first, EARLIER[first], metas[first])
    resealed = EARLIER[second] + seal(metas[second])  # sealed, its sidecar not yet removed
    earlier_layout(tmp_path, second, resealed, metas[second])
    earlier_layout(tmp_path, third, EARLIER[third] + seal(metas[third]), None)  # sealed, moved
    orphan = earlier_layout(tmp_path, fourth, EARLIER[fourth], None)  # its sidecar's rename lost
    shard = orphan.parent
    (shard / f"{FILE}-9.meta").write_bytes(metas[first].to_bytes())  # a delete's half
    (shard / f"{first}.meta.0badcafe.tmp").write_bytes(b"half")  # a sidecar being written
    rotten = f"{'f' * 32}-4"  # shorter than its sidecar says
    earlier_layout(tmp_path, rotten, b"xyz", msgspec.structs.replace(metas[first], size=10))
    foreign = shard / "README"
    foreign.write_bytes(b"not ours")

    store = ChunkStore(tmp_path)
    await store.open()
    assert await store.chunk_ids() == [first, second, third]
    for chunk_id in (first, second, third):
        assert await data(store, chunk_id) == EARLIER[chunk_id]
        assert await store.meta(chunk_id) == metas[chunk_id]
    assert (store.used_bytes, store.chunk_count) == (on_disk(store, first, second, third), 3)
    assert files_under(tmp_path / "chunks") == [foreign]  # all else of that layout is gone
    assert files_under(tmp_path / CHUNKS_DIR) == sorted(
        store.path(c) for c in (first, second, third)
    )


async def test_a_crash_midway_through_the_move_is_finished_by_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metas = {chunk_id: owner(i, len(body)) for i, (chunk_id, body) in enumerate(EARLIER.items())}
    for chunk_id, body in EARLIER.items():
        earlier_layout(tmp_path, chunk_id, body, metas[chunk_id])
    moved: list[str] = []
    replace = os.replace

    def crash_after_two(source: Any, target: Any) -> None:
        if len(moved) == 2:
            raise SystemExit("killed")  # as kill -9 would stop it, between two moves
        replace(source, target)
        moved.append(str(target))

    monkeypatch.setattr(os, "replace", crash_after_two)
    with pytest.raises(SystemExit):
        await ChunkStore(tmp_path).open()
    monkeypatch.setattr(os, "replace", replace)
    assert len(files_under(tmp_path / CHUNKS_DIR)) == 2
    store = ChunkStore(tmp_path)
    await store.open()
    assert await store.chunk_ids() == sorted(EARLIER)
    for chunk_id, body in EARLIER.items():
        assert await data(store, chunk_id) == body
        assert await store.meta(chunk_id) == metas[chunk_id]
    assert not (tmp_path / "chunks").exists()


async def test_a_range_of_a_stored_chunk_reads_as_a_stream(store: ChunkStore) -> None:
    """What a peer reads of its own chunk instead of a loopback GET: the range asked, by
    exact reads, a whole block at once, or pieces; past its end a short read, as a socket's
    stream would give."""
    data = bytes(range(256)) * 4
    await write(store, CHUNK, stream([data]), len(data))
    async with store.open_range(CHUNK, 10, 300) as chunk:
        assert await chunk.readexactly(90) == data[10:100]
        block = bytearray(200)
        await chunk.readinto(memoryview(block))
        assert block == data[100:300]
        with pytest.raises(asyncio.IncompleteReadError) as short:
            await chunk.readexactly(11)  # the range ends 10 bytes on
        assert short.value.partial == data[300:310]
    async with store.open_range(CHUNK, 1000, 0) as chunk:  # 0: all of it, as a peer call's
        assert b"".join([piece async for piece in chunk.iter_any()]) == data
    async with store.open_range(CHUNK, 1000, 50) as chunk:  # past the file's end
        with pytest.raises(asyncio.IncompleteReadError) as short:
            await chunk.readinto(memoryview(bytearray(50)))
        assert short.value.partial == data[1000:]


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no preadv2 RWF_NOWAIT here")
async def test_a_cached_chunk_is_opened_and_read_on_the_loop_and_a_cold_one_in_a_thread(
    store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = os.urandom(300_000)  # two pieces of iter_any, each read on the loop at once
    await write(store, CHUNK, stream([body]), len(body))
    hops = ThreadHops(monkeypatch)
    assert await data(store, CHUNK) == body
    if not store._on_loop:
        pytest.skip("this system cannot open or read from the kernel's caches alone")
    assert hops.count == 0
    # Its pages evicted, the sidecar cannot be read without the disk: opened in a thread.
    # (A read that misses may start readahead, and the pages come back: evict before each.)
    deadline = time.monotonic() + 5
    while True:
        evict(store.path(CHUNK))
        before = hops.count
        async with store.open_range(CHUNK, 5, 1000) as chunk:
            assert await chunk.readexactly(1000) == body[5:1005]
        if hops.count > before:
            break
        if time.monotonic() > deadline:
            pytest.skip("this file system keeps the pages of a file told to drop them")
        await asyncio.sleep(0.01)
    assert store._on_loop  # (a miss is no reason to stop asking)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no preadv2 RWF_NOWAIT here")
async def test_a_read_partly_in_the_page_cache_is_finished_in_a_thread(
    store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop takes the cached start, one thread hop the rest, and the range stops asking."""
    body = os.urandom(600_000)
    owner = msgspec.structs.replace(OWNER, block_size=1 << 20)  # (a sidecar of one digest)
    await store.write(CHUNK, stream([body]), len(body), owner)
    path = store.path(CHUNK)
    hops = ThreadHops(monkeypatch)
    deadline = time.monotonic() + 5
    while True:
        evict(path)
        fd = os.open(path, os.O_RDONLY)
        try:  # only the first 64 KiB and the sidecar's end back in the cache: no readahead
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            os.pread(fd, 1 << 16, 0)
            os.pread(fd, 1 << 13, os.fstat(fd).st_size - (1 << 13))
        finally:
            os.close(fd)
        before = hops.count
        async with store.open_range(CHUNK, 0, 200_000) as chunk:
            assert await chunk.readexactly(200_000) == body[:200_000]
            partly = not chunk._on_loop
        if not store._on_loop:
            pytest.skip("this system cannot open or read from the kernel's caches alone")
        if partly and hops.count == before + 1:  # opened on the loop, finished in a thread
            break
        if time.monotonic() > deadline:
            pytest.skip("this file system did not keep the pages read back, or dropped them")
        await asyncio.sleep(0.01)


async def test_where_chunks_cannot_be_opened_from_the_caches_alone_threads_open_them(
    store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older kernel (no openat2, or no RESOLVE_CACHED): asked once, never again."""
    await write(store, CHUNK, stream([b"abc"]), 3)
    asked = []

    def unsupported(path: Path) -> int:
        asked.append(path)
        raise Unsupported(errno.ENOSYS, "no openat2 here")

    monkeypatch.setattr(chunk_store, "open_cached", unsupported)
    hops = ThreadHops(monkeypatch)
    assert [await data(store, CHUNK) for _ in range(3)] == [b"abc"] * 3
    assert len(asked) == 1
    assert hops.count >= 3  # each open, in a worker thread


async def test_a_range_open_while_its_chunk_is_deleted_still_reads(store: ChunkStore) -> None:
    """The file is open: a GC of the chunk does not cut a reader short."""
    await write(store, CHUNK, stream([b"abcdef"]), 6)
    async with store.open_range(CHUNK, 0, 0) as chunk:
        await store.delete(CHUNK)
        assert await chunk.readexactly(6) == b"abcdef"
    with pytest.raises(ChunkNotFound):
        async with store.open_range(CHUNK, 0, 0):
            pass


async def test_a_range_closed_during_a_read_is_closed_by_that_read_after_it() -> None:
    """A reader cancelled on the loop leaves its read running in a worker thread: closing
    the file under it would free a descriptor the read's read(2) may then use, after the
    number went to another file or socket. The read closes it when it returns."""
    readable, writable = os.pipe()  # a read that blocks until the test writes
    chunk = chunk_store.ChunkRange(Path("pipe"), 0, 10)
    file = chunk._file = io.FileIO(readable, "rb")
    chunk._left = 10
    try:
        reading = asyncio.ensure_future(chunk.readinto(memoryview(bytearray(10))))
        await eventually(lambda: chunk._busy, what="the read in its thread")
        reading.cancel()
        chunk.close()
        assert not file.closed  # the read in flight still uses it
        os.write(writable, b"0123456789")
        await eventually(lambda: file.closed, what="closed by the read once done")
    finally:
        os.close(writable)
        if not file.closed:
            file.close()


@pytest.mark.parametrize("pack_max", [0, 1 << 20], ids=["file", "packed"])
async def test_a_delete_of_the_copy_judged_spares_one_written_since(
    tmp_path: Path, pack_max: int
) -> None:
    """A collector judges a chunk by its sidecar, then deletes it: a move that brought the
    same chunk here meanwhile (a new copy) must survive that delete."""
    store = ChunkStore(tmp_path, pack_max=pack_max)
    await store.open()
    await write(store, CHUNK, stream([b"old"]), 3)
    judged = await store.meta(CHUNK)
    await write(store, CHUNK, stream([b"new"]), 3)
    assert (await store.meta(CHUNK)).stored_at > judged.stored_at
    assert not await store.delete(CHUNK, judged.stored_at)
    assert await data(store, CHUNK) == b"new"
    assert await store.delete(CHUNK, (await store.meta(CHUNK)).stored_at)
    with pytest.raises(ChunkNotFound):
        await store.meta(CHUNK)
    assert (store.used_bytes, store.chunk_count) == (0, 0)
