"""The stripe pipeline: a body cut into stripes and coded onto chunks, and chunks read back.

Writing: ``cut_stripes`` regroups a body as it arrives into stripes of k x block_size bytes
(a short last one), ``write_stripes`` erasure-codes each in a worker thread and queues block
*i* on chunk writer *i* once the stripe before is written out (two stripes at work). Reading:
``StripeRead`` yields each stripe's k data blocks from chunk readers, verified, switching to
parity chunks and decoding when a chunk is missing, slow or corrupt, whole or block by block
(each read when asked for). ``trim`` and ``trim_block`` cut them to a byte range of the
file. See ``node.model.layout`` for the arithmetic.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field

from node.cluster.peers import Peers
from node.datapath.chunk_streams import BlockBudget, ChunkReader, ChunkWriters
from node.datapath.codec import decode_stripe, encode_stripe
from node.errors import BadDigest, IncompleteBody, Unavailable
from node.model.digests import DIGEST_SIZE, Buffer, ContentHash
from node.model.layout import ZFEC, Layout
from node.model.manifest import Manifest
from node.waiting import consume

# Stripes shorter than this are hashed on the loop: a thread hop costs more than their MD5.
HASH_OFF_LOOP = 64 << 10
# Buffers of full stripes a write keeps to reuse (cut_stripes): one is filled while one is
# sent; a view held a while longer (a connection's last chunk or unsent tail) keeps a third.
SPARE_STRIPES = 3


DECODE_REASONS = ("absent", "down", "unreachable", "not_found", "corrupt", "slow", "failed")
"""Why a data chunk was passed over for parity: not in the manifest (a degraded write) or
known broken, on a holder seen down, unreachable, answered not found, failed its digest, no
block within the peer timeout, or another failure (``chunk_streams.failure_reason``)."""


@dataclass
class Decoding:
    """What a read decoded around (filled in by ``StripeRead``): how many stripes it
    rebuilt from parity, and why each data chunk it could not use was passed over, in the
    order met (chunk index -> one of ``DECODE_REASONS``)."""

    stripes: int = 0
    reasons: dict[int, str] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """The first reason met, or None if nothing was decoded."""
        return next(iter(self.reasons.values()), None) if self.stripes else None


@dataclass
class Written:
    """What ``write_stripes`` sent: body bytes, content etag (``ContentHash.etag``), and every
    chunk's block digests (``DIGEST_SIZE`` bytes per stripe) by chunk index."""

    size: int
    etag: str
    digests: dict[int, bytearray]


async def cut_stripes(
    body: AsyncIterable[bytes], stripe_size: int, size: int | None = None, k: int = 1
) -> AsyncIterator[memoryview]:
    """Regroup a byte stream into full stripes and a short last one (if any bytes remain).

    A buffer is allocated at the size the stripe will have when the body's ``size`` is
    known (a 4 KiB file takes 4 KiB, not a whole stripe); else it starts empty and doubles
    as bytes come (a slow chunked upload holds about what it sent; each byte is copied at
    most once more on the way to a full stripe). New buffers are zero-filled and their
    lengths rounded up to a multiple of ``k`` (``stripe_size`` is one): a short stripe's
    zero-padded blocks are a view of its buffer (``split_stripe``), not a copy.

    A full stripe of a body of known size reuses the buffer of an earlier full stripe once
    nothing holds a view of it any more (``_unshared``: the blocks sent, coded, hashed and
    written), so a large body cycles through a few buffers instead of allocating, faulting
    in and zeroing 5 MiB per stripe and growing glibc's heap with the freed ones
    (docs/operations.md, "Memory"). A buffer still viewed anywhere (queued for a slow
    holder, in a connection's send buffer) is never written. That holds because stripes
    leave only as memoryviews: whoever keeps bytes of one (Python 3.12's transport keeps
    what the socket did not take) keeps a buffer export, which ``_unshared`` sees; a bare
    bytearray handed on could be kept without one.
    """
    left = size
    spare: deque[bytearray] = deque(maxlen=SPARE_STRIPES)  # full stripes yielded, oldest first

    def fresh() -> bytearray:
        if left is not None and left >= stripe_size:  # a full stripe comes: reuse
            for _ in range(len(spare)):
                buffer = spare.popleft()
                if _unshared(buffer):
                    return buffer  # filled whole before it is yielded again
                spare.append(buffer)
        return bytearray(_round_up(min(stripe_size, left), k) if left and left > 0 else 0)

    buffer, filled = fresh(), 0
    async for piece in body:
        piece_view = memoryview(piece)
        while piece_view:
            take = min(len(piece_view), stripe_size - filled)
            if filled + take > len(buffer):  # no size, or a short one: double, once copied
                wanted = min(stripe_size, max(2 * len(buffer), filled + take))
                grown = bytearray(_round_up(wanted, k))
                grown[:filled] = memoryview(buffer)[:filled]
                buffer = grown
            buffer[filled : filled + take] = piece_view[:take]
            filled += take
            piece_view = piece_view[take:]
            if filled == stripe_size:
                yield memoryview(buffer)
                spare.append(buffer)
                left = None if left is None else left - stripe_size
                buffer, filled = fresh(), 0
    if filled:
        yield memoryview(buffer)[:filled]


