"""S3's multipart upload operations, over ``node.datapath.uploads``.

Served: CreateMultipartUpload (``POST ?uploads``), UploadPart (``PUT ?partNumber&uploadId``),
UploadPartCopy (the same with ``x-amz-copy-source``, optionally
``x-amz-copy-source-range``), CompleteMultipartUpload (``POST ?uploadId``),
AbortMultipartUpload (``DELETE ?uploadId``), ListParts (``GET ?uploadId``) and
ListMultipartUploads (``GET /bucket?uploads``). Grants are PutObject's: write on the bucket
for every operation but the listings, which need read (and UploadPartCopy needs read on the
source's bucket too). XML documents follow the Amazon S3 API reference of each operation.

An UploadPart's body is checked as PutObject's is (``node.api.s3.payload``). UploadPartCopy
streams the source's byte range through this peer into the new part: the bytes are read
and written again (by the peer, never the client), unlike Complete, which copies nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote
from xml.etree import ElementTree

from aiohttp import hdrs, web

from node.api.access import require
from node.api.conditions import write_condition
from node.api.input import body_pieces
from node.api.integrity import expected_digests
from node.api.keys import ACCESS, CONFIG, COORDINATOR, UPLOADS, principal_of
from node.api.representation import content_type_of, representation_of
from node.api.s3 import bodies
from node.api.s3.auth import check_small_payload
from node.api.s3.errors import S3Error
from node.api.s3.payload import object_body, refuse_content
from node.errors import BadDigest, FileNotFound, InvalidRange, NamespaceNotFound
from node.model.folders import check_delimiter
from node.model.manifest import Manifest
from node.model.multipart import (
    MAX_PART_SIZE,
    MAX_PARTS,
    InvalidUpload,
    check_part_number,
    check_upload_id,
    part_number,
)

log = logging.getLogger(__name__)

META_PREFIX = "x-amz-meta-"
MAX_COMPLETE_BODY = 4 << 20  # bytes of a Complete document read at most (10,000 parts fit)
MAX_LISTED_PARTS = 1000  # parts per ListParts page at most (S3's bound)
MAX_LISTED_UPLOADS = 1000  # uploads per ListMultipartUploads page at most (S3's bound)
STORAGE_CLASS = "STANDARD"
_COPY_RANGE = "x-amz-copy-source-range"


async def dispatch(
    request: web.Request,
    bucket: str,
    name: str,
    query: Mapping[str, str],
    copy_source: tuple[str, str] | None,
) -> web.StreamResponse:
    """Route a multipart request: ``name`` is the object's ("" for the bucket's listing);
    ``copy_source`` the ``(bucket, name)`` of an UploadPartCopy's source."""
    method = request.method
    if not name:
        if method == hdrs.METH_GET and "uploads" in query:
            return await list_uploads(request, bucket, query)
        raise S3Error("MethodNotAllowed", f"{method} is not allowed on this resource")
    if "uploads" in query and method == hdrs.METH_POST:
        return await create_upload(request, bucket, name)
    upload_id = _upload_id(query)
    if method == hdrs.METH_PUT:
        number = _part_number(query.get("partNumber", ""))
        if copy_source is not None:
            return await upload_part_copy(request, bucket, name, upload_id, number, copy_source)
        return await upload_part(request, bucket, name, upload_id, number)
    if method == hdrs.METH_POST:
        return await complete_upload(request, bucket, name, upload_id)
    if method == hdrs.METH_DELETE:
        return await abort_upload(request, bucket, name, upload_id)
    if method == hdrs.METH_GET:
        return await list_parts(request, bucket, name, upload_id, query)
    raise S3Error("MethodNotAllowed", f"{method} is not allowed on this resource")


def _upload_id(query: Mapping[str, str]) -> str:
    try:
        return check_upload_id(query.get("uploadId", ""))
    except InvalidUpload:
        raise S3Error(
            "NoSuchUpload",
            "The specified upload does not exist. The upload ID may be invalid, or the upload "
            "may have been aborted or completed.",
        ) from None


def _part_number(text: str) -> int:
    try:
        return check_part_number(text)
    except InvalidUpload as exc:
        raise S3Error(
            "InvalidArgument",
            f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive: {exc}",
        ) from None


