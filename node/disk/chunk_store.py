"""Chunks on one peer's disk.

Layout under the data directory::

    incoming/<chunk id>.<token>   being received; never served; removed on start
    chunks/<2 hex>/<chunk id>     complete: fsynced, then renamed into place
    chunks/<2 hex>/<chunk id>.meta   its sidecar: file name, version, index, block digests

A chunk is visible only once all of its bytes are durable, so a reader never sees a
half-written chunk and a crash leaves at worst a stray file in ``incoming/``. The sidecar is
made durable and renamed first, so every visible chunk has one: it lets the scrubber verify
the chunk without its manifest and find the manifest from the chunk. One directory fsync
makes both renames durable; a chunk a crash left without its sidecar was never acknowledged,
and is removed when the store opens. All disk work runs in worker threads; the event loop
only keeps the byte and chunk counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from node.disk.durable import fsync_dir, write_atomically
from node.disk.locks import KeyedLocks
from node.errors import ChunkNotFound, IncompleteBody, InsufficientStorage, InvalidRequest
from node.model.digests import BlockDigests, Buffer
from node.model.manifest import ChunkMeta

log = logging.getLogger(__name__)

CHUNK_ID = re.compile(r"[0-9a-f]{32}-[0-9]{1,3}")
WRITE_BATCH = 1 << 20
META = ".meta"


class ChunkStore:
    """The complete chunks of one peer, plus counters of what they use."""

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self._chunks = root / "chunks"
        self._incoming = root / "incoming"
        self._max_bytes = max_bytes
        self._reserved = 0  # bytes of writes in progress, held against max_bytes
        self.used_bytes = 0
        self.chunk_count = 0
        self._locks = KeyedLocks()

    def __repr__(self) -> str:
        return (
            f"ChunkStore({self._chunks.parent}, chunks={self.chunk_count}, used={self.used_bytes})"
        )

    async def open(self) -> None:
        """Create the directories, drop leftovers of interrupted writes, count what is stored."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self._chunks.mkdir(parents=True, exist_ok=True)
        if self._incoming.exists():
            leftovers = list(self._incoming.iterdir())
            if leftovers:
                log.info("removing %d interrupted chunk writes from incoming/", len(leftovers))
            shutil.rmtree(self._incoming)
        self._incoming.mkdir()
        sizes, strays = [], 0
        for shard in self._chunks.iterdir():  # one listing per shard, no stat but the sizes
            names = set(os.listdir(shard))
            for name in names:
                if CHUNK_ID.fullmatch(name):
                    if name + META in names:
                        sizes.append((shard / name).stat().st_size)
                    else:  # a crash before a write's directory fsync (never acknowledged)
                        log.warning("chunk %s has no sidecar; removing it", name)
                        (shard / name).unlink()
                elif _stray(name, names):
                    strays += 1
                    (shard / name).unlink()
        if strays:
            log.info("removed %d sidecars left without their chunks by a crash", strays)
        self.used_bytes, self.chunk_count = sum(sizes), len(sizes)

    def _chunk_files(self) -> Iterator[Path]:
        for shard in self._chunks.iterdir():
            for path in shard.iterdir():
                if CHUNK_ID.fullmatch(path.name):
                    yield path

    async def chunk_ids(self) -> list[str]:
        """The ids of every stored chunk."""
        return await asyncio.to_thread(lambda: sorted(p.name for p in self._chunk_files()))

    async def meta(self, chunk_id: str) -> ChunkMeta:
        """A chunk's sidecar; raises ChunkNotFound or CorruptData."""
        path = self._path(chunk_id)
        try:
            data = await asyncio.to_thread(path.with_name(path.name + META).read_bytes)
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {chunk_id} is not stored here") from None
        return ChunkMeta.from_bytes(data)

    async def missing(self, chunk_ids: list[str]) -> list[str]:
        """The ids of ``chunk_ids`` not stored here whole (chunk and sidecar); one ``stat``
        pair per id, in a thread. Raises InvalidRequest for a malformed id."""
        paths = [(chunk_id, self._path(chunk_id)) for chunk_id in chunk_ids]

        def check() -> list[str]:
            return [
                chunk_id
                for chunk_id, path in paths
                if not (path.is_file() and path.with_name(path.name + META).is_file())
            ]

        return await asyncio.to_thread(check)

    def path(self, chunk_id: str) -> Path:
        """Where a complete chunk lives; raises ChunkNotFound if it is not stored."""
        path = self._path(chunk_id)
        if not path.is_file():
            raise ChunkNotFound(f"chunk {chunk_id} is not stored here")
        return path

    @contextlib.asynccontextmanager
    async def open_range(
        self, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[ChunkRange]:
        """Bytes ``[offset, offset+length)`` of a stored chunk as a stream read in worker
        threads (``length`` 0: all of the chunk, as a peer call's); raises ChunkNotFound,
        InvalidRequest for a malformed id, OSError for a failed open. The file stays open
        (and readable, even if the chunk is deleted meanwhile) until the block exits."""
        chunk = ChunkRange(self._path(chunk_id), offset, length)
        try:
            await asyncio.to_thread(chunk.open)
            yield chunk
        finally:
            chunk.close()

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
        (when given). Raises IncompleteBody, InsufficientStorage or the stream's own error.
        """
        final = self._path(chunk_id)
        self._reserve(chunk_id, expected_size or 0)
        try:
            return await self._write(chunk_id, final, pieces, expected_size, meta)
        finally:
            self._reserved -= expected_size or 0

    def _reserve(self, chunk_id: str, size: int) -> None:
        """Hold ``size`` bytes for a write; refuse one that would pass ``max_bytes``."""
        if self._over_limit(size):
            raise InsufficientStorage(
                f"storing chunk {chunk_id} ({size} bytes) would pass this peer's limit "
                f"of {self._max_bytes} bytes ({self.used_bytes} used)"
            )
        self._reserved += size

    def _over_limit(self, more: int) -> bool:
        limit = self._max_bytes
        return limit is not None and self.used_bytes + self._reserved + more > limit

    async def _write(
        self,
        chunk_id: str,
        final: Path,
        pieces: AsyncIterable[Buffer],
        expected_size: int | None,
        meta: ChunkMeta,
    ) -> ChunkMeta:
        temp = self._incoming / f"{chunk_id}.{secrets.token_hex(6)}"
        opening = _Opening(temp)
        try:
            file = await asyncio.to_thread(opening.open)
        except asyncio.CancelledError:  # the thread may open it anyway: closed either way
            opening.abandon()
            raise
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
                if expected_size is None and self._over_limit(size + batched):
                    raise InsufficientStorage(f"no room left for chunk {chunk_id}")
                if batched >= WRITE_BATCH:
                    await asyncio.to_thread(_write_all, file, batch)
                    size += batched
                    batch, batched = [], 0
            await asyncio.to_thread(_write_all, file, batch)
            size += batched
            if expected_size is not None and size != expected_size:
                raise IncompleteBody(f"chunk {chunk_id}: got {size} of {expected_size} bytes")
            meta = msgspec.structs.replace(
                meta, size=size, block_digests=digests.digests(), stored_at=time.time()
            )
            # Shielded: once the rename may happen, the counters must follow it, and the
            # temp file is the commit's (a cancelled write must not remove it under it).
            committing = asyncio.ensure_future(self._commit(chunk_id, file, temp, final, meta))
            await asyncio.shield(committing)
        except BaseException as exc:
            if committing is not None and not committing.done():
                committing.add_done_callback(_report_abandoned)  # it ends on its own
                raise
            # Closed here, on the loop (its last buffered piece at most): a worker-thread job
            # queued while the loop shuts down may never run, and the file would leak.
            # A temp file left by a job that never ran is removed on the next start.
            with contextlib.suppress(OSError):
                file.close()
            await asyncio.shield(asyncio.to_thread(temp.unlink, missing_ok=True))
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(f"no space left to store chunk {chunk_id}") from exc
            raise
        return meta

    async def _commit(
        self, chunk_id: str, file: BinaryIO, temp: Path, final: Path, meta: ChunkMeta
    ) -> None:
        async with self._locks.hold(chunk_id):  # two writes of one id count once
            replaced = await asyncio.to_thread(_commit, file, temp, final, meta)
            if replaced is not None:
                self.used_bytes -= replaced
                self.chunk_count -= 1
            self.used_bytes += meta.size
            self.chunk_count += 1

    async def delete(self, chunk_id: str) -> None:
        """Remove a chunk and its sidecar; raises ChunkNotFound if it is not stored."""
        path = self._path(chunk_id)
        async with self._locks.hold(chunk_id):
            try:
                size = await asyncio.to_thread(_unlink, path)
            except FileNotFoundError:
                raise ChunkNotFound(f"chunk {chunk_id} is not stored here") from None
            self.used_bytes -= size
            self.chunk_count -= 1


class ChunkRange:
    """A range of a chunk file being read: a ``ChunkStream`` (``node.cluster.transport``)
    for a peer that reads its own chunk, without a loopback HTTP request. Each read is one
    worker-thread hop; ``readinto`` fills a whole block in one.

    A reader cancelled on the loop may leave a read running in its worker thread, so the
    file is closed by whichever comes last, ``close`` (on the loop) or that read (in its
    thread), never under a read: a descriptor closed there could be reused by the time the
    read's ``read(2)`` runs, which would then read another file's or socket's bytes. The
    lock is held only to look at the state, never across a read, so the loop never waits
    on the disk. Reads raise asyncio.IncompleteReadError where the range or the file ends
    before the bytes asked (a stream's reader does the same), OSError for a failed read.
    """

    PIECE = 1 << 18  # bytes per piece of ``iter_any``

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._path = path
        self._offset = offset if length else 0
        self._length = length
        self._left = 0  # bytes of the range not yet read
        self._lock = threading.Lock()
        self._file: io.FileIO | None = None
        self._busy = False  # a worker thread is reading
        self._closing = False
        self.read_bytes = 0  # bytes read so far (the peer's chunk-read metrics)

    def __repr__(self) -> str:
        return f"ChunkRange({self._path.name}, {self._left} bytes left)"

    def open(self) -> None:
        """Open the file at the range's start (blocking: a worker thread); raises
        ChunkNotFound, or OSError."""
        try:
            file = self._path.open("rb", buffering=0)
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {self._path.name} is not stored here") from None
        try:
            size = os.fstat(file.fileno()).st_size
            file.seek(self._offset)
        except BaseException:
            file.close()
            raise
        with self._lock:
            if not self._closing:
                self._file = file
                ends = size if not self._length else min(size, self._offset + self._length)
                self._left = max(0, ends - self._offset)
                return
        file.close()  # closed while it opened: the reader went away

    def close(self) -> None:
        """Close the file now, or have the read in flight close it when it returns."""
        with self._lock:
            self._closing = True
            file = None if self._busy else self._file
            if file is not None:
                self._file = None
        if file is not None:
            file.close()

    def _fill(self, view: memoryview) -> int:
        """Read into ``view`` (blocking: a worker thread) until it is full or the file
        ends; the bytes read."""
        with self._lock:
            file = self._file
            if file is None or self._closing:
                raise ValueError("read of a closed chunk range")
            self._busy = True
        try:
            done = 0
            while done < len(view):
                got = file.readinto(view[done:])
                if not got:
                    break
                done += got
            return done
        finally:
            last = self._done_reading()
            if last is not None:  # ``close`` came while it read: closed here, after it
                last.close()

    def _done_reading(self) -> io.FileIO | None:
        """Mark the read done; the file, taken, if ``close`` came meanwhile."""
        with self._lock:
            self._busy = False
            if not self._closing:
                return None
            file, self._file = self._file, None
            return file

    async def _read(self, view: memoryview) -> int:
        """Read the range's next bytes into ``view`` (up to what is left); the bytes read."""
        got = await asyncio.to_thread(self._fill, view[: self._left])
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


def _commit(file: BinaryIO, temp: Path, final: Path, meta: ChunkMeta) -> int | None:
    """Make a received chunk durable and visible, sidecar first; return a replaced copy's size.

    Three fsyncs: the chunk's bytes, the sidecar's, and one of the directory for both
    renames. Until that last one a crash may keep either rename or both: a sidecar alone is
    what a crash between the renames always left, and a chunk alone (never acknowledged) is
    removed when the store opens. A chunk written over its own copy may be left beside its
    old sidecar: the same chunk id is the same bytes and digests, only ``stored_at`` older.
    """
    file.flush()
    os.fsync(file.fileno())
    file.close()
    if not final.parent.is_dir():  # a new shard: its entry in chunks/ must be durable too
        final.parent.mkdir(exist_ok=True)
        fsync_dir(final.parent.parent)
    replaced = final.stat().st_size if final.exists() else None
    write_atomically(final.with_name(final.name + META), meta.to_bytes(), sync_directory=False)
    os.replace(temp, final)
    fsync_dir(final.parent)
    return replaced


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
        """Open the temp file (blocking: a worker thread); closed by _commit or _discard."""
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


def _stray(name: str, shard: set[str]) -> bool:
    """Whether ``name``, in a shard directory holding ``shard``, is a crash's leftover: a
    sidecar being written (``write_atomically``'s temporary file), or one whose chunk is gone
    (a crash between a write's two renames, or a delete's two unlinks)."""
    if name.endswith(".tmp"):
        return True
    chunk = name.removesuffix(META)
    return chunk != name and CHUNK_ID.fullmatch(chunk) is not None and chunk not in shard


def _unlink(path: Path) -> int:
    size = path.stat().st_size
    path.unlink()
    path.with_name(path.name + META).unlink(missing_ok=True)
    return size
