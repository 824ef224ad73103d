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
``UNSIGNED-PAYLOAD`` is taken as is; ``aws-chunked`` bodies (``STREAMING-...``) are not
served yet (NotImplemented).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import datetime, timezone

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from node.access.guard import ANONYMOUS, Principal
from node.api.errors import Handler
from node.api.integrity import ExpectedDigest, verified
from node.api.keys import GATEKEEPER, PRINCIPAL
from node.api.s3 import sigv2
from node.api.s3.errors import S3Error
from node.api.s3.sigv4 import (
    STREAMING_PREFIX,
    UNSIGNED_PAYLOAD,
    Signed,
    check_time,
    from_header,
    from_query,
    parse_query,
    verifies,
)
from node.errors import BadDigest, PayloadHashMismatch

SIGNED = web.RequestKey("s3_signed", Signed)  # the claims of a signed request
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
    authorization = request.headers.get(hdrs.AUTHORIZATION)
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
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    method, path = request.method, raw_path(request)

    def proves(secret: str) -> bool:
        return verifies(secret, signed, method, path, query, headers)

    principal = await request.app[GATEKEEPER].signed(
        signed.access_key, proves, request.remote or "?"
    )
    request[SIGNED] = signed
    return principal


async def _presigned_v2(request: web.Request, query: list[tuple[str, str]], now: Now) -> Principal:
    """The principal of a Signature V2 presigned URL (what boto3 makes by default)."""
    signed = sigv2.from_query(query)
    sigv2.check_time(signed, now().timestamp())
    method, path = request.method, raw_path(request)

    def proves(secret: str) -> bool:
        return sigv2.verifies(secret, signed, method, path, query)

    return await request.app[GATEKEEPER].signed(signed.access_key, proves, request.remote or "?")


def expected_payload(request: web.Request) -> str | None:
    """The hex SHA-256 the request's body must have, or None when its signature covers no
    body hash (anonymous, presigned, ``UNSIGNED-PAYLOAD``). Raises S3Error NotImplemented
    for ``aws-chunked`` bodies."""
    signed: Signed | None = request.get(SIGNED)
    if signed is None or signed.payload_hash == UNSIGNED_PAYLOAD:
        return None
    if signed.payload_hash.startswith(STREAMING_PREFIX):
        raise S3Error(
            "NotImplemented",
            f"aws-chunked bodies ({signed.payload_hash}) are not served yet; "
            "send a signed or UNSIGNED-PAYLOAD body",
        )
    return signed.payload_hash


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


def check_small_payload(request: web.Request, body: bytes) -> None:
    """Raise PayloadHashMismatch when a small body read whole is not the one signed."""
    expected = expected_payload(request)
    if expected is not None and hashlib.sha256(body).hexdigest() != expected:
        raise PayloadHashMismatch(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
