"""The manifest log under the store: group commit, torn tails, damage, compaction, and the
move from the previous layout (a file per replica)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest

from node.disk.durable import write_atomically
from node.disk.manifest_log import (
    HEADER_SIZE,
    KEEP,
    SEGMENT_MAGIC,
    SEGMENT_MAGIC_1,
    Damage,
    LogRecord,
    ManifestLog,
    SegmentIO,
    frame,
    scan,
)
from node.disk.manifest_store import ManifestStore
from node.errors import InsufficientStorage
from node.model.layout import Layout
from node.model.manifest import Manifest, ReplicaRead
from node.model.names import name_key
from node.model.preconditions import EntityTag, Preconditions, TagList
from node.model.version import Version
from tests.harness.disk import ThreadHops, evict, flip_byte

PEER = "0f8e9c3a-1b2c-4d5e-8f90-123456789abc"


def manifest(name: str, wall: int = 1, size: int = 4096) -> Manifest:
    body = random.Random(f"{name}/{wall}").randbytes(size)
    return Manifest(name, Version(wall, 0, PEER), Layout(size, 5, 2), f"etag-{wall}", inline=body)


class CountingIO(SegmentIO):
    """Counts data syncs; with ``hold`` set, the next data sync waits for ``release``."""

    def __init__(self) -> None:
        self.data_syncs = 0
        self.hold = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.fail_writes: int | None = None  # errno of the next write

    def write(self, fd: int, data: bytes, offset: int) -> None:
        if self.fail_writes is not None:
            code, self.fail_writes = self.fail_writes, None
            os.pwrite(fd, data[: len(data) // 2], offset)  # half of it lands, then the error
            raise OSError(code, os.strerror(code))
        super().write(fd, data, offset)

    def sync(self, fd: int, metadata: bool) -> None:
        if not metadata:
            self.data_syncs += 1
            if self.hold:
                self.hold = False
                self.held.set()
                assert self.release.wait(10), "the test never released the sync"
        super().sync(fd, metadata)


async def opened(tmp_path: Path, io: SegmentIO | None = None, **settings: int) -> ManifestStore:
    store = ManifestStore(tmp_path, io=io, **settings)  # type: ignore[arg-type]
    await store.open()
    return store


def segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "manifests" / "log").iterdir())


async def test_a_confirmation_rides_with_the_next_write_and_never_outlives_a_later_one(
    tmp_path: Path,
) -> None:
    """A conditional write's record carries its mark; its confirmation's unmarked record
    costs no sync of its own: it goes first in the next batch. Queued under the name's
    lock, it is before any later record of the name, so a replay never puts the confirmed
    version back over a newer one."""
    io = CountingIO()
    store = await opened(tmp_path, io)
    x, y, z = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(x)
    await store.put(y, condition=Preconditions(if_match=TagList(False, (EntityTag("etag-10"),))))
    syncs = io.data_syncs
    await store.confirm("a", y.precedence)
    assert io.data_syncs == syncs, "a confirmation synced on its own"
    assert await store.read("a") == ReplicaRead(y)
    await store.put(z)  # one batch: y unmarked, then z
    assert io.data_syncs == syncs + 1
    await store.close()
    again = await opened(tmp_path)
    assert await again.read("a") == ReplicaRead(z)
    await again.close()


IF_ETAG_10 = Preconditions(if_match=TagList(False, (EntityTag("etag-10"),)))


async def confirmed_y(store: ManifestStore) -> Manifest:
    """``a`` written as x, then y on x's etag, y confirmed: y's unmarked record rides."""
    x, y = manifest("a", wall=10), manifest("a", wall=20)
    await store.put(x)
    await store.put(y, condition=IF_ETAG_10)
    await store.confirm("a", y.precedence)
    return y


async def test_a_confirmation_is_written_at_close(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    y = await confirmed_y(store)
    await store.close()
    again = await opened(tmp_path)
    assert await again.read("a") == ReplicaRead(y)
    await again.close()


async def test_a_confirmation_in_a_failed_batch_rides_the_next(tmp_path: Path) -> None:
    io = CountingIO()
    store = await opened(tmp_path, io)
    y = await confirmed_y(store)
    io.fail_writes = errno.ENOSPC
    with pytest.raises(InsufficientStorage):
        await store.put(manifest("b"))  # the batch that carried y's confirmation
    await store.put(manifest("c"))
    again = await opened(tmp_path)  # (the first is still open: nothing flushed at close)
    assert await again.read("a") == ReplicaRead(y)
    await asyncio.gather(store.close(), again.close())


async def test_a_confirmation_pending_when_its_record_is_compacted_replaces_it(
    tmp_path: Path,
) -> None:
    """Compaction carries the live records of a segment; the marked record of a write whose
    confirmation still waits to ride goes as the confirmation, not as it was (carried
    marked, it would follow the confirmation and bring the mark back at the next start)."""
    store = await opened(tmp_path, segment_bytes=16 << 10)
    x, y = manifest("a", wall=10), manifest("a", wall=20)
    await store.put(x)
    await store.put(y, condition=IF_ETAG_10)
    first = int(segments(tmp_path)[0].name.removesuffix(".log"))
    for wall in range(1, 12):  # y's segment closes behind new ones
        await store.put(manifest("filler", wall=wall))
    assert len(segments(tmp_path)) > 1
    await store.confirm("a", y.precedence)  # rides with the next batch: the compaction's
    await store.compact(first)
    await store.close()
    again = await opened(tmp_path)
    assert await again.read("a") == ReplicaRead(y)
    await again.close()


async def test_concurrent_puts_share_one_sync_and_are_invisible_until_it(tmp_path: Path) -> None:
    io = CountingIO()
    store = await opened(tmp_path, io)
    io.hold = True
    first = asyncio.ensure_future(store.put(manifest("first")))
    await asyncio.to_thread(io.held.wait, 10)  # the first batch is in its sync...
    others = [asyncio.ensure_future(store.put(manifest(f"n/{i}"))) for i in range(200)]
    await asyncio.sleep(0)  # ...while 200 more writes queue behind it
    assert not first.done()
    assert not any(o.done() for o in others)
    assert len(store) == 0, "not durable: not visible"
    assert await store.get("first") is None
    io.release.set()
    results = await asyncio.gather(first, *others)
    assert all(r.stored for r in results)
    assert io.data_syncs == 2, "one sync for the first write, one for the 200 queued"
    assert len(store) == 201
    again = await opened(tmp_path)
    assert await again.get("n/199") == manifest("n/199")
    await asyncio.gather(store.close(), again.close())


async def test_a_cancelled_put_still_lands_in_the_index_with_its_record(tmp_path: Path) -> None:
    io = CountingIO()
    store = await opened(tmp_path, io)
    io.hold = True
    put = asyncio.ensure_future(store.put(manifest("a", wall=5)))
    await asyncio.to_thread(io.held.wait, 10)
    put.cancel()
    older = asyncio.ensure_future(store.put(manifest("a", wall=4)))  # waits for the lock
    io.release.set()
    assert not (await older).stored, "the cancelled write still took precedence"
    assert await store.get("a") == manifest("a", wall=5)
    assert await (await opened(tmp_path)).get("a") == manifest("a", wall=5)


async def test_a_torn_tail_is_cut_back_to_the_acknowledged_records(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.put(manifest("a"))
    await store.put(manifest("b"))
    [segment] = segments(tmp_path)
    acknowledged = segment.stat().st_size
    await store.put(manifest("c"))
    await store.close()
    with segment.open("r+b") as file:  # a crash in the middle of c's append
        file.truncate(acknowledged + (segment.stat().st_size - acknowledged) // 2)
    again = await opened(tmp_path)
    assert [await again.get(n) for n in "abc"] == [manifest("a"), manifest("b"), None]
    assert segment.stat().st_size == acknowledged
    await again.put(manifest("d"))
    await again.close()
    last = await opened(tmp_path)
    assert last.names() == ["a", "b", "d"]


async def test_a_zero_filled_tail_is_cut_too(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.put(manifest("a"))
    await store.close()
    [segment] = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as file:  # size grew, data never reached the disk
        file.write(bytes(5000))
    again = await opened(tmp_path)
    assert again.names() == ["a"]
    assert segment.stat().st_size == size


async def test_a_flipped_bit_in_a_record_is_detected_and_never_brings_back_an_older_version(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    await store.put(manifest("b", wall=1))
    [segment] = segments(tmp_path)
    start = segment.stat().st_size
    await store.put(manifest("b", wall=2))
    end = segment.stat().st_size
    await store.put(manifest("c"))
    await store.close()
    flip_byte(segment, (start + end) // 2)  # in the middle of b's newest record
    events = [e for e in scan(os.open(segment, os.O_RDONLY), 1) if isinstance(e, Damage)]
    assert [(e.start, e.end, e.name, e.tail) for e in events] == [(start, end, "b", False)]
    again = await opened(tmp_path)
    assert await again.get("b") is None, "lost here (read repair's job), not wall=1 again"
    assert await again.get("c") == manifest("c")
    await again.close()
    assert await (await opened(tmp_path)).get("b") is None, "written off for good"


async def test_a_flipped_bit_found_by_a_read_is_written_off(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.put(manifest("a", wall=1))
    [segment] = segments(tmp_path)
    start = segment.stat().st_size
    await store.put(manifest("a", wall=2))
    end = segment.stat().st_size
    await store.put(manifest("z"))
    flip_byte(segment, (start + end) // 2)  # a's newest record
    assert await store.get("a") is None
    assert "a" not in store.names()
    await store.close()
    again = await opened(tmp_path)
    assert await again.get("a") is None
    assert await again.get("z") == manifest("z")


async def test_a_failed_write_is_cut_off_and_the_store_goes_on(tmp_path: Path) -> None:
    io = CountingIO()
    store = await opened(tmp_path, io)
    await store.put(manifest("a"))
    io.fail_writes = errno.ENOSPC
    with pytest.raises(InsufficientStorage):
        await store.put(manifest("b"))
    assert store.names() == ["a"]
    await store.put(manifest("c"))
    await store.close()
    again = await opened(tmp_path)
    assert again.names() == ["a", "c"]


async def test_compaction_under_concurrent_writes_loses_nothing(tmp_path: Path) -> None:
    settings = {"segment_bytes": 64 << 10, "compact_bytes": 16 << 10}
    store = await opened(tmp_path, **settings)
    names = [f"hot/{i}" for i in range(20)]

    async def writer(number: int) -> None:
        for wall in range(1, 31):
            for name in names[number::4]:
                await store.put(manifest(name, wall, size=1000))

    await asyncio.gather(*(writer(n) for n in range(4)), store.put(manifest("cold", size=1000)))
    await store.compacted()
    assert store.compacted_segments > 0
    on_disk = sum(p.stat().st_size for p in segments(tmp_path))
    assert on_disk < 610 * 1100 / 2, "dead records were dropped"
    for name in names:
        assert await store.get(name) == manifest(name, 30, size=1000)
    await store.close()
    again = await opened(tmp_path, **settings)
    assert again.names() == sorted([*names, "cold"])
    for name in names:
        assert await again.get(name) == manifest(name, 30, size=1000)
    assert await again.get("cold") == manifest("cold", size=1000)


async def test_a_removal_is_kept_through_compaction(tmp_path: Path) -> None:
    settings = {"segment_bytes": 16 << 10, "compact_bytes": 4 << 10}
    store = await opened(tmp_path, **settings)
    await store.put(manifest("gone", size=1000))
    await store.put(manifest("x", 1, size=1000))
    assert await store.retract("gone", manifest("gone").precedence)
    for wall in range(2, 60):  # x's old versions fill segments, then die
        await store.put(manifest("x", wall, size=1000))
    await store.compacted()
    assert store.compacted_segments > 0
    await store.close()
    again = await opened(tmp_path, **settings)
    assert again.names() == ["x"]


def write_previous_layout(data_dir: Path, manifests: list[Manifest]) -> list[Path]:
    """Replicas as the previous release wrote them: a file per name, atomically."""
    paths = []
    for item in manifests:
        key = name_key(item.name)
        path = data_dir / "manifests" / key[:2] / key
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, item.to_bytes())
        paths.append(path)
    return paths


async def test_the_previous_layout_moves_into_the_log(tmp_path: Path) -> None:
    old = [manifest(f"old/{i}", wall=i + 1) for i in range(50)]
    paths = write_previous_layout(tmp_path, old)
    leftover = paths[0].with_name(f"{paths[0].name}.0badc0de.tmp")  # a crash before a rename
    leftover.write_bytes(manifest("old/0", wall=99).to_bytes())
    store = await opened(tmp_path)
    assert store.names() == sorted(m.name for m in old)
    for item in old:
        assert await store.get(item.name) == item
    files = [p for p in (tmp_path / "manifests").rglob("*") if p.is_file()]
    assert files == segments(tmp_path), "the old files and their folders are gone"
    await store.close()


async def test_a_move_interrupted_midway_runs_again_and_precedence_settles_it(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    await store.put(manifest("a", wall=5))  # moved before the crash (and newer since)
    await store.put(manifest("b", wall=1))
    await store.close()
    write_previous_layout(tmp_path, [manifest("a", wall=3), manifest("b", wall=2)])
    again = await opened(tmp_path)
    assert await again.get("a") == manifest("a", wall=5)
    assert await again.get("b") == manifest("b", wall=2)
    assert [p.name for p in (tmp_path / "manifests").iterdir()] == ["log"]


async def test_a_new_log_is_one_segment_header(tmp_path: Path) -> None:
    await (await opened(tmp_path)).close()
    [segment] = segments(tmp_path)
    header = segment.read_bytes()
    assert len(header) == HEADER_SIZE
    assert header.startswith(SEGMENT_MAGIC)
    assert header[8:24] == header[24:40], "two copies of the salt and its check"


async def test_a_frame_inside_a_payload_is_never_taken_for_a_record(tmp_path: Path) -> None:
    """A client chooses an inline file's bytes: one that holds a whole frame (a manifest of
    another name, made to check out) sits in the log inside a record of its own. Recovery
    looks for records after damage by their magic, so when that record is torn (a crash
    mid-append) or its header damaged, the frame inside was taken as a record: its name then
    read the forged manifest (an attack on real peers did this). Frames are checked with
    the segment's salt, which no client knows."""
    good, forged = manifest("victim", wall=1), manifest("victim", wall=2)
    frames = [frame(LogRecord(KEEP, "victim", forged.to_bytes()), salt) for salt in (None, 0)]
    carrier = Manifest(
        "carrier", Version(1, 0, PEER), Layout(4096, 5, 2), "e", inline=b"x" * 64 + b"".join(frames)
    )
    for damage in ("torn tail", "header"):
        root = tmp_path / damage.replace(" ", "-")
        store = await opened(root)
        await store.put(good)
        [segment] = segments(root)
        start = segment.stat().st_size
        await store.put(carrier)
        end = segment.stat().st_size
        if damage == "header":
            await store.put(manifest("after"))
        await store.close()
        if damage == "torn tail":
            os.truncate(segment, end - 10)  # the carrier's record cut short at its end
        else:
            flip_byte(segment, start + 6)  # its payload length
        again = await opened(root)
        assert await again.get("victim") == good, damage
        assert await again.get("carrier") is None, damage
        if damage == "header":
            assert await again.get("after") == manifest("after")
        await again.close()


