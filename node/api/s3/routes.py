"""The S3 operations, path-style (``/bucket/key``), over the same operations as the files API.

A bucket is a namespace and object ``key`` of bucket ``b`` is the file ``b/key``: the
coordinator, the access store and the Gatekeeper's grants are the native API's own
(read: GET, HEAD and listings; write: PUT and DELETE; creating a bucket needs the create
grant, deleting one admin, as ``/namespaces`` does). Keys must be valid ringstore names
(no empty, ``.`` or ``..`` segment): others are refused with InvalidArgument.

Served: ListBuckets, CreateBucket, HeadBucket, DeleteBucket (empty only), GetBucketLocation,
PutObject, CopyObject (read and written by the peer: nothing passes through the client),
GetObject (Range, conditionals, ``response-*`` overrides), HeadObject, DeleteObject,
DeleteObjects, ListObjectsV2 and ListObjects (prefix, delimiter, continuation token or
marker, start-after, max-keys, ``encoding-type=url``), and the multipart operations
(``node.api.s3.multipart``: requests with ``uploads`` or ``uploadId``). Every other
sub-resource (ACLs, tagging...) is answered NotImplemented rather than mistaken for a plain object
operation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote, unquote_to_bytes

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from node.api.access import require
from node.api.conditions import write_condition
from node.api.input import defer_continue, small_body
from node.api.integrity import expected_digests
from node.api.keys import ACCESS, CONFIG, COORDINATOR, principal_of
from node.api.representation import content_type_of, representation_of
from node.api.s3 import bodies, multipart
from node.api.s3.auth import (
    QUERY,
    check_small_payload,
    resource_path,
)
from node.api.s3.errors import S3Error, s3_code
from node.api.s3.payload import checked_object_body, refuse_content
from node.api.sending import answer_file, file_headers
from node.errors import (
    BadDigest,
    FileNotFound,
    InvalidName,
    NamespaceNotFound,
    PreconditionFailed,
    RingstoreError,
    Unauthenticated,
)
from node.model import preconditions
from node.model.access import namespace_of
from node.model.folders import check_delimiter
from node.model.manifest import Manifest
from node.model.multipart import MAX_PARTS
from node.model.names import has_control, name_from_raw_path
from node.model.preconditions import Outcome, Preconditions, parse_preconditions
from node.model.representation import MAX_FIELD_LENGTH

log = logging.getLogger(__name__)

META_PREFIX = "x-amz-meta-"
AWS_CHUNKED = "aws-chunked"
REGION = "us-east-1"  # what GetBucketLocation and HeadBucket name; any is accepted
MAX_KEYS = 1000  # keys per listing page at most (S3's bound too)
MAX_BUCKET_BODY = 64 << 10  # bytes of a CreateBucket configuration read at most
MAX_DELETE_BODY = 1 << 20  # bytes of a DeleteObjects document read at most
DELETING_AT_ONCE = 16  # deletions of one DeleteObjects under way at a time
COPY_SOURCE = "x-amz-copy-source"
PARTS_COUNT = "x-amz-mp-parts-count"  # a multipart object's number of parts (partNumber)
CHECKSUM_MODE = "x-amz-checksum-mode"  # ENABLED: GetObject and HeadObject give the checksum
CHECKSUM_TYPE = "x-amz-checksum-type"  # FULL_OBJECT (of all the bytes) or COMPOSITE
# GetObject parameters that set a header of the answer
RESPONSE_OVERRIDES: dict[str, str] = {
    "response-content-type": hdrs.CONTENT_TYPE,
    "response-content-language": hdrs.CONTENT_LANGUAGE,
    "response-expires": hdrs.EXPIRES,
    "response-cache-control": hdrs.CACHE_CONTROL,
    "response-content-disposition": hdrs.CONTENT_DISPOSITION,
    "response-content-encoding": hdrs.CONTENT_ENCODING,
}
COPY_CONDITIONS = {  # x-amz-copy-source-if-* and the RFC 9110 field each stands for
    "x-amz-copy-source-if-match": hdrs.IF_MATCH,
    "x-amz-copy-source-if-none-match": hdrs.IF_NONE_MATCH,
    "x-amz-copy-source-if-modified-since": hdrs.IF_MODIFIED_SINCE,
    "x-amz-copy-source-if-unmodified-since": hdrs.IF_UNMODIFIED_SINCE,
}
MAX_BUCKETS = 10_000  # ListBuckets' max-buckets at most (S3's bound)
# Sub-resources of S3 not served yet: answered NotImplemented, never taken as plain GETs.
UNSERVED = frozenset(
    {
        "accelerate", "acl", "analytics", "attributes", "cors", "encryption",
        "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "logging", "metrics",
        "notification", "object-lock", "ownershipControls", "policy",
        "policyStatus", "publicAccessBlock", "replication", "requestPayment", "restore",
        "retention", "select", "tagging", "torrent", "uploadId", "uploads", "versioning",
        "website",
    }
)  # fmt: skip


# Request headers asking for what this store does not do: refused (NotImplemented) rather
# than dropped, which would store in the clear what was to be encrypted, let a delete
# remove what was to be retained, or forget tags. Prefixes, lower-case.
UNSERVED_HEADERS = (
    "x-amz-server-side-encryption",  # SSE-S3, SSE-KMS, SSE-C (-customer-*) and its context
    "x-amz-object-lock-",
    "x-amz-tagging",
    "x-amz-website-redirect-location",
)
# Canned ACLs a bucket that allows no ACLs takes (AWS's "bucket owner enforced" object
# ownership, its default since 2023): others, and x-amz-grant-*, get
# AccessControlListNotSupported, as there.
OWNER_ACLS = frozenset({"private", "bucket-owner-full-control"})


def refuse_unserved_headers(request: web.BaseRequest) -> None:
    """Raise S3Error for a request header that asks for what is not served (above)."""
    for header in request.headers:
        lower = header.lower()
        if lower.startswith(UNSERVED_HEADERS):
            raise S3Error("NotImplemented", f"{header} is not served by this S3 frontend")
        acl = lower == "x-amz-acl" and request.headers[header].strip() not in OWNER_ACLS
        if acl or lower.startswith("x-amz-grant-"):
            raise S3Error("AccessControlListNotSupported", "The bucket does not allow ACLs")


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", r"/{path:[\s\S]*}", dispatch, expect_handler=defer_continue)


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Route by method, bucket, key and sub-resource, as S3 does."""
    bucket, key = _split(resource_path(request))
    pairs: list[tuple[str, str]] = request[QUERY]
    query = dict(pairs)
    unserved = sorted(UNSERVED & set(query))
    method = request.method
    refuse_unserved_headers(request)
    if method == hdrs.METH_POST and bucket and not key and "delete" in query:
        return await delete_objects(request, bucket)
    if bucket and not {"uploads", "uploadId"}.isdisjoint(query):
        name = _object_name(bucket, key) if key else ""
        copy_source = request.headers.get(COPY_SOURCE)
        source = _copy_source(copy_source) if copy_source is not None and name else None
        return await multipart.dispatch(request, bucket, name, query, source)
    if query.get("versionId", "null") != "null":  # ("null": the one version there is)
        unserved = ["versionId", *unserved]
    if unserved == ["versioning"] and method == hdrs.METH_GET and bucket and not key:
        return await bucket_versioning(request, bucket)
    if unserved or (method == hdrs.METH_POST and bucket):
        what = f"?{unserved[0]}" if unserved else "POST"
        raise S3Error("NotImplemented", f"{what} is not served by this S3 frontend yet")
    if not bucket:
        if method == hdrs.METH_GET:
            return await list_buckets(request, query)
    elif not key:
        if method == hdrs.METH_GET:
            if "location" in query:
                return await bucket_location(request, bucket)
            return await list_objects(request, bucket, query)
        if method == hdrs.METH_HEAD:
            return await head_bucket(request, bucket)
        if method == hdrs.METH_PUT:
            return await create_bucket(request, bucket)
        if method == hdrs.METH_DELETE:
            return await delete_bucket(request, bucket)
    else:
        name = _object_name(bucket, key)
        if method in (hdrs.METH_GET, hdrs.METH_HEAD):
            return await get_object(request, bucket, name)
        if "partNumber" in query:  # (an UploadPart without its uploadId, not a PutObject)
            raise S3Error("InvalidRequest", "partNumber needs an uploadId, but on GET and HEAD")
        if method == hdrs.METH_PUT:
            if COPY_SOURCE in request.headers:
                return await copy_object(request, bucket, name)
            return await put_object(request, bucket, name)
        if method == hdrs.METH_DELETE:
            return await delete_object(request, bucket, name)
    raise S3Error("MethodNotAllowed", f"{method} is not allowed on this resource")


