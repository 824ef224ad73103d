"""Small chunks packed in volume files: append-only, group-committed, indexed.

A chunk of up to ``PACK_MAX`` bytes (every chunk of a file of up to 5 MiB) is not a file of
its own but a record appended to a volume; larger ones stay files (``node.disk.chunk_store``).
Layout under ``chunks-v2/volumes/``::

    <seq, 12 digits>.vol   a volume: ``VOLUME_MAGIC`` and 8 random bytes (its salt), then
                           records
    <seq, 12 digits>.idx   the index of a sealed volume (every volume but the newest)

A record is a 16-byte frame header (``RECORD_MAGIC``, the body's length as uint32 and its
xxh3-64 as uint64, little endian), then the body: ``HEAD`` (kind,
chunk id NUL-padded to 36 bytes, the chunk's size as uint64), then for ``KEEP`` the chunk's
*image*, the very bytes a chunk file holds (its bytes, sidecar and trailer); ``REMOVE``
drops the chunk and has no image. Replaying the volumes in order, records in file order,
gives each chunk id's state: its last record wins.

**Group commit.** Writes queue for one writer thread (``SerialThread``); each batch, however
many chunks it holds, is one ``pwritev`` and one ``fdatasync`` of the newest volume, and a
chunk is acknowledged (and readable) only after its batch's sync. ``bench/chunk_store.py
--packed`` against a file per chunk (create, write, fsync, rename, fsync of the directory),
200 KiB chunks, 2 rounds alternated: 16 writers 1,334 vs 937 writes/s at 0.56 vs 1.55 ms of
CPU each; one writer 1,053 vs 571 at 0.60 vs 1.31 ms (no file made, no rename).

**Sealing.** A volume that reaches ``VOLUME_BYTES`` is sealed: its index (every record's
kind, id, image offset, image length and chunk size, msgpack, then its xxh3-64) is written
atomically (temp file, fsync, rename, fsync of the directory), then the next volume is
created (header, fsync, fsync of the directory). So only the newest volume lacks an index.

**Recovery.** At open, a sealed volume's index is read (no byte of its chunks), the newest
volume (or one whose index is missing or fails its checksum) is scanned and checked record
by record. A crash can only tear the tail of the newest volume (never acknowledged), at
most one group commit (``MAX_TORN``): it is cut back to the last whole record. Damage met
anywhere else, or a "tail" longer than that, is skipped with an error logged: the chunks
there are missing here, and repair rebuilds them from parity, as for any chunk a peer
lost. A damaged byte of the salt is found from the first record (``volume_salt``). A
chunk's bytes are checked by their block digests wherever they are read (readers, the
scrubber), not by the frame.

**Compaction.** Each volume counts its live bytes. A sealed volume at least half dead (and
``COMPACT_MIN`` of it) has its live chunks appended again through the same group commit,
and its ``REMOVE`` records too unless it is the oldest volume (an older volume may still
hold what they remove), then its index and file are deleted. A read in flight has the
volume open on its own (not a ``dup``: reads move the file's offset), so deleting a volume
never cuts it.

``Volumes``' appends, seals and drops run in the writer thread (or at open, before the peer
serves), its reads in any thread; ``find`` on the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import secrets
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import msgspec
import xxhash

from node.disk.cached import open_noatime
from node.disk.durable import cut_torn_tail, fsync_dir, write_atomically
from node.disk.locks import KeyedLocks
from node.disk.serial import SerialThread
from node.errors import CorruptData
from node.model.digests import Buffer

log = logging.getLogger(__name__)

PACK_MAX = 1 << 20  # chunks of up to this many bytes (of known size) go into volumes
VOLUME_BYTES = 64 << 20  # a volume is sealed once it holds this much
COMPACT_MIN = 8 << 20  # a sealed volume is compacted once at least this much, and half, is dead
VOLUME_MAGIC = b"RSCVOL\x00\x01"  # format 1
SALT = struct.Struct("<Q")  # after the magic: the volume's salt
HEADER = len(VOLUME_MAGIC) + SALT.size  # bytes before the first record
RECORD_MAGIC = b"\x5e\xc7\x0b\x1d"
FRAME = struct.Struct("<4sIQ")  # magic, body length, xxh3-64 of the body (seed: its length)
HEAD = struct.Struct("<B36sQ")  # kind, chunk id (NUL-padded), chunk size
MAX_BODY = HEAD.size + 2 * PACK_MAX  # the longest record body (image: chunk, sidecar, trailer)
VOLUME_NAME = re.compile(r"^(\d{12})\.vol$")
SCAN = 1 << 20  # bytes read at once when scanning a volume
IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 1024  # per pwritev
BATCH_BYTES = 8 << 20  # at most this many bytes written per group commit (one record may exceed)
MAX_TORN = BATCH_BYTES + FRAME.size + MAX_BODY  # the most one group commit writes

KEEP = 0
REMOVE = 1


class Packed(NamedTuple):
    """Where a packed chunk lies: volume number, offset of its image in the volume file,
    the image's length (what ``used_bytes`` counts), the chunk's size in bytes."""

    volume: int
    offset: int
    length: int
    size: int


class Entry(msgspec.Struct, array_like=True, frozen=True):
    """One record as a volume's index lists it."""

    kind: int
    chunk_id: str
    offset: int  # of the image (for a REMOVE, of where its image would be: its record's end)
    length: int  # of the image (0: a REMOVE)
    size: int