def _unshared(buffer: bytearray) -> bool:
    """Whether no view of ``buffer`` is left anywhere: a bytearray refuses to change size
    while any buffer export of it (a memoryview, or a C function's hold on it) exists
    (BufferError; the buffer protocol, PEP 3118). Its length is put back; its last byte is
    not (the caller overwrites it)."""
    try:
        buffer.pop()
    except BufferError:
        return False
    buffer.append(0)
    return True


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def split_stripe(stripe: memoryview, k: int) -> list[memoryview]:
    """The k equal data blocks of a stripe; a short stripe is zero-padded to k x ceil(len/k):
    in place when the buffer under it already is (``cut_stripes``), else in a copy."""
    block = -(-len(stripe) // k)
    if block * k != len(stripe):
        stripe = _padded(stripe, block * k)
    return [stripe[i * block : (i + 1) * block] for i in range(k)]


def _padded(stripe: memoryview, length: int) -> memoryview:
    """``stripe`` followed by zeros up to ``length`` bytes: the buffer it is a view of when
    that buffer starts with it and is zero after it (checked with a memcmp: ~0.1 ms for
    5 MiB, against a copy's allocation), else a copy."""
    under, n = stripe.obj, len(stripe)
    if (
        isinstance(under, bytearray)
        and len(under) >= length
        and under[n:length] == bytes(length - n)
        and under.startswith(stripe)
    ):
        return memoryview(under)[:length]
    padded = bytearray(length)
    padded[:n] = stripe
    return memoryview(padded)


def encode(
    data: Sequence[Buffer], m: int, codec: str
) -> tuple[dict[int, Buffer], dict[int, bytes]]:
    """All k+m blocks of a stripe and each one's digest, by chunk index (blocking: a thread)."""
    blocks, digests = encode_stripe(data, m, codec)
    return (
        dict(enumerate(blocks)),
        {i: digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] for i in range(len(blocks))},
    )


