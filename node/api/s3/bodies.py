"""S3's XML documents: listings, bucket lists and error bodies, built with ElementTree.

Every text node goes through ElementTree, which escapes ``&``, ``<`` and ``>``; names never
hold control characters (``node.model.names``), so every document is well-formed XML 1.0.
With ``encoding-type=url`` keys and prefixes are percent-encoded (``urllib.parse.quote``,
``/`` kept), as boto3 asks for and decodes by default.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote
from xml.etree import ElementTree
from xml.parsers import expat

from node.model.access import NamespaceRecord
from node.model.manifest import Manifest

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_TYPE = "application/xml"
OWNER_ID = "ringstore"


def _document(root: ElementTree.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        root, encoding="unicode"
    ).encode("utf-8")


def _child(parent: ElementTree.Element, tag: str, text: str | None = None) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def owner_id(access_key: str | None) -> str:
    """Who owns the buckets and objects an access key lists: that key (anonymous readers of
    public-read buckets see the cluster's ``OWNER_ID``). No ACLs are kept, so every key
    that may read something is shown as its owner, as ListBuckets shows it its buckets."""
    return access_key or OWNER_ID


def owned_by(parent: ElementTree.Element, tag: str, owner: str) -> None:
    """An owner element (``Owner``, ``Initiator``) naming ``owner`` by ID and DisplayName."""
    element = _child(parent, tag)
    _child(element, "ID", owner)
    _child(element, "DisplayName", owner)


def iso_time(ms: int) -> str:
    """S3's timestamp form in XML: ``2026-01-02T03:04:05.000Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def error_document(code: str, message: str, resource: str, request_id: str) -> bytes:
    root = ElementTree.Element("Error")
    _child(root, "Code", code)
    _child(root, "Message", message)
    _child(root, "Resource", resource)
    _child(root, "RequestId", request_id)
    return _document(root)


def bucket_list(
    buckets: Sequence[NamespaceRecord],
    owner: str,
    prefix: str | None = None,
    continuation_token: str | None = None,
) -> bytes:
    """A ListAllMyBucketsResult; ``continuation_token`` when more buckets follow."""
    root = ElementTree.Element("ListAllMyBucketsResult", xmlns=NAMESPACE)
    owned_by(root, "Owner", owner)
    listed = _child(root, "Buckets")
    for record in buckets:
        bucket = _child(listed, "Bucket")
        _child(bucket, "Name", record.name)
        _child(bucket, "CreationDate", iso_time(record.created_ms))
    if continuation_token is not None:
        _child(root, "ContinuationToken", continuation_token)
    if prefix is not None:
        _child(root, "Prefix", prefix)
    return _document(root)


def location(region: str) -> bytes:
    root = ElementTree.Element("LocationConstraint", xmlns=NAMESPACE)
    root.text = region
    return _document(root)


def versioning() -> bytes:
    """A VersioningConfiguration with no Status: versioning never turned on."""
    return _document(ElementTree.Element("VersioningConfiguration", xmlns=NAMESPACE))


@dataclass(frozen=True)
class ListingPage:
    """One page of ListObjectsV2 (or v1), keys relative to the bucket."""

    bucket: str
    prefix: str
    delimiter: str
    max_keys: int
    objects: Sequence[tuple[str, Manifest]]  # (key, manifest)
    prefixes: Sequence[str]
    truncated: bool
    url_encoded: bool
    # v2
    continuation_token: str | None = None
    next_token: str | None = None
    start_after: str | None = None
    # v1
    marker: str | None = None
    next_marker: str | None = None
    owner: str | None = None  # each object's Owner (v1 always, v2 with fetch-owner)

    def shown(self, text: str) -> str:
        """``text`` (a key, prefix, marker or delimiter) as the page shows it."""
        return quote(text, safe="/") if self.url_encoded else text


def _page_flags(root: ElementTree.Element, page: ListingPage) -> None:
    """What object and version listings both say after their markers."""
    _child(root, "MaxKeys", str(page.max_keys))
    if page.delimiter:
        _child(root, "Delimiter", page.shown(page.delimiter))
    if page.url_encoded:
        _child(root, "EncodingType", "url")
    _child(root, "IsTruncated", "true" if page.truncated else "false")


def _object_fields(entry: ElementTree.Element, manifest: Manifest, owner: str | None) -> None:
    _child(entry, "LastModified", iso_time(manifest.version.wall_ms))
    _child(entry, "ETag", f'"{manifest.etag}"')
    _child(entry, "Size", str(manifest.size))
    _child(entry, "StorageClass", "STANDARD")
    if owner is not None:
        owned_by(entry, "Owner", owner)


def _folders(root: ElementTree.Element, page: ListingPage) -> bytes:
    for folder in page.prefixes:
        _child(_child(root, "CommonPrefixes"), "Prefix", page.shown(folder))
    return _document(root)


def object_listing(page: ListingPage, version: int) -> bytes:
    """A ListBucketResult document: ``version`` 2 (ListObjectsV2) or 1 (ListObjects)."""
    shown = page.shown
    root = ElementTree.Element("ListBucketResult", xmlns=NAMESPACE)
    _child(root, "Name", page.bucket)
    _child(root, "Prefix", shown(page.prefix))
    if version == 2:
        if page.continuation_token is not None:
            _child(root, "ContinuationToken", page.continuation_token)
        if page.start_after is not None:
            _child(root, "StartAfter", shown(page.start_after))
        _child(root, "KeyCount", str(len(page.objects) + len(page.prefixes)))
        if page.next_token is not None:
            _child(root, "NextContinuationToken", page.next_token)
    else:
        _child(root, "Marker", shown(page.marker or ""))
        if page.next_marker is not None:
            _child(root, "NextMarker", shown(page.next_marker))
    _page_flags(root, page)
    for key, manifest in page.objects:
        entry = _child(root, "Contents")
        _child(entry, "Key", shown(key))
        _object_fields(entry, manifest, page.owner)
    return _folders(root, page)


def version_listing(page: ListingPage) -> bytes:
    """A ListVersionsResult document (ListObjectVersions) for a bucket without versioning:
    each object is its one version, ``null`` and the latest, as S3 lists an unversioned
    bucket (``page.marker`` is the key-marker, ``page.next_marker`` the NextKeyMarker)."""
    shown = page.shown
    root = ElementTree.Element("ListVersionsResult", xmlns=NAMESPACE)
    _child(root, "Name", page.bucket)
    _child(root, "Prefix", shown(page.prefix))
    _child(root, "KeyMarker", shown(page.marker or ""))
    _child(root, "VersionIdMarker", "")
    if page.next_marker is not None:
        _child(root, "NextKeyMarker", shown(page.next_marker))
        _child(root, "NextVersionIdMarker", "null")
    _page_flags(root, page)
    for key, manifest in page.objects:
        entry = _child(root, "Version")
        _child(entry, "Key", shown(key))
        _child(entry, "VersionId", "null")
        _child(entry, "IsLatest", "true")
        _object_fields(entry, manifest, page.owner)
    return _folders(root, page)


MAX_DELETE_KEYS = 1000  # keys one DeleteObjects names at most (S3's bound)


class MalformedXML(ValueError):
    """A request document that is not the XML S3 expects; the message says why."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # without its namespace


def _parse_without_dtd(document: bytes) -> ElementTree.Element:
    """The root of an XML ``document``; raises MalformedXML for one that is not
    well-formed or that has a DTD (no entity of any kind is wanted). Searching the bytes
    for ``<!DOCTYPE`` would miss one in UTF-16: expat sees it after decoding."""

    def refuse(*_: object) -> None:
        raise MalformedXML("an S3 request document has no DTD")

    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(document, True)
        root = builder.close()
    except expat.ExpatError as exc:
        raise MalformedXML(f"not well-formed XML: {exc}") from None
    except AssertionError:  # TreeBuilder: no element at all
        raise MalformedXML("not well-formed XML: no element") from None
    return root


def parse_delete(document: bytes) -> tuple[list[tuple[str, str | None]], bool]:
    """The ``(key, VersionId or None)`` of each ``<Object>`` of a DeleteObjects document, in
    order, and its Quiet flag. Raises MalformedXML.

    Parsed with expat (``_parse_without_dtd``), which refuses a DTD wherever it is, in
    whatever encoding the document declares; the caller bounds the size."""
    root = _parse_without_dtd(document)
    if _local(root.tag) != "Delete":
        raise MalformedXML("the document must be <Delete>")
    keys: list[tuple[str, str | None]] = []
    quiet = False
    for child in root:
        tag = _local(child.tag)
        if tag == "Quiet":
            flag = (child.text or "").strip().lower()  # an xsd:boolean
            if flag not in ("true", "false", "1", "0"):
                raise MalformedXML("<Quiet> is true or false")
            quiet = flag in ("true", "1")
        elif tag == "Object":
            key = next((c.text for c in child if _local(c.tag) == "Key"), None)
            if not key:
                raise MalformedXML("every <Object> needs a <Key>")
            version = next((c for c in child if _local(c.tag) == "VersionId"), None)
            keys.append((key, None if version is None else (version.text or "")))
    if not 1 <= len(keys) <= MAX_DELETE_KEYS:
        raise MalformedXML(f"a DeleteObjects request names 1-{MAX_DELETE_KEYS} keys")
    return keys, quiet


def check_bucket_configuration(document: bytes) -> None:
    """Check a CreateBucket body: none, or a ``<CreateBucketConfiguration>`` (its
    LocationConstraint and the rest are not used: a cluster is one region). Raises
    MalformedXML for anything else, as Amazon S3 answers a body it cannot read
    (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html)."""
    if not document.strip():
        return
    root = _parse_without_dtd(document)
    if _local(root.tag) != "CreateBucketConfiguration":
        raise MalformedXML("the document must be <CreateBucketConfiguration>")


def delete_result(deleted: Sequence[str], errors: Sequence[tuple[str, str, str]]) -> bytes:
    """A DeleteResult: the keys deleted, and ``(key, code, message)`` of those that were not."""
    root = ElementTree.Element("DeleteResult", xmlns=NAMESPACE)
    for key in deleted:
        _child(_child(root, "Deleted"), "Key", key)
    for key, code, message in errors:
        error = _child(root, "Error")
        _child(error, "Key", key)
        _child(error, "Code", code)
        _child(error, "Message", message)
    return _document(root)


def copy_result(manifest: Manifest) -> bytes:
    root = ElementTree.Element("CopyObjectResult", xmlns=NAMESPACE)
    _child(root, "LastModified", iso_time(manifest.version.wall_ms))
    _child(root, "ETag", f'"{manifest.etag}"')
    return _document(root)


# For the other documents of the S3 frontend (node.api.s3.multipart).
document = _document
parse_xml = _parse_without_dtd
local_name = _local
