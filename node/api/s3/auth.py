"""Who sent an S3 request: Signature V4 checked against the key's secret, before any route.

``signed_requests`` (the S3 app's middleware) reads the claims of a request signed in its
``Authorization`` header or in its query (a presigned URL), refuses one outside its time
(``node.api.s3.sigv4.check_time``), and has the Gatekeeper look the key up and check the
signature with the key's secret (penalties and log lines are the Gatekeeper's, as for
Basic credentials on the native API). A request with neither is anonymous: it may read
public-read buckets only. The principal lands where the native API's routes put theirs
(``node.api.keys.PRINCIPAL``), so ``node.api.access.require`` decides grants for both.

Presigned URLs of Signature V2 (``node.api.s3.sigv2``), which boto3 still makes by default,
are served too; their payload is unsigned.

The payload a signature covers is checked as the body streams (``payload_checked``): a hex
``x-amz-content-sha256`` is compared after the last byte, and the body raises
PayloadHashMismatch instead of ending, so the upload is aborted and nothing is committed.
``UNSIGNED-PAYLOAD`` is taken as is. ``aws-chunked`` bodies (``STREAMING-...``) are decoded
by ``node.api.s3.chunked``: for signed chunks the middleware keeps the request's signing
key (derived from the secret for its day and region, never the secret) to check them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timezone

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from node.access.guard import ANONYMOUS, Principal
from node.api.errors import Handler
from node.api.input import one_header
from node.api.integrity import ExpectedDigest, verified
from node.api.keys import CONFIG, GATEKEEPER, PRINCIPAL
from node.api.s3 import chunked, sigv2
from node.api.s3.chunked import ChunkChain, ChunkedBody
from node.api.s3.errors import S3Error
from node.api.s3.sigv4 import (
    STREAMING_PREFIX,
    UNSIGNED_PAYLOAD,
    Signed,
    check_time,
    from_header,
    from_query,
    parse_query,
    signing_key,
    verifies,
)
from node.errors import BadDigest, BadSignature, PayloadHashMismatch

SIGNED = web.RequestKey("s3_signed", Signed)  # the claims of a signed request
CHAIN = web.RequestKey("s3_chunk_chain", ChunkChain)  # checks a signed aws-chunked body
DECODED_LENGTH = "x-amz-decoded-content-length"
# A bucket named by a Host label: what DNS names allow (S3's own bucket rules are stricter).
VIRTUAL_BUCKET = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")
QUERY = web.RequestKey("s3_query", list[tuple[str, str]])  # decoded query pairs, in order
CONTENT_SHA256 = "x-amz-content-sha256"
Now = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def raw_query(request: web.Request) -> str:
    """The query string exactly as sent (aiohttp's ``query_string`` is decoded)."""
    return request.raw_path.partition("?")[2]


def raw_path(request: web.Request) -> str:
    return request.raw_path.partition("?")[0]


def resource_path(request: web.Request) -> str:
    """The request's ``/bucket/key`` as path-style addressing has it (percent-encoded as
    sent). With ``--s3-domain`` set, a Host of ``<bucket>.<domain>`` (any port) is
    virtual-hosted style and its bucket comes before the path ("Virtual hosting of general
    purpose buckets", Amazon S3 User Guide); a Host of the domain itself, or any other, is
    path-style. This is also the resource a Signature V2 signs (its CanonicalizedResource).
    Raises S3Error InvalidBucketName for a bucket label that cannot be a DNS name."""
    path = raw_path(request)
    domain = request.app[CONFIG].s3_domain
    if not domain:
        return path
    host = request.headers.get(hdrs.HOST, "").lower()
    if not host.startswith("["):  # an IPv6 literal is never a bucket's name
        host = host.partition(":")[0]
    suffix = f".{domain.lower()}"
    if not host.endswith(suffix) or len(host) == len(suffix):
        return path
    bucket = host[: -len(suffix)]
    if not VIRTUAL_BUCKET.fullmatch(bucket):
        raise S3Error("InvalidBucketName", f"not a bucket name: {bucket[:80]!r}")
    return f"/{bucket}{path}"


def signed_requests(now: Now = utc_now) -> Middleware:
    """The middleware that sets every S3 request's principal; ``now`` is the time checked
    against (tests give another)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        query = parse_query(raw_query(request))
        request[QUERY] = query
        request[PRINCIPAL] = await _principal(request, query, now)
        return await handler(request)

    return middleware


async def _principal(request: web.Request, query: list[tuple[str, str]], now: Now) -> Principal:
    authorization = one_header(request, hdrs.AUTHORIZATION)
    presigned = any(name == "X-Amz-Algorithm" for name, _ in query)
    if authorization is None and not presigned:
        if sigv2.presigned_v2(query):
            return await _presigned_v2(request, query, now)
        return ANONYMOUS
    if authorization is not None and presigned:
        raise S3Error("InvalidArgument", "sign a request in its header or its query, not both")
    if authorization is not None:
        if authorization.startswith("AWS "):
            raise S3Error("InvalidRequest", "Signature Version 2 is not supported; use V4")
        signed = from_header(
            authorization, request.headers.get("x-amz-date"), request.headers.get(CONTENT_SHA256)
        )
    else:
        signed = from_query(query)
    check_time(signed, now())
    headers = header_lists(request)
    try:
        check_amz_headers_signed(signed, headers)
    except S3Error:
        penalty(request)()
        raise
    method, path = request.method, raw_path(request)
    signing_keys: list[bytes] = []  # for signed aws-chunked bodies

    def proves(secret: str) -> bool:
        right = verifies(secret, signed, method, path, query, headers)
        if right and signed.payload_hash in (chunked.SIGNED, chunked.SIGNED_TRAILER):
            signing_keys.append(signing_key(secret, signed.date, signed.region))
        return right

    principal = await request.app[GATEKEEPER].signed(
        signed.access_key, proves, request.remote or "?"
    )
    request[SIGNED] = signed
    if signing_keys:
        timestamp = signed.timestamp.strftime("%Y%m%dT%H%M%SZ")
        chain = ChunkChain(signing_keys[0], timestamp, signed.scope, signed.signature)
        request[CHAIN] = chain
    return principal


def header_lists(request: web.Request) -> dict[str, list[str]]:
    """The request's headers by lower-case name, each with its values in order."""
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    return headers


def check_amz_headers_signed(signed: Signed, headers: Mapping[str, Sequence[str]]) -> None:
    """Raise S3Error AccessDenied when an ``x-amz-*`` header is not among the signed ones.

    Routes obey ``x-amz-*`` headers (``x-amz-copy-source`` makes a PUT a copy,
    ``x-amz-metadata-directive``, ``x-amz-meta-*``...): one added to a presigned URL by
    whoever holds it would change what the signer allowed. botocore's header signer signs
    every header it sends (``x-amz-date``, ``x-amz-content-sha256``, checksums, trailers
    and decoded lengths included); a presigned URL's payload hash is in its query, so an
    ``x-amz-content-sha256`` header the signer could not sign is left to be ignored."""
    allowed = set(signed.signed_headers)
    if signed.presigned:
        allowed.add(CONTENT_SHA256)
    unsigned = sorted(n for n in headers if n.startswith("x-amz-") and n not in allowed)
    if unsigned:
        raise S3Error("AccessDenied", f"x-amz-* headers must be signed: {', '.join(unsigned)}")


async def _presigned_v2(request: web.Request, query: list[tuple[str, str]], now: Now) -> Principal:
    """The principal of a Signature V2 presigned URL (what boto3 makes by default)."""
    signed = sigv2.from_query(query)
    sigv2.check_time(signed, now().timestamp())
    method, path = request.method, resource_path(request)
    headers = header_lists(request)

    def proves(secret: str) -> bool:
        return sigv2.verifies(secret, signed, method, path, query, headers)

    return await request.app[GATEKEEPER].signed(signed.access_key, proves, request.remote or "?")


def expected_payload(request: web.Request) -> str | None:
    """The hex SHA-256 the request's body must have, or None when its signature covers no
    body hash (anonymous, presigned, ``UNSIGNED-PAYLOAD``, aws-chunked: ``chunked_body``).
    Raises S3Error NotImplemented for a ``STREAMING-...`` kind not served."""
    signed: Signed | None = request.get(SIGNED)
    if signed is None or signed.payload_hash == UNSIGNED_PAYLOAD:
        return None
    if signed.payload_hash.startswith(STREAMING_PREFIX):
        if signed.payload_hash not in chunked.SERVED:
            raise S3Error(
                "NotImplemented", f"bodies signed as {signed.payload_hash} are not served"
            )
        return None
    return signed.payload_hash


def chunked_body(request: web.Request) -> ChunkedBody | None:
    """The decoder of the request's aws-chunked body, or None for a plain body. Raises
    S3Error (MissingContentLength without x-amz-decoded-content-length)."""
    signed: Signed | None = request.get(SIGNED)
    if signed is None or signed.payload_hash not in chunked.SERVED:
        return None
    declared = request.headers.get(DECODED_LENGTH, "")
    if not declared.isascii() or not declared.isdigit() or len(declared) > 16:
        raise S3Error("MissingContentLength", f"an aws-chunked body needs {DECODED_LENGTH}")
    chain = request.get(CHAIN) if signed.payload_hash != chunked.UNSIGNED_TRAILER else None
    if signed.payload_hash in (chunked.SIGNED, chunked.SIGNED_TRAILER) and chain is None:
        raise S3Error("InternalError", "no signing key for a signed aws-chunked body")
    trailer = request.headers.get("x-amz-trailer")
    if signed.payload_hash == chunked.SIGNED:
        trailer = None
    return ChunkedBody(chain, trailer.strip() if trailer else None, int(declared))


async def decoded(
    body: AsyncIterable[bytes], decoder: ChunkedBody, penalize: Callable[[], None] = lambda: None
) -> AsyncIterator[bytes]:
    """The data of an aws-chunked ``body``; raises (instead of ending) what ``decoder``
    finds wrong, so an upload of it is aborted before its commit. A wrong chunk or trailer
    signature calls ``penalize`` first (``penalty``): it is a bad signature like any."""
    await chunked.load_crc(decoder.checksum)
    try:
        async for piece in body:
            for part in decoder.feed(piece):
                yield piece if len(part) == len(piece) else bytes(part)
        decoder.end()
    except BadSignature:
        penalize()
        raise


def penalty(request: web.Request) -> Callable[[], None]:
    """What counts a signature refused after the Gatekeeper's check (an unsigned x-amz-*
    header, a wrong chunk signature) against the request's address, as the Gatekeeper
    counts a wrong signature: the address's next attempts are delayed the same way."""
    gatekeeper = request.app[GATEKEEPER]
    address = request.remote or "?"
    return lambda: gatekeeper.penalty.failed(address)


async def payload_checked(body: AsyncIterable[bytes], sha256_hex: str) -> AsyncIterator[bytes]:
    """Yield ``body`` unchanged (hashed in worker threads on the way), then raise
    PayloadHashMismatch instead of ending if its SHA-256 is not ``sha256_hex``."""
    expected = ExpectedDigest(CONTENT_SHA256, "sha256", "sha256", bytes.fromhex(sha256_hex))
    try:
        async for piece in verified(body, [expected]):
            yield piece
    except BadDigest:
        raise PayloadHashMismatch(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        ) from None


def expected_checksum(request: web.Request) -> tuple[str, str] | None:
    """``(name, base64 value)`` of the ``x-amz-checksum-<name>`` header a body must match
    (a CRC of ``chunked.CRCS``, sha1 or sha256), or None."""
    for header, value in request.headers.items():
        name = chunked.checksum_name(header)
        if name is not None:
            return name, value.strip()
    return None


async def checksum_checked(
    body: AsyncIterable[bytes], name: str, expected: str
) -> AsyncIterator[bytes]:
    """Yield ``body`` unchanged, then raise BadDigest instead of ending if its checksum
    ``name`` is not ``expected``. CRCs are computed in place (zlib, awscrt: tens of
    microseconds a piece); SHA-1 and SHA-256 in worker threads
    (``node.api.integrity.verified``)."""
    header = f"x-amz-checksum-{name}"
    if name not in chunked.CRCS:
        try:
            digest = base64.b64decode(expected, validate=True)
        except binascii.Error:  # (as a CRC's value that cannot be one: no body matches it)
            raise BadDigest(f"{header} is not the base64 of a {name} digest") from None
        check = ExpectedDigest(header, name, name, digest)
        async for piece in verified(body, [check]):
            yield piece
        return
    await chunked.load_crc(name)
    running = chunked.Checksum(name)
    async for piece in body:
        running.update(piece)
        yield piece
    if running.value() != expected:
        raise BadDigest(f"the body does not match its {header}: {running.value()}")


def check_small_payload(request: web.Request, body: bytes) -> None:
    """Raise PayloadHashMismatch when a small body read whole is not the one signed."""
    expected = expected_payload(request)
    if expected is not None and hashlib.sha256(body).hexdigest() != expected:
        raise PayloadHashMismatch(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
