"""Hint files of the manifest log: a restart from them rebuilds exactly the state a restart
that reads every segment does, and a hint file that does not describe its segment is passed
over for the segment itself."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash

from node.disk import manifest_hints
from node.disk.manifest_log import KEEP, REMOVE, LogRecord, ManifestLog, frame
from node.disk.manifest_store import ManifestStore
from node.model.layout import Layout
from node.model.manifest import ChunkRef, Manifest
from node.model.preconditions import ANY, EntityTag, Preconditions, TagList
from node.model.version import Version
from tests.harness.disk import flip_byte

PEERS = ["0f8e9c3a-1b2c-4d5e-8f90-123456789abc", "7e70de01-1181-4371-8063-fdc591baf1f0"]
SEGMENT_BYTES = 2 << 10  # a few records per segment: dozens of segments
NO_FILE = Preconditions(if_none_match=ANY)


def chunked(
    name: str, wall: int, chunks: int = 7, peer: int = 0, etag_digit: str = "a"
) -> Manifest:
    layout = Layout(10_000, 5, 2, 4096)
    digests = bytes([wall % 256]) * (16 * layout.stripes)
    refs = tuple(ChunkRef(i, f"holder-{i}", digests) for i in range(chunks))
    md5 = f"{wall:031x}{etag_digit}"
    return Manifest(name, Version(wall, 0, PEERS[peer]), layout, md5, "text/plain", refs)


def inline(name: str, wall: int) -> Manifest:
    body = random.Random(name).randbytes(700)
    etag = f"xxh3-{wall:032x}"
    return Manifest(name, Version(wall, 1, PEERS[1]), Layout(700, 5, 2), etag, "a/ü", inline=body)


def tombstone(name: str, wall: int) -> Manifest:
    return Manifest(name, Version(wall, 0, PEERS[0]), Layout(0, 5, 0), deleted=True)


def if_match(etag: str) -> Preconditions:
    return Preconditions(if_match=TagList(False, (EntityTag(etag),)))


def store_in(path: Path) -> ManifestStore:
    return ManifestStore(path, segment_bytes=SEGMENT_BYTES, clock=lambda: 100.0)


async def populate(path: Path, etag_digit: str = "a") -> None:
    """Every kind of record, over dozens of segments: versions superseded in later segments,
    degraded versions, inline files, tombstones, removals, conditional writes confirmed,
    retracted and left undecided."""
    store = store_in(path)
    await store.open()
    for round_ in range(3):
        for i in range(12):
            await store.put(
                chunked(f"files/{i:02d}", 10 + round_, peer=round_ % 2, etag_digit=etag_digit)
            )
    await store.put(chunked("degraded", 20, chunks=5))
    await store.put(chunked("whole-again", 21, chunks=6))
    await store.put(chunked("whole-again", 22))
    for i in range(6):
        await store.put(inline(f"inline/é{i}", 30 + i))
    await store.put(tombstone("files/03", 40))
    assert (await store.put(chunked("retracted", 50), condition=NO_FILE)).stored
    assert await store.retract("retracted", chunked("retracted", 50).precedence)  # a removal
    assert (await store.put(chunked("confirmed", 51), condition=NO_FILE)).stored
    await store.confirm("confirmed", chunked("confirmed", 51).precedence)
    await store.put(chunked("undecided", 52))
    assert (await store.put(chunked("undecided", 53), condition=if_match(f"{52:031x}a"))).stored
    await store.compacted()
    await store.close()


async def state(store: ManifestStore) -> dict[str, Any]:
    """What a restart must rebuild: listings (the index's summaries), reads (the records
    they point to, marks included), the degraded count, which names have chunks (what a
    rebalance pass reads), and the live bytes per segment and removals that compaction
    decides on."""
    listed, more = store.list("", "", 1000)
    assert not more
    return {
        "listed": listed,
        "reads": {name: await store.read(name) for name in store.names()},
        "live_names": store.live_names(),
        "degraded": store.degraded(),
        "has_chunks": sorted(name for name in store.names() if store.has_chunks(name)),
        "live": store._live,
        "removed": store._removed,
    }


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The segments read record by record (not from their hint files) by later opens."""
    numbers: list[int] = []
    replay = ManifestLog.replay_segment

    def counted(self: ManifestLog, number: int) -> Iterator[Any]:
        numbers.append(number)
        return replay(self, number)

    monkeypatch.setattr(ManifestLog, "replay_segment", counted)
    return numbers


def hints_of(path: Path) -> list[Path]:
    return sorted((path / "manifests" / "hints").glob("*.hint"))