def _split(path: str) -> tuple[str, str]:
    """``(bucket, raw key)`` of a path-style request path (both ``""`` when absent): the
    bucket decoded (``_bucket``), the key as sent (``_object_name`` decodes it)."""
    bucket, _, key = path.lstrip("/").partition("/")
    return _bucket(bucket), key


def _bucket(raw: str) -> str:
    """The bucket of a percent-encoded path segment, decoded once, as the object's name is:
    grants are checked on the namespace the object lands in, never on another spelling
    of it (``a%62`` is ``ab``). A segment that decodes to something with ``%`` or ``/``
    (or to no UTF-8) is InvalidBucketName: it could be read as two different buckets."""
    if "%" not in raw:
        return raw
    try:
        bucket = unquote_to_bytes(raw.encode("utf-8", "surrogateescape")).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidBucketName", "a bucket name is UTF-8") from None
    if "%" in bucket or "/" in bucket or not bucket:
        raise S3Error("InvalidBucketName", f"not a bucket name: {raw[:80]!r}")
    return bucket


def _object_name(bucket: str, raw_key: str) -> str:
    """The ringstore name of key ``raw_key`` (as sent: percent-encoded) in ``bucket``."""
    try:
        return name_from_raw_path(f"{bucket}/{raw_key}")
    except InvalidName as exc:
        raise S3Error(
            "InvalidArgument",
            f"this store keeps keys that are valid file names (no empty, '.' or '..' "
            f"segment, no control character): {exc.message}",
        ) from None


