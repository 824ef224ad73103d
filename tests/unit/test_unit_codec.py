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
from node.model.layout import CODECS

DIGEST = 16
coding = settings(max_examples=60, deadline=None)


@st.composite
def stripes(draw: st.DrawFn) -> tuple[list[bytes], int]:
    k = draw(st.integers(1, 6), label="k")
    m = draw(st.integers(0, 3), label="m")
    length = draw(st.integers(0, 300), label="block length")
    blocks = draw(st.lists(st.binary(min_size=length, max_size=length), min_size=k, max_size=k))
    return blocks, m


@pytest.mark.parametrize("codec", CODECS)
@coding
@given(stripe=stripes(), data=st.data())
def test_any_k_blocks_decode_to_the_data(
    codec: str, stripe: tuple[list[bytes], int], data: st.DataObject
) -> None:
    blocks, m = stripe
    k = len(blocks)
    encoded, _ = encode_stripe(blocks, m, codec)
    assert len(encoded) == k + m
    assert [bytes(b) for b in encoded[:k]] == blocks  # systematic: data blocks come first
    assert all(len(b) == len(blocks[0]) for b in encoded)
    chosen = data.draw(st.permutations(range(k + m)), label="order")[:k]
    decoded = decode_stripe({i: encoded[i] for i in chosen}, k, m, codec)
    assert [bytes(b) for b in decoded] == blocks


@pytest.mark.parametrize("codec", CODECS)
@coding
@given(stripe=stripes())
def test_digests_are_16_bytes_per_block_in_order(
    codec: str, stripe: tuple[list[bytes], int]
) -> None:
    blocks, m = stripe
    encoded, digests = encode_stripe(blocks, m, codec)
    assert len(digests) == DIGEST * len(encoded)
    for index, block in enumerate(encoded):
        assert digests[index * DIGEST : (index + 1) * DIGEST] == block_digest(block)


@pytest.mark.parametrize("codec", CODECS)
@coding
@given(stripe=stripes(), data=st.data())
def test_fewer_than_k_blocks_raise_corrupt_data(
    codec: str, stripe: tuple[list[bytes], int], data: st.DataObject
) -> None:
    blocks, m = stripe
    k = len(blocks)
    encoded, _ = encode_stripe(blocks, m, codec)
    chosen = data.draw(st.sets(st.integers(0, k + m - 1), max_size=k - 1), label="chosen")
    with pytest.raises(CorruptData):
        decode_stripe({i: encoded[i] for i in chosen}, k, m, codec)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("k", "m"), [(1, 1), (2, 1), (3, 2), (5, 2), (4, 3)])
def test_every_k_subset_decodes(codec: str, k: int, m: int) -> None:
    blocks = [bytes([index]) * 7 + bytes(range(index, index + 5)) for index in range(k)]
    encoded, _ = encode_stripe(blocks, m, codec)
    for chosen in itertools.combinations(range(k + m), k):
        decoded = decode_stripe({i: encoded[i] for i in chosen}, k, m, codec)
        assert [bytes(b) for b in decoded] == blocks, chosen


@pytest.mark.parametrize("codec", CODECS)
def test_more_than_k_blocks_decode_too(codec: str) -> None:
    blocks = [b"abcd", b"efgh", b"ijkl"]
    encoded, _ = encode_stripe(blocks, 3, codec)
    present = {i: encoded[i] for i in (1, 2, 3, 4, 5)}  # data block 0 missing, 5 of 6 left
    assert [bytes(b) for b in decode_stripe(present, 3, 3, codec)] == blocks


@pytest.mark.parametrize("codec", CODECS)
def test_memoryview_blocks_encode_like_bytes(codec: str) -> None:
    # The coordinator hands memoryview slices of a stripe buffer to the encoder.
    stripe = memoryview(bytearray(range(60)))
    views: list[Buffer] = [stripe[i * 20 : (i + 1) * 20] for i in range(3)]
    from_views, view_digests = encode_stripe(views, 2, codec)
    from_bytes, byte_digests = encode_stripe([bytes(v) for v in views], 2, codec)
    assert [bytes(b) for b in from_views] == [bytes(b) for b in from_bytes]
    assert view_digests == byte_digests
    present: dict[int, Buffer] = {3: from_views[3], 1: from_views[1], 4: from_views[4]}
    assert [bytes(b) for b in decode_stripe(present, 3, 2, codec)] == [bytes(v) for v in views]


@pytest.mark.parametrize("codec", CODECS)
def test_no_parity_gives_the_data_blocks_and_their_digests(codec: str) -> None:
    blocks = [b"one", b"two"]
    encoded, digests = encode_stripe(blocks, 0, codec)
    assert encoded == blocks
    assert digests == block_digest(b"one") + block_digest(b"two")
    assert decode_stripe({0: b"one", 1: b"two"}, 2, 0, codec) == blocks
    with pytest.raises(CorruptData):
        decode_stripe({1: b"two"}, 2, 0, codec)


