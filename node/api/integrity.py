"""Integrity fields of an upload: the body must match the digests its client sent.

``expected_digests`` reads ``Content-MD5`` (RFC 1864: base64 of the body's MD5) and the
RFC 9530 dictionaries ``Repr-Digest`` and ``Content-Digest`` (``sha-256=:<base64>:``;
``sha-512`` too). A PUT stores its body exactly as sent, with no range and no transfer
coding left, so both dictionaries cover the same bytes: the stored ones. Algorithms this
peer does not compute (``md5``, ``crc32c``... in a dictionary) are ignored, as RFC 9530
allows; a field that is not well formed, or a known algorithm's value of the wrong size, is
refused (InvalidDigest) before the body is read, since the client asked for a check this
peer could not make.

``verified`` passes the body through and hashes it on the way, in a worker thread per
1 MiB batch (hashing must not block the loop: MD5 and SHA-256 take milliseconds per MiB),
overlapped with reading and storing. After the last piece it compares, and raises BadDigest
*instead of ending*: the coordinator completes no chunk before its body has ended (the
last stripe of a body of known size is held until then; a chunk of unknown size ends with
a marker sent after it), so no chunk is ever complete when this raises, and the upload
is aborted like a cut-off one (no manifest; holders drop what they received). Nothing is
hashed unless a digest was asked for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass

from aiohttp import hdrs
from multidict import CIMultiDictProxy

from node.api.structured_fields import parse_dictionary
from node.errors import BadDigest, InvalidDigest
from node.waiting import consume

REPR_DIGEST = "Repr-Digest"
CONTENT_DIGEST = "Content-Digest"
# RFC 9530 algorithm keys this peer computes, as hashlib names
ALGORITHMS = {"sha-256": "sha256", "sha-512": "sha512"}
BATCH = 1 << 20  # bytes hashed per worker-thread call


@dataclass(frozen=True)
class ExpectedDigest:
    """One digest a client sent: where (``field``, ``key``), which hash and its value."""

    field: str
    key: str
    algorithm: str  # a hashlib name
    digest: bytes

    def describe(self, digest: bytes) -> str:
        shown = base64.b64encode(digest).decode()
        if self.field == hdrs.CONTENT_MD5:
            return f"{self.field}: {shown}"
        return f"{self.field}: {self.key}=:{shown}:"


def expected_digests(headers: CIMultiDictProxy[str]) -> list[ExpectedDigest]:
    """The digests a request asks to check its body against (none: an empty list).

    Raises InvalidDigest for a malformed Content-MD5, Repr-Digest or Content-Digest.
    """
    expected: list[ExpectedDigest] = []
    md5 = headers.getall(hdrs.CONTENT_MD5, [])
    if md5:
        expected.append(_content_md5(md5))
    for field in (REPR_DIGEST, CONTENT_DIGEST):
        lines = headers.getall(field, [])
        if lines:
            expected.extend(_dictionary_digests(field, ", ".join(lines)))
    return expected


def _content_md5(lines: list[str]) -> ExpectedDigest:
    if len(lines) > 1:
        raise InvalidDigest("Content-MD5 is given more than once")
    try:
        digest = base64.b64decode(lines[0], validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != hashlib.md5().digest_size:
        raise InvalidDigest("Content-MD5 is the base64 of the body's 16-byte MD5 (RFC 1864)")
    return ExpectedDigest(hdrs.CONTENT_MD5, "md5", "md5", digest)


def _dictionary_digests(field: str, text: str) -> list[ExpectedDigest]:
    try:
        members = parse_dictionary(text)
    except ValueError as exc:
        raise InvalidDigest(f"{field} is not a structured field dictionary: {exc}") from None
    expected = []
    for key, item in members.items():
        algorithm = ALGORITHMS.get(key)
        if algorithm is None:
            continue  # an algorithm this peer does not compute: ignored (RFC 9530 §2)
        size = hashlib.new(algorithm).digest_size
        if not isinstance(item.value, bytes) or len(item.value) != size:
            raise InvalidDigest(f"{field}: {key} is a {size}-byte byte sequence (:<base64>:)")
        expected.append(ExpectedDigest(field, key, algorithm, item.value))
    return expected


def by_etag(
    expected: Sequence[ExpectedDigest], etag_hash: str
) -> tuple[bytes | None, list[ExpectedDigest]]:
    """``(Content-MD5, the others)``: the Content-MD5 in ``expected`` that the coordinator
    checks against the etag's own MD5 (``Coordinator.put``'s ``content_md5``) when etags
    are MD5s (``etag_hash``), so that the body is hashed once, and the digests left for
    ``verified``. Under another etag hash every digest is left for ``verified``."""
    if etag_hash != "md5":
        return None, list(expected)
    md5 = [e.digest for e in expected if e.field == hdrs.CONTENT_MD5]
    return (md5[0] if md5 else None), [e for e in expected if e.field != hdrs.CONTENT_MD5]


async def verified(
    body: AsyncIterable[bytes], expected: Sequence[ExpectedDigest]
) -> AsyncIterator[bytes]:
    """Yield ``body`` unchanged, then raise BadDigest instead of ending if it does not match
    every digest in ``expected``. The pieces must be immutable (``bytes``): a batch is hashed
    after its pieces were passed on."""
    hashes = {e.algorithm: hashlib.new(e.algorithm) for e in expected}

    def update(pieces: list[bytes]) -> None:  # in a worker thread; hashlib frees the GIL
        joined = b"".join(pieces)  # one GIL hand-back per hash, not one per piece
        for running in hashes.values():
            running.update(joined)

    batch: list[bytes] = []
    batched = 0
    hashing: asyncio.Future[None] | None = None
    try:
        async for piece in body:
            yield piece
            batch.append(piece)
            batched += len(piece)
            if batched >= BATCH:
                if hashing is not None:
                    await hashing  # batches are hashed in order, one at a time
                hashing = asyncio.ensure_future(asyncio.to_thread(update, batch))
                batch, batched = [], 0
        if hashing is not None:
            await hashing
            hashing = None
        if batch:
            await asyncio.to_thread(update, batch)
    finally:
        if hashing is not None:  # the body failed: a running thread cannot be stopped
            hashing.cancel()
            hashing.add_done_callback(consume)
    for check in expected:
        actual = hashes[check.algorithm].digest()
        if actual != check.digest:
            raise BadDigest(
                f"the body does not match {check.describe(check.digest)}: "
                f"its {check.key} is {base64.b64encode(actual).decode()}"
            )