async def _existing_bucket(request: web.Request, bucket: str) -> None:
    """Raise NamespaceNotFound (NoSuchBucket) when ``bucket`` is not a namespace."""
    if await request.app[ACCESS].namespace(bucket) is None:
        raise NamespaceNotFound(f"The specified bucket does not exist: {bucket[:80]!r}")


# --- buckets ---------------------------------------------------------------------------------


async def list_buckets(request: web.Request, query: Mapping[str, str]) -> web.Response:
    """ListBuckets: the buckets the key may read (and public-read ones) in name order, with
    ``prefix``, and pages of ``max-buckets`` (1-10000) resumed by ``continuation-token``
    (paginated ListBuckets, 2024: an absent ``max-buckets`` lists them all)."""
    principal = principal_of(request)
    if principal.anonymous:
        raise Unauthenticated("ListBuckets needs an access key")
    prefix = query.get("prefix", "")
    after = _from_token(query["continuation-token"]) if "continuation-token" in query else ""
    shown = [
        record
        for record in await request.app[ACCESS].namespaces()
        if (record.public_read or principal.grants.allows("read", record.name))
        and record.name.startswith(prefix)
        and record.name > after
    ]
    token = None
    if "max-buckets" in query:
        text = query["max-buckets"]
        valid = text.isascii() and text.isdigit() and len(text) <= 5
        if not (valid and 1 <= int(text) <= MAX_BUCKETS):
            raise S3Error("InvalidArgument", f"max-buckets must be 1 to {MAX_BUCKETS}")
        if len(shown) > int(text):
            shown = shown[: int(text)]
            token = _token(shown[-1].name)
    owner = bodies.owner_id(principal.access_key)
    return _xml(bodies.bucket_list(shown, owner, prefix if "prefix" in query else None, token))


async def bucket_location(request: web.Request, bucket: str) -> web.Response:
    await require(request, "read", bucket)
    await _existing_bucket(request, bucket)
    return _xml(bodies.location(REGION))


async def bucket_versioning(request: web.Request, bucket: str) -> web.Response:
    """GetBucketVersioning: buckets keep no versions, so the answer is S3's for a bucket
    whose versioning was never turned on, an empty VersioningConfiguration (s3fs and
    others ask before they list or delete). PutBucketVersioning stays NotImplemented."""
    await require(request, "read", bucket)
    await _existing_bucket(request, bucket)
    return _xml(bodies.versioning())


