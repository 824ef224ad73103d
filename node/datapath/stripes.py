"""The stripe pipeline: a body cut into stripes and coded onto chunks, and chunks read back.

Writing: ``cut_stripes`` regroups a body as it arrives into stripes of k x block_size bytes
(a short last one), ``write_stripes`` erasure-codes each in a worker thread and queues block
*i* on chunk writer *i*; encoding one stripe overlaps with sending the previous one. Reading:
``read_stripes`` yields each stripe's k data blocks from chunk readers, verified, switching to
parity chunks and decoding when a chunk is missing, slow or corrupt. ``trim`` cuts a stripe
to a byte range of the file. See ``node.model.layout`` for the arithmetic.
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
from node.errors import BadDigest, Unavailable
from node.model.digests import DIGEST_SIZE, Buffer, ContentHash
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.waiting import consume

# Stripes shorter than this are hashed on the loop: a thread hop costs more than their MD5.
HASH_OFF_LOOP = 64 << 10


DECODE_REASONS = ("absent", "down", "unreachable", "not_found", "corrupt", "slow", "failed")
"""Why a data chunk was passed over for parity: not in the manifest (a degraded write) or
known broken, on a holder seen down, unreachable, answered not found, failed its digest, no
block within the peer timeout, or another failure (``chunk_streams.failure_reason``)."""


@dataclass
class Decoding:
    """What a read decoded around (filled in by ``read_stripes``): how many stripes it
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
    body: AsyncIterable[bytes], stripe_size: int, size: int | None = None
) -> AsyncIterator[memoryview]:
    """Regroup a byte stream into full stripes and a short last one (if any bytes remain).

    Every stripe is a fresh buffer, so blocks handed on stay valid while queued. A buffer
    is allocated at the size the stripe will have when the body's ``size`` is known (a
    4 KiB file takes 4 KiB, not a whole stripe); else it starts empty and doubles as bytes
    come (a slow chunked upload holds about what it sent; each byte is copied at most once
    more on the way to a full stripe).
    """
    left = size

    def fresh() -> bytearray:
        return bytearray(min(stripe_size, left) if left is not None and left > 0 else 0)

    buffer, filled = fresh(), 0
    async for piece in body:
        piece_view = memoryview(piece)
        while piece_view:
            take = min(len(piece_view), stripe_size - filled)
            if filled + take > len(buffer):  # no size, or a short one: double, once copied
                grown = bytearray(min(stripe_size, max(2 * len(buffer), filled + take)))
                grown[:filled] = memoryview(buffer)[:filled]
                buffer = grown
            buffer[filled : filled + take] = piece_view[:take]
            filled += take
            piece_view = piece_view[take:]
            if filled == stripe_size:
                yield memoryview(buffer)
                left = None if left is None else left - stripe_size
                buffer, filled = fresh(), 0
    if filled:
        yield memoryview(buffer)[:filled]


def split_stripe(stripe: memoryview, k: int) -> list[memoryview]:
    """The k equal data blocks of a stripe; a short stripe is zero-padded to k x ceil(len/k)."""
    block = -(-len(stripe) // k)
    if block * k != len(stripe):
        padded = bytearray(block * k)
        padded[: len(stripe)] = stripe
        stripe = memoryview(padded)
    return [stripe[i * block : (i + 1) * block] for i in range(k)]


def encode(data: Sequence[Buffer], m: int) -> tuple[dict[int, Buffer], dict[int, bytes]]:
    """All k+m blocks of a stripe and each one's digest, by chunk index (blocking: a thread)."""
    blocks, digests = encode_stripe(data, m)
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
) -> Written:
    """Cut ``body`` (``size`` bytes, if known) into stripes, encode each and queue its
    blocks on ``writers``; the etag is ``etag_hash`` of the content (``ContentHash``).
    ``content_md5`` (with ``etag_hash`` md5 only) is the MD5 the content must have (a
    Content-MD5): compared with the etag's own digest before the last stripe is sent, so
    that a mismatch (BadDigest) leaves no chunk complete and the body is hashed once.

    Encoding of one stripe (in a thread) overlaps with sending the previous one, and so
    does an MD5 of it (in another thread: ~7 ms per 5 MiB stripe here, joined before the
    next stripe's starts, so the content is hashed in order).
    """
    content = ContentHash(etag_hash)
    if content_md5 is not None and etag_hash != "md5":
        raise ValueError("a Content-MD5 is checked against the etag only when it is an MD5")
    digests = {index: bytearray() for index in writers.by_index}
    size = 0

    async def send(encoded: tuple[dict[int, Buffer], dict[int, bytes]]) -> None:
        blocks, stripe_digests = encoded
        for index in digests:
            digests[index] += stripe_digests[index]
        await writers.send(blocks)

    pending: asyncio.Future[tuple[dict[int, Buffer], dict[int, bytes]]] | None = None
    hashing: asyncio.Future[None] | None = None
    try:
        async for stripe in cut_stripes(body, k * block_size, size):
            size += len(stripe)
            if hashing is not None:
                await hashing
                hashing = None
            if content.costly and len(stripe) >= HASH_OFF_LOOP:
                hashing = asyncio.ensure_future(asyncio.to_thread(content.update, stripe))
            else:
                content.update(stripe)  # xxh3: ~0.2 ms per 5 MiB stripe, on the loop
            encoding = asyncio.ensure_future(asyncio.to_thread(encode, split_stripe(stripe, k), m))
            if pending is not None:
                await send(await pending)
            pending = encoding
        if hashing is not None:
            await hashing
            hashing = None
        if content_md5 is not None:
            check_content_md5(content, content_md5)
        if pending is not None:
            await send(await pending)
            pending = None
    finally:
        for running in (pending, hashing):  # the body failed: a thread cannot be stopped
            if running is not None:
                running.cancel()
                running.add_done_callback(consume)
    return Written(size, content.etag(), digests)