async def write_stripes(
    body: AsyncIterable[bytes],
    writers: ChunkWriters,
    k: int,
    m: int,
    block_size: int,
    size: int | None = None,
    etag_hash: str = "md5",
    content_md5: bytes | None = None,
    codec: str = ZFEC,
) -> Written:
    """Cut ``body`` (``size`` bytes, if known) into stripes, encode each and queue its
    blocks on ``writers``; the etag is ``etag_hash`` of the content (``ContentHash``).
    ``content_md5`` (with ``etag_hash`` md5 only) is the MD5 the content must have (a
    Content-MD5): compared with the etag's own digest before the last stripe is sent, so
    that a mismatch (BadDigest) leaves no chunk complete and the body is hashed once.

    Two stripes are at work, not three (``write_in_hand``): a stripe is coded (in a thread)
    once filled, then queued once the writers have handed every block of the one before
    to their connections, so the next is filled while this one is sent. Its MD5 (in another
    thread: ~7 ms per 5 MiB stripe here, joined before the next stripe's starts, so the
    content is hashed in order) overlaps with the filling of the next. The last stripe of a
    body of known size is held until the body has ended intact (a body raises at its end
    when a digest or signature does not match): its chunks are complete with its last
    byte. Other stripes leave at once: a chunk of unknown size is complete only with its
    end marker (``ChunkWriters.finish``). A body of known size that runs past it, or ends
    short, raises IncompleteBody before any chunk is complete.
    """
    content = ContentHash(etag_hash)
    if content_md5 is not None and etag_hash != "md5":
        raise ValueError("a Content-MD5 is checked against the etag only when it is an MD5")
    digests = {index: bytearray() for index in writers.by_index}
    total = 0

    async def send(encoded: tuple[dict[int, Buffer], dict[int, bytes]]) -> None:
        blocks, stripe_digests = encoded
        for index in digests:
            digests[index] += stripe_digests[index]
        await writers.send(blocks)

    hashing: asyncio.Future[None] | None = None
    held = None  # the last stripe of a body of known size: sent once the body ended intact
    try:
        async for stripe in cut_stripes(body, k * block_size, size, k):
            total += len(stripe)
            if hashing is not None:
                await hashing
                hashing = None
            if content.costly and len(stripe) >= HASH_OFF_LOOP:
                hashing = asyncio.ensure_future(asyncio.to_thread(content.update, stripe))
            else:
                content.update(stripe)  # xxh3: ~0.2 ms per 5 MiB stripe, on the loop
            if size is not None and total > size:  # before a byte past it is sent
                raise IncompleteBody(f"the body runs past its declared {size} bytes")
            encoded = await asyncio.to_thread(encode, split_stripe(stripe, k), m, codec)
            await writers.written()  # the stripe before is out: this one is the second at work
            if size is not None and (total == size or len(stripe) < k * block_size):
                held = encoded  # the last stripe: its chunks are complete with its last byte
            else:
                await send(encoded)
        if size is not None and total != size:  # short: no chunk may complete (the last
            # blocks of a body a few bytes short have their full length)
            raise IncompleteBody(f"the body ended after {total} of its {size} bytes")
        if hashing is not None:
            await hashing
            hashing = None
        if content_md5 is not None:
            check_content_md5(content, content_md5)
        if held is not None:
            await send(held)
    finally:
        if hashing is not None:  # the body failed: a thread cannot be stopped
            hashing.cancel()
            hashing.add_done_callback(consume)
    return Written(total, content.etag(), digests)


def check_content_md5(content: ContentHash, expected: bytes) -> None:
    """Raise BadDigest unless the MD5 ``content`` holds is ``expected`` (RFC 1864)."""
    actual = content.digest()
    if actual != expected:
        shown, got = base64.b64encode(expected).decode(), base64.b64encode(actual).decode()
        raise BadDigest(f"the body does not match Content-MD5: {shown}: its md5 is {got}")