async def head_bucket(request: web.Request, bucket: str) -> web.Response:
    await require(request, "read", bucket)
    await _existing_bucket(request, bucket)
    return web.Response(status=200, headers={"x-amz-bucket-region": REGION})


async def create_bucket(request: web.Request, bucket: str) -> web.Response:
    """CreateBucket: a new namespace. Its configuration body (a LocationConstraint) is read,
    checked against the signature, refused (MalformedXML) unless it is none or a
    CreateBucketConfiguration, and ignored: a cluster is one region."""
    await require(request, "create")
    body = await small_body(request, MAX_BUCKET_BODY)  # however many pieces it comes in
    check_small_payload(request, body)
    bodies.check_bucket_configuration(body)
    await request.app[ACCESS].create_namespace(bucket)
    log.info("S3 CreateBucket %r", bucket)
    return web.Response(status=200, headers={hdrs.LOCATION: f"/{bucket}"})


async def delete_bucket(request: web.Request, bucket: str) -> web.Response:
    await require(request, "admin")
    await request.app[ACCESS].remove_namespace(bucket)
    return web.Response(status=204)


# --- objects ---------------------------------------------------------------------------------


async def put_object(request: web.Request, bucket: str, name: str) -> web.Response:
    """PutObject: the body streams into the coordinator (decoded first when aws-chunked),
    checked on the way against the signed ``x-amz-content-sha256`` or its chunk signatures
    and trailer, an ``x-amz-checksum-*`` and a ``Content-MD5``; a mismatch aborts the
    upload before its commit, so nothing is stored."""
    await require(request, "write", bucket)
    await _existing_bucket(request, bucket)
    condition = write_condition(request)
    config = request.app[CONFIG]
    upload = checked_object_body(request, config.max_file_size, config.etag)
    content_type = content_type_of(request.headers.get(hdrs.CONTENT_TYPE))
    representation = representation_of(_stored_headers(request), META_PREFIX)
    manifest = await request.app[COORDINATOR].put(
        name,
        upload.body,
        upload.size,
        content_type,
        condition,
        representation=lambda: dataclasses.replace(representation, checksum=upload.checksum()),
        content_md5=upload.content_md5,
    )
    log.info("S3 PUT %r %d bytes as %s", name, manifest.size, manifest.version)
    headers = {hdrs.ETAG: f'"{manifest.etag}"', **_checksum_headers(manifest)}
    return web.Response(status=200, headers=headers)


def _checksum_headers(manifest: Manifest) -> dict[str, str]:
    """``x-amz-checksum-<algorithm>`` and ``x-amz-checksum-type`` of the checksum kept with
    ``manifest`` (none when none was: "Checking object integrity", Amazon S3 user guide)."""
    checksum = manifest.representation.checksum
    if checksum is None:
        return {}
    return {f"x-amz-checksum-{checksum.algorithm}": checksum.value, CHECKSUM_TYPE: "FULL_OBJECT"}


def _stored_headers(request: web.Request) -> CIMultiDictProxy[str]:
    """The request's headers as the object keeps them: ``aws-chunked`` is how the body was
    sent, not what it is, so it leaves Content-Encoding (and an empty one goes)."""
    encodings = [
        coding.strip()
        for line in request.headers.getall(hdrs.CONTENT_ENCODING, [])
        for coding in line.split(",")
    ]
    if AWS_CHUNKED not in (e.lower() for e in encodings):
        return request.headers
    headers = CIMultiDict(request.headers)
    del headers[hdrs.CONTENT_ENCODING]
    kept = [e for e in encodings if e and e.lower() != AWS_CHUNKED]
    if kept:
        headers[hdrs.CONTENT_ENCODING] = ", ".join(kept)
    return CIMultiDictProxy(headers)


async def get_object(request: web.Request, bucket: str, name: str) -> web.StreamResponse:
    """GetObject and HeadObject: Range (one range) or ``partNumber``, and RFC 9110
    conditionals (on the whole object, whose ETag the answer carries either way)."""
    await require(request, "read", bucket)
    number = _part_number(request)
    coordinator = request.app[COORDINATOR]
    manifest = await _stat_object(request, bucket, name)
    headers = {**file_headers(manifest, META_PREFIX), **_overrides(request)}
    span = None
    if number is not None:
        span = _part_span(manifest, number)
        if manifest.segmented and not manifest.packed:  # (a packed file was one PUT)
            headers[PARTS_COUNT] = str(len(manifest.segments))
    checksums = None
    if number is None and request.headers.get(CHECKSUM_MODE, "").upper() == "ENABLED":
        # (only with the whole object: a client checks the bytes it got against it)
        checksums = _checksum_headers(manifest)
    return await answer_file(request, coordinator, manifest, headers, span, checksums)