async def test_a_restart_from_hint_files_rebuilds_what_reading_every_segment_does(
    tmp_path: Path, scanned: list[int]
) -> None:
    await populate(tmp_path)
    hints = hints_of(tmp_path)
    segments = sorted((tmp_path / "manifests" / "log").glob("*.log"))
    assert len(segments) >= 10
    assert [h.stem for h in hints] == [s.stem for s in segments[:-1]], "closed ones, at run time"

    saved = tmp_path / "saved"
    for hint in hints:  # first, a restart that reads every segment
        (saved / "manifests" / "hints").mkdir(parents=True, exist_ok=True)
        hint.rename(saved / "manifests" / "hints" / hint.name)
    read_whole = store_in(tmp_path)
    await read_whole.open()
    expected = await state(read_whole)
    await read_whole.close()
    assert scanned == [int(s.stem) for s in segments]
    files = [f"files/{i:02d}" for i in range(12) if i != 3]  # files/03: a tombstone
    assert expected["has_chunks"] == sorted(
        [*files, "confirmed", "degraded", "undecided", "whole-again"]
    ), "inline files and tombstones name no chunks"
    written_back = hints_of(tmp_path)
    assert [h.stem for h in written_back] == [h.stem for h in hints], "written back"
    assert [h.read_bytes() for h in written_back] == [h.read_bytes() for h in hints_of(saved)]
    assert expected["degraded"] == {"degraded": 5}
    assert expected["reads"]["undecided"].provisional
    assert "retracted" not in expected["reads"]

    scanned.clear()
    from_hints = store_in(tmp_path)
    await from_hints.open()
    assert scanned == [int(segments[-1].stem)], "only the segment still appended to"
    assert await state(from_hints) == expected
    await from_hints.close()


