"""Chunks on one peer's disk.

Layout under the data directory::

    incoming/<chunk id>.<token>   being received; never served; removed on start
    chunks-v2/<2 hex>/<chunk id>  complete: fsynced, then renamed into place

A chunk file is the chunk's bytes, then its sidecar (``ChunkMeta``: file name, version,
index, block digests), then a 16-byte trailer that finds and checks the sidecar
(``TRAILER``: magic, the sidecar's length and its xxh3-64 seeded with that length, little
endian). Byte ``i`` of the chunk is byte ``i`` of the file, so ranges need no lookup. The
sidecar lets the scrubber verify the chunk without its manifest and find the manifest from
the chunk; kept in the same file, it is made durable by the same fsync and visible by the
same rename as the bytes, so no crash can part them: one file, two fsyncs (the file, its
shard directory; and once per shard, ``chunks-v2/`` for the shard's entry: ``_Shards``)
per chunk. A chunk is visible only once all of it is durable, so a reader never sees a
half-written chunk and a crash leaves at worst a stray file in ``incoming/``. Writes run in
worker threads, the event loop only keeps the byte and chunk counters; a read opens its
chunk, and reads up to ``READ_ON_LOOP`` bytes at a time, on the loop where that needs no
disk I/O (``node.disk.cached``), in a worker thread otherwise.

The earlier layout (``chunks/``, the sidecar in ``<chunk id>.meta`` beside the chunk) is
moved into this one when the store opens (``_convert``). The new directory has a new name so
that a release of that layout, started on a converted directory, sees no chunks rather than
deleting them all as chunks without sidecars.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import errno
import functools
import io
import logging
import math
import os
import re
import secrets
import shutil
import struct
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import msgspec
import xxhash

from node.disk.cached import (
    Unsupported,
    open_cached,
    open_noatime,
    pread_cached,
    preadinto_cached,
)
from node.disk.chunk_volumes import ChunkVolumes, Packed
from node.disk.durable import fsync_dir
from node.disk.locks import KeyedLocks
from node.disk.sendfile import sendfile
from node.errors import (
    ChunkNotFound,
    CorruptData,
    IncompleteBody,
    InsufficientStorage,
    InvalidRequest,
)
from node.model.digests import DIGEST_SIZE, BlockDigests, Buffer
from node.model.manifest import ChunkMeta, file_id
from node.model.manifest import chunk_id as chunk_id_of
from node.model.version import Version

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_ID = re.compile(r"[0-9a-f]{32}-[0-9]{1,3}")
WRITE_BATCH = 1 << 20
FREE_TTL = 0.05  # seconds a look at the disk's free bytes is taken as current
CHUNKS_DIR = "chunks-v2"
VOLUMES_DIR = "chunk-volumes"  # packed chunks (node.disk.chunk_volumes)
EARLIER_DIR = "chunks"  # the earlier layout's
META = ".meta"  # the earlier layout's sidecar files
TRAILER = struct.Struct("<4sIQ")  # magic, the sidecar's length, its xxh3-64 (seed: length)
TRAILER_MAGIC = b"RSC\x01"  # format 1
TAIL_READ = 4096  # bytes read from a chunk file's end to find its sidecar, most of the time
# Bytes of a chunk read at once on the event loop when all of them are in the page cache (a
# copy of ~20-50 µs here, against ~250 µs of CPU for a worker-thread hop); more go to a
# thread, where the copy runs beside the loop.
READ_ON_LOOP = 256 << 10


class ChunkStore:
    """The complete chunks of one peer, plus counters of what they use."""

    def __init__(
        self,
        root: Path,
        max_bytes: int | None = None,
        pack_max: int = 0,
        reserve_bytes: int = 0,
        free_bytes: Callable[[], int] | None = None,
    ) -> None:
        """``pack_max``: chunks of known size up to this many bytes are packed in volumes
        (``node.disk.chunk_volumes``; 0: every chunk is a file). ``reserve_bytes``: free
        bytes a chunk write must leave on the disk (``free_bytes``: what is free there now;
        default: statvfs of ``root``), kept for what frees space: removal records,
        compaction's copies, tombstones. Without it a full disk stayed full: an attack
        deleted 80% of a full peer's files and none of its space came back, since a packed
        chunk's removal is a record appended and compaction copies before it deletes."""
        self._chunks = root / CHUNKS_DIR
        self._incoming = root / "incoming"
        self._pack_max = min(pack_max, WRITE_BATCH)  # (a packed chunk is in memory whole)
        self._max_bytes = max_bytes
        self._reserve_bytes = reserve_bytes
        self._free_bytes = free_bytes or (lambda: shutil.disk_usage(root).free)
        self._free, self._free_at = 0, -math.inf  # the last look at free_bytes, and when
        self._reserved = 0  # bytes of writes in progress, held against max_bytes
        self.used_bytes = 0
        self.chunk_count = 0
        # Writes begun and not yet stored or failed. A chunk of up to WRITE_BATCH bytes has
        # no file before its seal (it is in memory), so this, not incoming/, shows streams.
        self.writing = 0
        self._locks = KeyedLocks()
        self.volumes = ChunkVolumes(root / VOLUMES_DIR, self._locks)
        self._doubled: set[str] = set()  # ids that are files and packed (a failed removal)
        self._on_loop = True  # open and read cached chunks on the event loop (until Unsupported)
        self._shards = _Shards()

    def __repr__(self) -> str:
        return (
            f"ChunkStore({self._chunks.parent}, chunks={self.chunk_count}, used={self.used_bytes})"
        )

    async def open(self) -> None:
        """Create the directories, drop leftovers of interrupted writes, move the earlier
        layout's chunks into this one (``_convert``: a read and a write of each chunk's end,
        two syncs of the file system), count what is stored."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self._chunks.mkdir(parents=True, exist_ok=True)
        if self._incoming.exists():
            leftovers = list(self._incoming.iterdir())
            if leftovers:
                log.info("removing %d interrupted chunk writes from incoming/", len(leftovers))
            shutil.rmtree(self._incoming)
        self._incoming.mkdir()
        earlier = self._chunks.parent / EARLIER_DIR
        if earlier.is_dir():
            _convert(earlier, self._chunks)
        volumes = self.volumes.volumes
        volumes.open()
        sizes: list[int] = []
        shards = list(self._chunks.iterdir())
        for shard in shards:  # one listing per shard, no stat but the sizes
            for name in os.listdir(shard):
                if not CHUNK_ID.fullmatch(name):
                    continue
                if name in volumes.chunks:  # a crash before its file's removal was durable
                    (shard / name).unlink()
                    continue
                sizes.append((shard / name).stat().st_size)
        packed = [where.length for where in volumes.chunks.values()]
        self.used_bytes = sum(sizes) + sum(packed)
        self.chunk_count = len(sizes) + len(packed)
        self._shards.found(shards)

    async def close(self) -> None:
        """Finish the packed chunks' writes and close their volumes."""
        await self.volumes.close()

    def _chunk_files(self) -> Iterator[Path]:
        for shard in self._chunks.iterdir():
            for path in shard.iterdir():
                if CHUNK_ID.fullmatch(path.name):
                    yield path

    async def chunk_ids(self) -> list[str]:
        """The ids of every stored chunk."""
        files = await asyncio.to_thread(lambda: [p.name for p in self._chunk_files()])
        return sorted({*files, *self.volumes.volumes.chunks})

    async def meta(self, chunk_id: str) -> ChunkMeta:
        """A chunk's sidecar; raises ChunkNotFound or CorruptData."""
        path = self._path(chunk_id)
        try:
            found = await self._on_volume(
                chunk_id, lambda fd, at: read_sidecar(fd, at.length, _shifted(at.offset))
            )
            if found is not None:
                return found
            return await asyncio.to_thread(sidecar_of, path)
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {chunk_id} is not stored here") from None

    async def salvage_owner(self, chunk_id: str) -> ChunkMeta | None:
        """The sidecar of a chunk whose sidecar fails its checksum, where it still decodes
        and names the file version and index the chunk's id is made of
        (``chunk_id(file_id(name, version), index)``: a 128-bit hash, so those fields are
        as written); else None. Says whose chunk a damaged one was, for its repair."""
        try:
            if self.volumes.find(chunk_id) is not None:
                meta = await self._on_volume(
                    chunk_id, lambda fd, at: salvage_sidecar(fd, at.length, _shifted(at.offset))
                )
            else:
                meta = await asyncio.to_thread(
                    _with_open,
                    self._path(chunk_id),
                    lambda fd: salvage_sidecar(fd, os.fstat(fd).st_size),
                )
        except OSError:  # (gone meanwhile)
            return None
        if meta is None:
            return None
        try:
            proven = chunk_id_of(file_id(meta.name, Version.parse(meta.version)), meta.index)
        except (ValueError, TypeError):
            return None
        return meta if proven == chunk_id else None

    async def matches(self, chunk_id: str, meta: ChunkMeta) -> bool:
        """Whether the chunk still holds the ``meta.size`` bytes its sidecar (``meta``)
        promises, with their block digests (read in a worker thread, ``WRITE_BATCH`` bytes
        at a time); raises ChunkNotFound."""
        found = await self._on_volume(chunk_id, lambda fd, at: _matches(fd, at.offset, meta))
        if found is not None:
            return found
        path = self.path(chunk_id)
        try:
            return await asyncio.to_thread(_with_open, path, _matches, 0, meta)
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {chunk_id} is not stored here") from None

    async def _on_volume(self, chunk_id: str, work: Callable[[int, Packed], T]) -> T | None:
        """``work(fd, where)`` on the volume of a packed chunk, opened for it in a worker
        thread (again where a compaction moved the chunk meanwhile); None if it is not
        packed."""
        for _ in range(3):
            where = self.volumes.find(chunk_id)
            if where is None:
                return None
            path = self.volumes.volumes.path(where.volume)
            try:
                return await asyncio.to_thread(_with_open, path, work, where)
            except FileNotFoundError:
                continue
        return None

    async def missing(self, chunk_ids: list[str]) -> list[str]:
        """The ids of ``chunk_ids`` not stored here; one ``stat`` per id not packed, in a
        thread. Raises InvalidRequest for a malformed id."""
        paths = [
            (chunk_id, self._path(chunk_id))
            for chunk_id in chunk_ids
            if self.volumes.find(chunk_id) is None
        ]
        if not paths:
            return []

        def check() -> list[str]:
            return [chunk_id for chunk_id, path in paths if not path.is_file()]

        return await asyncio.to_thread(check)

    def path(self, chunk_id: str) -> Path:
        """Where a complete chunk stored as a file lives (it ends in its sidecar and
        trailer: never serve it whole); raises ChunkNotFound if it is not stored as a file
        (a packed chunk is in a volume: ``volumes.find``)."""
        path = self._path(chunk_id)
        if not path.is_file():
            raise ChunkNotFound(f"chunk {chunk_id} is not stored here as a file")
        return path

    @contextlib.asynccontextmanager
    async def open_range(
        self, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[ChunkRange]:
        """Bytes ``[offset, offset+length)`` of a stored chunk as a stream, opened and read
        on the loop where the kernel's caches hold it, else in worker threads (``length``
        0: all of the chunk, as a peer call's); raises ChunkNotFound,
        InvalidRequest for a malformed id, CorruptData for a damaged sidecar or trailer,
        OSError for a failed open. The file stays open
        (and readable, even if the chunk is deleted meanwhile) until the block exits."""
        chunk = ChunkRange(self._path(chunk_id), offset, length, self._on_loop)
        try:
            if not await self._open_packed(chunk_id, chunk) and not self._open_cached(chunk):
                await reading(chunk.open)
            yield chunk
        finally:
            chunk.close()

    def read_now(self, chunk_id: str, offset: int, length: int) -> bytearray | None:
        """``open_range``'s bytes (``[offset, offset+length)`` of the chunk, cut at its end;
        ``length`` 0: all of it) where they need no wait: at most ``READ_ON_LOOP`` bytes of
        a packed chunk, whose volume's path and bytes the page cache holds, read on the loop
        with no stream and no worker thread (a chunk frame answered in place). None
        otherwise: not packed here, not all cached, a volume compacted meanwhile, any
        failure (``open_range`` meets it again and reports it). Raises nothing."""
        packed = self.volumes.find(chunk_id)
        if packed is None or not 0 <= offset <= packed.size:
            return None
        if not length:  # all of it, as ``open_range`` reads it
            offset, length = 0, packed.size
        end = min(packed.size, offset + length)
        if end - offset > READ_ON_LOOP:
            return None
        read = functools.partial(self._read_cached, packed, offset, end)
        try:
            return self._from_caches(read, None)
        except Exception:  # (FileNotFoundError, OSError: ``open_range``'s to report)
            return None

    def _read_cached(self, packed: Packed, offset: int, end: int) -> bytearray | None:
        """Bytes ``[offset, end)`` of ``packed`` where the page cache holds its volume's path
        and them, else None; raises Unsupported, OSError."""
        fd = open_cached(self.volumes.volumes.path(packed.volume))
        if fd is None:
            return None
        try:
            data = bytearray(end - offset)
            got = preadinto_cached(fd, memoryview(data), packed.offset + offset) if data else 0
        finally:
            os.close(fd)
        return data if got == len(data) else None

    async def _open_packed(self, chunk_id: str, chunk: ChunkRange) -> bool:
        """Open ``chunk`` on its volume if it is packed: a descriptor of its own (reads
        move its offset), opened on the loop where the path's lookup needs no disk; False
        if it is not packed."""
        for _ in range(3):  # (a compaction may drop its volume meanwhile)
            packed = self.volumes.find(chunk_id)
            if packed is None:
                return False
            path = self.volumes.volumes.path(packed.volume)
            # Opened, the bytes stay readable even if the volume is compacted and deleted.
            try:
                fd = self._open_volume_cached(path)
                if fd is None:
                    await reading(chunk.open_packed, path, packed.offset, packed.size)
                else:
                    chunk.open_packed(path, packed.offset, packed.size, fd)
            except FileNotFoundError:
                continue
            return True
        return False

    def _open_volume_cached(self, path: Path) -> int | None:
        """``open_cached(path)``, or None where it would wait (for good where this system
        cannot tell)."""
        return self._from_caches(lambda: open_cached(path), None)

    def _open_cached(self, chunk: ChunkRange) -> bool:
        """``chunk.open_cached``, or False for good where this system cannot tell."""
        return self._from_caches(chunk.open_cached, False)

    def _from_caches(self, open_: Callable[[], T], otherwise: T) -> T:
        """``open_()`` on the loop, which opens from the kernel's caches alone, or
        ``otherwise`` where that is off (Unsupported once turns it off for good)."""
        if not self._on_loop:
            return otherwise
        try:
            return open_()
        except Unsupported as exc:
            log.info("chunks cannot be opened or read from the kernel's caches alone: %s", exc)
            self._on_loop = False
            return otherwise

    def _path(self, chunk_id: str) -> Path:
        if not CHUNK_ID.fullmatch(chunk_id):
            raise InvalidRequest(f"malformed chunk id {chunk_id!r}")
        return self._chunks / chunk_id[:2] / chunk_id

    async def write(
        self,
        chunk_id: str,
        pieces: AsyncIterable[Buffer],
        expected_size: int | None,
        meta: ChunkMeta,
    ) -> ChunkMeta:
        """Store a chunk from a stream of pieces; return its sidecar (size, block digests).

        Nothing becomes visible unless the stream ends cleanly with ``expected_size`` bytes
        (when given). Raises IncompleteBody, InsufficientStorage, OSError or the stream's
        own error. One failure comes with the chunk visible and counted: its directory's
        fsync after the rename (OSError; InsufficientStorage for ENOSPC), when the rename
        may not survive a crash, so the write is not acknowledged.
        """
        final = self._path(chunk_id)
        held = file_size(meta, expected_size) if expected_size is not None else 0
        self._reserve(chunk_id, held)
        self.writing += 1
        try:
            return await self._write(chunk_id, final, pieces, expected_size, meta)
        finally:
            self.writing -= 1
            self._reserved -= held
            self._wrote()

    def _reserve(self, chunk_id: str, size: int) -> None:
        """Hold ``size`` bytes for a write; refuse one that would pass ``max_bytes`` or
        leave less than ``reserve_bytes`` free."""
        if (over := self._over_limit(size)) is not None:
            raise InsufficientStorage(f"storing chunk {chunk_id} ({size} bytes) would {over}")
        self._reserved += size

    def _over_limit(self, more: int, unwritten: int | None = None) -> str | None:
        """What a write of ``more`` bytes beyond those reserved would break, or None; of
        them ``unwritten`` (default: all) are not on the disk yet (its free bytes count
        the rest)."""
        unwritten = more if unwritten is None else unwritten
        limit = self._max_bytes
        if limit is not None and self.used_bytes + self._reserved + more > limit:
            return f"pass this peer's limit of {limit} bytes ({self.used_bytes} used)"
        if (
            self._reserve_bytes
            and self._free_now() - self._reserved - unwritten < self._reserve_bytes
        ):
            return (
                f"leave less than the {self._reserve_bytes} bytes kept free on this peer's "
                f"disk ({self._free} free)"
            )
        return None

    def _free_now(self) -> int:
        """Free bytes on the disk: one statvfs (2.2 us here; it never waits on the disk),
        taken again after ``FREE_TTL`` seconds or once a write has ended (``_wrote``), so
        that no write that ended is missed; in between, writes under way hold what they
        will take in ``_reserved``, and a chunked one the bytes it has not written yet."""
        now = time.monotonic()
        if now - self._free_at > FREE_TTL:
            self._free, self._free_at = self._free_bytes(), now
        return self._free

    def _wrote(self) -> None:
        """A write ended: the next look at the free bytes asks the disk."""
        self._free_at = -math.inf

    async def _write(
        self,
        chunk_id: str,
        final: Path,
        pieces: AsyncIterable[Buffer],
        expected_size: int | None,
        meta: ChunkMeta,
    ) -> ChunkMeta:
        temp = self._incoming / f"{chunk_id}.{secrets.token_hex(6)}"
        file: BinaryIO | None = None  # opened once a batch must go before the end
        digests = BlockDigests(meta.block_size)
        size = 0
        committing: asyncio.Future[None] | None = None
        try:
            batch: list[Buffer] = []
            batched = 0
            async for piece in pieces:
                digests.update(piece)
                batch.append(piece)
                batched += len(piece)
                if expected_size is None and (over := self._over_limit(size + batched, batched)):
                    raise InsufficientStorage(f"chunk {chunk_id} would {over}")
                if batched >= WRITE_BATCH and (
                    expected_size is None or size + batched < expected_size  # not the end
                ):
                    if file is None:
                        file = await _open(temp)
                    await asyncio.to_thread(_write_all, file, batch)
                    size += batched
                    batch, batched = [], 0
            size += batched
            if expected_size is not None and size != expected_size:
                raise IncompleteBody(f"chunk {chunk_id}: got {size} of {expected_size} bytes")
            meta = msgspec.structs.replace(
                meta, size=size, block_digests=digests.digests(), stored_at=time.time()
            )
            # Shielded: once the rename (or the append) may happen, the counters must follow
            # it, and the temp file is the commit's (a cancelled write must not remove it).
            if self._packs(file, expected_size):
                image = [*batch, seal(meta)]
                committing = asyncio.ensure_future(self._pack(chunk_id, image, size, final))
            else:
                sealing = _Sealing(file, temp, final, batch, meta, self._shards)
                committing = asyncio.ensure_future(self._commit(chunk_id, sealing))
            await asyncio.shield(committing)
        except BaseException as exc:
            if committing is not None and not committing.done():
                committing.add_done_callback(_report_abandoned)  # it ends on its own
                raise
            if file is not None:  # opened early (a seal that opened its own removes it)
                # Closed here, on the loop (its last buffered piece at most): a worker-thread
                # job queued while the loop shuts down may never run, and the file would
                # leak. A temp file left by a job that never ran is removed on the next start.
                with contextlib.suppress(OSError):
                    file.close()
                await asyncio.shield(asyncio.to_thread(temp.unlink, missing_ok=True))
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(f"no space left to store chunk {chunk_id}") from exc
            raise
        return meta

    async def _commit(self, chunk_id: str, sealing: _Sealing) -> None:
        async with self._locks.hold(chunk_id):  # two writes of one id count once
            replaced, stored, unsynced = await asyncio.to_thread(sealing.run)
            if replaced is not None:
                self.used_bytes -= replaced
                self.chunk_count -= 1
            self.used_bytes += stored
            self.chunk_count += 1
            if unsynced is None:  # a packed copy of it (packed before) goes: reads see this
                try:
                    await self._unpack(chunk_id)
                except OSError as exc:  # the same bytes twice: the next start keeps one
                    log.warning("chunk %s is a file and packed (%s)", chunk_id, exc)
                    self._doubled.add(chunk_id)
        if unsynced is not None:  # visible, counted as the disk holds it, not acknowledged
            raise unsynced

    async def _unpack(self, chunk_id: str) -> bool:
        """Remove a packed copy of ``chunk_id``, counted; whether there was one. The caller
        holds the id's lock. Raises OSError."""
        removed = await self.volumes.remove(chunk_id)
        if removed is None:
            return False
        self.used_bytes -= removed
        self.chunk_count -= 1
        return True

    def _packs(self, file: BinaryIO | None, expected_size: int | None) -> bool:
        """Whether a write goes into a volume: of known size up to ``pack_max`` bytes (and
        so still whole in memory, no file opened for it)."""
        return (
            self._pack_max > 0
            and self.volumes.volumes.usable  # (after a failed sync: files, until a restart)
            and file is None
            and expected_size is not None
            and (expected_size <= self._pack_max)
        )

    async def _pack(self, chunk_id: str, image: list[Buffer], size: int, file: Path) -> None:
        """Append a chunk's image to the volumes (group commit), replacing any copy of it."""
        async with self._locks.hold(chunk_id):
            packed, filed = await self.volumes.keep(chunk_id, image, size, file)
            for replaced in (packed, filed):
                if replaced is not None:
                    self.used_bytes -= replaced
                    self.chunk_count -= 1
            self.used_bytes += sum(memoryview(piece).nbytes for piece in image)
            self.chunk_count += 1

    async def delete(self, chunk_id: str, stored_at: float | None = None) -> bool:
        """Remove a chunk (its file, sidecar and all, or its packed record); raises
        ChunkNotFound if it is not stored. Given ``stored_at``, only the copy whose sidecar
        says it was stored then: a copy written since (a move or a rebuild of the same chunk
        onto this peer, between a collector's look and its delete) stays. Whether it went."""
        path = self._path(chunk_id)
        async with self._locks.hold(chunk_id):
            if stored_at is not None and (await self.meta(chunk_id)).stored_at != stored_at:
                return False
            # Shielded: a removal that is written is counted, whether or not its caller waits.
            try:
                unpacked = await asyncio.shield(self._unpack(chunk_id))
            except OSError as exc:  # (was a 500 to the peer deleting: it tries again later)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InsufficientStorage(
                        f"no room to record the removal of {chunk_id}"
                    ) from exc
                raise
            if unpacked and chunk_id not in self._doubled:
                return True
            self._doubled.discard(chunk_id)
            try:  # (a file of it too, after a packed copy's removal failed once)
                size = await asyncio.to_thread(_unlink, path)
            except FileNotFoundError:
                if unpacked:
                    return True
                raise ChunkNotFound(f"chunk {chunk_id} is not stored here") from None
            self.used_bytes -= size
            self.chunk_count -= 1
            return True


