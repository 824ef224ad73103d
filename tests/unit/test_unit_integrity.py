"""Digest fields and the body check, without a network: tables of inputs and verdicts.

Structured field dictionaries (RFC 9651) as digest fields carry them, the digests a PUT's
headers ask for (RFC 1864 Content-MD5, RFC 9530 Repr-Digest and Content-Digest), and the
streaming check: bodies pass through unchanged and a mismatch is raised in place of the end.
The same inputs through real peers are in ``tests/node/shared/test_representation.py``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from node.api.integrity import BATCH, ExpectedDigest, by_etag, expected_digests, verified
from node.api.structured_fields import Date, DisplayString, Item, Token, parse_dictionary
from node.errors import BadDigest, InvalidDigest


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("a=1", {"a": Item(1, {})}),
        ("a=1, b=2", {"a": Item(1, {}), "b": Item(2, {})}),
        ("  a=1 ,\tb=2  ", {"a": Item(1, {}), "b": Item(2, {})}),
        ("a,b=?0", {"a": Item(True, {}), "b": Item(False, {})}),
        ("a=1, a=2", {"a": Item(2, {})}),  # the last value wins
        ("a=-1.5", {"a": Item(Decimal("-1.5"), {})}),
        ('a="x \\" \\\\ y"', {"a": Item('x " \\ y', {})}),
        ("a=tok/en:1", {"a": Item(Token("tok/en:1"), {})}),
        ("a=:aGVsbG8=:", {"a": Item(b"hello", {})}),
        ("a=:aGVsbG8:", {"a": Item(b"hello", {})}),  # padding may be left out
        ("a=::", {"a": Item(b"", {})}),
        ("a=@1659578233", {"a": Item(Date(1659578233), {})}),
        ('a=%"f%c3%bc"', {"a": Item(DisplayString("fü"), {})}),
        ("a=1;p;q=x", {"a": Item(1, {"p": True, "q": Token("x")})}),
        ("a=(1 2);p=3", {"a": Item((Item(1, {}), Item(2, {})), {"p": 3})}),
        ("a=( 1;x )", {"a": Item((Item(1, {"x": True}),), {})}),
        ("*a.b_c-d=1", {"*a.b_c-d": Item(1, {})}),
    ],
)
def test_dictionaries_parse(text: str, expected: dict[str, Item]) -> None:
    assert parse_dictionary(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A=1",  # keys are lower-case
        "1a=1",
        "a=1,",
        "a=1,,b=2",
        "a=1 b=2",
        "a=",
        "a=:aGVsbG8",  # unterminated byte sequence
        "a=:a$b:",
        "a=:ab=c:",  # padding in the middle
        'a="open',
        'a="bad \\x"',
        "a=1234567890123456",  # 16 digits
        "a=1.2345",
        "a=1.",
        "a=1.2.3",
        "a=?2",
        "a=(1 2",
        "a=(1,2)",
        "a=@1.5",
        'a=%"%zz"',
        "a=é",
        "a=1;",
    ],
)
def test_malformed_dictionaries_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"at character|ASCII"):
        parse_dictionary(text)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


SHA256 = hashlib.sha256(b"body").digest()
SHA512 = hashlib.sha512(b"body").digest()
MD5 = hashlib.md5(b"body").digest()


def test_no_digest_fields_ask_for_nothing() -> None:
    assert expected_digests(headers(("Content-Type", "text/plain"))) == []


def test_digest_fields_give_what_to_check() -> None:
    asked = expected_digests(
        headers(
            ("Content-MD5", b64(MD5)),
            ("Repr-Digest", f"sha-256=:{b64(SHA256)}:, unixsum=42"),
            ("Repr-Digest", f"sha-512=:{b64(SHA512)}:;p=1"),  # lines of one field join
            ("Content-Digest", f"md5=:{b64(MD5)}:, sha-256=:{b64(SHA256)}:"),
        )
    )
    assert asked == [
        ExpectedDigest("Content-MD5", "md5", "md5", MD5),
        ExpectedDigest("Repr-Digest", "sha-256", "sha256", SHA256),
        ExpectedDigest("Repr-Digest", "sha-512", "sha512", SHA512),
        ExpectedDigest("Content-Digest", "sha-256", "sha256", SHA256),
    ]


def test_only_unknown_algorithms_ask_for_nothing() -> None:
    assert expected_digests(headers(("Repr-Digest", f"md5=:{b64(MD5)}:, crc32c=:AAAAAA==:"))) == []


@pytest.mark.parametrize(
    "pairs",
    [
        [("Content-MD5", "")],
        [("Content-MD5", "bm90IGFuIG1kNQ")],  # unpadded and short
        [("Content-MD5", b64(MD5)), ("Content-MD5", b64(MD5))],
        [("Content-MD5", b64(SHA256))],
        [("Repr-Digest", f"sha-256=:{b64(MD5)}:")],
        [("Repr-Digest", f"sha-512=:{b64(SHA256)}:")],
        [("Repr-Digest", "sha-256=?1")],
        [("Repr-Digest", f"sha-256=(:{b64(SHA256)}:)")],
        [("Repr-Digest", "not a dictionary")],
        [("Content-Digest", f"sha-256=:{b64(SHA256)}:;")],
    ],
)
def test_malformed_digest_fields_are_refused(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidDigest):
        expected_digests(headers(*pairs))


async def body(data: bytes, piece: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def asked(data: bytes) -> list[ExpectedDigest]:
    return [
        ExpectedDigest("Content-MD5", "md5", "md5", hashlib.md5(data).digest()),
        ExpectedDigest("Repr-Digest", "sha-256", "sha256", hashlib.sha256(data).digest()),
    ]


@pytest.mark.parametrize("size", [0, 1, BATCH - 1, BATCH, 3 * BATCH + 17])
async def test_a_matching_body_passes_through_unchanged(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    passed = [piece async for piece in verified(body(data, 65_536 + 3), asked(data))]
    assert b"".join(passed) == data


@pytest.mark.parametrize("size", [1, BATCH, 3 * BATCH + 17])
async def test_a_mismatch_is_raised_after_the_last_piece(size: int) -> None:
    data = b"y" * size
    expected = asked(data[:-1] + b"z")
    passed = bytearray()

    async def drain() -> None:
        async for piece in verified(body(data, 100_000), expected):
            passed.extend(piece)

    with pytest.raises(BadDigest, match="Content-MD5"):
        await drain()
    assert passed == data  # every piece went on; the end never came


def test_under_md5_etags_a_content_md5_is_left_to_the_etag_s_digest() -> None:
    expected = expected_digests(
        headers(("Content-MD5", b64(MD5)), ("Repr-Digest", f"sha-256=:{b64(SHA256)}:"))
    )
    md5, rest = by_etag(expected, "md5")
    assert md5 == MD5
    assert [e.field for e in rest] == ["Repr-Digest"]
    assert by_etag(expected, "xxh3") == (None, expected)  # (an xxh3 etag is no MD5)
    assert by_etag(rest, "md5") == (None, rest)
