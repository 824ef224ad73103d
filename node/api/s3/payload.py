"""The body of an object upload (PutObject, UploadPart), checked as it streams.

``object_body`` turns a request into the bytes to store: decoded first when it is
``aws-chunked``, checked on the way against the signed ``x-amz-content-sha256`` or its
chunk signatures and trailer, an ``x-amz-checksum-*`` and a ``Content-MD5``. A mismatch
makes the body raise before its end, so the coordinator aborts the upload and nothing is
committed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from node.api.input import body_pieces
from node.api.integrity import by_etag, expected_digests, verified
from node.api.keys import CONFIG
from node.api.s3.auth import (
    checksum_checked,
    chunked_body,
    decoded,
    expected_checksum,
    expected_payload,
    payload_checked,
    penalty,
)
from node.api.s3.errors import S3Error
from node.errors import TooLarge
from node.model.representation import Checksum


def object_body(request: web.Request, limit: int) -> tuple[AsyncIterable[bytes], int | None]:
    """``(body, size)`` of an upload of at most ``limit`` bytes: the size is the object's
    (not the encoded body's), None when sent chunked without one. Raises S3Error
    (MissingContentLength), TooLarge, and what the signature checks raise before the body
    (the body raises the rest as it is read)."""
    upload = checked_object_body(request, limit)
    return upload.body, upload.size


async def refuse_content(request: web.Request, operation: str) -> None:
    """Raise S3Error UnexpectedContent (400) when ``request`` carries body bytes, as
    Amazon S3 answers an operation that takes none (CopyObject, UploadPartCopy: a PUT
    that names a copy source and sends data too would otherwise store the copy and drop
    the data without a word). The size is the decoded one for an aws-chunked body (its
    encoding of nothing is not empty); a body chunked without a size is read for one byte."""
    if not request.can_read_body:  # no Content-Length above 0, not chunked
        return
    decoder = chunked_body(request)
    size = decoder.size if decoder is not None else request.content_length
    if size is None and decoder is None:  # Transfer-Encoding: chunked, plain
        size = len(await request.content.read(1))
    if size:
        raise S3Error("UnexpectedContent", f"{operation} takes no request body")


@dataclass(frozen=True)
class ObjectBody:
    """An upload's body as ``object_body`` gives it, and what else a PutObject keeps of it:
    ``checksum`` gives, once the body has ended whole, the ``x-amz-checksum-*`` it was
    checked against (a header's, or an aws-chunked trailer's, known only then; None when
    none was sent), its value in canonical base64; ``content_md5`` is a Content-MD5 left
    for the coordinator to check against the etag (``Coordinator.put``), None when none
    was sent or the body checks it itself."""

    body: AsyncIterable[bytes]
    size: int | None
    checksum: Callable[[], Checksum | None]
    content_md5: bytes | None = None


def checked_object_body(
    request: web.Request, limit: int, etag_hash: str | None = None
) -> ObjectBody:
    """``object_body``'s body and size, with its checksum and, when ``etag_hash`` (the
    coordinator's ``--etag``) is md5, its Content-MD5 left to the coordinator
    (``integrity.by_etag``: the body is hashed once). Raises as ``object_body``."""
    config = request.app[CONFIG]
    size = request.content_length
    transfer_chunked = "chunked" in request.headers.get(hdrs.TRANSFER_ENCODING, "").lower()
    if size is None and not transfer_chunked:
        raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.")
    sha256 = expected_payload(request)  # (refuses what is not served before the body)
    decoder = chunked_body(request)
    if decoder is not None:
        size = decoder.size  # the object's, not the encoded body's
    if size is not None and size > limit:
        raise TooLarge(f"an object may be at most {limit} bytes; this is {size}")
    content_md5, digests = None, expected_digests(request.headers)
    if etag_hash is not None:
        content_md5, digests = by_etag(digests, etag_hash)
    body: AsyncIterable[bytes]
    if decoder is not None:  # (its size is checked as it is decoded)
        body = decoded(
            body_pieces(request, config.client_timeout, min_rate=config.client_min_rate),
            decoder,
            penalty(request),
        )
    else:
        body = body_pieces(request, config.client_timeout, limit, min_rate=config.client_min_rate)
    if sha256 is not None:
        body = payload_checked(body, sha256)
    checksum = expected_checksum(request) if decoder is None else None  # (else: trailer)
    if checksum is not None:
        body = checksum_checked(body, *checksum)
    if digests:
        body = verified(body, digests)

    def checked() -> Checksum | None:
        sent = decoder.checked if decoder is not None else checksum
        if sent is None:
            return None
        name, value = sent
        with contextlib.suppress(binascii.Error, UnicodeEncodeError):  # (refused already)
            value = base64.b64encode(base64.b64decode(value.encode(), validate=True)).decode()
        return Checksum(name, value)

    return ObjectBody(body, size, checked, content_md5)
