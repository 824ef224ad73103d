"""The manifest log: append-only segment files of checksummed records, and their recovery.

Layout under ``manifests/log/``::

    <seq, 12 digits>.log   a segment: its header, then records

and beside it ``manifests/hints/<seq>.hint``, a closed segment's hint file
(``node.disk.manifest_hints``), which the log removes with its segment.

A segment's header is ``SEGMENT_MAGIC`` (8 bytes), then twice its *salt* (8 random bytes)
and the xxh3-64 of magic and salt (8), 40 bytes: a damaged copy leaves the other. A record
is a 16-byte frame header, ``RECORD_MAGIC``, the payload's length (uint32, little endian)
and the xxh3-64 of the payload seeded with the salt XOR that length (uint64, little endian),
then the payload: the msgpack array ``[kind, name, manifest]``. The salt is what makes a
frame carried *inside* a payload (an inline file's bytes are a manifest's, and a client
chooses them) worthless: recovery looks for the next record after damage by its magic, so
a frame crafted to check out would otherwise have been taken as a record of another name
(an attack did this: a torn tail, then the forged manifest served from every peer). The
chunk volumes' records are salted the same way. Segments of format 1 (an 8-byte header,
``SEGMENT_MAGIC_1``, of releases before) are read with the length alone as the seed, and
are gone once compacted. ``KEEP`` keeps
``manifest`` (``Manifest.to_bytes``) as ``name``'s replica; ``REMOVE`` drops ``name``
(``manifest`` nil). A conditional write kept and not yet decided (``node.disk.manifest_store``,
provisional replicas) is ``[KEEP, name, manifest, true, replaced]``: ``replaced``, the
manifest it replaced (nil: none), goes back if it is retracted (a release that knows only
three fields reads such a record as a plain ``KEEP``). Replaying the segments in sequence
order, records in file order, gives each name's replica: its last record wins (a retract may
put back a lower version).

Only the newest segment is appended to, one batch at a time: one write and one fdatasync
(which also makes the new file size durable) per batch, however many records it holds. A
new segment is created with its header, fsynced, and its directory fsynced before it takes
records. So a crash can only tear the tail of the newest segment, and those records were
never acknowledged: ``replay`` truncates it back to the last whole record. A record that
fails its checksum anywhere else is damage: it is reported (``Damage``, with the name when
the payload still decodes) and skipped; the records after it are found again by their
frame (the damaged record's own length when its header is sound, else the next magic whose
record checks out).

Blocking: call from a worker thread, or at start-up before the peer serves; only
``read_cached`` never waits for the disk. ``read`` may run in several threads at once, and
alongside one ``append`` or ``remove``.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import msgspec
import xxhash

from node.disk.cached import Unsupported, open_noatime, pread_cached
from node.disk.durable import cut_torn_tail, fsync_dir
from node.disk.manifest_hints import (
    Hint,
    HintWriter,
    hinted_segments,
    read_hints,
    remove_hints,
    tail_digest,
)
from node.errors import CorruptData

log = logging.getLogger(__name__)
T = TypeVar("T")

SEGMENT_MAGIC_1 = b"RSMLOG\x00\x01"  # format 1: no salt
SEGMENT_MAGIC = b"RSMLOG\x00\x02"  # format 2: the header holds the segment's salt
SALT_COPY = struct.Struct("<QQ")  # salt, xxh3-64 of SEGMENT_MAGIC and the salt
HEADER_SIZE = len(SEGMENT_MAGIC) + 2 * SALT_COPY.size
RECORD_MAGIC = b"\xa9\x1f\xd4\x5c"
FRAME = struct.Struct("<4sIQ")  # magic, payload length, xxh3-64 of the payload (see _seed)
MAX_PAYLOAD = 256 << 20  # a peer accepts no request body larger (node.process.wiring)
SEGMENT_NAME = re.compile(r"^(\d{12})\.log$")
WINDOW = 1 << 20  # bytes read at once when scanning
ROLL_RETRY = 60.0  # seconds before a segment is started early again after a failed start

KEEP = 0
REMOVE = 1


@dataclass(frozen=True)
class Header:
    """What a segment's header says: its records' ``salt`` (None: format 1, unsalted) and
    where they start (``size``)."""

    salt: int | None
    size: int

    @classmethod
    def new(cls) -> Header:
        return cls(int.from_bytes(os.urandom(8), "little"), HEADER_SIZE)

    def to_bytes(self) -> bytes:
        assert self.salt is not None, "format 1 headers are never written"
        copy = SALT_COPY.pack(self.salt, _salt_check(self.salt))
        return SEGMENT_MAGIC + copy + copy

    @classmethod
    def read(cls, fd: int) -> Header | None:
        """The header at the start of ``fd``; None when it is missing, cut short or damaged
        in both copies of its salt. A copy checks out whatever its magic bytes say (the
        check is of the format's magic, not the bytes read), so one damaged byte there
        loses nothing."""
        data = os.pread(fd, HEADER_SIZE, 0)
        if data[: len(SEGMENT_MAGIC_1)] == SEGMENT_MAGIC_1:
            return cls(None, len(SEGMENT_MAGIC_1))
        if len(data) < HEADER_SIZE:
            return None
        for at in (len(SEGMENT_MAGIC), len(SEGMENT_MAGIC) + SALT_COPY.size):
            salt, check = SALT_COPY.unpack_from(data, at)
            if check == _salt_check(salt):
                return cls(salt, HEADER_SIZE)
        return None


FORMAT_1 = Header(None, len(SEGMENT_MAGIC_1))


def _salt_check(salt: int) -> int:
    return xxhash.xxh3_64_intdigest(SEGMENT_MAGIC + salt.to_bytes(8, "little"))


def _seed(salt: int | None, size: int) -> int:
    """The seed of the checksum of a payload of ``size`` bytes in a segment of ``salt``."""
    return size if salt is None else salt ^ size


class Location(NamedTuple):
    """Where one record lies: segment number, offset of its frame, frame length in bytes."""

    segment: int
    offset: int
    length: int


class LogRecord(msgspec.Struct, array_like=True, frozen=True):
    """One record's payload: ``KEEP`` ``manifest`` (its bytes) as ``name``, or ``REMOVE``;
    a ``provisional`` keep also holds the manifest it ``replaced`` (its bytes; None: none)."""

    kind: int
    name: str
    manifest: bytes | None = None
    provisional: bool = False
    replaced: bytes | None = None


@dataclass(frozen=True)
class Damage:
    """Bytes ``[start, end)`` of a segment that hold no whole record: damage, or with
    ``tail`` the torn end of the segment. ``name``: the damaged record's, if it decodes."""

    segment: int
    start: int
    end: int
    name: str | None
    tail: bool


_decode_record = msgspec.msgpack.Decoder(LogRecord).decode
_encode = msgspec.msgpack.Encoder().encode


def frame(record: LogRecord, salt: int | None = None) -> bytes:
    """The bytes of ``record`` as appended to a segment of ``salt``: frame header and
    payload (three fields unless the record is provisional). ``ManifestLog.append`` seals
    frames made without the salt for the segment they go to."""
    payload = _encode(record if record.provisional else (record.kind, record.name, record.manifest))
    return _framed(payload, salt)


def _framed(payload: bytes | memoryview, salt: int | None) -> bytes:
    check = xxhash.xxh3_64_intdigest(payload, seed=_seed(salt, len(payload)))
    return FRAME.pack(RECORD_MAGIC, len(payload), check) + payload


def _sealed(data: bytes, salt: int | None) -> bytes:
    """Frame ``data`` (``frame``'s, made for any salt) checked for a segment of ``salt``."""
    return _framed(memoryview(data)[FRAME.size :], salt)


def _read_whole(fd: int, where: Location) -> bytes:
    return os.pread(fd, where.length, where.offset)


def _record_in(where: Location, data: bytes, salt: int | None) -> LogRecord:
    """The record of the frame ``data`` read at ``where`` in a segment of ``salt``; raises
    CorruptData."""
    if len(data) < FRAME.size:
        raise CorruptData(f"manifest record at {where} is cut short")
    magic, size, check = FRAME.unpack_from(data)
    record = None
    if magic == RECORD_MAGIC and size == len(data) - FRAME.size:
        record = _checked(data[FRAME.size :], check, salt)
    if record is None:
        raise CorruptData(f"manifest record at {where} fails its checksum")
    return record


def _checked(payload: bytes, expected: int, salt: int | None) -> LogRecord | None:
    if xxhash.xxh3_64_intdigest(payload, seed=_seed(salt, len(payload))) != expected:
        return None
    try:
        return _decode_record(payload)
    except msgspec.DecodeError:
        return None


class SegmentIO:
    """The writes and syncs of the log: tests substitute them to count syncs or to hold a
    batch half-written (a crash in the middle of a group commit)."""

    def write(self, fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written

    def sync(self, fd: int, metadata: bool) -> None:
        """Make what was written to ``fd`` durable: its data and size (fdatasync), or all
        of its metadata (fsync: a new file, a directory)."""
        if metadata or not hasattr(os, "fdatasync"):
            os.fsync(fd)
        else:
            os.fdatasync(fd)


class _Window:
    """Reads of one segment file of ``salt`` by offset, through a window of ``WINDOW``
    bytes."""

    def __init__(self, fd: int, size: int, salt: int | None) -> None:
        self.fd, self.size, self.salt = fd, size, salt
        self._start, self._data = 0, b""

    def read(self, offset: int, length: int) -> bytes:
        end = offset + length
        if not (self._start <= offset and end <= self._start + len(self._data)):
            self._start = offset
            self._data = os.pread(self.fd, max(length, WINDOW), offset)
        return self._data[offset - self._start : end - self._start]

    def record_at(self, offset: int) -> tuple[LogRecord, int] | None:
        """The whole, checked record at ``offset`` and its frame length, or None."""
        length = self.plausible(offset)
        if length is None:
            return None
        _, size, check = FRAME.unpack(self.read(offset, FRAME.size))
        record = _checked(self.read(offset + FRAME.size, size), check, self.salt)
        return None if record is None else (record, length)

    def plausible(self, offset: int) -> int | None:
        """The frame length of a record at ``offset`` if its header looks sound and it
        fits in the file."""
        if offset + FRAME.size > self.size:
            return None
        magic, size, _ = FRAME.unpack(self.read(offset, FRAME.size))
        if magic != RECORD_MAGIC or size > MAX_PAYLOAD or offset + FRAME.size + size > self.size:
            return None
        return FRAME.size + int(size)

    def salvage(self, offset: int, length: int) -> str | None:
        """The name in a record that fails its checksum, if its payload still decodes."""
        try:
            kind, name, *_ = msgspec.msgpack.decode(self.read(offset + FRAME.size, length))
        except (msgspec.DecodeError, TypeError, ValueError):
            return None
        return name if isinstance(name, str) and kind in (KEEP, REMOVE) else None

    def resync(self, offset: int) -> int | None:
        """The offset of the next whole record after damage at ``offset``, or None."""
        at = offset + 1
        while at < self.size:
            chunk = os.pread(self.fd, WINDOW + len(RECORD_MAGIC), at)
            found = chunk.find(RECORD_MAGIC)
            while found >= 0:
                if self.record_at(at + found) is not None:
                    return at + found
                found = chunk.find(RECORD_MAGIC, found + 1)
            at += WINDOW
        return None


def scan(
    fd: int,
    segment: int,
    start: int | None = None,
    limit: int | None = None,
    header: Header | None = None,
) -> Iterator[tuple[Location, LogRecord] | Damage]:
    """The records of a segment from ``start`` (None: its first) in file order, and the
    damage between them (a ``Damage`` with ``tail`` last when the segment ends in one).
    With ``limit``, stops after the record that reaches ``limit`` bytes past ``start``.
    ``header``: the segment's (None: read it; raises CorruptData when it is damaged)."""
    if header is None and (header := Header.read(fd)) is None:
        raise CorruptData(f"manifest log segment {segment} has a damaged header")
    window = _Window(fd, os.fstat(fd).st_size, header.salt)
    offset = first = header.size if start is None else start
    while offset < window.size and (limit is None or offset < first + limit):
        found = window.record_at(offset)
        if found is not None:
            record, whole = found
            yield Location(segment, offset, whole), record
            offset += whole
            continue
        length = window.plausible(offset)
        following: int | None = None
        if length is not None and offset + length == window.size:
            pass  # a sound header up to the end: the last record is torn or damaged
        elif length is not None and window.record_at(offset + length) is not None:
            following = offset + length  # the header is sound: only this record is damaged
        else:
            following = window.resync(offset)
        name = window.salvage(offset, length - FRAME.size) if length is not None else None
        if following is None:
            yield Damage(segment, offset, window.size, name, tail=True)
            return
        yield Damage(segment, offset, following, name, tail=False)
        offset = following


class SegmentGone(Exception):
    """The segment was removed (compacted) after its location was looked up."""


class ManifestLog:
    """The segment files of one peer's manifest log: replay, append, read, remove."""

    def __init__(self, directory: Path, segment_bytes: int, io: SegmentIO) -> None:
        self.directory = directory
        self.hints = directory.parent / "hints"  # node.disk.manifest_hints
        self._hinted: set[int] = set()  # segments with a hint file
        self.segment_bytes = segment_bytes
        self._io = io
        self._fds: dict[int, int] = {}
        self._headers: dict[int, Header] = {}  # of every open segment
        self._readers: dict[int, int] = {}  # reads in flight, by segment
        self._retired: set[int] = set()  # removed, fd closed by the last read
        self._guard = threading.Lock()
        self._nowait = True  # read_cached tries the page cache alone (until Unsupported)
        self.active = 0
        self._size = 0  # of the active segment
        self.sizes: dict[int, int] = {}  # segment -> bytes, every segment
        self._failed: OSError | None = None
        self._roll_after = 0.0  # (monotonic) no early segment before: one failed to start
        self.syncs = 0
        self.batches = 0

    def __repr__(self) -> str:
        return f"ManifestLog({self.directory}, segments={len(self.sizes)}, active={self.active})"

    def replay(self) -> Iterator[tuple[Location, LogRecord] | Damage]:
        """Every record and damage of every segment, in log order (``open_segments``, then
        ``replay_segment`` of each)."""
        for number in self.open_segments():
            yield from self.replay_segment(number)

    def open_segments(self) -> list[int]:
        """Open every segment (creating the first when there is none) and return their
        numbers in order; the last is the newest, appended to. Hint files of segments that
        are gone (compacted, a crash between the two removals) are removed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = sorted(
            int(match.group(1))
            for path in self.directory.iterdir()
            if (match := SEGMENT_NAME.match(path.name))
        )
        self._hinted = hinted_segments(self.hints)
        for number in self._hinted - set(found):
            remove_hints(self.hints, number)
        self._hinted &= set(found)
        if not found:
            self._create(1)
            return []
        self.active = found[-1]  # known while replaying: only its tail may be torn
        if self.active in self._hinted:  # (a partial restore): it has no records to hint yet
            remove_hints(self.hints, self.active)
            self._hinted.discard(self.active)
        for number in found:
            path = self._path(number)
            newest = number == found[-1]
            fd = open_noatime(path, os.O_RDWR if newest else os.O_RDONLY)[0]
            self._fds[number] = fd
            header = Header.read(fd)
            size = os.fstat(fd).st_size
            torn = header is None and size < HEADER_SIZE  # (no record before its header)
            if newest and (torn or (header == FORMAT_1 and size == FORMAT_1.size)):
                if torn:  # (an empty one of format 1 is made format 2: appended to next)
                    log.warning("manifest log segment %s was torn at creation: reset", path)
                header = Header.new()
                os.ftruncate(fd, 0)
                self._io.write(fd, header.to_bytes(), 0)
                self._sync(fd, metadata=True)
            if header is None:
                log.error(
                    "manifest log segment %s has a damaged header: none of its records can be "
                    "checked, so none is read (other replicas have them)",
                    path,
                )
            else:
                self._headers[number] = header
            self.sizes[number] = os.fstat(fd).st_size
        self._size = self.sizes[self.active]
        return found

    def replay_segment(self, number: int) -> Iterator[tuple[Location, LogRecord] | Damage]:
        """The records and damage of segment ``number`` (opened by ``open_segments``); a
        torn tail of the newest is truncated (reported as ``Damage`` with ``tail``)."""
        path, fd = self._path(number), self._fds[number]
        newest = number == self.active
        if (header := self._headers.get(number)) is None:  # (logged by open_segments)
            yield Damage(number, 0, self.sizes[number], None, tail=False)
            return
        for event in scan(fd, number, header=header):
            if isinstance(event, Damage) and event.tail and newest:
                what = f"manifest log segment {path}"
                cut_torn_tail(fd, event.start, event.end, what, self._sync_data)
                self.sizes[number] = self._size = event.start
            elif isinstance(event, Damage):
                log.error(
                    "manifest log segment %s: %d damaged bytes at %d (record of %r) skipped",
                    path,
                    event.end - event.start,
                    event.start,
                    event.name,
                )
            yield event

    # --- hint files (node.disk.manifest_hints) -----------------------------------------

    def read_hints(self, number: int) -> Iterator[Hint] | None:
        """The hints of closed segment ``number`` when its hint file describes it (None:
        read the segment; the newest never has one)."""
        if number >= self.active or number not in self._hinted:
            return None
        size = self.sizes[number]
        return read_hints(self.hints, number, size, tail_digest(self._path(number), size))

    def hint_writer(self, number: int) -> HintWriter:
        """A writer of the hint file of closed segment ``number`` (``HintWriter``: ``add``
        its records' hints in order, then ``commit``); raises ValueError for the newest."""
        if number >= self.active:
            raise ValueError(f"segment {number} is still appended to")
        size = self.sizes[number]
        return HintWriter(self.hints, number, size, tail_digest(self._path(number), size))

    def hinted(self, number: int) -> None:
        """Segment ``number`` has its hint file (committed)."""
        self._hinted.add(number)

    def drop_hints(self, number: int) -> None:
        """Remove the hint file of segment ``number`` (one that does not apply)."""
        remove_hints(self.hints, number)
        self._hinted.discard(number)

    def unhinted(self) -> list[int]:
        """Closed segments without a hint file, oldest first (may run while the writer
        thread adds a segment: only those before the newest count)."""
        active = self.active
        return sorted(n for n in list(self.sizes) if n < active and n not in self._hinted)

    def rescan(self, number: int) -> Iterator[tuple[Location, LogRecord] | Damage]:
        """The records and damage of closed segment ``number``, read through a descriptor
        of its own (a thread may go on reading after the log was closed); raises
        FileNotFoundError when the segment is gone."""
        fd = os.open(self._path(number), os.O_RDONLY)
        try:
            yield from scan(fd, number)
        finally:
            os.close(fd)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}.log"

    def _sync(self, fd: int, metadata: bool) -> None:
        self._io.sync(fd, metadata)
        self.syncs += 1

    def _sync_data(self, fd: int) -> None:
        self._sync(fd, metadata=False)

    def _create(self, number: int) -> None:
        path = self._path(number)
        header = Header.new()
        fd = open_noatime(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)[0]
        try:
            self._io.write(fd, header.to_bytes(), 0)
            self._sync(fd, metadata=True)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                self._sync(dir_fd, metadata=True)
            finally:
                os.close(dir_fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        with self._guard:
            self._fds[number] = fd
            self._headers[number] = header
        self.sizes[number] = header.size
        self.active, self._size = number, header.size

    def append(self, frames: Sequence[bytes], roll: bool = False) -> list[Location]:
        """Append ``frames`` (``frame``) with one write and one sync; their locations. They
        start a new segment when the active one would pass ``segment_bytes``, is of format 1
        (unsalted: a release before wrote it), or with ``roll`` (closing one that compaction
        should reclaim before it fills). Each is sealed with the salt of its segment.

        Raises OSError. A failed write is cut back off the segment; after a failed sync
        the log refuses every later append (what the kernel kept is unknown), until the
        peer restarts and replays it.
        """
        if self._failed is not None:
            raise OSError(self._failed.errno, f"manifest log unusable: {self._failed}")
        total = sum(map(len, frames))
        header = self._headers.get(self.active)
        # A segment whose header is damaged takes no record: none would read back.
        full = self._size + total > self.segment_bytes or header is None
        roll = roll or (header is not None and header.salt is None)
        if header is None or (self._size > header.size and (full or (roll and self._may_roll()))):
            try:
                self._create(self.active + 1)
            except OSError as exc:
                if full:
                    raise
                # Closing early only frees space sooner: appended to the open segment, the
                # batch still goes in (no inode, no descriptor left: writes must not stop).
                self._roll_after = time.monotonic() + ROLL_RETRY
                log.warning("manifest log segment %d kept open: %s", self.active, exc)
        fd, offset = self._fds[self.active], self._size
        salt = self._headers[self.active].salt
        try:
            self._io.write(fd, b"".join(_sealed(data, salt) for data in frames), offset)
        except OSError:
            try:
                os.ftruncate(fd, offset)
            except OSError as exc:
                self._failed = exc
            raise
        try:
            self._sync(fd, metadata=False)
        except OSError as exc:
            self._failed = exc
            raise
        self.batches += 1
        locations = []
        for data in frames:
            locations.append(Location(self.active, offset, len(data)))
            offset += len(data)
        self._size = self.sizes[self.active] = offset
        return locations

    def _may_roll(self) -> bool:
        """Whether a segment may be started early (not within ``ROLL_RETRY`` seconds of a
        start that failed)."""
        return time.monotonic() >= self._roll_after

    def read(self, where: Location) -> LogRecord:
        """The record at ``where``; raises CorruptData if it fails its checksum,
        SegmentGone if its segment was removed."""
        data, header = self._guarded(where, _read_whole)
        return _record_in(where, data, header.salt)

    def read_cached(self, where: Location) -> LogRecord | None:
        """The record at ``where`` if all of it is in the page cache, read with
        ``preadv2(RWF_NOWAIT)`` (Linux 4.14+, preadv2(2)): it never waits for the disk, so
        the event loop may call it and spare a worker-thread hop (~0.25 ms of CPU on our
        2-core VMs, docs/architecture.md "The manifest log"; ~2 µs for the read). None
        where some of it is not cached, or the system or file system cannot tell (tmpfs:
        EOPNOTSUPP): ``read`` it then, in a worker thread. Raises as ``read``. (A read
        still marks the file accessed: segments are opened ``O_NOATIME`` where the system
        allows, so that it is no inode update, which could wait on the file system's
        journal.)"""
        if not self._nowait:
            return None
        data, header = self._guarded(where, self._read_cached)
        return None if data is None else _record_in(where, data, header.salt)

    def _read_cached(self, fd: int, where: Location) -> bytes | None:
        try:  # (None: not all of it cached, or the file ends early: ``read`` tells which)
            return pread_cached(fd, where.length, where.offset)
        except Unsupported as exc:
            log.info("reads from the page cache alone are not supported here: %s", exc)
            self._nowait = False
            return None

    def _guarded(self, where: Location, read: Callable[[int, Location], T]) -> tuple[T, Header]:
        """``read(fd, where)`` of ``where``'s segment, which stays open until it returns
        (``remove`` closes it after the last read), and the segment's header; raises
        SegmentGone if it was removed, CorruptData if its header is damaged.
        On the loop (``read_cached``) the last read of a removed segment would close it
        there; compaction moves every record's place before it removes a segment, so
        reads through the index never meet one."""
        with self._guard:
            fd = self._fds.get(where.segment)
            if fd is None or where.segment in self._retired:
                raise SegmentGone(where.segment)
            header = self._headers.get(where.segment)
            if header is None:
                raise CorruptData(f"manifest log segment {where.segment} has a damaged header")
            self._readers[where.segment] = self._readers.get(where.segment, 0) + 1
        try:
            return read(fd, where), header
        finally:
            with self._guard:
                self._readers[where.segment] -= 1
                if not self._readers[where.segment]:
                    del self._readers[where.segment]
                    if where.segment in self._retired:
                        self._close(where.segment)

    def first_record(self, segment: int) -> int:
        """Where the records of ``segment`` start (after its header)."""
        return self._headers.get(segment, FORMAT_1).size

    def records(
        self, segment: int, start: int, limit: int
    ) -> tuple[list[tuple[Location, LogRecord]], int | None]:
        """Records of a closed segment from ``start`` (about ``limit`` bytes of them) and
        where the next ones start (None at its end); damage is skipped, and so is a whole
        segment whose header is damaged."""
        if (header := self._headers.get(segment)) is None:
            return [], None
        found = []
        end = start
        for event in scan(self._fds[segment], segment, start, limit, header):
            if isinstance(event, Damage):
                end = event.end
                continue
            found.append(event)
            end = event[0].offset + event[0].length
        return found, (end if end < self.sizes[segment] else None)

    def remove(self, segment: int) -> None:
        """Delete a segment whose live records were all appended again elsewhere (its hint
        file first: a hint outliving its segment is removed at the next start anyway)."""
        remove_hints(self.hints, segment)
        self._hinted.discard(segment)
        self._path(segment).unlink()
        fsync_dir(self.directory)
        with self._guard:
            self._retired.add(segment)
            if segment not in self._readers:
                self._close(segment)
        self.sizes.pop(segment, None)

    def _close(self, segment: int) -> None:
        os.close(self._fds.pop(segment))
        self._headers.pop(segment, None)
        self._retired.discard(segment)

    def close(self) -> None:
        with self._guard:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