class StripeRead:
    """One read of stripes ``stripes`` of ``manifest`` from its chunks, verified, decoding
    around failed chunks: ``stripes()`` yields them whole (a rebuild re-encodes them),
    ``blocks()`` block by block (a GET sends them). Either may be iterated once.

    Chunks in ``broken`` are not read; chunks that fail while reading are added to it.
    ``decoding``, when given, counts the stripes decoded from parity and why. Data chunks
    are read first, parity as they fail; chunks on holders in ``down`` only as a last resort.
    A chunk that gives no block within ``timeout`` counts as failed. Readers read ahead as
    ``buffers`` allows. Nothing yielded is kept, so a consumer that drops blocks as it sends
    them holds no more. Raises Unavailable when fewer than k chunks of a stripe can be read.

    ``wanted``, the file bytes ``[start, end)`` a GET sends, lets ``blocks()`` read only
    the data blocks holding some of them (``Layout.blocks_covering``): in the first and
    the last stripe of a range, those alone, each data chunk over the stripes it has
    wanted blocks in (4 KiB of a large file: one block from one holder, not a stripe's k);
    decoding reads what else it needs of the stripe at hand.
    """

    def __init__(
        self,
        peers: Peers,
        manifest: Manifest,
        stripes: range,
        broken: set[int],
        down: Collection[str],
        buffers: BlockBudget,
        timeout: float,
        decoding: Decoding | None = None,
        wanted: tuple[int, int] | None = None,
    ) -> None:
        self.layout = layout = manifest.layout
        self.decoding = Decoding() if decoding is None else decoding
        self._peers = peers
        self._manifest = manifest
        self._stripes = stripes
        self._broken = broken
        self._buffers = buffers
        self._timeout = timeout
        self._refs = {ref.index: ref for ref in manifest.chunks if ref.index not in broken}
        self._down = down
        self._why: dict[int, str] = {}  # chunk index -> why it was passed over
        self._spares = deque(sorted(self._refs, key=lambda i: (self._refs[i].holder in down, i)))
        self._active: dict[int, ChunkReader] = {}
        self._spanned = False  # readers over their spans (``_start``), not every stripe
        # The data blocks wanted of the first and of the last stripe (all k of the others).
        every = range(layout.k)
        self._head = self._tail = every
        if wanted is not None and stripes:
            self._head = layout.blocks_covering(stripes[0], *wanted)
            self._tail = layout.blocks_covering(stripes[-1], *wanted)
        self._needed = [i for i in every if self._span(i)]  # data chunks with wanted blocks

    def __repr__(self) -> str:
        return f"StripeRead({self._manifest.name!r}, {self._stripes}, reading={list(self._active)})"

    async def stripes(self) -> AsyncGenerator[tuple[int, list[Buffer]], None]:
        """Yield ``(stripe, its k data blocks)``."""
        self._start()
        try:
            for stripe in self._stripes:
                yield stripe, await self._stripe(stripe, {})
        finally:
            self._close()

    async def blocks(self) -> AsyncGenerator[tuple[int, int, Buffer], None]:
        """Yield ``(stripe, index, block)`` for each data block, in file order.

        While the data chunks all read, a block is read when the consumer asks for it (or
        earlier, as the budget allows read-ahead), so a consumer slower than the chunks holds
        about the block it is sending, not a stripe (k blocks: 5 MiB per slow GET client
        before). When a data chunk fails within a stripe, the blocks of that stripe already
        handed out are read again to decode it, and only the rest are yielded; from then on
        the read goes stripe by stripe.

        With ``wanted``, only the blocks holding wanted bytes are read and yielded.
        """
        self._start()
        try:
            for stripe in self._stripes:
                wanted = self._wanted_in(stripe)
                given = wanted.start  # the next data block of this stripe to hand out
                if self._healthy:
                    blocks: dict[int, Buffer] = {}
                    while given < wanted.stop:
                        await self._block(given, stripe, blocks)
                        if given not in blocks:
                            break
                        yield stripe, given, blocks.pop(given)
                        given += 1
                    if given == wanted.stop:
                        continue
                    data = await self._stripe(stripe, blocks)
                else:
                    data = await self._stripe(stripe, {})
                for index in range(given, wanted.stop):
                    yield stripe, index, data[index]
                del data
        finally:
            self._close()

    def _wanted_in(self, stripe: int) -> range:
        """The data blocks of ``stripe`` a read yields."""
        if stripe == self._stripes[0]:
            return self._head
        return self._tail if stripe == self._stripes[-1] else range(self.layout.k)

    def _span(self, index: int) -> range:
        """The stripes data chunk ``index`` has wanted blocks in (they are consecutive: a
        range wants a last part of its first stripe and a first part of its last)."""
        first, stop = self._stripes.start, self._stripes.stop
        return range(first + (index not in self._head), stop - (index not in self._tail))

    def _start(self) -> None:
        """Start the readers: each data chunk over its span while every data chunk with
        wanted blocks can be read; else (one absent, known broken or on a holder seen
        down) k chunks over every stripe, data first, down holders last, to decode."""
        needed = self._needed
        if all(i in self._refs and self._refs[i].holder not in self._down for i in needed):
            for index in needed:
                self._spares.remove(index)
                self._active[index] = self._reader(index, self._span(index))
            self._spanned = True
            return
        while self._spares and len(self._active) < self.layout.k:
            self._activate(self._stripes.start)

    def _reader(self, index: int, stripes: range) -> ChunkReader:
        ref, chunk_id = self._refs[index], self._manifest.chunk_id(index)
        return ChunkReader(self._peers, ref, chunk_id, self.layout, stripes, self._buffers)

    def _activate(self, first: int) -> int:
        index = self._spares.popleft()
        self._active[index] = self._reader(index, range(first, self._stripes.stop))
        return index

    @property
    def _healthy(self) -> bool:
        """Whether every data chunk with wanted blocks is read over its span: no stripe needs
        decoding. (Readers started over every stripe, to decode, are read stripe by stripe
        even when they are the data chunks: read by span, one would fall behind.)"""
        return self._spanned and all(i in self._active for i in self._needed)

    async def _block(self, index: int, stripe: int, blocks: dict[int, Buffer]) -> None:
        """Put active chunk ``index``'s block of ``stripe`` (its next) in ``blocks``; a chunk
        that cannot give it is closed and marked broken."""
        reader = self._active[index]
        if reader.next_stripe != stripe:  # another stripe's block would pass for this one's
            raise RuntimeError(f"{reader!r} is at stripe {reader.next_stripe}, not {stripe}")
        block = await reader.next_block(self._timeout)
        if block is None:
            self._why[index] = (reader.failure or "failed") if reader.ended else "slow"
            self._active.pop(index).close()
            self._broken.add(index)
        else:
            blocks[index] = block

    async def _again(self, stripe: int, indexes: list[int], blocks: dict[int, Buffer]) -> None:
        """Read chunks ``indexes``' blocks of ``stripe`` apart into ``blocks`` (their readers
        are past it or not at it: blocks handed out before a later one failed, blocks no
        byte of the range is in), all at once: a stripe to decode waits one round trip, not
        one per block; one that fails is left out."""

        async def read(index: int) -> None:
            reader = self._reader(index, range(stripe, stripe + 1))
            try:
                if (block := await reader.next_block(self._timeout)) is not None:
                    blocks[index] = block
            finally:
                reader.close()

        reads = [asyncio.ensure_future(read(index)) for index in indexes]
        try:
            await asyncio.gather(*reads)
        finally:  # one raised, or the read was cancelled: the others stop too
            for pending in reads:
                pending.cancel()
            await asyncio.gather(*reads, return_exceptions=True)

    async def _stripe(self, stripe: int, blocks: dict[int, Buffer]) -> list[Buffer]:
        """``stripe``'s k data blocks, with ``blocks`` those already in hand; decodes
        around failed chunks. When the active readers at ``stripe`` give fewer than k
        blocks, the active chunks whose reader is not at it (past it: a block handed out
        before a later one failed; or over other stripes) are read apart before any spare
        is started."""
        layout = self.layout
        at = [
            i
            for i, reader in self._active.items()
            if i not in blocks and reader.next_stripe == stripe and stripe in reader.stripes
        ]
        for index in at:
            self._active[index].want()  # all read at once, even past the read-ahead budget
        for index in at:
            await self._block(index, stripe, blocks)
        if len(blocks) < layout.k:
            await self._again(stripe, [i for i in self._active if i not in blocks], blocks)
        while len(blocks) < layout.k:
            if not self._spares:
                raise Unavailable(
                    f"{self._manifest.name!r}: only {len(blocks)} of the {layout.k} chunks "
                    f"needed for stripe {stripe} are readable"
                )
            await self._block(self._activate(stripe), stripe, blocks)
        if all(i in blocks for i in range(layout.k)):
            return [blocks.pop(i) for i in range(layout.k)]
        self.decoding.stripes += 1
        for index in range(layout.k):
            if index not in blocks and index not in self.decoding.reasons:
                self.decoding.reasons[index] = self._why.get(index) or (
                    "absent" if index not in self._refs else "down"  # left for last
                )
        found = dict(blocks)
        blocks.clear()  # the caller's: held by the decoding only
        return await asyncio.to_thread(decode_stripe, found, layout.k, layout.m, layout.codec)

    def _close(self) -> None:
        for reader in self._active.values():
            reader.close()


def trim(layout: Layout, stripe: int, data: list[Buffer], start: int, end: int) -> list[Buffer]:
    """The parts of a stripe's data blocks inside ``[start, end)`` and the file."""
    pieces = (trim_block(layout, stripe, i, block, start, end) for i, block in enumerate(data))
    return [piece for piece in pieces if piece is not None]


def trim_block(
    layout: Layout, stripe: int, index: int, block: Buffer, start: int, end: int
) -> Buffer | None:
    """The part of ``stripe``'s data block ``index`` inside ``[start, end)`` and the file
    (None when there is none)."""
    length = layout.block_length(stripe)
    offset = layout.stripe_start(stripe) + index * length  # of the block's first byte
    stripe_end = layout.stripe_start(stripe) + layout.stripe_data_length(stripe)
    lo, hi = max(start, offset), min(end, stripe_end, offset + length)
    return memoryview(block)[lo - offset : hi - offset] if lo < hi else None