@dataclass(frozen=True)
class Append:
    """A record to append: ``KEEP`` the image in ``pieces`` (a chunk of ``size`` bytes) as
    ``chunk_id``, or ``REMOVE``. The pieces are written as they are (``pwritev``), never
    joined."""

    kind: int
    chunk_id: str
    pieces: tuple[Buffer, ...] = ()
    size: int = 0
    file: Path | None = None  # a chunk file of the same id, removed once this is durable
    length: int = field(init=False)  # the image's bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "length", sum(memoryview(p).nbytes for p in self.pieces))

    def frame(self, salt: int, offset: int) -> list[Buffer]:
        """The record's bytes as appended at ``offset`` of a volume of ``salt``, in pieces:
        frame header and head, then the image's pieces."""
        head = HEAD.pack(self.kind, self.chunk_id.encode("ascii"), self.size)
        length = len(head) + self.length
        check = xxhash.xxh3_64(head, seed=_seed(salt, offset, length))
        for piece in self.pieces:
            check.update(piece)
        return [FRAME.pack(RECORD_MAGIC, length, check.intdigest()) + head, *self.pieces]


_encode_index = msgspec.msgpack.Encoder().encode
_decode_index = msgspec.msgpack.Decoder(list[Entry]).decode


class Volumes:
    """The volume files of one peer's packed chunks and their index: open, append, seal,
    remove. The index (``chunks``) maps each packed chunk id to where it lies."""

    def __init__(self, directory: Path, volume_bytes: int = VOLUME_BYTES) -> None:
        self.directory = directory
        self.volume_bytes = volume_bytes
        self.chunks: dict[str, Packed] = {}
        self.live: dict[int, int] = {}  # volume -> bytes of its live images
        self.sizes: dict[int, int] = {}  # volume -> bytes of its file
        self.active = 0
        self._fd: int | None = None  # the newest volume's, appended to; others open per read
        self._salt = 0  # the newest volume's
        self._entries: list[Entry] = []  # the newest volume's, for its index when sealed
        self._failed: OSError | None = None
        self.batches = 0

    def __repr__(self) -> str:
        return f"Volumes({self.directory}, volumes={len(self.sizes)}, chunks={len(self.chunks)})"

    # --- opening -----------------------------------------------------------------------

    def open(self) -> None:
        """Read every volume's index, scan the newest (cutting a torn tail) and any without
        a sound index (blocking). The first volume is made by the first append: a store
        that packs nothing holds no file open."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = sorted(
            int(match.group(1))
            for path in self.directory.iterdir()
            if (match := VOLUME_NAME.match(path.name))
        )
        for stray in self.directory.glob("*.idx"):  # an index whose volume was compacted
            if int(stray.stem) not in found:
                stray.unlink()
        for number in found:
            newest = number == found[-1]
            fd = open_noatime(self._path(number), os.O_RDWR if newest else os.O_RDONLY)[0]
            try:
                self.sizes[number] = os.fstat(fd).st_size
                self.live[number] = 0
                entries = None if newest else self._read_index(number)
                if entries is None:
                    entries = list(self._scan(number, fd, newest))
                    if not newest:
                        self._write_index(number, entries)
            except BaseException:
                os.close(fd)
                raise
            for entry in entries:
                self._apply(number, entry)
            if newest:
                self._fd, self._entries = fd, entries
            else:
                os.close(fd)
        if found:
            self.active = found[-1]

    def _read_index(self, number: int) -> list[Entry] | None:
        path = self._index_path(number)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            log.warning("chunk volume %d has no index: scanning it", number)
            return None
        payload, check = data[:-8], data[-8:]
        if len(data) < 8 or xxhash.xxh3_64_digest(payload) != check:
            log.error("chunk volume %d: its index fails its checksum; scanning the volume", number)
            return None
        try:
            return _decode_index(payload)
        except msgspec.DecodeError:
            log.error("chunk volume %d: its index does not decode; scanning the volume", number)
            return None

    def _write_index(self, number: int, entries: list[Entry]) -> None:
        payload = _encode_index(entries)
        write_atomically(self._index_path(number), payload + xxhash.xxh3_64_digest(payload))

    def _scan(self, number: int, fd: int, newest: bool) -> Iterator[Entry]:
        """Every whole, checked record of a volume; the newest one's torn tail is cut off."""
        size = self.sizes[number]
        header = os.pread(fd, HEADER, 0)
        whole = len(header) == HEADER and header.startswith(VOLUME_MAGIC)
        if newest and size <= HEADER and not whole:  # torn at its creation
            log.warning("chunk volume %d was torn at creation: reset", number)
            os.ftruncate(fd, 0)
            self._salt = secrets.randbits(64)
            _write(fd, VOLUME_MAGIC + SALT.pack(self._salt), 0)
            os.fsync(fd)
            self.sizes[number] = HEADER
            return
        if not whole:
            log.error("chunk volume %d has a damaged header: its records are read anyway", number)
        salt = volume_salt(fd, size)
        if newest and salt is not None:
            if len(header) == HEADER and salt != SALT.unpack_from(header, len(VOLUME_MAGIC))[0]:
                _write(fd, SALT.pack(salt), len(VOLUME_MAGIC))  # put back what was found
                os.fdatasync(fd)
            self._salt = salt
        for event in scan(fd, size, salt):
            if isinstance(event, Entry):
                yield event
            elif not event.tail:
                log.error(
                    "chunk volume %d: %d damaged bytes at %d skipped (a chunk there is "
                    "missing here, for repair)",
                    number,
                    event.end - event.start,
                    event.start,
                )
            elif newest and event.end - event.start <= MAX_TORN:
                cut_torn_tail(fd, event.start, event.end, f"chunk volume {number}")
                self.sizes[number] = event.start
            elif newest:  # more than one batch could have written: damage, not a crash
                log.error(
                    "chunk volume %d: its last %d bytes, from %d, hold no whole record: more "
                    "than a crash can tear, so damage; kept (chunks there are missing here, "
                    "for repair), and records go after it",
                    number,
                    event.end - event.start,
                    event.start,
                )
            else:
                log.error(
                    "chunk volume %d: its last %d bytes, from %d, hold no whole record",
                    number,
                    event.end - event.start,
                    event.start,
                )

    def _apply(self, number: int, entry: Entry) -> int | None:
        """Take ``entry`` (of volume ``number``) into the index; the image length of the
        copy it replaced or removed (None: there was none)."""
        old = self.chunks.pop(entry.chunk_id, None)
        if old is not None:
            self.live[old.volume] -= old.length
        if entry.kind == KEEP:
            self.chunks[entry.chunk_id] = Packed(number, entry.offset, entry.length, entry.size)
            self.live[number] += entry.length
        return None if old is None else old.length

    # --- writing (the writer thread) -----------------------------------------------------

    def append(self, records: Sequence[Append]) -> tuple[int, list[Entry], list[int | None]]:
        """Append ``records`` with one write and one sync (blocking, the writer thread);
        the volume they went to, their entries (for ``apply``, on the loop) and, for each,
        the size of the chunk file it replaced (``Append.file``, removed after the sync;
        None: there was none). Raises OSError: a failed write is cut back off the volume;
        after a failed sync every later append is refused (what the kernel kept is
        unknown) until the peer restarts and scans it."""
        if self._failed is not None:
            raise OSError(self._failed.errno, f"chunk volumes unusable: {self._failed}")
        lengths = [FRAME.size + HEAD.size + record.length for record in records]
        total = sum(lengths)
        if not self.sizes:
            self._create(1)
        size = self.sizes[self.active]
        if size > HEADER and size + total > self.volume_bytes:
            self._seal()
            size = self.sizes[self.active]
        fd = self._fd
        assert fd is not None
        pieces: list[Buffer] = []
        at = size
        for record, length in zip(records, lengths, strict=True):
            pieces += record.frame(self._salt, at)
            at += length
        try:
            _writev(fd, pieces, size)
        except BaseException:
            try:
                os.ftruncate(fd, size)
            except OSError as exc:
                self._failed = exc
            raise
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._failed = exc
            raise
        self.batches += 1
        entries = []
        for record, length in zip(records, lengths, strict=True):
            image = size + FRAME.size + HEAD.size
            entries.append(
                Entry(
                    record.kind,
                    record.chunk_id,
                    image,
                    length - FRAME.size - HEAD.size,
                    record.size,
                )
            )
            size += length
        self._entries.extend(entries)
        self.sizes[self.active] = size
        return self.active, entries, [_remove_file(record.file) for record in records]

    @property
    def usable(self) -> bool:
        """False after a failed sync: appends are refused until the peer restarts."""
        return self._failed is None

    def apply(self, number: int, entries: Sequence[Entry]) -> list[int | None]:
        """Take appended ``entries`` of volume ``number`` into the index (on the loop, which
        alone reads it while serving); for each, the image length of the copy it replaced
        or removed (None: none)."""
        return [self._apply(number, entry) for entry in entries]

    def _seal(self) -> None:
        """Write the newest volume's index, then start the next volume."""
        self._write_index(self.active, self._entries)
        self._create(self.active + 1)

    def _create(self, number: int) -> None:
        path = self._path(number)
        fd = open_noatime(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)[0]
        salt = secrets.randbits(64)
        try:
            _write(fd, VOLUME_MAGIC + SALT.pack(salt), 0)
            os.fsync(fd)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._salt = fd, salt
        self.sizes[number], self.live[number] = HEADER, 0
        self.active, self._entries = number, []

    def read(self, packed: Packed) -> bytes:
        """A packed chunk's image (blocking; any thread: the volume is opened for it);
        raises OSError (FileNotFoundError once compacted away), CorruptData if cut short."""
        fd = open_noatime(self._path(packed.volume))[0]
        try:
            data = os.pread(fd, packed.length, packed.offset)
        finally:
            os.close(fd)
        if len(data) != packed.length:
            raise CorruptData(f"chunk volume {packed.volume} ends inside an image")
        return data

    def entries(self, number: int) -> list[Entry]:
        """The records of a sealed volume, from its index (blocking; any thread); raises
        OSError."""
        entries = self._read_index(number)
        if entries is None:
            fd = open_noatime(self._path(number))[0]
            try:
                entries = list(self._scan(number, fd, newest=False))
            finally:
                os.close(fd)
        return entries

    def drop(self, number: int) -> None:
        """Delete a sealed volume that no index entry points into (blocking): its index,
        then its file. Reads in flight hold descriptors of their own."""
        if number == self.active:
            raise ValueError("the newest chunk volume is never dropped")
        self._index_path(number).unlink(missing_ok=True)
        self._path(number).unlink(missing_ok=True)
        fsync_dir(self.directory)
        del self.sizes[number], self.live[number]

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # --- the event loop's ----------------------------------------------------------------

    def path(self, volume: int) -> Path:
        return self._path(volume)

    def compactable(self) -> int | None:
        """The sealed volume with the most dead bytes, if at least half of it and
        ``COMPACT_MIN`` are dead."""
        best, most = None, 0
        for number, size in list(self.sizes.items()):  # (the writer thread may add one)
            dead = size - HEADER - self.live.get(number, 0)
            if number != self.active and dead >= max(COMPACT_MIN, size // 2) and dead > most:
                best, most = number, dead
        return best

    def oldest(self) -> int | None:
        return min(self.sizes, default=None)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}.vol"

    def _index_path(self, number: int) -> Path:
        return self.directory / f"{number:012d}.idx"