def _part_number(request: web.Request) -> int | None:
    """The ``partNumber`` of a GetObject or HeadObject (None: absent). Raises
    InvalidArgument outside 1..10000, InvalidRequest beside a Range (GetObject, "Cannot
    specify both Range header and partNumber query parameter")."""
    pairs: list[tuple[str, str]] = request[QUERY]
    texts = [value for field, value in pairs if field == "partNumber"]
    if not texts:
        return None
    text = texts[0]
    if len(texts) > 1 or not text.isascii() or not text.isdigit() or len(text) > 5:
        raise S3Error("InvalidArgument", f"Part number must be an integer 1..{MAX_PARTS}")
    number = int(text)
    if not 1 <= number <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"Part number must be an integer 1..{MAX_PARTS}")
    if hdrs.RANGE in request.headers:
        raise S3Error(
            "InvalidRequest", "Cannot specify both Range header and partNumber query parameter"
        )
    return number


def _part_span(manifest: Manifest, number: int) -> tuple[int, int] | None:
    """Bytes ``[start, end)`` of part ``number`` of ``manifest``: its ``number``-th segment
    (parts count in the order Complete listed them, as MinIO counts them), or the whole
    object as part 1 of one that was not uploaded in parts (None when it is empty: a 200,
    there being no Content-Range of no bytes). Raises InvalidPartNumber (416, AWS's answer)
    past the last part."""
    if not manifest.segmented:
        if number != 1:
            raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable")
        return (0, manifest.size) if manifest.size else None
    if number > len(manifest.segments):
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable")
    start = sum(segment.size for segment in manifest.segments[: number - 1])
    return start, start + manifest.segments[number - 1].size


async def _stat_object(request: web.Request, bucket: str, name: str) -> Manifest:
    """The manifest of object ``name`` of ``bucket``; raises NoSuchBucket when the bucket is
    missing, else NoSuchKey (FileNotFound) when the object is."""
    try:
        return await request.app[COORDINATOR].stat(name)
    except FileNotFound:
        await _existing_bucket(request, bucket)
        raise FileNotFound("The specified key does not exist.") from None


def _overrides(request: web.Request) -> dict[str, str]:
    """The answer's headers a signed GetObject sets with ``response-*`` parameters (e.g. a
    presigned download's Content-Disposition). Raises S3Error: anonymous requests may not,
    and a value must be a valid header value."""
    pairs: list[tuple[str, str]] = request[QUERY]
    wanted = {RESPONSE_OVERRIDES[n]: v for n, v in pairs if n in RESPONSE_OVERRIDES}
    if not wanted:
        return {}
    if principal_of(request).anonymous:
        raise S3Error("InvalidRequest", "response-* parameters need a signed request")
    for header, value in wanted.items():
        if len(value) > MAX_FIELD_LENGTH or has_control(value):
            raise S3Error("InvalidArgument", f"not a valid {header} value")
    return wanted


async def delete_object(request: web.Request, bucket: str, name: str) -> web.Response:
    """DeleteObject: 204 whether or not the key existed (S3's answer), NoSuchBucket when
    the bucket does not."""
    await require(request, "write", bucket)
    try:
        await request.app[COORDINATOR].delete(name, write_condition(request))
    except FileNotFound:
        await _existing_bucket(request, bucket)
    return web.Response(status=204)


