"""The stripe pipeline's pure parts: regroup a body into stripes, trim a stripe to a range."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.datapath.chunk_streams import ChunkWriters
from node.datapath.codec import decode_stripe, encode_stripe
from node.datapath.stripes import SPARE_STRIPES, cut_stripes, split_stripe, trim, write_stripes
from node.errors import IncompleteBody
from node.model.digests import Buffer
from node.model.layout import Layout

fast = settings(max_examples=80, deadline=None)


async def pieces_of(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    """Yield ``data`` cut at the given offsets (empty pieces included)."""
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        yield data[previous:cut]
        previous = cut


async def collect(
    body: AsyncIterator[bytes], stripe_size: int, size: int | None = None
) -> list[memoryview]:
    return [stripe async for stripe in cut_stripes(body, stripe_size, size)]


@st.composite
def split_bodies(draw: st.DrawFn) -> tuple[bytes, list[int], int]:
    stripe_size = draw(st.integers(1, 64), label="stripe_size")
    data = draw(st.binary(max_size=5 * stripe_size + 3), label="data")
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12), label="cuts")
    return data, cuts, stripe_size


@fast
@given(body=split_bodies(), declared=st.sampled_from(["none", "exact", "short", "long"]))
async def test_stripes_are_full_then_one_short_and_rebuild_the_body(
    body: tuple[bytes, list[int], int], declared: str
) -> None:
    """Whatever size the body was declared with (none, right, too small, too large: the
    coordinator refuses a body of another length, but only after reading it)."""
    data, cuts, stripe_size = body
    size = {"none": None, "exact": len(data), "short": len(data) // 2, "long": len(data) + 7}
    stripes = await collect(pieces_of(data, cuts), stripe_size, size[declared])
    assert b"".join(stripes) == data
    if declared == "exact":  # each buffer holds its stripe and no more
        assert all(len(s.obj) == len(s) for s in stripes)  # type: ignore[arg-type]
    assert all(len(s) == stripe_size for s in stripes[:-1])
    if stripes:
        assert 0 < len(stripes[-1]) <= stripe_size
    assert len(stripes) == -(-len(data) // stripe_size)


@fast
@given(body=split_bodies(), known=st.booleans())
async def test_a_stripe_stays_unchanged_after_later_stripes_are_read(
    body: tuple[bytes, list[int], int], known: bool
) -> None:
    """Held views are never overwritten, though a body of known size reuses buffers."""
    data, cuts, stripe_size = body
    seen: list[tuple[memoryview, bytes]] = []
    size = len(data) if known else None
    async for stripe in cut_stripes(pieces_of(data, cuts), stripe_size, size):
        seen.append((stripe, bytes(stripe)))  # the view itself, and what it held when handed on
    for view, content in seen:
        assert bytes(view) == content
    assert b"".join(content for _, content in seen) == data


async def test_an_empty_body_gives_no_stripe() -> None:
    assert await collect(pieces_of(b"", []), 8) == []
    assert await collect(pieces_of(b"", [0, 0, 0]), 8) == []


async def test_an_exact_multiple_gives_no_empty_last_stripe() -> None:
    stripes = await collect(pieces_of(bytes(range(24)), [5, 17]), 8)
    assert [bytes(s) for s in stripes] == [
        bytes(range(0, 8)),
        bytes(range(8, 16)),
        bytes(range(16, 24)),
    ]


async def test_memoryview_and_bytearray_pieces_are_accepted() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield memoryview(b"abcde")  # type: ignore[misc]
        yield bytearray(b"fgh")  # type: ignore[misc]

    assert [bytes(s) for s in await collect(body(), 3)] == [b"abc", b"def", b"gh"]


def stripe_blocks(layout: Layout, data: bytes, stripe: int) -> list[bytes]:
    """The k data blocks of ``stripe``, zero-padded, as the coordinator cuts them."""
    block = layout.block_length(stripe)
    start = layout.stripe_start(stripe)
    chunk = data[start : start + layout.stripe_data_length(stripe)].ljust(layout.k * block, b"\0")
    return [chunk[i * block : (i + 1) * block] for i in range(layout.k)]


@st.composite
def ranged_files(draw: st.DrawFn) -> tuple[Layout, bytes, int, int]:
    k = draw(st.integers(1, 5), label="k")
    m = draw(st.integers(0, 2), label="m")
    block_size = draw(st.integers(1, 16), label="block_size")
    size = draw(st.integers(0, 4 * k * block_size + k), label="size")
    data = draw(st.binary(min_size=size, max_size=size), label="data")
    start = draw(st.integers(0, size), label="start")
    end = draw(st.integers(start, size), label="end")
    return Layout(size, k, m, block_size), data, start, end


@fast
@given(file=ranged_files())
def test_trimmed_stripes_are_exactly_the_range(file: tuple[Layout, bytes, int, int]) -> None:
    layout, data, start, end = file
    pieces: list[Buffer] = []
    for stripe in layout.stripes_covering(start, end):
        pieces.extend(trim(layout, stripe, list(stripe_blocks(layout, data, stripe)), start, end))
    assert all(len(piece) > 0 for piece in pieces)
    assert b"".join(pieces) == data[start:end]


@fast
@given(file=ranged_files(), data=st.data())
def test_trimming_decoded_stripes_gives_the_range(
    file: tuple[Layout, bytes, int, int], data: st.DataObject
) -> None:
    layout, content, start, end = file
    pieces: list[Buffer] = []
    for stripe in layout.stripes_covering(start, end):
        encoded, _ = encode_stripe(stripe_blocks(layout, content, stripe), layout.m)
        readable = data.draw(st.permutations(range(layout.n)), label="readable")[: layout.k]
        decoded = decode_stripe({i: encoded[i] for i in readable}, layout.k, layout.m)
        pieces.extend(trim(layout, stripe, decoded, start, end))
    assert b"".join(pieces) == content[start:end]


def test_trim_drops_the_padding_of_the_last_stripe() -> None:
    layout = Layout(7, 3, 0, 4)  # one short stripe of 3 blocks of 3 bytes: 2 padding bytes
    blocks = [b"abc", b"def", b"g\0\0"]
    assert b"".join(trim(layout, 0, list(blocks), 0, 7)) == b"abcdefg"
    assert b"".join(trim(layout, 0, list(blocks), 5, 7)) == b"fg"
    assert trim(layout, 0, list(blocks), 7, 7) == []


def test_trim_skips_blocks_outside_the_range() -> None:
    layout = Layout(12, 3, 0, 4)
    blocks = [b"abcd", b"efgh", b"ijkl"]
    assert [bytes(p) for p in trim(layout, 0, list(blocks), 5, 7)] == [b"fg"]
    assert [bytes(p) for p in trim(layout, 0, list(blocks), 3, 9)] == [b"d", b"efgh", b"i"]


async def test_a_body_of_known_size_is_cut_into_buffers_of_that_size() -> None:
    """A PUT with a Content-Length fills buffers sized to it at once: not grown by doubling
    (each byte copied again, twice the memory at the peak) as a chunked body's are; a short
    stripe's zero-padded blocks are views of that buffer, not a padded copy."""
    sent: list[dict[int, Buffer]] = []

    class Writers:
        by_index = dict.fromkeys(range(7))

        async def send(self, blocks: dict[int, Buffer]) -> None:
            sent.append(blocks)

        async def written(self) -> None:
            pass

    data = (bytes(range(250)) * 21)[:5003]  # one short stripe: 5 blocks of 1,001, padded
    written = await write_stripes(
        pieces_of(data, list(range(0, len(data), 700))),
        cast(ChunkWriters, Writers()),
        5,
        2,
        1024,
        len(data),
    )
    assert written.size == 5003
    (blocks,) = sent
    stripe = memoryview(blocks[0]).obj
    assert isinstance(stripe, bytearray)
    assert len(stripe) == 5005, "one buffer of the body's size, rounded up to k blocks"
    assert all(memoryview(blocks[i]).obj is stripe for i in range(5)), "no padded copy"
    assert b"".join(bytes(blocks[i]) for i in range(5)) == data + bytes(2)