def _seed(salt: int, offset: int, length: int) -> int:
    """A record's checksum seed: its volume's salt, its offset and its length. A record is
    valid only where it was written, in the volume it was written to: bytes inside a chunk
    (a stored file that holds a volume, or crafted to look like a record) never check out
    when a scan looks for records past damage, since the salt is random and never leaves the
    peer's disk."""
    return (salt ^ (offset << 20) ^ length) & 0xFFFF_FFFF_FFFF_FFFF


def _failure(exc: BaseException) -> OSError:
    """An error of its own for each write of a failed batch (OSError as it was, with
    ENOSPC for a full disk; anything else as EIO)."""
    failure = (
        OSError(exc.errno, f"chunk volume write failed: {exc.strerror or exc}")
        if isinstance(exc, OSError)
        else OSError(errno.EIO, f"chunk volume write failed: {exc!r}")
    )
    failure.__cause__ = exc
    return failure


def _remove_file(path: Path | None) -> int | None:
    """Remove a chunk file superseded by a packed copy; its size (None: there was none).
    Not synced: a crash may bring it back, and the store's opening removes it again."""
    if path is None:
        return None
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:  # the packed copy is durable: the file is the next start's to remove
        log.error("removing chunk file %s, superseded by its packed copy, failed: %s", path, exc)
        return None
    return size