async def copy_object(request: web.Request, bucket: str, name: str) -> web.Response:
    """CopyObject: the peer streams the source's bytes from its chunks into a new object,
    as a PUT of them would store it; nothing passes through the client. The metadata is
    the source's (``x-amz-metadata-directive: COPY``, the default) or the request's
    (``REPLACE``). Needs read on the source's bucket and write on the target's. A request
    body is refused (UnexpectedContent)."""
    source_bucket, source = _copy_source(request.headers[COPY_SOURCE])
    await refuse_content(request, "CopyObject")
    directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "x-amz-metadata-directive is COPY or REPLACE")
    unserved = [
        h
        for h in request.headers
        if h.lower().startswith("x-amz-copy-source-") and h.lower() not in COPY_CONDITIONS
    ]
    if unserved:
        raise S3Error("NotImplemented", f"{unserved[0]} is not served yet")
    conditions = copy_source_conditions(request)
    if source == name and directive == "COPY":
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata.",
        )
    await require(request, "read", source_bucket)
    await require(request, "write", bucket)
    await _existing_bucket(request, bucket)
    coordinator = request.app[COORDINATOR]
    original = await _stat_object(request, source_bucket, source)
    current = preconditions.representation(original)
    if conditions.evaluate(current, safe=True) is not Outcome.PROCEED:
        raise PreconditionFailed(f"{source!r}: {conditions.describe()} does not hold")
    if directive == "COPY":
        content_type, representation = original.content_type, original.representation
    else:  # (the same bytes: their checksum stays true)
        content_type = content_type_of(request.headers.get(hdrs.CONTENT_TYPE))
        representation = dataclasses.replace(
            representation_of(_stored_headers(request), META_PREFIX),
            checksum=original.representation.checksum,
        )

    async def body() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(coordinator.stream(original, 0, original.size)) as read:
            async for piece in read:
                yield bytes(piece)  # (the stream's blocks are views it may reuse)

    manifest = await coordinator.put(
        name,
        body(),
        original.size,
        content_type,
        write_condition(request),
        representation=representation,
    )
    log.info("S3 COPY %r to %r, %d bytes as %s", source, name, manifest.size, manifest.version)
    return _xml(bodies.copy_result(manifest))


def copy_source_conditions(request: web.Request) -> Preconditions:
    """The ``x-amz-copy-source-if-*`` headers as preconditions on the source (CopyObject,
    UploadPartCopy). S3 evaluates them as RFC 9110 evaluates If-Match and its kin (13.2.2:
    a true if-match overrides a false if-unmodified-since, a false if-none-match overrides
    a true if-modified-since), except that every failure is 412, never 304. Raises
    InvalidRequest for a malformed entity-tag list."""
    fields = [
        (COPY_CONDITIONS[name.lower()], value)
        for name, value in request.headers.items()
        if name.lower() in COPY_CONDITIONS
    ]
    return parse_preconditions(fields, time.time())


def _copy_source(header: str) -> tuple[str, str]:
    """``(bucket, name)`` of an ``x-amz-copy-source`` (``[/]bucket/key``, URL-encoded;
    ``?versionId=null`` names the one version an unversioned bucket keeps, as elsewhere)."""
    path, _, query = header.partition("?")
    if query and query != "versionId=null":
        raise S3Error("NotImplemented", "copying a version (?versionId=) is not served")
    raw_bucket, _, key = path.lstrip("/").partition("/")
    if not raw_bucket or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be BUCKET/KEY")
    bucket = _bucket(raw_bucket)
    name = _object_name(bucket, key)
    if namespace_of(name) != bucket:  # _bucket makes it so; checked where read is granted
        raise S3Error("InvalidBucketName", f"not a bucket name: {raw_bucket[:80]!r}")
    return bucket, name


async def delete_objects(request: web.Request, bucket: str) -> web.Response:
    """DeleteObjects: up to 1000 keys of one bucket, each deleted as DeleteObject deletes
    (a missing key counts as deleted), ``DELETING_AT_ONCE`` at a time. The document is
    checked against the signature and a ``Content-MD5``."""
    await require(request, "write", bucket)
    await _existing_bucket(request, bucket)
    document = await small_body(request, MAX_DELETE_BODY)
    check_small_payload(request, document)
    for digest in expected_digests(request.headers):
        if hashlib.new(digest.algorithm, document).digest() != digest.digest:
            raise BadDigest("The Content-MD5 you specified did not match what we received.")
    keys, quiet = bodies.parse_delete(document)
    coordinator = request.app[COORDINATOR]
    at_once = asyncio.Semaphore(DELETING_AT_ONCE)

    async def delete(key: str, version: str | None) -> tuple[str, str, str] | None:
        if version is not None and version != "null":
            # never delete the current object for a version asked: versions are not kept
            return key, "NotImplemented", "versionId other than null is not supported"
        try:
            name = name_from_raw_path(quote(f"{bucket}/{key}", safe="/"))
        except InvalidName as exc:
            return key, "InvalidArgument", exc.message
        async with at_once:
            try:
                await coordinator.delete(name)
            except FileNotFound:
                pass
            except RingstoreError as exc:
                return key, s3_code(exc), exc.message
        return None

    outcomes = await asyncio.gather(*(delete(key, version) for key, version in keys))
    errors = [outcome for outcome in outcomes if outcome is not None]
    done = [key for (key, _), outcome in zip(keys, outcomes, strict=True) if outcome is None]
    deleted = [] if quiet else done
    log.info("S3 DeleteObjects in %r: %d keys, %d failed", bucket, len(keys), len(errors))
    return _xml(bodies.delete_result(deleted, errors))


