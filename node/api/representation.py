"""Representation headers of a file: read from a PUT, given back on GET and HEAD.

``Content-Encoding``, ``Content-Disposition``, ``Cache-Control``, ``Content-Language`` and
``Expires`` are kept as sent (field lines of one name joined with ``", "``, as RFC 9110
§5.3 allows), and so is user metadata: ``X-Ringstore-Meta-<name>: value``, the name kept
lower-case (header names are case-insensitive). ``node.model.representation`` bounds them.
The body is stored as sent whatever its Content-Encoding (the app never decodes request
bodies: ``node.process.wiring``), so a read gives back those bytes with that header, and
ranges count the stored bytes.
"""

from __future__ import annotations

from aiohttp import hdrs
from multidict import CIMultiDictProxy

from node.errors import InvalidRequest
from node.model.manifest import MAX_LABEL_LENGTH
from node.model.names import has_control
from node.model.representation import Representation

DEFAULT_CONTENT_TYPE = "application/octet-stream"
META_PREFIX = "X-Ringstore-Meta-"
# Representation fields by header, in the order responses carry them
HEADERS: dict[str, str] = {
    "content_encoding": hdrs.CONTENT_ENCODING,
    "content_disposition": hdrs.CONTENT_DISPOSITION,
    "cache_control": hdrs.CACHE_CONTROL,
    "content_language": hdrs.CONTENT_LANGUAGE,
    "expires": hdrs.EXPIRES,
}


def content_type_of(value: str | None) -> str:
    """The Content-Type a file is stored with: ``value`` as sent, else (absent or empty)
    ``application/octet-stream``. Raises InvalidRequest past MAX_LABEL_LENGTH characters or
    for a control character (a tab passes HTTP's parsers): a manifest holds neither, so
    replicas would refuse it only after the whole body was stored."""
    if not value:
        return DEFAULT_CONTENT_TYPE
    if len(value) > MAX_LABEL_LENGTH:
        raise InvalidRequest(f"a Content-Type is at most {MAX_LABEL_LENGTH} characters")
    if has_control(value):
        raise InvalidRequest("the Content-Type has a control character or an undecodable byte")
    return value


def representation_of(
    headers: CIMultiDictProxy[str], meta_prefix: str = META_PREFIX
) -> Representation:
    """The representation fields a PUT's headers give; user metadata comes in headers
    named ``meta_prefix`` + name (S3: ``x-amz-meta-``).

    Raises InvalidRequest for a bad value (a control character, too long, a metadata header
    without a name), MetadataTooLarge past the user-metadata bound.
    """
    given = {
        field: ", ".join(headers.getall(header))
        for field, header in HEADERS.items()
        if header in headers
    }
    prefix = meta_prefix.lower()
    metadata: dict[str, list[str]] = {}
    for header, value in headers.items():
        lower = header.lower()
        if lower.startswith(prefix):
            if lower == prefix:
                raise InvalidRequest(f"a {meta_prefix}<name> header needs a name")
            metadata.setdefault(lower[len(prefix) :], []).append(value)
    return Representation.build(
        **given, metadata={name: ", ".join(values) for name, values in metadata.items()}
    )


def representation_headers(
    representation: Representation, meta_prefix: str = META_PREFIX
) -> dict[str, str]:
    """The headers that give ``representation`` back on a GET or HEAD (user metadata as
    ``meta_prefix`` + name)."""
    headers: dict[str, str] = {
        HEADERS[field]: value for field, value in representation.standard.items()
    }
    for name, value in representation.metadata:
        headers[meta_prefix + name] = value
    return headers