def _write(fd: int, data: bytes, offset: int) -> None:
    _writev(fd, [data], offset)


def _writev(fd: int, pieces: Sequence[Buffer], offset: int) -> None:
    """Write ``pieces`` one after another at ``offset`` (``pwritev``, up to ``IOV_MAX`` at
    a time, until all of them are written)."""
    views: list[memoryview] = [memoryview(piece).cast("B") for piece in pieces]
    views = [view for view in views if view.nbytes]
    first = 0
    while first < len(views):
        written = os.pwritev(fd, views[first : first + IOV_MAX], offset)
        if not written:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        offset += written
        while first < len(views) and written >= views[first].nbytes:
            written -= views[first].nbytes
            first += 1
        if written:
            views[first] = views[first][written:]


@dataclass(frozen=True)
class Damage:
    """Bytes ``[start, end)`` of a volume that hold no whole, checked record; with ``tail``
    the end of the volume (where a crash tears a write), else damage between records."""

    start: int
    end: int
    tail: bool


def volume_salt(fd: int, size: int) -> int | None:
    """The salt of a volume of ``size`` bytes (None: its header is cut short). Where its
    first record is whole but fails its checksum under the header's salt and passes under
    a salt one byte away from it, that one: a byte of the header damaged, which would
    otherwise fail every record of the volume (an attack flipped one and lost a volume's 64
    MB at a restart). 2,040 tries of one record, ~0.1 s, only where the header is
    damaged; a false match needs a 64-bit check to pass (2,040 in 2^64)."""
    header = os.pread(fd, HEADER, 0)
    if len(header) < HEADER:
        return None
    salt: int = SALT.unpack_from(header, len(VOLUME_MAGIC))[0]
    entry, end = _record_at(fd, HEADER, size, salt)
    if entry is not None or end is None:
        return salt  # the salt checks out, or there is no sound frame to try others on
    frame = os.pread(fd, end - HEADER, HEADER)
    _, length, check = FRAME.unpack_from(frame)
    body = memoryview(frame)[FRAME.size :]
    for shift in range(0, 64, 8):
        for value in range(256):
            candidate = salt & ~(0xFF << shift) | value << shift
            seed = _seed(candidate, HEADER, length)
            if candidate != salt and xxhash.xxh3_64_intdigest(body, seed=seed) == check:
                log.error("chunk volume: a damaged byte of its salt found (the first record's)")
                return candidate
    return salt