async def _existing_bucket(request: web.Request, bucket: str) -> None:
    if await request.app[ACCESS].namespace(bucket) is None:
        raise NamespaceNotFound(f"The specified bucket does not exist: {bucket[:80]!r}")


def _key(bucket: str, name: str) -> str:
    return name[len(bucket) + 1 :]


def _xml(root: ElementTree.Element) -> web.Response:
    return web.Response(body=bodies.document(root), content_type=bodies.XML_TYPE, charset="utf-8")


def _child(parent: ElementTree.Element, tag: str, text: str | None = None) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


# --- operations ------------------------------------------------------------------------------


async def create_upload(request: web.Request, bucket: str, name: str) -> web.Response:
    """CreateMultipartUpload: an upload id; the object's type and metadata are given now
    and kept for Complete."""
    await require(request, "write", bucket)
    await _existing_bucket(request, bucket)
    content_type = content_type_of(request.headers.get(hdrs.CONTENT_TYPE))
    given = representation_of(request.headers, META_PREFIX)
    upload_id = await request.app[UPLOADS].create(bucket, name, content_type, given)
    root = ElementTree.Element("InitiateMultipartUploadResult", xmlns=bodies.NAMESPACE)
    _child(root, "Bucket", bucket)
    _child(root, "Key", _key(bucket, name))
    _child(root, "UploadId", upload_id)
    return _xml(root)


async def upload_part(
    request: web.Request, bucket: str, name: str, upload_id: str, number: int
) -> web.Response:
    """UploadPart: the body is stored as a file of its own (at most 5 GiB, and at most
    ``--max-file-size``); its ETag is the part's MD5."""
    await require(request, "write", bucket)
    limit = min(request.app[CONFIG].max_file_size, MAX_PART_SIZE)
    body, size = object_body(request, limit)
    part = await request.app[UPLOADS].put_part(bucket, upload_id, name, number, body, size)
    log.info("S3 UploadPart %s #%d of %r: %d bytes", upload_id, number, name, part.size)
    return web.Response(status=200, headers={hdrs.ETAG: f'"{part.etag}"'})


async def upload_part_copy(
    request: web.Request,
    bucket: str,
    name: str,
    upload_id: str,
    number: int,
    source: tuple[str, str],
) -> web.Response:
    """UploadPartCopy: the part is bytes of an existing object (all, or the inclusive
    ``x-amz-copy-source-range: bytes=first-last``), read and stored by this peer. A
    request body is refused (UnexpectedContent)."""
    source_bucket, source_name = source
    await refuse_content(request, "UploadPartCopy")
    if any(h.lower().startswith("x-amz-copy-source-if-") for h in request.headers):
        raise S3Error("NotImplemented", "x-amz-copy-source-if-* conditions are not served yet")
    await require(request, "read", source_bucket)
    await require(request, "write", bucket)
    coordinator = request.app[COORDINATOR]
    uploads = request.app[UPLOADS]
    await uploads.record(bucket, upload_id, name)  # (before reading anything)
    try:
        original = await coordinator.stat(source_name)
    except FileNotFound:
        await _existing_bucket(request, source_bucket)
        raise FileNotFound("The specified key does not exist.") from None
    start, end = _copy_range(request.headers.get(_COPY_RANGE), original.size)
    limit = min(request.app[CONFIG].max_file_size, MAX_PART_SIZE)  # as UploadPart's
    if end - start > limit:
        raise S3Error("InvalidRequest", f"a part is at most {limit} bytes")

    async def body() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(coordinator.stream(original, start, end)) as read:
            async for piece in read:
                yield bytes(piece)  # (the stream's blocks are views it may reuse)

    part = await uploads.put_part(bucket, upload_id, name, number, body(), end - start)
    log.info(
        "S3 UploadPartCopy %s #%d of %r from %r [%d, %d)",
        upload_id,
        number,
        name,
        source_name,
        start,
        end,
    )
    root = ElementTree.Element("CopyPartResult", xmlns=bodies.NAMESPACE)
    _child(root, "LastModified", bodies.iso_time(part.version.wall_ms))
    _child(root, "ETag", f'"{part.etag}"')
    return _xml(root)