# --- listings --------------------------------------------------------------------------------


def _token(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode("utf-8")).decode("ascii")


def _from_token(token: str) -> str:
    """The name a continuation token (``_token``) continues after ("" for an empty one: the
    start, as ceph's s3-tests expect); raises InvalidArgument for one this frontend cannot
    have made (a character outside the URL-safe base64 alphabet, which
    ``urlsafe_b64decode`` would skip: "!!!" was read as the start)."""
    try:
        return base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None


def _max_keys(query: Mapping[str, str]) -> int:
    text = query.get("max-keys", str(MAX_KEYS))
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise S3Error("InvalidArgument", "max-keys must be a non-negative integer")
    return min(int(text), MAX_KEYS)


async def list_objects(request: web.Request, bucket: str, query: Mapping[str, str]) -> web.Response:
    """ListObjectsV2 (``list-type=2``), ListObjects, or ListObjectVersions (``versions``):
    keys with ``prefix`` in order, after the continuation token, ``start-after``, ``marker``
    or ``key-marker``; with a ``delimiter``, keys rolled up into CommonPrefixes (each one
    entry toward ``max-keys``). Buckets keep no versions, so ListObjectVersions lists each
    object once as version ``null``, as S3 lists a bucket whose versioning was never on."""
    versions = "versions" in query
    version = 2 if query.get("list-type") == "2" and not versions else 1
    principal = await require(request, "read", bucket)
    await _existing_bucket(request, bucket)
    fetch_owner = query.get("fetch-owner", "").lower() == "true"
    prefix = query.get("prefix", "")
    delimiter = check_delimiter(query.get("delimiter", ""))
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "encoding-type may only be url")
    max_keys = _max_keys(query)
    token = query.get("continuation-token") if version == 2 else None
    start_after = query.get("start-after") if version == 2 else None
    marker = query.get("key-marker" if versions else "marker", "") if version == 1 else None
    if token is not None:
        after_key = _from_token(token)
    else:
        after_key = (start_after or "") if version == 2 else (marker or "")
    base = bucket + "/"
    after = base + after_key if after_key else ""
    items: list[Manifest | str] = []
    following = ""
    if max_keys:
        coordinator = request.app[COORDINATOR]
        if delimiter:
            items, following = await coordinator.list_folder(
                base + prefix, delimiter, after, max_keys
            )
        else:
            files, following = await coordinator.list(base + prefix, after, max_keys)
            items = list(files)
    objects = [(m.name[len(base) :], m) for m in items if not isinstance(m, str)]
    folders = [item[len(base) :] for item in items if isinstance(item, str)]
    truncated = bool(following)
    next_key = following[len(base) :] if truncated else None
    page = bodies.ListingPage(
        bucket=bucket,
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        objects=objects,
        prefixes=folders,
        truncated=truncated,
        url_encoded=encoding == "url",
        continuation_token=token,
        next_token=_token(next_key) if next_key is not None and version == 2 else None,
        start_after=start_after,
        marker=marker,
        next_marker=next_key if version == 1 else None,
        owner=bodies.owner_id(principal.access_key) if version == 1 or fetch_owner else None,
    )
    if versions:
        return _xml(bodies.version_listing(page))
    return _xml(bodies.object_listing(page, version))


def _xml(document: bytes) -> web.Response:
    return web.Response(body=document, content_type=bodies.XML_TYPE, charset="utf-8")