def scan(fd: int, size: int, salt: int | None = None) -> Iterator[Entry | Damage]:
    """Every checked record of a volume of ``size`` bytes after its header, and what lies
    between them (blocking); ``salt``: its salt (None: ``volume_salt``). A record whose
    frame is sound but whose body fails its checksum is damage, skipped by its length where
    a checked record follows it; otherwise the scan goes on at the next magic that starts
    a checked record, and where there is none the rest is the tail (``manifest_log.scan``
    does the same). So a flipped bit loses one chunk, never the records after it."""
    if salt is None and (salt := volume_salt(fd, size)) is None:
        return
    offset = HEADER
    while offset < size:
        entry, end = _record_at(fd, offset, size, salt)
        if entry is not None and end is not None:
            yield entry
            offset = end
            continue
        # No record here. A sound frame's length is trusted (damage in its body) only where
        # a checked record follows it: the length itself may be the flipped part.
        if end is None or end == size or _record_at(fd, end, size, salt)[0] is None:
            end = _resync(fd, offset + 1, size, salt)
        if end is None:
            yield Damage(offset, size, tail=True)
            return
        yield Damage(offset, end, tail=False)
        offset = end


def _record_at(fd: int, offset: int, size: int, salt: int) -> tuple[Entry | None, int | None]:
    """The checked record at ``offset`` of a volume of ``salt`` and where it ends; (None,
    its end) for a sound frame whose body fails its checksum; (None, None) where no frame
    is."""
    if offset + FRAME.size + HEAD.size > size:
        return None, None
    magic, length, check = FRAME.unpack(os.pread(fd, FRAME.size, offset))
    end = offset + FRAME.size + length
    if magic != RECORD_MAGIC or not HEAD.size <= length <= MAX_BODY or end > size:
        return None, None
    digest = xxhash.xxh3_64(seed=_seed(salt, offset, length))
    start, left, body_head = offset + FRAME.size, length, b""
    while left:
        piece = os.pread(fd, min(SCAN, left), start)
        if not piece:
            return None, None
        if not body_head:
            body_head = piece[: HEAD.size]
        digest.update(piece)
        start, left = start + len(piece), left - len(piece)
    kind, raw_id, chunk_size = HEAD.unpack(body_head)
    if digest.intdigest() != check or kind not in (KEEP, REMOVE):
        return None, end
    image = offset + FRAME.size + HEAD.size
    chunk_id = raw_id.rstrip(b"\x00").decode("ascii", "replace")
    return Entry(kind, chunk_id, image, length - HEAD.size, chunk_size), end