def _copy_range(header: str | None, size: int) -> tuple[int, int]:
    """``[start, end)`` of an ``x-amz-copy-source-range`` (``bytes=first-last``, both
    given, inclusive) within an object of ``size`` bytes; the whole object when absent.
    Raises InvalidArgument (malformed), InvalidRange (past the object's end)."""
    if header is None:
        return 0, size
    unit, _, span = header.strip().partition("=")
    first, dash, last = span.partition("-")
    if unit != "bytes" or not dash or not first.isdigit() or not last.isdigit():
        raise S3Error("InvalidArgument", "x-amz-copy-source-range is bytes=first-last")
    start, stop = int(first), int(last) + 1
    if start >= stop:
        raise S3Error("InvalidArgument", "x-amz-copy-source-range: first is after last")
    if stop > size:
        raise InvalidRange(
            f"The requested range is not satisfiable: the object has {size} bytes", size
        )
    return start, stop


async def complete_upload(
    request: web.Request, bucket: str, name: str, upload_id: str
) -> web.Response:
    """CompleteMultipartUpload: the object is the parts listed, in order (no byte copied);
    refused with InvalidPartOrder, InvalidPart, EntityTooSmall as S3 refuses."""
    await require(request, "write", bucket)
    config = request.app[CONFIG]
    pieces = [
        p
        async for p in body_pieces(
            request, config.client_timeout, MAX_COMPLETE_BODY, min_rate=config.client_min_rate
        )
    ]
    document = b"".join(pieces)
    check_small_payload(request, document)
    for digest in expected_digests(request.headers):
        if hashlib.new(digest.algorithm, document).digest() != digest.digest:
            raise BadDigest("The Content-MD5 you specified did not match what we received.")
    parts = _parse_complete(document)
    manifest = await request.app[UPLOADS].complete(
        bucket, upload_id, name, parts, write_condition(request)
    )
    root = ElementTree.Element("CompleteMultipartUploadResult", xmlns=bodies.NAMESPACE)
    _child(
        root, "Location", f"{request.scheme}://{request.host}/{bucket}/{quote(_key(bucket, name))}"
    )
    _child(root, "Bucket", bucket)
    _child(root, "Key", _key(bucket, name))
    _child(root, "ETag", f'"{manifest.etag}"')
    return _xml(root)


def _parse_complete(document: bytes) -> list[tuple[int, str]]:
    """The ``(PartNumber, ETag)`` pairs of a CompleteMultipartUpload document, in order.
    Raises MalformedXML, InvalidArgument."""
    root = bodies.parse_xml(document)
    if bodies.local_name(root.tag) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML", "the document must be <CompleteMultipartUpload>")
    parts: list[tuple[int, str]] = []
    for child in root:
        if bodies.local_name(child.tag) != "Part":
            continue
        fields = {bodies.local_name(c.tag): (c.text or "").strip() for c in child}
        if "PartNumber" not in fields or "ETag" not in fields:
            raise S3Error("MalformedXML", "every <Part> needs a <PartNumber> and an <ETag>")
        parts.append((_part_number(fields["PartNumber"]), fields["ETag"]))
        if len(parts) > MAX_PARTS:
            raise S3Error("MalformedXML", f"an upload has at most {MAX_PARTS} parts")
    if not parts:
        raise S3Error("MalformedXML", "a CompleteMultipartUpload names at least one part")
    return parts


async def abort_upload(
    request: web.Request, bucket: str, name: str, upload_id: str
) -> web.Response:
    """AbortMultipartUpload: the upload ends and its parts are deleted."""
    await require(request, "write", bucket)
    await request.app[UPLOADS].abort(bucket, upload_id, name)
    return web.Response(status=204)


def _max(query: Mapping[str, str], parameter: str, bound: int) -> int:
    text = query.get(parameter, str(bound))
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise S3Error("InvalidArgument", f"{parameter} must be a non-negative integer")
    return min(int(text), bound)