def check_content_md5(content: ContentHash, expected: bytes) -> None:
    """Raise BadDigest unless the MD5 ``content`` holds is ``expected`` (RFC 1864)."""
    actual = content.digest()
    if actual != expected:
        shown, got = base64.b64encode(expected).decode(), base64.b64encode(actual).decode()
        raise BadDigest(f"the body does not match Content-MD5: {shown}: its md5 is {got}")


async def read_stripes(
    peers: Peers,
    manifest: Manifest,
    stripes: range,
    broken: set[int],
    down: Collection[str],
    buffers: BlockBudget,
    timeout: float,
    decoding: Decoding | None = None,
) -> AsyncGenerator[tuple[int, list[Buffer]], None]:
    """Yield each stripe's k data blocks, verified, decoding around failed chunks.

    Chunks in ``broken`` are not read; chunks that fail while reading are added to it.
    ``decoding``, when given, counts the stripes decoded from parity and why.
    Chunks on holders in ``down`` are read only as a last resort. A chunk that gives no
    block within ``timeout`` counts as failed. Readers read ahead as ``buffers`` allows. The
    generator keeps no reference to a stripe it yielded, so a consumer that drops blocks as
    it sends them holds no more. Raises Unavailable when fewer than k chunks of a stripe
    can be read.
    """
    layout = manifest.layout
    decoding = Decoding() if decoding is None else decoding
    refs = {ref.index: ref for ref in manifest.chunks if ref.index not in broken}
    why: dict[int, str] = {}  # chunk index -> why it was passed over
    # Data chunks first, then parity; chunks on holders seen down only as a last resort.
    spares = deque(sorted(refs, key=lambda i: (refs[i].holder in down, i)))
    active: dict[int, ChunkReader] = {}

    def activate(first: int) -> ChunkReader:
        index = spares.popleft()
        reader = ChunkReader(
            peers,
            refs[index],
            manifest.chunk_id(index),
            layout,
            range(first, stripes.stop),
            buffers,
        )
        active[index] = reader
        return reader

    async def next_block(index: int, blocks: dict[int, Buffer]) -> None:
        reader = active[index]
        block = await reader.next_block(timeout)
        if block is None:
            why[index] = (reader.failure or "failed") if reader.ended else "slow"
            active.pop(index).close()
            broken.add(index)
        else:
            blocks[index] = block

    try:
        while spares and len(active) < layout.k:
            activate(stripes.start)
        for stripe in stripes:
            blocks: dict[int, Buffer] = {}
            for reader in active.values():
                reader.want()  # all read at once, even past the read-ahead budget
            for index in list(active):
                await next_block(index, blocks)
            while len(blocks) < layout.k:
                if not spares:
                    raise Unavailable(
                        f"{manifest.name!r}: only {len(blocks)} of the {layout.k} chunks "
                        f"needed for stripe {stripe} are readable"
                    )
                await next_block(activate(stripe).ref.index, blocks)
            if all(i in blocks for i in range(layout.k)):
                yield stripe, [blocks.pop(i) for i in range(layout.k)]
            else:
                decoding.stripes += 1
                for index in range(layout.k):
                    if index not in blocks and index not in decoding.reasons:
                        decoding.reasons[index] = why.get(index) or (
                            "absent" if index not in refs else "down"  # left for last
                        )
                decoded = asyncio.to_thread(decode_stripe, blocks, layout.k, layout.m)
                blocks = {}
                yield stripe, await decoded
    finally:
        for reader in active.values():
            reader.close()


def trim(layout: Layout, stripe: int, data: list[Buffer], start: int, end: int) -> list[Buffer]:
    """The parts of a stripe's data blocks inside ``[start, end)`` and the file."""
    stripe_start = layout.stripe_start(stripe)
    stripe_end = stripe_start + layout.stripe_data_length(stripe)
    block = layout.block_length(stripe)
    pieces: list[Buffer] = []
    for index, buffer in enumerate(data):
        lo = max(start, stripe_start + index * block)
        hi = min(end, stripe_end, stripe_start + (index + 1) * block)
        if lo < hi:
            offset = stripe_start + index * block
            pieces.append(memoryview(buffer)[lo - offset : hi - offset])
    return pieces