async def holding_a(tmp_path: Path) -> Path:
    """The one segment of a log that keeps ``manifest("a")``, closed."""
    store = await opened(tmp_path)
    await store.put(manifest("a"))
    await store.close()
    [segment] = segments(tmp_path)
    return segment


def old_segment(tmp_path: Path, data: bytes) -> None:
    """A log whose one segment holds ``data``, as the release before wrote it."""
    log_dir = tmp_path / "manifests" / "log"
    log_dir.mkdir(parents=True)
    (log_dir / f"{1:012d}.log").write_bytes(data)


@pytest.mark.parametrize("at", [10, 2], ids=["a copy of the salt", "the magic"])
async def test_a_damaged_byte_of_the_header_loses_nothing(tmp_path: Path, at: int) -> None:
    segment = await holding_a(tmp_path)
    flip_byte(segment, at)
    again = await opened(tmp_path)
    assert await again.get("a") == manifest("a")
    await again.close()


async def test_a_segment_with_both_salts_damaged_is_kept_and_not_appended_to(
    tmp_path: Path,
) -> None:
    """Its records cannot be checked, so none is taken (other replicas have them); it is
    not cut as a torn tail, and writes go to a new segment."""
    segment = await holding_a(tmp_path)
    size = segment.stat().st_size
    flip_byte(segment, 10)
    flip_byte(segment, 26)
    again = await opened(tmp_path)
    assert await again.get("a") is None
    await again.put(manifest("b"))
    assert await again.get("b") == manifest("b")
    await again.close()
    assert segment.stat().st_size == size
    assert len(segments(tmp_path)) == 2
    third = await opened(tmp_path)
    assert await third.get("b") == manifest("b")
    await third.close()