async def list_parts(
    request: web.Request, bucket: str, name: str, upload_id: str, query: Mapping[str, str]
) -> web.Response:
    """ListParts: the parts stored so far, numbered after ``part-number-marker``."""
    await require(request, "read", bucket)
    limit = _max(query, "max-parts", MAX_LISTED_PARTS)
    marker_text = query.get("part-number-marker", "0") or "0"
    if not marker_text.isascii() or not marker_text.isdigit() or len(marker_text) > 5:
        raise S3Error("InvalidArgument", "part-number-marker must be a part number")
    marker = int(marker_text)
    record, parts, truncated = await request.app[UPLOADS].parts(
        bucket, upload_id, name, marker, max(limit, 1)
    )
    if limit == 0:
        parts, truncated = [], bool(parts)
    owner = bodies.owner_id(principal_of(request).access_key)
    root = ElementTree.Element("ListPartsResult", xmlns=bodies.NAMESPACE)
    _child(root, "Bucket", bucket)
    _child(root, "Key", _key(bucket, record.name))
    _child(root, "UploadId", upload_id)
    bodies.owned_by(root, "Initiator", owner)
    bodies.owned_by(root, "Owner", owner)
    _child(root, "StorageClass", STORAGE_CLASS)
    _child(root, "PartNumberMarker", str(marker))
    last = part_number(parts[-1].name) if parts else marker
    _child(root, "NextPartNumberMarker", str(last))
    _child(root, "MaxParts", str(limit))
    _child(root, "IsTruncated", "true" if truncated else "false")
    for part in parts:
        _part(root, part)
    return _xml(root)


def _part(parent: ElementTree.Element, part: Manifest) -> None:
    element = _child(parent, "Part")
    _child(element, "PartNumber", str(part_number(part.name)))
    _child(element, "LastModified", bodies.iso_time(part.version.wall_ms))
    _child(element, "ETag", f'"{part.etag}"')
    _child(element, "Size", str(part.size))


async def list_uploads(request: web.Request, bucket: str, query: Mapping[str, str]) -> web.Response:
    """ListMultipartUploads: uploads in progress by key then upload id (start time), with
    ``prefix``, after ``key-marker`` (and ``upload-id-marker`` within that key), rolled up
    into CommonPrefixes at a ``delimiter`` (``Uploads.listing``)."""
    await require(request, "read", bucket)
    await _existing_bucket(request, bucket)
    delimiter = check_delimiter(query.get("delimiter", ""))
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "encoding-type may only be url")
    limit = _max(query, "max-uploads", MAX_LISTED_UPLOADS)
    prefix = query.get("prefix", "")
    key_marker = query.get("key-marker", "")
    id_marker = query.get("upload-id-marker", "") if key_marker else ""
    listing = await request.app[UPLOADS].listing(
        bucket, prefix, delimiter, key_marker, id_marker, limit
    )
    shown = listing.entries

    def encoded(text: str) -> str:
        return quote(text, safe="/") if encoding == "url" else text

    owner = bodies.owner_id(principal_of(request).access_key)
    root = ElementTree.Element("ListMultipartUploadsResult", xmlns=bodies.NAMESPACE)
    _child(root, "Bucket", bucket)
    _child(root, "KeyMarker", encoded(key_marker))
    _child(root, "UploadIdMarker", query.get("upload-id-marker", ""))
    if listing.truncated and listing.next_key:
        _child(root, "NextKeyMarker", encoded(listing.next_key))
        _child(root, "NextUploadIdMarker", listing.next_upload_id)
    _child(root, "Prefix", encoded(prefix))
    if delimiter:
        _child(root, "Delimiter", encoded(delimiter))
    if encoding:
        _child(root, "EncodingType", encoding)
    _child(root, "MaxUploads", str(limit))
    _child(root, "IsTruncated", "true" if listing.truncated else "false")
    for key, upload in shown:
        if upload is None:
            continue
        element = _child(root, "Upload")
        _child(element, "Key", encoded(key))
        _child(element, "UploadId", upload.upload_id)
        bodies.owned_by(element, "Initiator", owner)
        bodies.owned_by(element, "Owner", owner)
        _child(element, "StorageClass", STORAGE_CLASS)
        _child(element, "Initiated", bodies.iso_time(upload.record.initiated_ms))
    for common, upload in shown:
        if upload is None:
            _child(_child(root, "CommonPrefixes"), "Prefix", encoded(common))
    return _xml(root)