# Threads that open and read chunks for readers (opens whose lookup needs the disk, reads
# and sends of what the page cache lacks): a pool of their own, not the loop's (min(32,
# cores + 4) threads), which chunk writes and the data directory's write probe share, so
# that readers waiting on a slow disk hold neither back (a probe queued behind them took
# over its 5 s and the peer read as not ready). A read past these waits for one, as the
# disk would make it; few at once also let each go faster than many sharing the disk.
READERS = 4
_readers = concurrent.futures.ThreadPoolExecutor(READERS, thread_name_prefix="chunk-read")


async def reading(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in one of the ``READERS`` threads (blocking work that reads chunks),
    in a copy of the caller's context (its request id), as ``asyncio.to_thread`` runs it."""
    run = functools.partial(contextvars.copy_context().run, call, *args)
    return await asyncio.get_running_loop().run_in_executor(_readers, run)


class ChunkRange:
    """A range of a chunk file being read: a ``ChunkStream`` (``node.cluster.transport``)
    for a peer that reads its own chunk, without a loopback HTTP request. A read of up to
    ``READ_ON_LOOP`` bytes takes what the page cache holds on the event loop
    (``node.disk.cached``; after a miss the range stops trying) and the rest in one
    worker-thread hop; ``readinto`` fills a whole block at once. The chunk route instead
    ``narrow``s it to the range asked and ``send``s it with sendfile(2): on the event loop
    what the page cache holds, from a worker thread what needs the disk
    (``node.disk.sendfile``).

    A reader cancelled on the loop may leave a read (or a send) running in its worker
    thread, so the file is closed by whichever comes last, ``close`` (on the loop) or that
    read (in its thread), never under a read: a descriptor closed there could be reused by
    the time the read's ``read(2)`` runs, which would then read another file's or socket's
    bytes. The lock is held only to look at the state, never across a read, so the loop
    never waits on a thread's read. Reads raise asyncio.IncompleteReadError where the range
    or the file ends before the bytes asked (a stream's reader does the same), OSError for a
    failed read.
    """

    PIECE = 1 << 18  # bytes per piece of ``iter_any``

    def __init__(self, path: Path, offset: int, length: int, on_loop: bool = False) -> None:
        self._path = path
        self._on_loop = on_loop  # reads try the page cache on the event loop first
        self._offset = offset if length else 0
        self._length = length
        self._base = 0  # of the chunk's first byte in its file (a volume's, when packed)
        self._left = 0  # bytes of the range not yet read
        self.size = 0  # the chunk's bytes (its file's, less the sidecar and trailer)
        self._lock = threading.Lock()
        self._file: io.FileIO | None = None
        self._busy = False  # a worker thread is reading
        self._closing = False
        self.read_bytes = 0  # bytes read so far (the peer's chunk-read metrics)

    def __repr__(self) -> str:
        return f"ChunkRange({self._path.name}, {self._left} bytes left)"

    def open(self) -> None:
        """Open the file at the range's start (blocking: a worker thread); raises
        ChunkNotFound, CorruptData for a damaged sidecar or trailer, or OSError."""
        try:
            fd, noatime = open_noatime(self._path)
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {self._path.name} is not stored here") from None
        self._on_loop &= noatime  # a read on the loop must update no inode
        self._take(fd, os.pread)

    def open_cached(self) -> bool:
        """``open`` on the event loop, where neither the path's lookup nor the sidecar's
        read needs the disk (``node.disk.cached``): True if opened, False where ``open``
        must run in a worker thread. Raises ChunkNotFound, CorruptData as ``open``;
        Unsupported."""
        try:
            fd = open_cached(self._path)
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {self._path.name} is not stored here") from None
        if fd is None:
            return False
        try:
            self._take(fd, _pread_cached)
        except _NotCached:
            return False
        return True

    def _take(self, fd: int, pread: Callable[[int, int, int], bytes]) -> None:
        """Read the sidecar of the chunk open at ``fd`` (with ``pread``), seek to the
        range's start and keep it; ``fd`` is closed on an error, or when ``close`` came
        while it opened (the reader went away)."""
        try:
            size = read_sidecar(fd, os.fstat(fd).st_size, pread).size
        except BaseException:
            os.close(fd)
            raise
        self._keep(fd, 0, size)

    def _keep(self, fd: int, base: int, size: int) -> None:
        """Keep the chunk of ``size`` bytes at ``base`` of the file open at ``fd``, at the
        range's start; ``fd`` is closed on an error, or when ``close`` came while it opened
        (the reader went away)."""
        try:
            os.lseek(fd, base + self._offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        file = io.FileIO(fd, "rb", closefd=True)
        with self._lock:
            if not self._closing:
                self._file, self._base, self.size = file, base, size
                ends = size if not self._length else min(size, self._offset + self._length)
                self._left = max(0, ends - self._offset)
                return
        file.close()

    def open_packed(self, volume: Path, base: int, size: int, fd: int | None = None) -> None:
        """Read the range from a packed chunk, ``size`` bytes at ``base`` of ``volume``,
        opened here (blocking: a worker thread) unless ``fd`` is given (opened on the loop
        with ``O_NOATIME``): its own open file, not a ``dup`` (reads move its offset),
        closed with the range, or here when ``close`` came while it opened. Raises
        FileNotFoundError (a volume compacted away meanwhile), OSError."""
        if fd is None:
            fd, noatime = open_noatime(volume)
            self._on_loop &= noatime  # a read on the loop must update no inode
        self._path = volume
        self._keep(fd, base, size)

    def narrow(self, start: int, end: int) -> None:
        """Read bytes ``[start, end)`` of the chunk instead (cut at ``size``), before any
        read: one ``lseek``, on the loop."""
        with self._lock:
            if self._file is None or self._busy or self.read_bytes:
                raise ValueError("a chunk range is narrowed once open, before any read")
            self._file.seek(self._base + start)
            self._left = max(0, min(end, self.size) - start)

    async def send(self, transport: asyncio.WriteTransport, stall: float) -> bool:
        """Send the rest of the range on ``transport`` with sendfile(2), zero-copy, before
        any read; False, and nothing sent, where it cannot (TLS, bytes still queued:
        ``node.disk.sendfile``): read the range with ``iter_any`` then. Raises what
        ``sendfile`` raises (a closed connection; ReaderStalled when the reader takes
        nothing for ``stall`` seconds)."""
        with self._lock:
            file = self._file
            if file is None or self._busy or self.read_bytes:
                raise ValueError("a chunk range is sent once open, before any read")
        if not self._left:
            return True
        wanted = self._left
        try:
            sent = await sendfile(transport, file, file.tell(), wanted, stall, self._in_thread)
        except asyncio.SendfileNotAvailableError:
            return False
        self._left -= sent
        self.read_bytes += sent
        if sent < wanted:  # the file ended early: the answer's length would be a lie
            transport.close()
            raise ConnectionResetError(f"{self._path.name} ended {wanted - sent} bytes early")
        return True

    def close(self) -> None:
        """Close the file now, or have the read in flight close it when it returns."""
        with self._lock:
            self._closing = True
            file = None if self._busy else self._file
            if file is not None:
                self._file = None
        if file is not None:
            file.close()

    async def _in_thread(self, call: Callable[[int], int]) -> int:
        """``call(the file's descriptor)`` in one of the ``READERS`` threads
        (``node.disk.sendfile``'s InThread): the file stays open until it returns, ``close``
        meanwhile or not."""
        return await reading(self._with_file, lambda file: call(file.fileno()))

    def _fill(self, view: memoryview) -> int:
        """Read into ``view`` (blocking: a worker thread) until it is full or the file
        ends; the bytes read."""

        def fill(file: io.FileIO) -> int:
            done = 0
            while done < len(view):
                got = file.readinto(view[done:])
                if not got:
                    break
                done += got
            return done

        return self._with_file(fill)

    def _with_file(self, work: Callable[[io.FileIO], T]) -> T:
        """``work(file)`` (blocking: a worker thread), the file closed after it if ``close``
        came meanwhile. Raises ValueError if the range is closed already."""
        with self._lock:
            file = self._file
            if file is None or self._closing:
                raise ValueError("read of a closed chunk range")
            self._busy = True
        try:
            return work(file)
        finally:
            last = self._done_reading()
            if last is not None:  # ``close`` came while it read: closed here, after it
                last.close()

    def _fill_cached(self, view: memoryview) -> int:
        """Read into ``view`` what the page cache holds of the range's next bytes, on the
        loop (``close`` runs there too, so it cannot come meanwhile); the bytes read. After
        a miss, which starts the kernel's readahead from the loop, the range stops asking."""
        with self._lock:
            file = self._file
            if file is None or self._closing or self._busy:
                raise ValueError("read of a closed chunk range")
        try:
            got = preadinto_cached(file.fileno(), view, -1)
        except Unsupported:
            got = 0
        if got < len(view):
            self._on_loop = False
        return got

    def _done_reading(self) -> io.FileIO | None:
        """Mark the read done; the file, taken, if ``close`` came meanwhile."""
        with self._lock:
            self._busy = False
            if not self._closing:
                return None
            file, self._file = self._file, None
            return file

    async def _read(self, view: memoryview) -> int:
        """Read the range's next bytes into ``view`` (up to what is left); the bytes read.
        What the page cache holds of up to ``READ_ON_LOOP`` bytes is read on the loop."""
        view = view[: self._left]
        got = self._fill_cached(view) if self._on_loop and len(view) <= READ_ON_LOOP else 0
        if got < len(view):
            got += await reading(self._fill, view[got:])
        self._left -= got
        self.read_bytes += got
        return got

    async def readinto(self, view: memoryview) -> None:
        """Fill ``view`` with the range's next bytes."""
        wanted = len(view)
        got = await self._read(view)
        if got < wanted:
            raise asyncio.IncompleteReadError(bytes(view[:got]), wanted)

    async def readexactly(self, n: int) -> bytes:
        """The range's next ``n`` bytes."""
        data = bytearray(n)
        await self.readinto(memoryview(data))
        return bytes(data)

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The rest of the range, in pieces of up to ``PIECE`` bytes."""
        while self._left:
            piece = bytearray(min(self.PIECE, self._left))
            got = await self._read(memoryview(piece))
            if not got:
                return
            yield bytes(piece[:got])


def seal(meta: ChunkMeta) -> bytes:
    """What follows a chunk's bytes in its file: the sidecar, then its ``TRAILER``."""
    sidecar = meta.to_bytes()
    check = xxhash.xxh3_64_intdigest(sidecar, seed=len(sidecar))
    return sidecar + TRAILER.pack(TRAILER_MAGIC, len(sidecar), check)


def _trailer(size: int, tail: bytes) -> tuple[int, int]:
    """The sidecar's length and checksum from the trailer of a chunk file of ``size`` bytes
    that ends in ``tail``. Raises CorruptData for a file too short to hold one, or a
    trailer that is not one."""
    if size < TRAILER.size:
        raise CorruptData(f"a chunk file of {size} bytes has no trailer")
    if len(tail) < TRAILER.size:  # cut short since its size was taken
        raise CorruptData(f"a chunk file of {size} bytes ends early")
    magic, length, check = TRAILER.unpack(tail[-TRAILER.size :])
    if magic != TRAILER_MAGIC or length > size - TRAILER.size:
        raise CorruptData(f"a chunk file of {size} bytes ends in no trailer")
    return length, check


def file_size(meta: ChunkMeta, size: int) -> int:
    """The bytes a chunk of ``size`` bytes owned by ``meta`` takes as a file (with its
    sidecar and trailer): what ``used_bytes`` counts for it, and a write reserves."""
    blocks = -(-size // meta.block_size) if meta.block_size > 0 else 0
    digests = bytes(DIGEST_SIZE * blocks)
    probe = msgspec.structs.replace(meta, size=size, block_digests=digests, stored_at=time.time())
    return size + len(probe.to_bytes()) + TRAILER.size


class _NotCached(Exception):
    """Raised by ``_pread_cached``: the bytes asked are not all in the page cache."""


def _pread_cached(fd: int, length: int, offset: int) -> bytes:
    """``os.pread`` from the page cache alone; raises _NotCached, Unsupported."""
    data = pread_cached(fd, length, offset)
    if data is None:
        raise _NotCached
    return data


def read_sidecar(
    fd: int, size: int, pread: Callable[[int, int, int], bytes] = os.pread
) -> ChunkMeta:
    """The checked sidecar of a chunk file of ``size`` bytes (one ``pread`` for a sidecar of
    up to ~4 KiB, two for a longer one; blocking, unless ``pread`` is one that raises where
    it would wait). Raises CorruptData for a torn or damaged trailer or sidecar, or one whose
    size is not the file's; what ``pread`` raises."""
    sidecar, check = _sidecar_bytes(fd, size, pread)
    length = len(sidecar)
    if xxhash.xxh3_64_intdigest(sidecar, seed=length) != check:
        raise CorruptData("a chunk's sidecar fails its checksum")
    meta = ChunkMeta.from_bytes(sidecar)
    if meta.size != size - TRAILER.size - length:
        raise CorruptData(f"a chunk's sidecar says {meta.size} bytes; its file holds more or less")
    return meta


def salvage_sidecar(
    fd: int, size: int, pread: Callable[[int, int, int], bytes] = os.pread
) -> ChunkMeta | None:
    """The sidecar of a chunk file of ``size`` bytes decoded whatever its checksum says
    (``read_sidecar`` checks it), or None where its trailer or it does not decode."""
    try:
        return ChunkMeta.from_bytes(_sidecar_bytes(fd, size, pread)[0])
    except CorruptData:
        return None


def _sidecar_bytes(
    fd: int, size: int, pread: Callable[[int, int, int], bytes]
) -> tuple[bytes, int]:
    """The sidecar of a chunk file of ``size`` bytes, unchecked, and the checksum its
    trailer gives it; raises CorruptData where the trailer is not one (``_trailer``)."""
    tail = pread(fd, min(size, TAIL_READ), size - min(size, TAIL_READ))
    length, check = _trailer(size, tail)
    if length + TRAILER.size > len(tail):
        tail = pread(fd, length + TRAILER.size, size - length - TRAILER.size)
    return tail[len(tail) - TRAILER.size - length : len(tail) - TRAILER.size], check


def _with_open(path: Path, work: Callable[..., T], *args: Any) -> T:
    """``work(fd, *args)`` on ``path`` opened read-only (blocking); raises
    FileNotFoundError."""
    fd = open_noatime(path)[0]
    try:
        return work(fd, *args)
    finally:
        os.close(fd)


def _shifted(base: int) -> Callable[[int, int, int], bytes]:
    """``os.pread`` of a chunk that starts ``base`` bytes into its file (a volume)."""
    return lambda fd, length, offset: os.pread(fd, length, base + offset)


def _matches(fd: int, base: int, meta: ChunkMeta) -> bool:
    """Whether the ``meta.size`` bytes at ``base`` of the file open at ``fd`` are there,
    with the block digests ``meta`` promises (blocking; ``WRITE_BATCH`` bytes a read)."""
    digests = BlockDigests(meta.block_size)
    done = 0
    while done < meta.size and (
        piece := os.pread(fd, min(WRITE_BATCH, meta.size - done), base + done)
    ):
        digests.update(piece)
        done += len(piece)
    return done == meta.size and digests.digests() == meta.block_digests


def sidecar_of(path: Path) -> ChunkMeta:
    """The checked sidecar a chunk file ends with (blocking); raises FileNotFoundError,
    CorruptData."""
    with path.open("rb", buffering=0) as file:
        return read_sidecar(file.fileno(), os.fstat(file.fileno()).st_size)


@dataclass(frozen=True)
class _Sealing:
    """The end of a chunk write, in one worker-thread hop: the last bytes, the sidecar."""

    file: BinaryIO | None  # None: nothing written yet, ``rest`` is the whole chunk
    temp: Path
    final: Path
    rest: list[Buffer]
    meta: ChunkMeta
    shards: _Shards

    def run(self) -> tuple[int | None, int, OSError | None]:
        """Write the rest of the chunk and seal it with its sidecar, then make it durable
        and visible (blocking); return a replaced copy's file size (None: there was none),
        this one's, and the error of a directory fsync that failed after the rename (the
        chunk is then visible, maybe not durably: counted, but its write fails). A chunk of
        up to ``WRITE_BATCH`` bytes is created here, so its whole write is this one hop (a
        hop costs 0.23-0.34 ms of CPU on the VMs of docs/architecture.md, "The manifest
        log"; three of them per chunk did).

        Two fsyncs: the file's, then its shard directory's for the rename (and first
        ``chunks-v2/``'s when the shard directory is new: ``_Shards.make``). A crash before
        the rename is durable leaves the temporary file in ``incoming/`` (never
        acknowledged), removed on start; no crash can leave a visible chunk without its
        sidecar. A failure before the rename closes and removes the temporary file here (its
        write may have stopped waiting: a cancelled one).
        """
        file = _create(self.temp) if self.file is None else self.file
        final = self.final
        try:
            with file:
                _write_all(file, self.rest)
                file.write(seal(self.meta))
                file.flush()
                os.fsync(file.fileno())
                stored = file.tell()
            self.shards.make(final.parent)
            try:  # (one stat, not exists() then stat())
                replaced: int | None = final.stat().st_size
            except FileNotFoundError:
                replaced = None
            os.replace(self.temp, final)
        except BaseException:
            self.temp.unlink(missing_ok=True)
            raise
        try:
            fsync_dir(final.parent)
        except OSError as unsynced:
            return replaced, stored, unsynced
        return replaced, stored, None


class _Shards:
    """The shard directories of ``chunks-v2/`` known to be durable.

    A chunk's rename into its shard is made durable by the shard's fsync; a shard's own
    entry needs ``chunks-v2/``'s. The first write into a new shard makes and syncs it, and
    writes into it wait for that (whatever their chunk ids: a lock of their own), so none is
    acknowledged before the shard's entry is durable; a failed sync is tried again by the
    next write. Shards found at the store's opening survived whatever came before: durable.
    Not all 256 made at once: each directory is an inode, and tests open thousands of stores.
    """

    def __init__(self) -> None:
        self._durable: set[str] = set()
        self._lock = threading.Lock()

    def found(self, shards: Iterable[Path]) -> None:
        self._durable.update(shard.name for shard in shards)

    def make(self, shard: Path) -> None:
        """Make ``shard`` and its entry durable unless known to be (blocking: a worker
        thread); raises OSError."""
        if shard.name in self._durable:
            return
        with self._lock:
            if shard.name in self._durable:  # made while this one waited
                return
            shard.mkdir(exist_ok=True)
            fsync_dir(shard.parent)
            self._durable.add(shard.name)


def _write_all(file: BinaryIO, pieces: list[Buffer]) -> None:
    for piece in pieces:
        file.write(piece)


def _report_abandoned(commit: asyncio.Future[None]) -> None:
    """Log the failure of a commit its write stopped waiting for (a done callback)."""
    if not commit.cancelled() and (exc := commit.exception()) is not None:
        log.warning("committing a chunk whose write was cancelled failed: %r", exc)


def _discard(file: BinaryIO, temp: Path) -> None:
    file.close()
    temp.unlink(missing_ok=True)


def _create(temp: Path) -> BinaryIO:
    return open(temp, "wb")


async def _open(temp: Path) -> BinaryIO:
    """Create the temp file of a write in a worker thread; a cancelled caller leaves none."""
    opening = _Opening(temp)
    try:
        return await asyncio.to_thread(opening.open)
    except asyncio.CancelledError:  # the thread may open it anyway: closed either way
        opening.abandon()
        raise


class _Opening:
    """A temp file opened in a worker thread for a write that may be cancelled meanwhile.

    Whichever comes second, the thread's open or the write's ``abandon``, closes and removes
    the file: nothing depends on the event loop still running a callback (a loop shutting
    down cancels every task, and a result handed to a cancelled future is dropped unclosed).
    """

    def __init__(self, temp: Path) -> None:
        self._temp = temp
        self._lock = threading.Lock()
        self._abandoned = False
        self._file: BinaryIO | None = None

    def open(self) -> BinaryIO:
        """Open the temp file (blocking: a worker thread); closed by _Sealing.run or _discard."""
        file = _create(self._temp)
        with self._lock:
            if not self._abandoned:
                self._file = file
                return file
        _discard(file, self._temp)
        raise asyncio.CancelledError

    def abandon(self) -> None:
        """The write was cancelled: close and remove the file if it is open (on the loop:
        a close and an unlink), else have the thread do it when it opens."""
        with self._lock:
            self._abandoned = True
            file, self._file = self._file, None
        if file is not None:
            _discard(file, self._temp)


def _convert(earlier: Path, chunks: Path) -> None:
    """Move the chunks of the earlier layout under ``earlier`` (the sidecar in a file of its
    own) into ``chunks``, each sealed with its sidecar; blocking, at open, before anything
    is served. A million chunks cost a read and a write of each one's end and two syncs of
    the file system, not a million fsyncs:

    1. each chunk beside its sidecar is sealed in place (cut back to the sidecar's size,
       then the sidecar and trailer appended); a crash's leftovers of that layout go, as
       its start removed them (a sidecar's temporary file, a sidecar without its chunk);
    2. ``sync(2)``: every sealed chunk is durable before any sidecar goes;
    3. each chunk is renamed into ``chunks`` and its sidecar removed;
    4. ``sync(2)`` again, then ``earlier`` is removed.

    A start after a crash anywhere finds ``earlier`` and goes on: a chunk still beside its
    sidecar is sealed again, alike; one without it was sealed in a synced step 1 (moved) or
    is that layout's own crash leftover, never acknowledged (removed). A chunk shorter than
    its sidecar says, or with a sidecar that does not decode, was corrupt: it is removed
    (not reported: anti-entropy finds it missing and has it rebuilt). Other files are left.
    """
    started = time.monotonic()
    shards = [shard for shard in earlier.iterdir() if shard.is_dir()]
    log.info("moving the chunks of %d shards from %s/ into %s/", len(shards), earlier, chunks)
    moves: list[tuple[Path, Path | None]] = []
    removed = 0
    for shard in shards:
        names = set(os.listdir(shard))
        for name in sorted(names):
            path = shard / name
            if CHUNK_ID.fullmatch(name):
                sidecar = shard / (name + META)
                if name + META in names:
                    if _seal_in_place(path, sidecar):
                        moves.append((path, sidecar))
                    else:
                        removed += 1
                elif _is_sealed(path):  # sealed by a start that crashed later
                    moves.append((path, None))
                else:  # that layout's crash between a write's renames
                    path.unlink()
                    removed += 1
            elif name.endswith(".tmp") or (
                name.endswith(META) and name.removesuffix(META) not in names
            ):
                path.unlink()
                removed += 1
    os.sync()
    for path, its_sidecar in moves:
        target = chunks / path.parent.name / path.name
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        if its_sidecar is not None:
            its_sidecar.unlink()
    os.sync()
    for shard in shards:
        with contextlib.suppress(OSError):  # a file of someone else's stays, and the shard
            shard.rmdir()
    with contextlib.suppress(OSError):
        earlier.rmdir()
    log.info(
        "moved %d chunks into %s/ and removed %d leftovers in %.1f s",
        len(moves),
        chunks,
        removed,
        time.monotonic() - started,
    )


def _seal_in_place(chunk: Path, sidecar: Path) -> bool:
    """Append an earlier-layout sidecar (and a trailer) to its chunk, cut back to the
    sidecar's size first; not synced. False, both removed, for an undecodable sidecar or a
    chunk shorter than it says."""
    try:
        meta = ChunkMeta.from_bytes(sidecar.read_bytes())
        with chunk.open("r+b") as file:
            if os.fstat(file.fileno()).st_size < meta.size:
                raise CorruptData(f"shorter than its sidecar's {meta.size} bytes")
            file.truncate(meta.size)
            file.seek(meta.size)
            file.write(seal(meta))
    except CorruptData as exc:
        log.error("chunk %s: %s; removing it for repair", chunk.name, exc)
        chunk.unlink()
        sidecar.unlink()
        return False
    return True


def _is_sealed(path: Path) -> bool:
    """Whether a chunk file ends in a whole sidecar (blocking)."""
    try:
        sidecar_of(path)
    except CorruptData:
        return False
    return True


def _unlink(path: Path) -> int:
    size = path.stat().st_size
    path.unlink()
    return size