def test_block_digest_is_xxh3_128() -> None:
    assert block_digest(b"") == xxhash.xxh3_128_digest(b"")
    assert block_digest(memoryview(b"abc")) == xxhash.xxh3_128_digest(b"abc")
    assert len(block_digest(b"x" * 1000)) == DIGEST
    assert block_digest(b"a") != block_digest(b"b")


@pytest.mark.parametrize("codec", CODECS)
@coding
@given(stripe=stripes(), more=st.integers(1, 3))
def test_a_parity_block_is_the_same_whatever_the_parity_count(
    codec: str, stripe: tuple[list[bytes], int], more: int
) -> None:
    """Parity block k+j depends on j, not on m: what lets a file written with less parity
    be upgraded in place (``Manifest.with_parity``), its stored chunks kept, and decoded
    from a mix of blocks coded under either m."""
    blocks, m = stripe
    k = len(blocks)
    fewer, _ = encode_stripe(blocks, m, codec)
    larger, _ = encode_stripe(blocks, m + more, codec)
    assert [bytes(b) for b in fewer] == [bytes(b) for b in larger[: k + m]]
    if m:  # the last data block lost: decoded with the old parity under the larger layout
        given_blocks = {i: larger[i] for i in range(k - 1)} | {k: fewer[k]}
        assert [bytes(b) for b in decode_stripe(given_blocks, k, m + more, codec)] == blocks


# Parity of bytes 0..29 cut into 3 blocks, m = 2: stored chunks depend on it for good, so
# a library whose matrix changed is caught here, not by a repair.
ZFEC_PARITY = "28290a0b1c1dfeffa0a150519293b4b5cccd7f7e"


def gf_multiply(a: int, b: int) -> int:
    """a * b in GF(2^8) modulo x^8 + x^4 + x^3 + x^2 + 1 (0x11d), ISA-L's field."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return product


def cauchy_parity(blocks: list[bytes], m: int) -> list[bytes]:
    """The Cauchy code as isal.py's docstring states it: row i = 1 / (i xor j)."""
    k = len(blocks)
    inverse = {a: next(x for x in range(1, 256) if gf_multiply(a, x) == 1) for a in range(1, 256)}
    parity = []
    for i in range(k, k + m):
        row = [inverse[i ^ j] for j in range(k)]
        out = bytearray(len(blocks[0]))
        for j, block in enumerate(blocks):
            for t, byte in enumerate(block):
                out[t] ^= gf_multiply(row[j], byte)
        parity.append(bytes(out))
    return parity


def test_parity_is_pinned() -> None:
    blocks = [bytes(range(i * 10, (i + 1) * 10)) for i in range(3)]
    zfec_coded, _ = encode_stripe(blocks, 2, "zfec")
    assert b"".join(bytes(b) for b in zfec_coded[3:]).hex() == ZFEC_PARITY
    for m in (1, 2, 4):
        cauchy_coded, _ = encode_stripe(blocks, m, "isa-l-cauchy")
        assert [bytes(b) for b in cauchy_coded[3:]] == cauchy_parity(blocks, m)


def test_the_codecs_differ_so_a_file_keeps_its_own() -> None:
    """Decoded with the other codec's matrix a stripe comes back wrong, not refused: why a
    manifest names its codec (schema 3) and releases before it refuse such manifests."""
    blocks = [bytes(range(i * 10, (i + 1) * 10)) for i in range(3)]
    coded = {codec: encode_stripe(blocks, 2, codec)[0] for codec in CODECS}
    zfec_parity, cauchy_parity = (coded[c][3:] for c in CODECS)
    assert [bytes(b) for b in zfec_parity] != [bytes(b) for b in cauchy_parity]
    present = {1: coded["isa-l-cauchy"][1], 2: coded["isa-l-cauchy"][2], 3: cauchy_parity[0]}
    assert [bytes(b) for b in decode_stripe(present, 3, 2, "zfec")] != blocks


def test_read_only_views_and_the_widest_stripe_code_with_isa_l() -> None:
    """Read-only buffers (views of bytes, as chunk reads give) are copied for ISA-L, which
    takes writable memory through ctypes; 256 chunks is the most GF(2^8) allows."""
    data = bytes(range(256)) * 3
    views: list[Buffer] = [memoryview(data)[i * 24 : (i + 1) * 24] for i in range(32)]
    encoded, _ = encode_stripe(views, 224, "isa-l-cauchy")
    present = {i: encoded[i] for i in range(224, 256)}  # parity alone
    decoded = decode_stripe(present, 32, 224, "isa-l-cauchy")
    assert b"".join(bytes(b) for b in decoded) == data


def test_blocks_of_unequal_length_are_refused_not_read_past() -> None:
    """zfec refuses them; ISA-L's C code would read past the shorter block's end."""
    with pytest.raises(ValueError, match="bytes each"):
        encode_stripe([b"a" * 64, b"b" * 8, b"c" * 64], 2, "isa-l-cauchy")
    encoded, _ = encode_stripe([b"a" * 64, b"b" * 64, b"c" * 64], 2, "isa-l-cauchy")
    with pytest.raises(ValueError, match="bytes each"):
        decode_stripe({1: encoded[1][:8], 2: encoded[2], 3: encoded[3]}, 3, 2, "isa-l-cauchy")