def _resync(fd: int, start: int, size: int, salt: int) -> int | None:
    """The offset of the next checked record at or after ``start``, or None."""
    while start < size:
        window = os.pread(fd, SCAN + len(RECORD_MAGIC) - 1, start)
        at = window.find(RECORD_MAGIC)
        while at != -1:
            if _record_at(fd, start + at, size, salt)[0] is not None:
                return start + at
            at = window.find(RECORD_MAGIC, at + 1)
        start += SCAN
    return None


class ChunkVolumes:
    """The packed chunks of a ``ChunkStore``: writes group-committed through one thread,
    sealed volumes compacted in a task of their own. ``locks`` are the store's, per chunk
    id: a compaction moves a chunk only under its id's lock."""

    def __init__(
        self, directory: Path, locks: KeyedLocks, volume_bytes: int = VOLUME_BYTES
    ) -> None:
        self.volumes = Volumes(directory, volume_bytes)
        self._locks = locks
        self._thread = SerialThread("chunk-volumes")
        self._queue: list[tuple[Append, asyncio.Future[tuple[int | None, int | None]]]] = []
        self._writer: asyncio.Future[None] | None = None
        self._compacting: asyncio.Future[None] | None = None
        self._compaction = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"ChunkVolumes({self.volumes!r}, queued={len(self._queue)})"

    def find(self, chunk_id: str) -> Packed | None:
        """Where a packed chunk lies, or None if it is not packed here."""
        return self.volumes.chunks.get(chunk_id)

    async def keep(
        self, chunk_id: str, image: Sequence[Buffer], size: int, file: Path
    ) -> tuple[int | None, int | None]:
        """Store a chunk's image (its bytes, sidecar and trailer, in pieces; ``size`` chunk
        bytes); returns once it is durable and indexed: the image length of the packed copy
        it replaced and the size of the chunk ``file`` it replaced (None: none; the file is
        removed after). The caller holds the id's lock. Raises OSError."""
        return await self._commit(Append(KEEP, chunk_id, tuple(image), size, file))

    async def remove(self, chunk_id: str) -> int | None:
        """Drop a packed chunk, durably; the image length it had (None: it was not packed).
        The caller holds the id's lock. Raises OSError."""
        if self.find(chunk_id) is None:
            return None
        return (await self._commit(Append(REMOVE, chunk_id)))[0]

    async def close(self) -> None:
        """Refuse new writes, stop a compaction in progress, wait for queued writes, close
        the files, end the thread."""
        self._closed = True
        if self._compacting is not None:
            self._compacting.cancel()
            await asyncio.wait({self._compacting})
        if self._writer is not None:
            await asyncio.wait({self._writer})
        await self._thread.run(self.volumes.close)
        await self._thread.stop()

    async def _commit(self, record: Append) -> tuple[int | None, int | None]:
        if self._closed:
            raise OSError(errno.ESHUTDOWN, "the chunk store is closed")
        done: asyncio.Future[tuple[int | None, int | None]]
        done = asyncio.get_running_loop().create_future()
        self._queue.append((record, done))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_batches())
        return await done

    async def _write_batches(self) -> None:
        try:
            while self._queue:
                size, count = 0, 0
                for record, _ in self._queue:  # bounded batches, as the manifest log's
                    written = FRAME.size + HEAD.size + record.length  # (a removal: no image)
                    if count and size + written > BATCH_BYTES:
                        break
                    size, count = size + written, count + 1
                batch, self._queue = self._queue[:count], self._queue[count:]
                try:
                    number, entries, files = await self._thread.run(
                        self.volumes.append, [record for record, _ in batch]
                    )
                except BaseException as exc:
                    log.error("chunk volume write of %d records failed: %r", len(batch), exc)
                    if not isinstance(exc, Exception):  # the writer ends: so do queued writes
                        batch, self._queue = batch + self._queue, []
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(_failure(exc))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                replaced = self.volumes.apply(number, entries)
                for (_, done), old, file in zip(batch, replaced, files, strict=True):
                    if not done.done():
                        done.set_result((old, file))
                if (
                    self._compacting is None
                    and not self._closed
                    and self.volumes.compactable() is not None
                ):
                    self._compacting = asyncio.ensure_future(self._compact_due())
        finally:
            self._writer = None

    async def _compact_due(self) -> None:
        try:
            while (number := self.volumes.compactable()) is not None:
                await self.compact(number)
        except Exception:  # the next batch tries again
            log.exception("chunk volume compaction failed")
        finally:
            self._compacting = None

    async def compact(self, number: int) -> None:
        """Move a sealed volume's live chunks (and REMOVE records, unless it is the oldest)
        to the newest volume, then delete it; one compaction at a time (a volume already
        gone is left alone). Raises OSError."""
        async with self._compaction:
            if number in self.volumes.sizes and number != self.volumes.active:
                await self._compact(number)

    async def _compact(self, number: int) -> None:
        entries = await asyncio.to_thread(self.volumes.entries, number)
        carry_removals = number != self.volumes.oldest()
        for entry in entries:
            async with self._locks.hold(entry.chunk_id):
                packed = self.find(entry.chunk_id)
                if entry.kind == KEEP:
                    if packed is None or (packed.volume, packed.offset) != (number, entry.offset):
                        continue  # replaced or removed since
                    image = await asyncio.to_thread(self.volumes.read, packed)
                    await self._commit(Append(KEEP, entry.chunk_id, (image,), packed.size))
                elif carry_removals and packed is None:
                    await self._commit(Append(REMOVE, entry.chunk_id))
        if any(packed.volume == number for packed in self.volumes.chunks.values()):
            raise ValueError(f"chunk volume {number} still holds chunks after compaction")
        await self._thread.run(self.volumes.drop, number)
        log.info("chunk volume %d compacted", number)
