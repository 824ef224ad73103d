"""Erasure coding of one stripe: any k of the k+m blocks give the data back, digests line up."""

from __future__ import annotations

import itertools

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from node.datapath.codec import decode_stripe, encode_stripe
from node.errors import CorruptData
from node.model.digests import Buffer, block_digest

DIGEST = 16
coding = settings(max_examples=60, deadline=None)


@st.composite
def stripes(draw: st.DrawFn) -> tuple[list[bytes], int]:
    k = draw(st.integers(1, 6), label="k")
    m = draw(st.integers(0, 3), label="m")
    length = draw(st.integers(0, 300), label="block length")
    blocks = draw(st.lists(st.binary(min_size=length, max_size=length), min_size=k, max_size=k))
    return blocks, m


@coding
@given(stripe=stripes(), data=st.data())
def test_any_k_blocks_decode_to_the_data(
    stripe: tuple[list[bytes], int], data: st.DataObject
) -> None:
    blocks, m = stripe
    k = len(blocks)
    encoded, _ = encode_stripe(blocks, m)
    assert len(encoded) == k + m
    assert [bytes(b) for b in encoded[:k]] == blocks  # systematic: data blocks come first
    assert all(len(b) == len(blocks[0]) for b in encoded)
    chosen = data.draw(st.permutations(range(k + m)), label="order")[:k]
    decoded = decode_stripe({i: encoded[i] for i in chosen}, k, m)
    assert [bytes(b) for b in decoded] == blocks


@coding
@given(stripe=stripes())
def test_digests_are_16_bytes_per_block_in_order(stripe: tuple[list[bytes], int]) -> None:
    blocks, m = stripe
    encoded, digests = encode_stripe(blocks, m)
    assert len(digests) == DIGEST * len(encoded)
    for index, block in enumerate(encoded):
        assert digests[index * DIGEST : (index + 1) * DIGEST] == block_digest(block)


@coding
@given(stripe=stripes(), data=st.data())
def test_fewer_than_k_blocks_raise_corrupt_data(
    stripe: tuple[list[bytes], int], data: st.DataObject
) -> None:
    blocks, m = stripe
    k = len(blocks)
    encoded, _ = encode_stripe(blocks, m)
    chosen = data.draw(st.sets(st.integers(0, k + m - 1), max_size=k - 1), label="chosen")
    with pytest.raises(CorruptData):
        decode_stripe({i: encoded[i] for i in chosen}, k, m)


@pytest.mark.parametrize(("k", "m"), [(1, 1), (2, 1), (3, 2), (5, 2), (4, 3)])
def test_every_k_subset_decodes(k: int, m: int) -> None:
    blocks = [bytes([index]) * 7 + bytes(range(index, index + 5)) for index in range(k)]
    encoded, _ = encode_stripe(blocks, m)
    for chosen in itertools.combinations(range(k + m), k):
        decoded = decode_stripe({i: encoded[i] for i in chosen}, k, m)
        assert [bytes(b) for b in decoded] == blocks, chosen


def test_more_than_k_blocks_decode_too() -> None:
    blocks = [b"abcd", b"efgh", b"ijkl"]
    encoded, _ = encode_stripe(blocks, 3)
    present = {i: encoded[i] for i in (1, 2, 3, 4, 5)}  # data block 0 missing, 5 of 6 left
    assert [bytes(b) for b in decode_stripe(present, 3, 3)] == blocks


def test_memoryview_blocks_encode_like_bytes() -> None:
    # The coordinator hands memoryview slices of a stripe buffer to the encoder.
    stripe = memoryview(bytearray(range(60)))
    views: list[Buffer] = [stripe[i * 20 : (i + 1) * 20] for i in range(3)]
    from_views, view_digests = encode_stripe(views, 2)
    from_bytes, byte_digests = encode_stripe([bytes(v) for v in views], 2)
    assert [bytes(b) for b in from_views] == [bytes(b) for b in from_bytes]
    assert view_digests == byte_digests
    present: dict[int, Buffer] = {3: from_views[3], 1: from_views[1], 4: from_views[4]}
    assert [bytes(b) for b in decode_stripe(present, 3, 2)] == [bytes(v) for v in views]


def test_no_parity_gives_the_data_blocks_and_their_digests() -> None:
    blocks = [b"one", b"two"]
    encoded, digests = encode_stripe(blocks, 0)
    assert encoded == blocks
    assert digests == block_digest(b"one") + block_digest(b"two")
    assert decode_stripe({0: b"one", 1: b"two"}, 2, 0) == blocks
    with pytest.raises(CorruptData):
        decode_stripe({1: b"two"}, 2, 0)


def test_block_digest_is_xxh3_128() -> None:
    assert block_digest(b"") == xxhash.xxh3_128_digest(b"")
    assert block_digest(memoryview(b"abc")) == xxhash.xxh3_128_digest(b"abc")
    assert len(block_digest(b"x" * 1000)) == DIGEST
    assert block_digest(b"a") != block_digest(b"b")


@coding
@given(stripe=stripes(), more=st.integers(1, 3))
def test_a_parity_block_is_the_same_whatever_the_parity_count(
    stripe: tuple[list[bytes], int], more: int
) -> None:
    """Parity block k+j depends on j, not on m: what lets a file written with less parity
    be upgraded in place (``Manifest.with_parity``), its stored chunks kept, and decoded
    from a mix of blocks coded under either m."""
    blocks, m = stripe
    k = len(blocks)
    fewer, _ = encode_stripe(blocks, m)
    larger, _ = encode_stripe(blocks, m + more)
    assert [bytes(b) for b in fewer] == [bytes(b) for b in larger[: k + m]]
    if m:  # the last data block lost: decoded with the old parity under the larger layout
        given_blocks = {i: larger[i] for i in range(k - 1)} | {k: fewer[k]}
        assert [bytes(b) for b in decode_stripe(given_blocks, k, m + more)] == blocks