async def test_a_large_body_cycles_through_a_few_buffers_once_their_views_are_gone() -> None:
    """A body of known size: a full stripe's buffer is filled again once nothing views
    it (none allocated, faulted in and zeroed per stripe), and never while something does."""
    stripe_size, count = 1000, 40
    data = b"".join(i.to_bytes(2, "big") * (stripe_size // 2) for i in range(count))
    held = None
    buffers: dict[int, object] = {}  # each kept: a freed one's id could be given again
    contents: list[bytes] = []
    async for stripe in cut_stripes(
        pieces_of(data, list(range(0, len(data), 300))), 1000, len(data)
    ):
        buffers[id(stripe.obj)] = stripe.obj  # (no buffer export: reuse still possible)
        contents.append(bytes(stripe))
        if len(contents) == 5:
            held = (stripe[10:20], bytes(stripe[10:20]))  # a block still queued somewhere
        del stripe
    assert b"".join(contents) == data
    assert held is not None
    assert bytes(held[0]) == held[1]
    assert len(buffers) <= SPARE_STRIPES + 2, "reused: one held view pins one buffer only"


async def test_a_body_shorter_than_its_size_pads_its_last_stripe_with_zeros() -> None:
    """The last stripe of a body that ends early may lie in a reused buffer that still
    holds an earlier stripe's bytes after it: its blocks are padded in a copy, with zeros."""
    data = b"a" * 3000 + b"bcdefg"
    stripes = []
    async for stripe in cut_stripes(pieces_of(data, []), 1000, len(data) + 3000, 5):
        stripes.append(bytes(stripe))
        last = stripe
    assert stripes[-1] == b"bcdefg"
    under = last.obj
    assert isinstance(under, bytearray)
    assert under[6:10] == b"aaaa", "a reused buffer: an earlier stripe's bytes after it"
    blocks = split_stripe(last, 5)
    assert b"".join(bytes(b) for b in blocks) == b"bcdefg" + bytes(4)


def test_a_short_stripe_of_another_buffer_is_padded_in_a_copy() -> None:
    """Padding in place only where the buffer under the stripe starts with it and is zero
    after it: a stripe cut from the middle of a buffer, or followed by other bytes, is
    copied."""
    under = bytearray(b"xxabcdefgyy" + bytes(10))
    for stripe in (memoryview(under)[2:9], memoryview(bytearray(b"abcdefgzzz"))[:7]):
        blocks = split_stripe(stripe, 5)
        assert b"".join(bytes(b) for b in blocks) == b"abcdefg" + bytes(3)
        assert memoryview(blocks[0]).obj is not stripe.obj


@fast
@given(
    stripes=st.integers(0, 3),
    tail=st.integers(0, 5 * 64 - 1),
    off=st.sampled_from([-4, -3, -2, -1, 1, 2, 64]),
)
async def test_a_body_off_its_declared_size_completes_no_chunk(
    stripes: int, tail: int, off: int
) -> None:
    """A body a few bytes short of its size (its last blocks can still have their full
    length) or running past it fails with IncompleteBody before any chunk has every byte
    of the size's layout: no holder can commit a chunk of a write that failed."""
    size = stripes * 5 * 64 + tail
    if size == 0 or size + off < 0:
        return
    chunk_size = Layout(size, 5, 2, 64).chunk_size
    sent = dict.fromkeys(range(7), 0)

    class Writers:
        by_index = dict.fromkeys(range(7))

        async def send(self, blocks: dict[int, Buffer]) -> None:
            for index, block in blocks.items():
                sent[index] += len(memoryview(block))

        async def written(self) -> None:
            pass

    data = bytes(range(256)) * (-(-(size + off) // 256))
    with pytest.raises(IncompleteBody):
        await write_stripes(
            pieces_of(data[: size + off], [7, 300, 700]),
            cast(ChunkWriters, Writers()),
            5,
            2,
            64,
            size,
        )
    assert all(count < chunk_size for count in sent.values()), (sent, chunk_size)