@pytest.mark.parametrize(
    "fault",
    ["torn", "flipped", "another segment's", "emptied", "garbage", "format 1", "unknown flags"],
)
async def test_a_hint_file_that_does_not_describe_its_segment_is_passed_over_and_rewritten(
    tmp_path: Path, scanned: list[int], fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    await populate(tmp_path)
    store = store_in(tmp_path)
    await store.open()
    expected = await state(store)
    await store.close()
    first, second = hints_of(tmp_path)[:2]
    good = first.read_bytes()
    if fault == "torn":
        first.write_bytes(good[: len(good) // 2])
    elif fault == "flipped":
        flip_byte(first, len(good) // 2)
    elif fault == "another segment's":
        first.write_bytes(second.read_bytes())
    elif fault == "emptied":
        first.write_bytes(b"")
    elif fault == "format 1":  # sound, but without the CHUNKS flag rebalancing relies on
        body = b"RSMHNT\x00\x01" + good[8 : -manifest_hints.TAIL.size]
        first.write_bytes(body + manifest_hints.TAIL.pack(xxhash.xxh3_64_intdigest(body)))
    elif fault == "unknown flags":  # whole and of this format, but one flag no release has
        segment = first.parent.parent / "log" / f"{first.stem}.log"
        size = segment.stat().st_size
        end = manifest_hints.tail_digest(segment, size)
        hints = manifest_hints.read_hints(first.parent, int(first.stem), size, end)
        assert hints is not None
        writer = manifest_hints.HintWriter(first.parent, int(first.stem), size, end)
        every = list(hints)
        odd = [number for number, hint in enumerate(every) if hint.kind == KEEP][-1]
        every[odd] = msgspec.structs.replace(every[odd], flags=every[odd].flags | 8)
        for hint in every:
            writer.add(hint)
        assert writer.commit()
    else:  # whole, checksum and all, for the right segment and size: but no hints
        size = (tmp_path / "manifests" / "log" / f"{first.stem}.log").stat().st_size
        end = manifest_hints.tail_digest(first.parent.parent / "log" / f"{first.stem}.log", size)
        head = manifest_hints.HEAD.pack(manifest_hints.HINT_MAGIC, int(first.stem), size, end)
        data = head + manifest_hints.LENGTH.pack(3) + b"\xc1\xc1\xc1"  # (msgpack: never used)
        first.write_bytes(data + manifest_hints.TAIL.pack(xxhash.xxh3_64_intdigest(data)))
    scanned.clear()
    again = store_in(tmp_path)
    await again.open()
    assert scanned == [int(first.stem), int(hints_of(tmp_path)[-1].stem) + 1]
    assert await state(again) == expected
    await again.close()
    assert first.read_bytes() == good, "written again from the segment"
    if fault == "unknown flags":  # (found while the hints are applied)
        assert f"segment {int(first.stem)} does not apply (unknown entry flags" in caplog.text
    else:
        assert f"hint file {first}" in caplog.text


@pytest.mark.parametrize("other", ["size", "records of the same size"])
async def test_a_hint_file_of_another_segment_of_the_same_number_is_passed_over(
    tmp_path: Path, scanned: list[int], other: str
) -> None:
    """A hint names its segment's size and last bytes: one left from a segment of the same
    number that held other records (a data directory restored in part from a backup, say)
    is not believed, even where the sizes match."""
    await populate(tmp_path / "here")
    await populate(tmp_path / "there", etag_digit="b" if other != "size" else "a")
    here = hints_of(tmp_path / "here")[0]
    segment = tmp_path / "here" / "manifests" / "log" / f"{here.stem}.log"
    if other == "size":
        there = tmp_path / "there" / "manifests" / "hints"
        assert manifest_hints.HintWriter(there, int(here.stem), 8, 0).commit()
    else:
        there_segment = tmp_path / "there" / "manifests" / "log" / segment.name
        assert there_segment.stat().st_size == segment.stat().st_size
        assert there_segment.read_bytes() != segment.read_bytes()
    here.write_bytes((tmp_path / "there" / "manifests" / "hints" / here.name).read_bytes())
    scanned.clear()
    again = store_in(tmp_path / "here")
    await again.open()
    assert int(here.stem) in scanned
    listed, _ = again.list("files/", "", 100)
    assert {m.etag[-1] for m in listed if not m.deleted} == {"a"}, "this directory's records"
    await again.close()


async def test_compaction_removes_a_segments_hint_file_and_a_start_removes_orphans(
    tmp_path: Path,
) -> None:
    store = ManifestStore(tmp_path, segment_bytes=SEGMENT_BYTES, compact_bytes=1 << 10)
    await store.open()
    for i in range(12):
        await store.put(chunked(f"name-{i}", 1))
    await store.compacted()
    hinted = [p.stem for p in hints_of(tmp_path)]
    assert len(hinted) >= 2
    for i in range(12):  # every name again: the segments before all dead
        await store.put(chunked(f"name-{i}", 2))
    await store.compacted()
    assert store.compacted_segments >= len(hinted)
    logs = sorted(p.stem for p in (tmp_path / "manifests" / "log").glob("*.log"))
    assert not set(hinted) & set(logs), "compacted"
    assert [p.stem for p in hints_of(tmp_path)] == logs[:-1], "compacted ones' removed"
    await store.close()
    hints = tmp_path / "manifests" / "hints"
    (hints / f"{hinted[0]}.hint").write_bytes(b"left by a crash between the two removals")
    (hints / "000000000099.hint.tmp").write_bytes(b"left by a crash while writing")
    again = store_in(tmp_path)
    await again.open()
    assert [p.name for p in sorted(hints.iterdir())] == [f"{n}.hint" for n in logs[:-1]]
    assert (await again.read("name-3")).manifest == chunked("name-3", 2)
    await again.close()


async def test_a_damaged_closed_segment_gets_no_hint_file_and_is_read_at_each_start(
    tmp_path: Path, scanned: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    await populate(tmp_path)
    for hint in hints_of(tmp_path):
        hint.unlink()
    damaged = sorted((tmp_path / "manifests" / "log").glob("*.log"))[1]
    flip_byte(damaged, damaged.stat().st_size // 2)
    for _ in range(2):
        scanned.clear()
        store = store_in(tmp_path)
        await store.open()
        await store.close()
        assert int(damaged.stem) in scanned
        assert damaged.stem not in {h.stem for h in hints_of(tmp_path)}
    assert "damaged bytes" in caplog.text


async def test_a_whole_hint_file_whose_summaries_do_not_decode_is_passed_over(
    tmp_path: Path, scanned: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Checksummed and of this format, but its third hint's summary is no summary (a
    release that changed the summary without a new format): the hints applied before it
    are applied again by reading the segment, to the same state."""
    await populate(tmp_path)
    store = store_in(tmp_path)
    await store.open()
    expected = await state(store)
    await store.close()
    first = hints_of(tmp_path)[0]
    segment = int(first.stem)
    size = (tmp_path / "manifests" / "log" / f"{first.stem}.log").stat().st_size
    hints = list(manifest_hints.read_hints(first.parent, segment, size, 0) or [])
    assert not hints, "(the end digest is checked)"
    end = manifest_hints.tail_digest(first.parent.parent / "log" / f"{first.stem}.log", size)
    hints = list(manifest_hints.read_hints(first.parent, segment, size, end) or [])
    assert len(hints) >= 3
    assert hints[2].kind == KEEP
    hints[2] = msgspec.structs.replace(hints[2], summary=b"\x91\x01")
    writer = manifest_hints.HintWriter(first.parent, segment, size, end)
    for hint in hints:
        writer.add(hint)
    assert writer.commit()
    scanned.clear()
    again = store_in(tmp_path)
    await again.open()
    assert segment in scanned
    assert "does not apply" in caplog.text
    assert await state(again) == expected
    await again.close()


async def test_after_a_restart_from_hints_a_retraction_puts_back_what_it_replaced(
    tmp_path: Path,
) -> None:
    await populate(tmp_path)
    store = store_in(tmp_path)
    await store.open()
    assert (await store.read("undecided")).provisional
    assert await store.retract("undecided", chunked("undecided", 53).precedence)
    assert (await store.read("undecided")).manifest == chunked("undecided", 52)
    await store.close()


async def test_degraded_versions_are_counted_against_the_parity_of_the_restart(
    tmp_path: Path,
) -> None:
    """A hint keeps k, m and the chunks stored, not whether a version was degraded: a peer
    restarted with more parity counts 7-chunk versions of 5+2 short too."""
    await populate(tmp_path)
    more_parity = ManifestStore(tmp_path, parity=3, segment_bytes=SEGMENT_BYTES)
    await more_parity.open()
    degraded = more_parity.degraded()
    assert degraded["degraded"] == 5
    assert degraded["files/00"] == 7
    assert "files/03" not in degraded  # a tombstone
    assert "inline/é0" not in degraded
    await more_parity.close()


async def test_a_segment_closed_at_run_time_that_is_damaged_gets_no_hint_and_no_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_in(tmp_path)
    await store.open()
    await store.put(chunked("a", 1))
    first = tmp_path / "manifests" / "log" / "000000000001.log"
    flip_byte(first, first.stat().st_size - 10)  # rot before it is closed and hinted
    tries: list[int] = []
    build = ManifestStore._build_hints

    def counted(self: ManifestStore, segment: int) -> bool:
        tries.append(segment)
        return build(self, segment)

    monkeypatch.setattr(ManifestStore, "_build_hints", counted)
    for wall in range(2, 30):
        await store.put(chunked(f"b{wall}", wall))
    await store.compacted()
    assert tries.count(1) == 1, "tried once, not again after each write"
    assert "000000000001.hint" not in {p.name for p in hints_of(tmp_path)}
    assert len(hints_of(tmp_path)) >= 2, "the others have theirs"
    assert "segment 1 is damaged" in caplog.text
    await store.close()


@pytest.mark.parametrize("kind", ["kept", "removed"])
async def test_compaction_writes_off_a_current_record_that_does_not_read(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rot in a current record found by compaction (a restart from hint files does not read
    the segment). Deleting the segment as it was would let the name's older record back at
    the next start: the name is written off first (a removal record), then the segment
    goes, and the older version stays gone after a restart."""
    store = ManifestStore(tmp_path, segment_bytes=SEGMENT_BYTES, compact_bytes=1 << 10)
    await store.open()
    await store.put(chunked("name", 1))  # an older record of the name, in segment 1...
    for i in range(8):  # (names never written again: segment 1 stays, not compacted)
        await store.put(chunked(f"anchor-{i}", 1))
    for wall in range(2, 6):
        await store.put(chunked(f"filler-{wall}", wall))
    if kind == "kept":  # ...and its current one, in a later segment
        await store.put(chunked("name", 6))
        where = store._index.where("name")
    else:
        removal = frame(LogRecord(REMOVE, "name"))
        await store._commit(removal, functools.partial(store._dropped, "name"))
        where = store._removed["name"]
    assert where is not None
    assert where.segment > 1
    rotten = tmp_path / "manifests" / "log" / f"{where.segment:012d}.log"
    flip_byte(rotten, where.offset + where.length - 2)
    for wall in range(7, 40):  # the fillers again and again: every closed segment dead
        await store.put(chunked(f"filler-{wall % 4 + 2}", wall))
    await store.compacted()
    assert not rotten.exists(), "compacted once the name was written off"
    assert "fail their checksum: written off here" in caplog.text
    assert (await store.read("name")).manifest is None
    await store.close()
    again = store_in(tmp_path)
    await again.open()
    assert (tmp_path / "manifests" / "log" / "000000000001.log").exists()
    assert (await again.read("name")).manifest is None, "the older version did not come back"
    await again.close()


async def test_a_hints_path_that_is_no_directory_costs_hint_files_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hint files are an aid: where they cannot be listed, written or removed (here the
    path is a file), the store opens, writes, compacts and restarts as without them."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "hints").write_bytes(b"not a directory")
    store = ManifestStore(tmp_path, segment_bytes=SEGMENT_BYTES, compact_bytes=1 << 10)
    await store.open()
    for wall in range(1, 40):
        await store.put(chunked(f"name-{wall % 6}", wall))
    await store.compacted()
    assert store.compacted_segments > 0
    await store.close()
    assert "hint file" in caplog.text
    damaged = sorted((tmp_path / "manifests" / "log").glob("*.log"))[0]
    flip_byte(damaged, damaged.stat().st_size - 3)
    again = store_in(tmp_path)
    await again.open()
    assert len(again.live_names()) >= 5
    await again.close()
