"""The manifest replica store: newest version wins in any order, durable, listable."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import random
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from node.disk import manifest_index, manifest_store
from node.disk.manifest_log import (
    FRAME,
    KEEP,
    Location,
    LogRecord,
    ManifestLog,
    SegmentGone,
    frame,
)
from node.disk.manifest_store import KeyedLocks, ManifestStore
from node.model.layout import Layout
from node.model.manifest import ChunkRef, Manifest, ReplicaRead, SealedRead
from node.model.preconditions import ANY, EntityTag, Preconditions, TagList
from node.model.version import Version
from tests.harness.disk import flip_byte

PEER = "0f8e9c3a-1b2c-4d5e-8f90-123456789abc"
T = TypeVar("T")


def version(wall: int, counter: int = 0, peer: str = PEER) -> Version:
    return Version(wall, counter, peer)


def manifest(name: str, wall: int = 1, counter: int = 0, size: int = 100) -> Manifest:
    layout = Layout(size, 3, 2, 1024)
    chunks = tuple(
        ChunkRef(index, f"holder-{index}", bytes([wall % 256]) * (16 * layout.stripes))
        for index in range(layout.n)
    )
    return Manifest(name, version(wall, counter), layout, f"etag-{wall}", "text/plain", chunks)


def tombstone(name: str, wall: int) -> Manifest:
    return Manifest(name, version(wall), Layout(0, 3, 0), deleted=True)


@pytest.fixture
async def store(tmp_path: Path) -> ManifestStore:
    opened = ManifestStore(tmp_path)
    await opened.open()
    return opened


async def reopen(tmp_path: Path) -> ManifestStore:
    again = ManifestStore(tmp_path)
    await again.open()
    return again


async def held_in_a_record_read(
    monkeypatch: pytest.MonkeyPatch, call: Coroutine[Any, Any, T]
) -> tuple[asyncio.Future[T], threading.Event]:
    """``call`` started, and held once it reads a record from the log (in a worker thread,
    as a record no longer in the page cache is read) until the event returned is set; later
    reads are not held."""
    reading, release = threading.Event(), threading.Event()
    read, read_cached = ManifestLog.read, ManifestLog.read_cached

    def held(log: ManifestLog, where: Location) -> LogRecord:
        reading.set()
        assert release.wait(10), "the test never released the read"
        return read(log, where)

    monkeypatch.setattr(ManifestLog, "read_cached", lambda log, where: None)
    monkeypatch.setattr(ManifestLog, "read", held)
    pending = asyncio.ensure_future(call)
    assert await asyncio.to_thread(reading.wait, 10)
    monkeypatch.setattr(ManifestLog, "read", read)
    monkeypatch.setattr(ManifestLog, "read_cached", read_cached)
    return pending, release


async def test_a_new_name_is_stored(store: ManifestStore) -> None:
    first = manifest("a", wall=10)
    result = await store.put(first)
    assert (result.stored, result.current, result.replaced) == (True, first.version, None)
    assert await store.get("a") == first
    assert len(store) == 1


async def test_unknown_names_are_none(store: ManifestStore) -> None:
    assert await store.get("nothing") is None


async def test_a_newer_version_replaces_and_returns_the_replaced(store: ManifestStore) -> None:
    old, new = manifest("a", wall=10), manifest("a", wall=11, size=500)
    await store.put(old)
    result = await store.put(new)
    assert result.stored
    assert result.current == new.version
    assert result.replaced == old  # the full manifest, chunks included: the caller retires them
    assert await store.get("a") == new
    assert len(store) == 1


async def test_a_higher_counter_or_peer_is_newer(store: ManifestStore) -> None:
    await store.put(manifest("a", wall=10, counter=0))
    assert (await store.put(manifest("a", wall=10, counter=1))).stored
    later_peer = Manifest("a", version(10, 1, PEER + "x"), Layout(1, 3, 2, 1024))
    assert (await store.put(later_peer)).stored
    assert await store.get("a") == later_peer


@pytest.mark.parametrize("older_wall", [10, 9, 0])
async def test_an_older_or_equal_version_is_refused(store: ManifestStore, older_wall: int) -> None:
    current = manifest("a", wall=10)
    await store.put(current)
    result = await store.put(manifest("a", wall=older_wall, size=7))
    assert (result.stored, result.current, result.replaced) == (False, current.version, None)
    assert await store.get("a") == current


async def test_a_tombstone_replaces_and_is_kept(store: ManifestStore) -> None:
    live = manifest("a", wall=10)
    await store.put(live)
    result = await store.put(tombstone("a", wall=11))
    assert result.stored
    assert result.replaced == live
    stored = await store.get("a")
    assert stored is not None
    assert stored.deleted
    assert not (await store.put(manifest("a", wall=10, counter=5))).stored


async def test_a_newer_revision_of_the_same_version_replaces(store: ManifestStore) -> None:
    first = manifest("a", wall=10)
    moved = dataclasses.replace(first, chunks=first.chunks[:-1], revision=1)
    await store.put(first)
    result = await store.put(moved)
    assert (result.stored, result.replaced) == (True, first)
    assert await store.get("a") == moved
    again = await store.put(dataclasses.replace(first, revision=1))  # equal precedence
    assert (again.stored, again.current, again.replaced) == (False, first.version, None)
    assert not (await store.put(first)).stored  # an older revision
    newer = await store.put(manifest("a", wall=11))  # a newer version beats any revision
    assert (newer.stored, newer.replaced) == (True, moved)


async def test_manifests_survive_a_reopen(tmp_path: Path, store: ManifestStore) -> None:
    kept = [manifest("a", wall=12), manifest("b/c", wall=3), tombstone("d", wall=4)]
    await store.put(manifest("a", wall=11))
    for item in kept:
        await store.put(item)
    again = await reopen(tmp_path)
    assert len(again) == 3
    for item in kept:
        assert await again.get(item.name) == item
    assert not (await again.put(manifest("a", wall=11))).stored  # the version is remembered
    assert [m.name for m in again.list("", "", 10)[0]] == ["a", "b/c", "d"]


async def test_names_written_in_any_order_are_listed_in_order_after_a_reopen(
    tmp_path: Path, store: ManifestStore
) -> None:
    """A start sorts the names once, after the log is read (not one insertion per record:
    quadratic in a log's random order); removals read from the log are honoured."""
    names = [f"n{i:03d}" for i in range(200)]
    random.Random(7).shuffle(names)
    for name in names:
        await store.put(manifest(name))
    for name in names[:20]:  # dropped: a failed write's retraction with nothing to restore
        assert await store.retract(name, manifest(name).precedence)
    again = await reopen(tmp_path)
    assert again.names() == sorted(names[20:])
    await again.put(manifest("m"))  # and the sorted list is kept up from then on
    assert await again.retract(names[30], manifest(names[30]).precedence)
    assert again.names() == sorted({*names[20:], "m"} - {names[30]})


async def test_replicas_live_in_one_log_segment(tmp_path: Path, store: ManifestStore) -> None:
    for name in ["a", "b", "c/d"]:
        await store.put(manifest(name))
    files = [p for p in (tmp_path / "manifests").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["manifests/log/000000000001.log"]


async def test_an_unreadable_manifest_is_skipped_on_open(
    tmp_path: Path, store: ManifestStore
) -> None:
    await store.put(manifest("a"))
    shard = tmp_path / "manifests" / "ff"
    shard.mkdir(exist_ok=True)
    (shard / ("f" * 32)).write_bytes(b"not a manifest")
    again = await reopen(tmp_path)
    assert len(again) == 1
    assert await again.get("a") == manifest("a")


async def test_a_damaged_stored_manifest_is_replaced_by_a_newer_one(
    tmp_path: Path, store: ManifestStore
) -> None:
    await store.put(manifest("a", wall=1))
    segment = tmp_path / "manifests" / "log" / "000000000001.log"
    flip_byte(segment, segment.stat().st_size - 40)  # inside the record's payload
    result = await store.put(manifest("a", wall=2))
    assert (result.stored, result.replaced) == (True, None)  # the damaged one reads as none
    assert await store.get("a") == manifest("a", wall=2)
    assert await (await reopen(tmp_path)).get("a") == manifest("a", wall=2)


def sealed(read: ReplicaRead) -> SealedRead:
    """``read`` as a replica sends it to another peer."""
    found = read.manifest
    return SealedRead(None if found is None else found.to_bytes(), read.provisional, read.overdue)


@pytest.mark.parametrize("way", ["read_now", "sealed_now"])
async def test_a_read_now_answers_as_a_read_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """``read_now`` answers what ``read`` would (a record, a tombstone, none, a provisional
    mark) where the record is in the page cache, and None for what ``read`` must handle:
    a record out of the cache, a damaged one (``read`` writes it off), a disk error.
    ``sealed_now`` answers the same, sealed (the stored bytes), or None where it is None."""
    now = [1000.0]
    store = ManifestStore(tmp_path, provisional_for=30.0, clock=lambda: now[0])
    await store.open()
    answer_now: Callable[[str], ReplicaRead | SealedRead | None] = getattr(store, way)
    expect: Callable[[ReplicaRead], ReplicaRead | SealedRead] = (
        sealed if way == "sealed_now" else lambda read: read
    )
    first, second = manifest("a", wall=10), manifest("a", wall=20)
    await store.put(first)
    await store.put(second, condition=if_match("etag-10"))
    await store.put(tombstone("gone", wall=5))
    await store.put(manifest("cold"))
    await store.put(manifest("damaged"))
    await store.put(manifest("b", wall=3))
    if not store._log._nowait:
        pytest.skip("this file system cannot read from the page cache alone (tmpfs)")
    now[0] += 30.0
    for name in ("a", "b", "gone", "none"):
        assert answer_now(name) == expect(await store.read(name)), name
    assert answer_now("a") == expect(ReplicaRead(second, provisional=True, overdue=True))
    assert answer_now("b") == expect(ReplicaRead(manifest("b", wall=3)))

    cold = store._index.where("cold")
    read_cached = store._log.read_cached
    monkeypatch.setattr(
        store._log, "read_cached", lambda where: None if where == cold else read_cached(where)
    )
    assert answer_now("cold") is None
    assert await store.read("cold") == ReplicaRead(manifest("cold"))  # from a worker thread

    damaged = store._index.where("damaged")
    assert damaged is not None
    flip_byte(tmp_path / "manifests" / "log" / "000000000001.log", damaged.offset + 60)
    assert answer_now("damaged") is None
    assert await store.read("damaged") == ReplicaRead(None)  # written off
    assert answer_now("damaged") == expect(ReplicaRead(None))

    for failure in (SegmentGone(), OSError(errno.EIO, "a disk error"), RuntimeError("a bug")):

        def failing(where: Location, failure: Exception = failure) -> LogRecord:
            raise failure

        monkeypatch.setattr(store._log, "read_cached", failing)
        assert answer_now("gone") is None, failure  # read meets it, and reports it
    with pytest.raises(RuntimeError, match="a bug"):
        await store.read("gone")

    monkeypatch.setattr(store._log, "read_cached", read_cached)
    monkeypatch.setattr(manifest_store, "READ_ON_LOOP", 16)  # records past it: read in a thread
    assert answer_now("gone") is None
    assert answer_now("a") is None  # (marked: read as read_now reads it)
    assert await store.read("gone") == ReplicaRead(tombstone("gone", wall=5))


async def test_a_sealed_read_is_the_stored_record_not_a_decoded_one(
    tmp_path: Path, store: ManifestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica passes a name's sealed manifest on as its record holds it: no decode
    (the reader decodes it), and a record under another name is left to ``read``."""
    await store.put(manifest("a", wall=4))
    if not store._log._nowait:
        pytest.skip("this file system cannot read from the page cache alone (tmpfs)")

    def no_decode(data: bytes, keep: bool = False) -> Manifest:
        raise AssertionError("decoded")

    monkeypatch.setattr(Manifest, "from_bytes", no_decode)
    assert store.sealed_now("a") == SealedRead(manifest("a", wall=4).to_bytes())
    monkeypatch.undo()
    where = store._index.where("a")
    assert where is not None
    store._index.keep(manifest("b"), where)  # (as a bug could: "b" pointing at "a"'s record)
    assert store.sealed_now("b") is None

    # A record that checks out holding another file's manifest (a writer's bug): sent as
    # stored (the reader refuses it); this peer's own read writes it off.
    astray = manifest("c")
    object.__setattr__(astray, "_sealed", manifest("d").to_bytes())
    await store.put(astray)
    assert store.read_now("c") is None
    assert store.sealed_now("c") == SealedRead(manifest("d").to_bytes())
    assert await store.read("c") == ReplicaRead(None)
    assert store._index.where("c") is None


async def test_list_in_name_order_with_prefix_and_tombstones(store: ManifestStore) -> None:
    names = ["b", "a/2", "a/1", "ab", "a/10", "c", "a"]
    for wall, name in enumerate(names, start=1):
        await store.put(manifest(name, wall=wall))
    await store.put(tombstone("a/2", wall=50))

    everything, more = store.list("", "", 100)
    assert [m.name for m in everything] == sorted(names)
    assert not more

    under_a, more = store.list("a/", "", 100)
    assert [m.name for m in under_a] == ["a/1", "a/10", "a/2"]
    assert [m.deleted for m in under_a] == [False, False, True]
    assert not more

    assert [m.name for m in store.list("a", "", 100)[0]] == ["a", "a/1", "a/10", "a/2", "ab"]
    assert store.list("zzz", "", 100) == ([], False)
    assert store.list("", "c", 100) == ([], False)


async def test_list_entries_are_summaries_without_chunks(store: ManifestStore) -> None:
    full = manifest("a", wall=5)
    await store.put(full)
    [entry], _ = store.list("", "", 10)
    assert entry.chunks == ()
    assert (entry.name, entry.version, entry.layout, entry.etag) == (
        full.name,
        full.version,
        full.layout,
        full.etag,
    )


async def test_index_entries_share_content_types_and_peer_ids_up_to_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each decoded manifest has strings of its own; the index keeps one copy of each (an
    entry holds its number: ``node.disk.manifest_index``), but never more than
    SHARED_STRINGS of them: clients choose content types."""
    monkeypatch.setattr(manifest_index, "SHARED_STRINGS", 1)  # the peer id; type/0
    store = await reopen(tmp_path)
    for n in range(4):
        await store.put(dataclasses.replace(manifest(f"f{n}"), content_type=f"type/{n // 2}"))
    await store.close()
    again = await reopen(tmp_path)  # the index rebuilt from decoded records
    entries, _ = again.list("", "", 10)
    assert [e.content_type for e in entries] == ["type/0", "type/0", "type/1", "type/1"]
    assert entries[0].content_type is entries[1].content_type
    assert entries[0].version.peer is entries[3].version.peer
    assert entries[2].content_type is not entries[3].content_type  # past the bound
    assert [e.version for e in entries] == [manifest(f"f{n}").version for n in range(4)]
    await again.close()


async def test_list_pages_with_start_after_limit_and_truncation(store: ManifestStore) -> None:
    names = [f"f{i:02}" for i in range(7)]
    for name in reversed(names):
        await store.put(manifest(name))

    page, more = store.list("", "", 3)
    assert ([m.name for m in page], more) == (names[:3], True)
    page, more = store.list("", page[-1].name, 3)
    assert ([m.name for m in page], more) == (names[3:6], True)
    page, more = store.list("", page[-1].name, 3)
    assert ([m.name for m in page], more) == (names[6:], False)

    page, more = store.list("", "", 7)  # exactly the limit: nothing more
    assert (len(page), more) == (7, False)
    assert store.list("", "f03x", 2)[0][0].name == "f04"  # start_after need not be a stored name
    assert store.list("", "e", 1)[0][0].name == "f00"  # nor inside the prefix


async def test_list_with_prefix_and_start_after_together(store: ManifestStore) -> None:
    for name in ["a/1", "a/2", "a/3", "b/1"]:
        await store.put(manifest(name))
    assert [m.name for m in store.list("a/", "a/1", 10)[0]] == ["a/2", "a/3"]
    assert store.list("a/", "a/2", 1)[1] is False  # the one remaining name fits
    assert [m.name for m in store.list("a/", "a/2", 1)[0]] == ["a/3"]
    assert [m.name for m in store.list("b/", "a/9", 10)[0]] == ["b/1"]


async def test_concurrent_puts_of_one_name_end_with_the_highest(store: ManifestStore) -> None:
    versions = [
        manifest("hot", wall=wall, counter=counter) for wall in range(6) for counter in range(5)
    ]
    random.Random(7).shuffle(versions)
    results = await asyncio.gather(*(store.put(m) for m in versions))
    highest = max(versions, key=lambda m: m.version)
    assert await store.get("hot") == highest
    assert len(store) == 1
    assert sum(r.stored for r in results) >= 1
    assert all(r.current <= highest.version for r in results)
    # Every accepted version but the last was replaced exactly once, by a newer one.
    stored = sorted(r.current for r in results if r.stored)
    replaced = sorted(r.replaced.version for r in results if r.replaced is not None)
    assert replaced == stored[:-1]
    assert stored[-1] == highest.version


async def test_concurrent_puts_of_many_names(tmp_path: Path, store: ManifestStore) -> None:
    batch = [manifest(f"n{i}", wall=w) for i in range(10) for w in (3, 1, 2)]
    random.Random(3).shuffle(batch)
    await asyncio.gather(*(store.put(m) for m in batch))
    again = await reopen(tmp_path)
    for i in range(10):
        assert await again.get(f"n{i}") == manifest(f"n{i}", wall=3)
    assert [m.name for m in again.list("", "", 100)[0]] == sorted(f"n{i}" for i in range(10))


async def test_keyed_locks_are_dropped_when_unused() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(key: str, tag: str) -> None:
        async with locks.hold(key):
            order.append(f"{tag} in")
            await asyncio.sleep(0.01)
            order.append(f"{tag} out")

    await asyncio.gather(hold("k", "1"), hold("k", "2"), hold("other", "3"))
    assert order.index("1 out") < order.index("2 in")  # one key: one holder at a time
    assert order.index("3 in") < order.index("1 out")  # other keys do not wait
    assert locks._entries == {}


async def test_repr_and_len(store: ManifestStore) -> None:
    await store.put(manifest("a"))
    await store.put(manifest("b"))
    assert len(store) == 2
    assert "names=2" in repr(store)


# --- conditional writes: the replica's half of an atomic If-Match / If-None-Match ------------

NO_FILE = Preconditions(if_none_match=ANY)


def if_match(etag: str) -> Preconditions:
    return Preconditions(if_match=TagList(False, (EntityTag(etag),)))


async def test_if_none_match_any_stores_only_where_no_live_version_is(
    store: ManifestStore,
) -> None:
    first = await store.put(manifest("a", wall=10), condition=NO_FILE)
    assert first.stored
    refused = await store.put(manifest("a", wall=20), condition=NO_FILE)
    assert (refused.stored, refused.current, refused.replaced) == (False, version(10), None)
    assert (await store.get("a")) == manifest("a", wall=10)
    await store.put(tombstone("a", 30))
    assert (await store.put(manifest("a", wall=40), condition=NO_FILE)).stored, "over a tombstone"


async def test_if_match_stores_only_over_that_etag(store: ManifestStore) -> None:
    await store.put(manifest("a", wall=10))  # etag-10
    assert not (await store.put(manifest("a", wall=20), condition=if_match("etag-9"))).stored
    assert not (await store.put(manifest("b", wall=20), condition=if_match("etag-10"))).stored
    assert (await store.put(manifest("a", wall=20), condition=if_match("etag-10"))).stored
    # the second writer holding etag-10 is refused: the etag is etag-20 now
    assert not (await store.put(manifest("a", wall=30), condition=if_match("etag-10"))).stored
    assert (await store.get("a")) == manifest("a", wall=20)


async def test_a_condition_that_holds_does_not_override_precedence(store: ManifestStore) -> None:
    await store.put(manifest("a", wall=10))
    older = await store.put(manifest("a", wall=5), condition=if_match("etag-10"))
    assert (older.stored, older.current) == (False, version(10))


async def test_if_unmodified_since_compares_whole_seconds(store: ManifestStore) -> None:
    await store.put(manifest("a", wall=10_999))  # written at second 10
    at_10 = Preconditions(if_unmodified_since=10)
    at_9 = Preconditions(if_unmodified_since=9)
    assert not (await store.put(manifest("a", wall=20_000), condition=at_9)).stored
    assert (await store.put(manifest("a", wall=20_000), condition=at_10)).stored
    assert (await store.put(manifest("new", wall=1), condition=at_9)).stored, "no date: no test"


async def test_concurrent_conditional_creates_store_exactly_one(store: ManifestStore) -> None:
    offers = [manifest("race", wall=wall) for wall in random.Random(3).sample(range(1, 99), 20)]
    results = await asyncio.gather(*(store.put(m, condition=NO_FILE) for m in offers))
    assert sum(result.stored for result in results) == 1
    winner = offers[[result.stored for result in results].index(True)]
    assert await store.get("race") == winner


# --- provisional replicas: a conditional write kept, its verdict not heard yet ------------


async def test_a_conditional_write_is_provisional_until_confirmed_and_overdue_after(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    store = ManifestStore(tmp_path, provisional_for=30.0, clock=lambda: now[0])
    await store.open()
    first, second = manifest("a", wall=10), manifest("a", wall=20)
    await store.put(first)  # unconditional: never provisional
    assert await store.read("a") == ReplicaRead(first)
    assert (await store.put(second, condition=if_match("etag-10"))).stored
    assert await store.read("a") == ReplicaRead(second, provisional=True)
    duplicate = await store.put(second, condition=if_match("etag-10"))  # the offer again
    assert not duplicate.stored
    assert (await store.read("a")).provisional, "a refused duplicate keeps the mark"
    now[0] += 30.0
    assert await store.read("a") == ReplicaRead(second, provisional=True, overdue=True)
    await store.confirm("a", first.precedence)  # another write's verdict: nothing changes
    assert (await store.read("a")).provisional
    assert "provisional=1" in repr(store)
    await store.confirm("a", second.precedence)
    assert await store.read("a") == ReplicaRead(second)
    assert "provisional=0" in repr(store)


async def test_a_provisional_write_retracted_puts_back_what_it_replaced(
    store: ManifestStore,
) -> None:
    first, second, third = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(first)
    await store.put(second, condition=if_match("etag-10"))
    assert await store.retract("a", second.precedence)  # no restore named: the remembered
    assert await store.read("a") == ReplicaRead(first)
    await store.put(third)  # unconditional: nothing remembered, retracted means dropped
    assert await store.retract("a", third.precedence)
    assert await store.get("a") is None


async def test_a_read_answers_the_mark_its_record_had_when_looked_up(
    store: ManifestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verdict landing while the record is read (in a worker thread) must not pair the
    provisional record with the cleared mark: that would let a read copy a loser."""
    first, second = manifest("a", wall=10), manifest("a", wall=20)
    await store.put(first)
    await store.put(second, condition=if_match("etag-10"))
    pending, release = await held_in_a_record_read(monkeypatch, store.read("a"))
    assert await store.retract("a", second.precedence)  # the loser's verdict, mid-read
    release.set()
    assert await pending == ReplicaRead(second, provisional=True)
    assert await store.read("a") == ReplicaRead(first)


async def test_a_write_conditional_on_a_provisional_one_puts_it_back_still_marked(
    store: ManifestStore,
) -> None:
    """Z, conditional on the etag of provisional Y (a read showed Y), is kept over it; Z
    retracted must put Y back provisional: unmarked, a losing Y would be copied."""
    x, y, z = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(x)
    await store.put(y, condition=if_match("etag-10"))
    assert (await store.put(z, condition=if_match("etag-20"))).stored
    assert await store.retract("a", z.precedence)
    assert await store.read("a") == ReplicaRead(y, provisional=True)
    assert await store.retract("a", y.precedence)  # Y's own verdict: X back
    assert await store.read("a") == ReplicaRead(x)
    # Confirmed while under another write, Y comes back settled.
    await store.put(y, condition=if_match("etag-10"))
    await store.put(z, condition=if_match("etag-20"))
    await store.confirm("a", y.precedence)
    assert (await store.read("a")).provisional, "Z itself still waits"
    assert await store.retract("a", z.precedence)
    assert await store.read("a") == ReplicaRead(y)


async def test_a_write_that_fails_to_land_leaves_the_earlier_mark(
    store: ManifestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y, z = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(x)
    await store.put(y, condition=if_match("etag-10"))

    async def full(manifest: Manifest) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_keep", full)
    with pytest.raises(OSError, match="No space left"):
        await store.put(z, condition=if_match("etag-20"))
    with pytest.raises(OSError, match="No space left"):
        await store.retract("a", y.precedence)
    monkeypatch.undo()
    assert await store.read("a") == ReplicaRead(y, provisional=True)
    assert await store.retract("a", y.precedence)
    assert await store.read("a") == ReplicaRead(x)


async def test_a_write_retracted_while_buried_never_comes_back(store: ManifestStore) -> None:
    """Loser Y's retraction comes while Z (on Y's etag) is held over it: once Z is
    retracted in turn, X (what Y replaced) goes back, not Y, even when Z's own coordinator
    names Y as what Z replaced."""
    x, y, z = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(x)
    await store.put(y, condition=if_match("etag-10"))
    replaced = (await store.put(z, condition=if_match("etag-20"))).replaced
    assert replaced == y
    assert not await store.retract("a", y.precedence)  # not held: remembered
    assert await store.retract("a", z.precedence, replaced)
    assert await store.read("a") == ReplicaRead(x)
    assert "provisional=0" in repr(store)


async def test_an_unconditional_write_over_a_provisional_one_keeps_its_mark_for_it(
    store: ManifestStore,
) -> None:
    """A repair or plain PUT over provisional Y that misses its quorum is retracted with Y
    named: Y must come back provisional."""
    x, y, plain = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(x)
    await store.put(y, condition=if_match("etag-10"))
    assert (await store.put(plain)).replaced == y
    assert await store.read("a") == ReplicaRead(plain)
    assert await store.retract("a", plain.precedence, y)
    assert await store.read("a") == ReplicaRead(y, provisional=True)


async def test_old_marks_go_only_once_nothing_can_put_their_writes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marks are pruned after MARKS_KEPT, but never the held write's, nor one a kept mark
    replaced (its write's retraction puts it back, however late)."""
    now = [1000.0]
    store = ManifestStore(tmp_path, clock=lambda: now[0])
    await store.open()
    x, y, v = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(x)
    await store.put(y, condition=if_match("etag-10"))  # undecided for hours (a home down)
    now[0] += manifest_store.MARKS_KEPT + 1
    await store.put(v, condition=if_match("etag-20"))
    assert await store.read("a") == ReplicaRead(v, provisional=True)
    assert await store.retract("a", v.precedence)  # V's overdue verdict: Y back, still marked
    assert (await store.read("a")) == ReplicaRead(y, provisional=True, overdue=True)
    now[0] += manifest_store.MARKS_KEPT + 1
    await store.put(manifest("b", wall=1), condition=NO_FILE)  # another name: no effect
    assert (await store.read("a")).provisional, "the held write's mark is never pruned"


async def test_an_undecided_conditional_write_is_provisional_again_after_a_restart(
    tmp_path: Path,
) -> None:
    """A replica restarted between keeping a losing write and hearing its retraction must
    not come back with the loser as a settled replica: reads would copy it over the winner.
    Its record carries the mark and what the write replaced; a decided write's does not."""
    now = [1000.0]
    store = ManifestStore(tmp_path, provisional_for=30.0, clock=lambda: now[0])
    await store.open()
    undecided = manifest("a", wall=10), manifest("a", wall=20)
    confirmed = manifest("b", wall=10), manifest("b", wall=20)
    retracted = manifest("c", wall=10), manifest("c", wall=20)
    for before, after in (undecided, confirmed, retracted):
        await store.put(before)
        assert (await store.put(after, condition=if_match("etag-10"))).stored
    await store.confirm("b", confirmed[1].precedence)
    assert await store.retract("c", retracted[1].precedence)
    await store.close()

    now[0] += 3600.0  # a clock that moved on: overdue is counted from the start
    again = ManifestStore(tmp_path, provisional_for=30.0, clock=lambda: now[0])
    await again.open()
    assert await again.read("a") == ReplicaRead(undecided[1], provisional=True)
    assert await again.read("b") == ReplicaRead(confirmed[1])
    assert await again.read("c") == ReplicaRead(retracted[0])
    now[0] += 30.0
    assert await again.read("a") == ReplicaRead(undecided[1], provisional=True, overdue=True)
    assert await again.retract("a", undecided[1].precedence)  # no restore named: remembered
    assert await again.read("a") == ReplicaRead(undecided[0])
    await again.close()
    third = await reopen(tmp_path)
    assert await third.read("a") == ReplicaRead(undecided[0]), "the retraction is durable"


async def test_a_provisional_record_keeps_its_mark_through_compaction(tmp_path: Path) -> None:
    settings = {"segment_bytes": 16 << 10, "compact_bytes": 4 << 10}
    store = ManifestStore(tmp_path, **settings)  # type: ignore[arg-type]
    await store.open()
    await store.put(manifest("a", wall=10))
    await store.put(manifest("a", wall=20), condition=if_match("etag-10"))
    for wall in range(1, 200):  # fill and supersede segments until the first is compacted
        await store.put(manifest("filler", wall=wall))
    await store.compacted()
    assert store.compacted_segments > 0
    await store.close()
    again = ManifestStore(tmp_path, **settings)  # type: ignore[arg-type]
    await again.open()
    assert await again.read("a") == ReplicaRead(manifest("a", wall=20), provisional=True)
    assert await again.retract("a", manifest("a", wall=20).precedence)
    assert await again.get("a") == manifest("a", wall=10)


async def test_a_confirmation_in_a_batch_being_written_survives_compaction_of_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The confirmation's unmarked record is in the batch being written when compaction
    carries the marked one it follows: the carried copy must not be the marked record (it
    would land after the confirmation and bring the mark back at the next start)."""
    settings = {"segment_bytes": 4 << 10, "compact_bytes": 1 << 40}  # compacted by hand
    store = ManifestStore(tmp_path, **settings)  # type: ignore[arg-type]
    await store.open()
    x, y = manifest("a", wall=10), manifest("a", wall=20)
    await store.put(x)
    await store.put(y, condition=if_match("etag-10"))
    marked_in = store._log.active
    for wall in range(1, 100):  # until the marked record's segment is closed
        await store.put(manifest("filler", wall=wall))
        if store._log.active > marked_in:
            break
    assert store._log.active > marked_in
    await store.confirm("a", y.precedence)  # its rider waits for the next batch

    writing, release = threading.Event(), threading.Event()
    append = ManifestLog.append

    def held(log: ManifestLog, frames: list[bytes], roll: bool = False) -> list[Location]:
        writing.set()
        assert release.wait(10), "the test never released the write"
        return append(log, frames, roll)

    monkeypatch.setattr(ManifestLog, "append", held)
    other = asyncio.ensure_future(store.put(manifest("other")))  # the rider goes with it
    try:  # (a failed assertion must not leave the writer thread held)
        assert await asyncio.to_thread(writing.wait, 10)
        monkeypatch.setattr(ManifestLog, "append", append)
        compacting = asyncio.ensure_future(store.compact(marked_in))
        deadline = asyncio.get_running_loop().time() + 10
        while not store._queue:  # the carried copy queued behind the batch being written
            assert asyncio.get_running_loop().time() < deadline, "compaction carried nothing"
            await asyncio.sleep(0.01)
    finally:
        release.set()
    await asyncio.gather(other, compacting)
    assert marked_in not in store._log.sizes
    assert await store.read("a") == ReplicaRead(y)
    await store.close()
    again = ManifestStore(tmp_path, **settings)  # type: ignore[arg-type]
    await again.open()
    assert await again.read("a") == ReplicaRead(y), "the confirmed write is provisional again"
    await again.close()


def test_records_without_a_mark_are_three_fields_and_older_releases_read_marked_ones() -> None:
    """The mark is two fields after the three a record always had: unmarked records are the
    bytes they were, and a release that knows three fields reads a marked one as a keep
    (a rollback loses the marks, never the replicas)."""

    class Earlier(msgspec.Struct, array_like=True, frozen=True):
        kind: int
        name: str
        manifest: bytes | None = None

    plain = frame(LogRecord(KEEP, "a", b"bytes"))
    assert plain[FRAME.size :] == msgspec.msgpack.encode((KEEP, "a", b"bytes"))
    marked = frame(LogRecord(KEEP, "a", b"bytes", True, b"replaced"))
    decoded = msgspec.msgpack.decode(marked[FRAME.size :], type=Earlier)
    assert decoded == Earlier(KEEP, "a", b"bytes")


@pytest.mark.parametrize("restore_named", [False, True])
async def test_a_write_retracted_while_buried_stays_gone_after_a_restart(
    tmp_path: Path, restore_named: bool
) -> None:
    """Y's retraction comes while Z (on Y's etag) is held over it, then the replica
    restarts: Z's record must name X, not Y, as what Z's retraction puts back (whether a
    read decides Z, naming nothing, or Z's coordinator names Y as its answer said)."""
    store = await reopen(tmp_path)
    x, y, z = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(x)
    await store.put(y, condition=if_match("etag-10"))
    replaced = (await store.put(z, condition=if_match("etag-20"))).replaced
    assert not await store.retract("a", y.precedence)  # held under Z: remembered
    await store.close()
    again = await reopen(tmp_path)
    assert await again.read("a") == ReplicaRead(z, provisional=True)
    assert await again.retract("a", z.precedence, replaced if restore_named else None)
    assert await again.read("a") == ReplicaRead(x), "a retracted loser came back"


async def test_a_write_that_failed_to_land_leaves_no_mark_for_a_later_copy(
    store: ManifestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Y's write fails here (disk full) but commits elsewhere, so no verdict comes here;
    read repair later copies Y in: that copy is settled, not provisional for ever."""
    x, y = manifest("a", wall=10), manifest("a", wall=20)
    await store.put(x)
    keep = store._keep

    async def full(manifest: Manifest) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_keep", full)
    with pytest.raises(OSError, match="No space left"):
        await store.put(y, condition=if_match("etag-10"))
    monkeypatch.setattr(store, "_keep", keep)
    assert (await store.put(y)).stored  # the repair's copy
    assert await store.read("a") == ReplicaRead(y)


async def test_a_write_during_a_confirmation_lands_after_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A confirmation reads the confirmed record to append it unmarked; a newer write of the
    name arriving meanwhile waits for it (the name's lock), else the unmarked copy could
    follow the newer record in the log and win the replay."""
    store = await reopen(tmp_path)
    x, y, z = (manifest("a", wall=wall) for wall in (10, 20, 30))
    await store.put(x)
    await store.put(y, condition=if_match("etag-10"))
    confirming, release = await held_in_a_record_read(monkeypatch, store.confirm("a", y.precedence))
    writing = asyncio.ensure_future(store.put(z))
    landed, _ = await asyncio.wait({writing}, timeout=0.5)  # it must not, however long
    assert not landed, "the newer write did not wait for the confirmation"
    release.set()
    await confirming
    assert (await writing).stored
    await store.close()
    again = await reopen(tmp_path)
    assert await again.read("a") == ReplicaRead(z)