async def test_an_empty_segment_of_the_release_before_is_made_salted(tmp_path: Path) -> None:
    """A peer of the release before that held no manifests: its only segment is a header
    of format 1, and records appended to it would be unsalted."""
    old_segment(tmp_path, SEGMENT_MAGIC_1)
    store = await opened(tmp_path)
    await store.put(manifest("a"))
    await store.close()
    [segment] = segments(tmp_path)
    assert segment.read_bytes().startswith(SEGMENT_MAGIC)
    again = await opened(tmp_path)
    assert await again.get("a") == manifest("a")
    await again.close()


async def test_a_segment_of_the_release_before_is_read_and_no_longer_appended_to(
    tmp_path: Path,
) -> None:
    """Format 1: an 8-byte header, checks seeded with the payload's length alone."""
    old_segment(tmp_path, SEGMENT_MAGIC_1 + frame(LogRecord(KEEP, "a", manifest("a").to_bytes())))
    store = await opened(tmp_path)
    assert await store.get("a") == manifest("a")
    await store.put(manifest("b"))
    await store.close()
    newer = segments(tmp_path)
    assert len(newer) == 2
    assert newer[1].read_bytes().startswith(SEGMENT_MAGIC)
    again = await opened(tmp_path)
    assert (await again.get("a"), await again.get("b")) == (manifest("a"), manifest("b"))
    await again.close()


