"""Streams of one chunk each way: a writer fed block by block, a reader that reads ahead.

A ``ChunkWriter`` sends one chunk to its holder from a short queue of blocks, so a slow
holder slows the sender instead of filling memory, and one that takes nothing for
``stall_timeout`` is dropped (and reported down) while the other chunks go on. A
``ChunkReader`` reads one chunk's blocks for a range of stripes, verifying each against the
manifest, ahead of the consumer while the peer's ``BlockBudget`` allows and on demand
past it; on the first failure it ends, and the consumer switches to another chunk.
``ChunkWriters`` is a set of writers that all end together: finished, or aborted when
anything fails, including as soon as too few of them are left to reach the write quorum (a
body is then read no further).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from types import TracebackType

from node.cluster.peers import Peers
from node.cluster.protocol import FRAME_CHUNK_MAX
from node.cluster.transport import CHUNK_STREAM_BUFFERED, ChunkStream, FramedChunk, fills_blocks
from node.errors import (
    CorruptData,
    InsufficientStorage,
    NotFound,
    Overloaded,
    PeerUnavailable,
    RingstoreError,
    Unavailable,
)
from node.model.digests import Buffer, block_digest
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, ChunkRef
from node.waiting import wait_event, within

log = logging.getLogger(__name__)

READ_PIECE = 1 << 16  # bytes asked of a chunk stream at once: aiohttp's default buffer limit


def read_in_hand(layout: Layout, start: int, end: int) -> int:
    """Bytes a GET of file bytes ``[start, end)`` holds while it runs (``BlockBudget.admit``):
    the block it sends and the next one read, and what each of its k chunk streams buffers
    in the peer-call client: all of its range of the chunk where that is at most
    ``FRAME_CHUNK_MAX`` (it comes in one channel answer), else what a streamed answer
    buffers. 0 for an empty range (nothing is read)."""
    if end <= start:
        return 0
    block = min(layout.block_size, layout.chunk_size)
    stripes = layout.stripes_covering(start, end)
    first, last = stripes[0], stripes[-1]
    ranged = layout.chunk_offset(last) + layout.block_length(last) - layout.chunk_offset(first)
    per_stream = ranged if ranged <= FRAME_CHUNK_MAX else min(block, CHUNK_STREAM_BUFFERED)
    return min(end - start, 2 * block) + layout.k * per_stream


def write_in_hand(size: int | None, k: int, m: int, block_size: int) -> int:
    """Bytes a PUT of ``size`` bytes (None: not known, a chunked body) holds while it runs,
    in blocks sized to the body up to ``block_size`` (``node.datapath.stripes``). A body of
    more stripes than one: two stripes of ``k`` blocks at work (one filled or coded, one on
    its way to the holders: ``write_stripes`` queues a stripe only once the one before is
    written out) with the ``m`` parity blocks of both, and from the third stripe on the
    buffer of a third, which a writer's connection may still view when the next is begun
    (``cut_stripes`` then takes another). A body of one stripe: that stripe, its parity
    and a copy of its ``k`` data blocks framed for their holders."""
    if size is not None and size <= k * block_size:
        return (2 * k + m) * min(block_size, -(-size // k))
    stripes = 3 if size is None else min(3, -(-size // (k * block_size)))
    return (stripes * k + 2 * m) * block_size


class BlockBudget:
    """The peer's memory for blocks (``--buffer-memory``): what the requests it admitted
    hold in hand, and the blocks its chunk streams queue beyond the one each works on.

    **Admission.** A GET or PUT holds its blocks in hand for as long as it runs (``admit``:
    a PUT the stripes it fills, codes and sends, ``write_in_hand``; a GET the block it
    sends, the next one and its chunk streams' buffers). It waits, first come first served,
    until they fit beside what is held, and is refused (Overloaded: 503 with
    ``Retry-After``) after ``wait`` seconds: MinIO's ``requests_max`` and
    ``requests_deadline`` (10 s) do the same from a memory estimate. So many slow clients
    queue or are turned away instead of taking the peer's memory (50 slow readers took a
    peer to ~390 MiB, issue 13). A request larger than the whole budget waits for all of it
    and runs alone.

    **Credit.** A stream queues a block past its first (GET and rebuild read-ahead, rebuilt
    blocks waiting for a holder; a PUT never queues more than one) only with credit from
    what is left, and only while no request waits to be admitted; without it, a reader reads
    a block when its consumer asks and a writer's sender waits until its queue is empty.
    Taking credit never waits: a stream waits for its own consumer or holder only, never for
    other streams, so credit cannot deadlock them. At most ``depth`` blocks per stream
    either way.

    A budget of 0 admits every request at once and gives no credit.
    """

    def __init__(self, budget: int, depth: int, wait: float = 10.0) -> None:
        self.budget = budget  # bytes
        self.depth = depth  # blocks queued per stream
        self.wait = wait  # seconds a request may wait to be admitted
        self.held = 0  # bytes held now: admitted requests' and queued blocks' credit
        self.admitted = 0  # bytes of ``held`` that admitted requests hold in hand
        self.refused = 0  # times credit was refused (a stream then went block by block)
        self.waited = 0  # requests that waited to be admitted
        self.turned_away = 0  # requests refused after waiting ``wait`` seconds
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def __repr__(self) -> str:
        return (
            f"BlockBudget({self.held}/{self.budget} bytes, admitted={self.admitted}, "
            f"waiting={len(self._waiting)}, depth={self.depth})"
        )

    def take(self, size: int) -> bool:
        """Credit for a block of ``size`` bytes queued ahead, if the budget has room and no
        request waits for it."""
        if self._waiting or self.held + size > self.budget:
            self.refused += 1
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        """Return credit taken for a block, once taken off its queue or dropped."""
        self.held -= size
        self._admit_waiting()

    @contextlib.asynccontextmanager
    async def admit(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes (at most the whole budget) while the block runs, once they
        fit; raises Overloaded when they have not within ``wait`` seconds."""
        size = min(size, self.budget)
        if size <= 0:
            yield
            return
        if self._waiting or self.held + size > self.budget:
            await self._wait_for(size)
        else:
            self._hold(size)
        try:
            yield
        finally:
            self._release(size)

    async def _wait_for(self, size: int) -> None:
        """Queue for ``size`` bytes; held once this returns. (``asyncio.wait``, not
        ``wait_for``: before Python 3.12 ``wait_for`` returns a result that came as it was
        being cancelled, and a cancelled request would keep its memory.)"""
        self.waited += 1
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, turn)
        self._waiting.append(entry)
        try:
            await asyncio.wait((turn,), timeout=self.wait)
        except BaseException:  # cancelled: the peer stopping, or a caller's own deadline
            if turn.done():  # admitted meanwhile: let go
                self._release(size)
            else:
                self._leave(entry)
            raise
        if turn.done():  # admitted, at the latest as the wait ran out
            return
        self._leave(entry)
        self.turned_away += 1
        raise Overloaded(
            f"this peer's buffer memory ({self.budget} bytes, --buffer-memory) stayed "
            f"taken for {self.wait:g} s by the requests in progress; retry shortly"
        )

    def _leave(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        entry[1].cancel()
        self._waiting.remove(entry)
        self._admit_waiting()  # one behind it may fit now

    def _hold(self, size: int) -> None:
        self.held += size
        self.admitted += size

    def _release(self, size: int) -> None:
        self.admitted -= size
        self.give(size)

    def _admit_waiting(self) -> None:
        """Admit waiting requests in their order while the first fits."""
        while self._waiting:
            size, turn = self._waiting[0]
            if self.held + size > self.budget:
                return
            self._waiting.popleft()
            self._hold(size)
            turn.set_result(None)


class ChunkWriter:
    """Streams one chunk to its holder from a queue of blocks: one, and up to ``depth`` while
    ``buffers`` gives credit."""

    _END = b""

    def __init__(
        self,
        peers: Peers,
        holder: str,
        chunk_id: str,
        owner: ChunkMeta,
        size: int | None,
        buffers: BlockBudget,
        stall_timeout: float,
    ) -> None:
        self.holder = holder
        self.chunk_id = chunk_id
        self.error: BaseException | None = None
        self._peers = peers
        self._size = size
        self._stall_timeout = stall_timeout
        self._buffers = buffers
        self._queue: deque[tuple[Buffer, int]] = deque()  # (block, credit held for it)
        self._writing = False  # a block taken off the queue is being written
        self._queued = asyncio.Event()  # a block was queued
        self._taken = asyncio.Event()  # a block was taken off the queue
        self._written = asyncio.Event()  # a block was handed to the connection
        self._task = asyncio.ensure_future(self._put(owner))
        self._task.add_done_callback(self._on_done)

    def __repr__(self) -> str:
        state = "failed" if self.error else "done" if self._task.done() else "sending"
        queued = len(self._queue)
        return f"ChunkWriter({self.chunk_id} -> {self.holder[:8]}, {state}, queued={queued})"

    async def _put(self, owner: ChunkMeta) -> int:
        """The chunk's request, made once its first block (or the end) is queued: a request
        is signed when it is made and its head goes with its first block, so one made at
        once reached its holder dated as long before as a slow client took to fill a
        stripe, and past 30 s was refused as a replay (a chunked upload at 8x
        ``--client-min-rate`` failed with 503 after 40 s in an attack); a pooled
        connection's holder meanwhile closed it for its head's lateness."""
        while not self._queue:
            self._queued.clear()
            await self._queued.wait()
        return await self._peers.put_chunk(
            self.holder, self.chunk_id, self._blocks(), self._size, owner
        )

    async def _blocks(self) -> AsyncIterator[Buffer]:
        """The queued blocks; with a known size the stream ends with its last byte, not at
        the end marker, so the request body is complete before the holder can answer (an
        answer that arrives while aiohttp still waits for body bytes makes it close the
        connection instead of pooling it: a new TCP connection per chunk)."""
        left = self._size
        while left != 0:
            while not self._queue:
                self._queued.clear()
                await self._queued.wait()
            block, credit = self._queue.popleft()
            self._buffers.give(credit)
            self._taken.set()
            if block is self._END:
                return
            if left is not None:
                left -= len(block)
            self._writing = True
            yield block
            self._writing = False
            self._written.set()
            del block  # not held while waiting for the next

    def _on_done(self, task: asyncio.Task[int]) -> None:
        if task.cancelled():
            self.error = self.error or asyncio.CancelledError()
        elif task.exception() is not None:
            self.error = task.exception()
            log.warning("chunk %s to %s failed: %s", self.chunk_id, self.holder, self.error)
        while self._queue:  # unblock a sender waiting for room
            self._buffers.give(self._queue.popleft()[1])
        self._taken.set()
        self._written.set()

    async def send(self, block: Buffer) -> None:
        """Queue a block: at once into an empty queue, or with credit up to ``depth`` queued,
        else once the holder has taken what is queued; drop this chunk if its holder takes
        nothing for stall_timeout."""
        size = len(block)
        while True:
            if self._task.done():
                return
            if not self._queue or size == 0:  # (the end marker holds no memory)
                credit = 0
                break
            if len(self._queue) < self._buffers.depth and self._buffers.take(size):
                credit = size  # taken with no await before it is queued: never lost
                break
            if not await self._progress(self._taken):
                return
        self._queue.append((block, credit))
        self._queued.set()

    async def written(self) -> None:
        """Wait until every block queued so far has been handed to the holder's connection
        (or this chunk failed); drop this chunk if its holder takes nothing for
        stall_timeout."""
        while not self._task.done() and (self._queue or self._writing):
            if not await self._progress(self._written):
                return

    async def _progress(self, event: asyncio.Event) -> bool:
        """Wait for ``event`` (the holder took a block, or finished one); False (the chunk
        dropped) if it did not come within stall_timeout."""
        event.clear()
        if await wait_event(event, self._stall_timeout):
            return True
        self.error = PeerUnavailable(self.holder, f"stalled for {self._stall_timeout}s")
        log.warning("chunk %s to %s dropped: %s", self.chunk_id, self.holder, self.error)
        self._peers.report_failure(self.holder, str(self.error))
        self._task.cancel()
        return False

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

    async def written(self) -> None:
        """Wait until every writer has handed what it was given to its holder's connection
        (or failed, or was dropped as stalled)."""
        await asyncio.gather(*(w.written() for w in self.by_index.values()))

    async def finish(self) -> dict[int, int | None]:
        """End every stream; return each chunk's stored size (None: it failed)."""
        sizes = await asyncio.gather(*(w.finish() for w in self.by_index.values()))
        return dict(zip(self.by_index, sizes, strict=True))


async def read_block(stream: ChunkStream, size: int) -> Buffer:
    """Read ``size`` bytes of ``stream`` into one buffer, ``READ_PIECE`` bytes at a time;
    of a channel answer's bytes (``FramedChunk``), a view of them, with no copy.

    Not ``readexactly(size)``: aiohttp's reader raises its buffer limits to the size asked
    for (2 x 1 MiB per chunk stream) and joins the pieces into a second copy, which made a
    slow GET of 5 chunk streams hold ~20 MiB (tracemalloc, bench/memory.py).
    """
    if isinstance(stream, FramedChunk):
        return stream.take(size)
    block = bytearray(size)
    view = memoryview(block)
    if fills_blocks(stream):  # a chunk of this peer: one read from its file
        await stream.readinto(view)
        return block
    for start in range(0, size, READ_PIECE):
        end = min(start + READ_PIECE, size)
        view[start:end] = await stream.readexactly(end - start)
    return block


async def read_one_block(
    peers: Peers, ref: ChunkRef, chunk_id: str, layout: Layout, stripe: int
) -> Buffer:
    """Chunk ``chunk_id``'s block of ``stripe`` from its holder ``ref.holder``, checked
    against its digest in ``ref``: a read that wants one block (a few KiB of a large file,
    a packed file's bytes) has it in one call, where a ``ChunkReader`` takes read-ahead
    credit, a queue and two events besides. Raises what reading raises (``failure_reason``
    names it), CorruptData when the block fails its digest."""
    offset, length = layout.chunk_offset(stripe), layout.block_length(stripe)
    async with peers.open_chunk(ref.holder, chunk_id, offset, length) as stream:
        block = await read_block(stream, length)
    _check_block(block, ref, chunk_id, stripe)
    return block


def _check_block(block: Buffer, ref: ChunkRef, chunk_id: str, stripe: int) -> None:
    """Raise CorruptData unless ``block`` is chunk ``chunk_id``'s of ``stripe`` by its digest."""
    if block_digest(block) != ref.block_digest(stripe):
        raise CorruptData(f"chunk {chunk_id} block {stripe} fails its digest")


def failure_reason(exc: BaseException) -> str:
    """Why reading a chunk failed, in the words of the decode-around metric (a bounded set:
    ``corrupt``, ``not_found``, ``unreachable``, ``failed``)."""
    if isinstance(exc, CorruptData):
        return "corrupt"  # a block failed its digest
    if isinstance(exc, NotFound):
        return "not_found"  # the holder answered that it has no such chunk
    if isinstance(exc, PeerUnavailable):
        return "unreachable"
    return "failed"  # anything else: a short answer, a reset connection


class ChunkReader:
    """Reads one chunk's blocks for a range of stripes, verified, ahead of the consumer while
    ``buffers`` gives credit and on demand otherwise.

    The reading task ends on the first failure (unreachable or silent holder, short or
    corrupt data), kept as ``failure`` (``failure_reason``); the consumer then gets None
    and switches to another chunk.
    """

    def __init__(
        self,
        peers: Peers,
        ref: ChunkRef,
        chunk_id: str,
        layout: Layout,
        stripes: range,
        buffers: BlockBudget,
    ) -> None:
        self.ref = ref
        self.chunk_id = chunk_id
        self._peers = peers
        self._layout = layout
        self.stripes = stripes  # read in order, each once
        self.next_stripe = stripes.start  # whose block ``next_block`` gives next
        self._buffers = buffers
        self._blocks: deque[tuple[Buffer, int]] = deque()  # (block, credit held for it)
        self._asked = False  # the consumer waits for (or will soon ask for) a block
        self._ended = False
        self.failure: str | None = None  # why reading ended early (``failure_reason``)
        self._turn = asyncio.Event()  # the consumer asked for or took a block
        self._ready = asyncio.Event()  # a block was queued, or the reader ended
        self._task = asyncio.ensure_future(self._run())

    def __repr__(self) -> str:
        state = "ended" if self._ended else "reading"
        where = f"{self.chunk_id} @ {self.ref.holder[:8]}"
        return f"ChunkReader({where}, {state}, queued={len(self._blocks)})"

    async def _may_read(self, size: int) -> int:
        """Wait until a block of ``size`` bytes may be read; the credit taken (0: on demand)."""
        while True:
            if self._asked and not self._blocks:
                return 0
            if len(self._blocks) < self._buffers.depth and self._buffers.take(size):
                return size
            self._turn.clear()
            await self._turn.wait()

    async def _run(self) -> None:
        layout, stripes = self._layout, self.stripes
        offset = layout.chunk_offset(stripes.start)
        last = stripes.stop - 1
        length = layout.chunk_offset(last) + layout.block_length(last) - offset
        credit = 0
        try:
            async with self._peers.open_chunk(
                self.ref.holder, self.chunk_id, offset, length
            ) as stream:
                for stripe in stripes:
                    credit = await self._may_read(layout.block_length(stripe))
                    block = await read_block(stream, layout.block_length(stripe))
                    _check_block(block, self.ref, self.chunk_id, stripe)
                    self._blocks.append((block, credit))
                    credit = 0
                    del block  # the consumer's once taken: not held while waiting for the next
                    self._ready.set()
        except Exception as exc:  # any failure means: read another chunk instead
            self.failure = failure_reason(exc)
            log.warning("reading chunk %s from %s: %r", self.chunk_id, self.ref.holder, exc)
        except asyncio.CancelledError:
            # Closed by its consumer: end quietly. Re-raised, the error would stay with the
            # task, and its frames (the peer call's response, holding the bytes it had
            # buffered) in a cycle with this reader until a full garbage collection: ~4 MiB
            # per closed GET, held for minutes on an idle peer (bench/memory.py).
            pass
        finally:
            self._buffers.give(credit)  # a block it did not get to queue
            self._ended = True
            self._ready.set()

    @property
    def ended(self) -> bool:
        """Whether the reading task has ended (done, failed or closed)."""
        return self._ended

    def want(self) -> None:
        """Say that the consumer will ask for the next block: it is read even without credit
        (``StripeRead`` asks all of a stripe's readers at once, then waits for each)."""
        self._asked = True
        self._turn.set()

    async def _arrival(self) -> None:
        while not self._blocks and not self._ended:
            self._ready.clear()
            await self._ready.wait()

    async def next_block(self, timeout: float) -> Buffer | None:
        """The next stripe's block, or None if this chunk cannot give it within ``timeout``."""
        if not self._blocks:
            self.want()
            with contextlib.suppress(asyncio.TimeoutError):
                await within(self._arrival(), timeout)
            if not self._blocks:  # the time is up, or the reader ended
                return None
        block, credit = self._blocks.popleft()
        self.next_stripe += 1
        self._asked = False
        self._buffers.give(credit)
        self._turn.set()  # room in the queue: it may read ahead again
        return block

    def close(self) -> None:
        """Stop reading; credit for blocks still queued goes back to the budget."""
        self._task.cancel()
        for _, credit in self._blocks:
            self._buffers.give(credit)
        self._blocks.clear()
