"""Streams of one chunk each way: a writer fed block by block, a reader that reads ahead.

A ``ChunkWriter`` sends one chunk to its holder from a bounded queue of blocks, so a slow
holder slows the sender instead of filling memory, and one that takes nothing for
``stall_timeout`` is dropped (and reported down) while the other chunks go on. A
``ChunkReader`` reads one chunk's blocks for a range of stripes ahead of the consumer,
verifying each against the manifest; on the first failure it ends, and the consumer switches
to another chunk. ``ChunkWriters`` is a set of writers that all end together: finished, or
aborted when anything fails, including as soon as too few of them are left to reach the
write quorum (a body is then read no further).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from types import TracebackType

from node.cluster.peers import Peers
from node.errors import (
    CorruptData,
    InsufficientStorage,
    PeerUnavailable,
    RingstoreError,
    Unavailable,
)
from node.model.digests import Buffer, block_digest
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, ChunkRef
from node.waiting import within

log = logging.getLogger(__name__)


class ChunkWriter:
    """Streams one chunk to its holder from a bounded queue of blocks."""

    _END = b""

    def __init__(
        self,
        peers: Peers,
        holder: str,
        chunk_id: str,
        owner: ChunkMeta,
        size: int | None,
        depth: int,
        stall_timeout: float,
    ) -> None:
        self.holder = holder
        self.chunk_id = chunk_id
        self.error: BaseException | None = None
        self._peers = peers
        self._size = size
        self._stall_timeout = stall_timeout
        self._queue: asyncio.Queue[Buffer] = asyncio.Queue(depth)
        self._task = asyncio.ensure_future(
            peers.put_chunk(holder, chunk_id, self._blocks(), size, owner)
        )
        self._task.add_done_callback(self._on_done)

    def __repr__(self) -> str:
        state = "failed" if self.error else "done" if self._task.done() else "sending"
        queued = self._queue.qsize()
        return f"ChunkWriter({self.chunk_id} -> {self.holder[:8]}, {state}, queued={queued})"

    async def _blocks(self) -> AsyncIterator[Buffer]:
        """The queued blocks; with a known size the stream ends with its last byte, not at
        the end marker, so the request body is complete before the holder can answer (an
        answer that arrives while aiohttp still waits for body bytes makes it close the
        connection instead of pooling it: a new TCP connection per chunk)."""
        left = self._size
        while left != 0 and (block := await self._queue.get()) is not self._END:
            if left is not None:
                left -= len(block)
            yield block

    def _on_done(self, task: asyncio.Task[int]) -> None:
        if task.cancelled():
            self.error = self.error or asyncio.CancelledError()
        elif task.exception() is not None:
            self.error = task.exception()
            log.warning("chunk %s to %s failed: %s", self.chunk_id, self.holder, self.error)
        while not self._queue.empty():  # unblock a sender waiting for room
            self._queue.get_nowait()

    async def send(self, block: Buffer) -> None:
        """Queue a block; drop this chunk if its holder takes nothing for stall_timeout."""
        if self._task.done():
            return
        try:
            await within(self._queue.put(block), self._stall_timeout)
        except asyncio.TimeoutError:
            self.error = PeerUnavailable(self.holder, f"stalled for {self._stall_timeout}s")
            log.warning("chunk %s to %s dropped: %s", self.chunk_id, self.holder, self.error)
            self._peers.report_failure(self.holder, str(self.error))
            self._task.cancel()

    async def finish(self) -> int | None:
        """End the stream; return the stored size, or None if this chunk failed."""
        await self.send(self._END)
        await self.wait()
        if self._task.cancelled() or self._task.exception() is not None:
            return None
        return self._task.result()

    def abort(self) -> None:
        self._task.cancel()

    async def wait(self) -> None:
        await asyncio.wait([self._task])


class ChunkWriters:
    """Writers of one file version's chunks by index, ended together.

    Used as ``async with``: leaving the block with an exception (a cut-off body, a
    cancellation, a lost quorum) aborts every writer and waits until each has stopped, so
    nothing keeps sending after the operation failed. ``quorum`` is how many chunks must be
    stored (default: all).
    """

    def __init__(self, writers: Mapping[int, ChunkWriter], quorum: int | None = None) -> None:
        self.by_index = dict(writers)
        self.quorum = len(self.by_index) if quorum is None else quorum

    def __repr__(self) -> str:
        return f"ChunkWriters({list(self.by_index.values())}, quorum={self.quorum})"

    def shortfall(self, kept: int, what: str = "were stored") -> RingstoreError:
        """The error of a write of which only ``kept`` chunks (fewer than the quorum) made it:
        InsufficientStorage when a holder was out of space, else Unavailable."""
        message = f"only {kept} of {len(self.by_index)} chunks {what}; {self.quorum} needed"
        if any(isinstance(w.error, InsufficientStorage) for w in self.by_index.values()):
            return InsufficientStorage(f"{message}: peers are out of space")
        return Unavailable(message)

    def check_quorum(self) -> None:
        """Raise ``shortfall`` once fewer writers than the quorum are still going."""
        going = sum(1 for w in self.by_index.values() if w.error is None)
        if going < self.quorum:
            raise self.shortfall(going, "can still be stored")

    async def while_quorum(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """``body``'s pieces, read only while the quorum can still be reached: when holders
        refuse early (a quota, a full disk), the rest of the body is never read or coded."""
        async for piece in body:
            self.check_quorum()
            yield piece

    async def __aenter__(self) -> ChunkWriters:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is not None:
            for writer in self.by_index.values():
                writer.abort()
            await asyncio.gather(*(w.wait() for w in self.by_index.values()))

    async def send(self, blocks: Mapping[int, Buffer]) -> None:
        """Queue each writer's block of one stripe (``blocks`` by chunk index)."""
        for index, writer in self.by_index.items():
            await writer.send(blocks[index])

    async def finish(self) -> dict[int, int | None]:
        """End every stream; return each chunk's stored size (None: it failed)."""
        sizes = await asyncio.gather(*(w.finish() for w in self.by_index.values()))
        return dict(zip(self.by_index, sizes, strict=True))