async def test_records_after_a_damaged_frame_header_are_found_again(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.put(manifest("a"))
    [segment] = segments(tmp_path)
    start = segment.stat().st_size
    await store.put(manifest("b"))
    await store.put(manifest("c"))
    await store.close()
    flip_byte(segment, start + 5)  # b's length field: where b ends is unknown
    again = await opened(tmp_path)
    assert again.names() == ["a", "c"]
    assert await again.get("c") == manifest("c")


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no preadv2 RWF_NOWAIT here")
async def test_a_cached_record_is_read_on_the_loop_and_a_cold_one_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(tmp_path)
    kept = [manifest(f"n{i}", size=60_000) for i in range(8)]  # records of many pages
    for each in kept:
        await store.put(each)
    hops = ThreadHops(monkeypatch)
    assert [await store.get(m.name) for m in kept] == kept
    if not store._log._nowait:
        pytest.skip("this file system cannot read from the page cache alone (tmpfs)")
    assert hops.count == 0
    [segment] = segments(tmp_path)
    # Evicted, a record is read in a worker thread. (A read that misses may start the
    # kernel's readahead, so the pages can come back at once: evict before each try.)
    deadline = time.monotonic() + 5
    while True:
        evict(segment)
        before = hops.count
        assert await store.get("n3") == kept[3]
        if hops.count > before:
            break
        if time.monotonic() > deadline:
            pytest.skip("this file system keeps the pages of a file told to drop them")
        await asyncio.sleep(0.01)
    assert [await store.get(m.name) for m in kept] == kept  # from wherever they are now
    await store.close()


async def test_where_the_page_cache_cannot_be_asked_alone_reads_go_to_a_thread_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(tmp_path)
    await store.put(manifest("a"))
    await store.put(manifest("b"))
    asked = []

    def unsupported(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        asked.append(offset)
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "preadv", unsupported)
    hops = ThreadHops(monkeypatch)
    assert await store.get("a") == manifest("a")
    assert await store.get("b") == manifest("b")
    assert len(asked) == (1 if hasattr(os, "RWF_NOWAIT") else 0)  # once, then never again
    assert hops.count == 2
    await store.close()


async def test_a_dead_active_segment_is_closed_and_compacted_before_it_fills(
    tmp_path: Path,
) -> None:
    """Records replaced in the segment still written to (a small store: packing, overwrites)
    come back without waiting for it to reach ``segment_bytes``."""
    settings = {"segment_bytes": 1 << 30, "compact_bytes": 16 << 10}
    store = await opened(tmp_path, **settings)
    await store.put(manifest("cold", size=1000))
    for wall in range(1, 61):  # one live record of "hot", 59 dead ones: ~64 KiB
        await store.put(manifest("hot", wall, size=1000))
    await store.compacted()
    assert store.compacted_segments > 0
    on_disk = sum(p.stat().st_size for p in segments(tmp_path))
    assert on_disk < 32 << 10, f"{on_disk} bytes of log for two live records"
    assert store.log_bytes < 32 << 10
    await store.close()
    again = await opened(tmp_path, **settings)
    assert again.names() == ["cold", "hot"]
    assert await again.get("hot") == manifest("hot", 60, size=1000)
    assert await again.get("cold") == manifest("cold", size=1000)
    await again.close()


async def test_a_segment_that_cannot_be_started_early_leaves_writes_going(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a dead segment early is only for space: when the next one cannot be made
    (no inode left, no descriptor), the batch goes into the open segment instead."""
    store = await opened(tmp_path, segment_bytes=1 << 30, compact_bytes=4 << 10)
    create = ManifestLog._create

    def refused(log: ManifestLog, number: int) -> None:
        if number > 1:
            raise OSError(errno.ENOSPC, "No space left on device (no inode)")
        create(log, number)

    monkeypatch.setattr(ManifestLog, "_create", refused)
    for wall in range(1, 41):  # dead enough to close early after a few
        await store.put(manifest("hot", wall, size=1000))
    assert len(segments(tmp_path)) == 1
    assert await store.get("hot") == manifest("hot", 40, size=1000)
    await store.close()


def replicas_of(store: ManifestStore) -> dict[str, tuple[Version, int]]:
    """Each name's stored precedence, tombstones included, as the store's index has it."""
    summaries, more = store.list("", "", 1 << 20)
    assert not more
    return {summary.name: summary.precedence for summary in summaries}


class CrashSnapshots(SegmentIO):
    """Copies the log and hint files aside just before some batches' data write (what a
    crash there leaves: every earlier batch synced, this one not written), with what the
    store's index held at that moment."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.store: ManifestStore | None = None
        self.taken: list[tuple[Path, dict[str, tuple[Version, int]]]] = []

    def write(self, fd: int, data: bytes, offset: int) -> None:
        if (
            self.store is not None
            and not data.startswith(SEGMENT_MAGIC)
            and self.rng.random() < 0.05
        ):
            copy = self.root.parent / f"crash-{len(self.taken)}"
            for part in ("log", "hints"):
                source, target = self.root / "manifests" / part, copy / "manifests" / part
                target.mkdir(parents=True)
                for name in sorted(os.listdir(source)) if source.exists() else []:
                    with contextlib.suppress(FileNotFoundError):  # compacted meanwhile
                        shutil.copyfile(source / name, target / name)
            self.taken.append((copy, replicas_of(self.store)))
        super().write(fd, data, offset)


@pytest.mark.parametrize("seed", range(3))
async def test_a_crash_under_early_closes_and_compaction_loses_and_revives_nothing(
    tmp_path: Path, seed: int
) -> None:
    """Writes, retractions (removal records), conditional writes confirmed (riders) or taken
    back, from four writers at once, in a log whose segments close early and compact every
    few batches, over names first written among cold ones (their first records stay in
    segments too live to compact, so a removal record dropped early would revive them): a
    crash before any batch (a copy of the files then) reopens to exactly what the index
    held, and so does the clean end."""
    root = tmp_path / "live"
    io = CrashSnapshots(root, random.Random(seed + 1))
    settings = {"segment_bytes": 64 << 10, "compact_bytes": (1 << 10) << seed}
    store = await opened(root, io, **settings)
    io.store = store
    names = [f"n{i}" for i in range(40)]
    walls = dict.fromkeys(names, 1)
    for i, name in enumerate(names):  # among cold names: segments that stay mostly live
        await store.put(manifest(name, size=1000))
        await store.put(manifest(f"cold/{i}", size=1000))

    async def writer(number: int) -> None:
        ops = random.Random(seed * 100 + number)
        for _ in range(100):
            name = ops.choice(names)
            held = await store.get(name)
            walls[name] += 1
            wanted = manifest(name, walls[name], ops.randint(100, 1500))
            choice = ops.random()
            if choice < 0.6 or held is None:
                await store.put(wanted)
            elif choice < 0.75:
                await store.retract(name, held.precedence)
            else:
                condition = Preconditions(if_match=TagList(False, (EntityTag(held.etag),)))
                if (await store.put(wanted, condition=condition)).stored:
                    if ops.random() < 0.8:
                        await store.confirm(name, wanted.precedence)
                    else:
                        await store.retract(name, wanted.precedence)

    await asyncio.gather(*(writer(n) for n in range(4)))
    await store.compacted()
    assert store.compacted_segments > 0, "no segment was closed early and compacted"
    io.store = None
    ending = replicas_of(store)
    await store.close()
    assert io.taken, "no crash was taken"
    for copy, held in [*io.taken, (root, ending)]:
        again = await opened(copy, **settings)
        assert replicas_of(again) == held, copy.name
        for name in again.names():
            assert await again.get(name) is not None, f"{copy.name}: {name} unreadable"
        await again.close()


async def test_a_segment_due_at_a_restart_is_compacted_without_waiting_for_a_write(
    tmp_path: Path,
) -> None:
    """Compaction starts after a batch is written; a segment already due when the peer
    starts (here: due only under the settings it restarts with) is compacted at the start,
    not at the first write, which a quiet peer may not get for long."""
    store = await opened(tmp_path, segment_bytes=16 << 10, compact_bytes=1 << 40)
    for wall in range(1, 41):  # segments of dead records, none compacted
        await store.put(manifest("hot", wall, size=1000))
    await store.close()
    before = sum(p.stat().st_size for p in segments(tmp_path))
    again = await opened(tmp_path, segment_bytes=16 << 10, compact_bytes=4 << 10)
    await again.compacted()
    assert again.compacted_segments > 0
    assert sum(p.stat().st_size for p in segments(tmp_path)) < before / 2
    assert await again.get("hot") == manifest("hot", 40, size=1000)
    await again.close()
