"""aws-chunked bodies without a server: AWS's published signed-chunk example fed in every
slicing, a chunk or trailer whose signature is wrong, checksums in trailers, bodies cut
short or too long."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.api.s3 import sigv4
from node.api.s3.chunked import ChunkChain, ChunkedBody
from node.errors import BadDigest, BadSignature, IncompleteBody, InvalidRequest

# AWS's example of "Transferring Payload in Multiple Chunks" (S3 API reference, Signature
# Version 4): 65 KiB of "a" sent as a 64 KiB and a 1 KiB chunk.
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
SIGNATURES = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
DATA = b"a" * 66560
EXAMPLE_BODY = (
    f"10000;chunk-signature={SIGNATURES[0]}\r\n".encode()
    + b"a" * 65536
    + f"\r\n400;chunk-signature={SIGNATURES[1]}\r\n".encode()
    + b"a" * 1024
    + f"\r\n0;chunk-signature={SIGNATURES[2]}\r\n\r\n".encode()
)


def example_chain() -> ChunkChain:
    key = sigv4.signing_key(EXAMPLE_SECRET, "20130524", "us-east-1")
    return ChunkChain(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", SEED)


def decode(decoder: ChunkedBody, body: bytes, cuts: list[int]) -> bytes:
    out = bytearray()
    edges = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    for start, end in itertools.pairwise(edges):
        for part in decoder.feed(body[start:end]):
            out += part
    decoder.end()
    return bytes(out)


def test_the_aws_example_has_the_content_length_aws_gives() -> None:
    assert len(EXAMPLE_BODY) == 66824


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_the_aws_example_decodes_however_it_is_cut(cuts: list[int]) -> None:
    assert decode(ChunkedBody(example_chain(), None, len(DATA)), EXAMPLE_BODY, cuts) == DATA


@pytest.mark.parametrize("which", range(3))
def test_a_wrong_chunk_signature_is_refused(which: int) -> None:
    wrong = EXAMPLE_BODY.replace(SIGNATURES[which].encode(), b"0" * 64)
    with pytest.raises(BadSignature):
        decode(ChunkedBody(example_chain(), None, len(DATA)), wrong, [])


def test_changed_data_is_refused_by_its_chunk_signature() -> None:
    changed = EXAMPLE_BODY.replace(b"a" * 1024 + b"\r\n0;", b"a" * 1023 + b"b\r\n0;")
    with pytest.raises(BadSignature):
        decode(ChunkedBody(example_chain(), None, len(DATA)), changed, [])


@pytest.mark.parametrize("cut", [10, 66000, len(EXAMPLE_BODY) - 2])
def test_a_body_cut_short_is_incomplete(cut: int) -> None:
    decoder = ChunkedBody(example_chain(), None, len(DATA))
    decoder.feed(EXAMPLE_BODY[:cut])
    with pytest.raises(IncompleteBody):
        decoder.end()


def test_a_body_longer_than_announced_is_refused() -> None:
    with pytest.raises(IncompleteBody):
        decode(ChunkedBody(example_chain(), None, len(DATA) - 1), EXAMPLE_BODY, [])
    with pytest.raises(IncompleteBody):
        decode(ChunkedBody(example_chain(), None, len(DATA) + 1), EXAMPLE_BODY, [])


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # not hex
        b"2\r\nabc\r\n0\r\n\r\n",  # longer than its size
        b"2\nab\r\n0\r\n\r\n",  # LF alone
        b"2\r\nab\r\n0\r\n\r\nextra",  # bytes after the end
        b"f" * 5000 + b"\r\n",  # a line past the bound
    ],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises((InvalidRequest, IncompleteBody)):
        decode(ChunkedBody(None, None, 2), body, [])


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def unsigned_trailer_body(data: bytes, checksum: str) -> bytes:
    """What boto3 sends over HTTPS (STREAMING-UNSIGNED-PAYLOAD-TRAILER)."""
    return (
        f"{len(data):x}\r\n".encode()
        + data
        + f"\r\n0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n".encode()
    )


def test_an_unsigned_body_with_a_checksum_trailer() -> None:
    data = b"hello trailer" * 100
    body = unsigned_trailer_body(data, crc32_b64(data))
    decoder = ChunkedBody(None, "x-amz-checksum-crc32", len(data))
    assert decode(decoder, body, [7, 300]) == data
    wrong = unsigned_trailer_body(data, crc32_b64(data + b"!"))
    with pytest.raises(BadDigest):
        decode(ChunkedBody(None, "x-amz-checksum-crc32", len(data)), wrong, [])
    without = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
    with pytest.raises(IncompleteBody):
        decode(ChunkedBody(None, "x-amz-checksum-crc32", len(data)), without, [])


def test_a_signed_trailer_is_checked() -> None:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: the trailer's own signature follows it,
    computed here as AWS's "Signature calculations for trailing headers" describes."""
    key = sigv4.signing_key(EXAMPLE_SECRET, "20130524", "us-east-1")
    scope = "20130524/us-east-1/s3/aws4_request"

    def sign(kind: str, previous: str, *digests: str) -> str:
        text = "\n".join([kind, "20130524T000000Z", scope, previous, *digests])
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    data = b"x" * 9000
    first = sign(
        "AWS4-HMAC-SHA256-PAYLOAD", SEED, sigv4.EMPTY_SHA256, hashlib.sha256(data).hexdigest()
    )
    last = sign("AWS4-HMAC-SHA256-PAYLOAD", first, sigv4.EMPTY_SHA256, sigv4.EMPTY_SHA256)
    trailer = f"x-amz-checksum-crc32:{crc32_b64(data)}"
    trailer_signature = sign(
        "AWS4-HMAC-SHA256-TRAILER", last, hashlib.sha256(trailer.encode() + b"\n").hexdigest()
    )

    def body(signature: str) -> bytes:
        return (
            f"{len(data):x};chunk-signature={first}\r\n".encode()
            + data
            + f"\r\n0;chunk-signature={last}\r\n{trailer}\r\n".encode()
            + f"x-amz-trailer-signature:{signature}\r\n\r\n".encode()
        )

    def chain() -> ChunkChain:
        return ChunkChain(key, "20130524T000000Z", scope, SEED)

    assert (
        decode(
            ChunkedBody(chain(), "x-amz-checksum-crc32", len(data)), body(trailer_signature), [5]
        )
        == data
    )
    with pytest.raises(BadSignature):
        decode(ChunkedBody(chain(), "x-amz-checksum-crc32", len(data)), body("0" * 64), [])


def test_a_chunk_signature_outside_ascii_is_a_bad_signature_not_a_crash() -> None:
    with pytest.raises(BadSignature):
        example_chain().check_chunk("é" * 64, sigv4.EMPTY_SHA256)