class ChunkReader:
    """Reads one chunk's blocks for a range of stripes ahead of the consumer, verified.

    The reading task ends on the first failure (unreachable or silent holder, short or
    corrupt data); the consumer then gets None and switches to another chunk.
    """

    def __init__(
        self,
        peers: Peers,
        ref: ChunkRef,
        chunk_id: str,
        layout: Layout,
        stripes: range,
        depth: int,
    ) -> None:
        self.ref = ref
        self.chunk_id = chunk_id
        self._peers = peers
        self._layout = layout
        self._stripes = stripes
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(depth)
        self._task = asyncio.ensure_future(self._run())

    def __repr__(self) -> str:
        state = "ended" if self._task.done() else "reading"
        where = f"{self.chunk_id} @ {self.ref.holder[:8]}"
        return f"ChunkReader({where}, {state}, queued={self._queue.qsize()})"

    async def _run(self) -> None:
        layout, stripes = self._layout, self._stripes
        offset = layout.chunk_offset(stripes.start)
        last = stripes.stop - 1
        length = layout.chunk_offset(last) + layout.block_length(last) - offset
        try:
            async with self._peers.open_chunk(
                self.ref.holder, self.chunk_id, offset, length
            ) as stream:
                for stripe in stripes:
                    block = await stream.readexactly(layout.block_length(stripe))
                    if block_digest(block) != self.ref.block_digest(stripe):
                        raise CorruptData(f"chunk {self.chunk_id} block {stripe} fails its digest")
                    await self._queue.put(block)
        except Exception as exc:  # any failure means: read another chunk instead
            log.warning("reading chunk %s from %s: %r", self.chunk_id, self.ref.holder, exc)

    async def next_block(self, timeout: float) -> bytes | None:
        """The next stripe's block, or None if this chunk cannot give it within ``timeout``."""
        if self._queue.empty() and self._task.done():
            return None
        getting = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait(
            {getting, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getting in done:
            return getting.result()
        getting.cancel()
        if not self._queue.empty():  # the reader ended right after queueing its last block
            return self._queue.get_nowait()
        return None

    def close(self) -> None:
        self._task.cancel()
