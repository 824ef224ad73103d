"""The client's exceptions: one root, and the one place answers and failures become them.

Every error the client raises on purpose is a ``RingstoreError``. Server errors keep the
server's ``code``, HTTP ``status`` and the ``peer`` that answered; builtins are mixed in where
they read naturally (``except KeyError`` catches a missing file).

    RingstoreError
    ├── InvalidRequest (ValueError)      400 invalid_request, any other 4xx
    │   ├── InvalidName                  400 invalid_name
    │   ├── InvalidRange                 416 invalid_range (``size`` = the file's size)
    │   ├── IncompleteBody               400 incomplete_body: the upload was cut short
    │   └── BadDigest                    400 bad_digest: the body does not match its digest
    ├── PreconditionFailed               412 precondition_failed: if_match/if_none_match failed
    ├── NotFound (KeyError)              404 not_found, chunk_not_found
    │   └── FileNotFound                 404 file_not_found
    ├── Unavailable                      503 unavailable, peer_unavailable; 421 wrong_peer
    │   └── PeerUnreachable              no answer: connection refused or reset, timed out
    ├── Unauthenticated                  401 unauthenticated: no valid credentials
    ├── InsufficientStorage              507 insufficient_storage
    ├── ServerError                      500 internal, any other 5xx
    │   └── CorruptData                  500 corrupt_data
    ├── UnexpectedResponse               an answer the client cannot understand
    │   └── ChecksumMismatch             a whole file's bytes do not hash to its etag
    └── FileChanged                      a new version replaced the file during a read

``error_from_response`` builds the exception for an error answer; ``error_from_exception``
turns a transport failure (aiohttp, timeouts) into ``PeerUnreachable``. Nothing else in the
client decides which class an error gets.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping

import aiohttp


class RingstoreError(Exception):
    """Root of every error the ringstore client raises on purpose.

    ``code`` is the server's error code (``None`` for errors found by the client),
    ``status`` the HTTP status and ``peer`` the URL of the peer that answered or failed.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        peer: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.peer = peer

    def __str__(self) -> str:
        # KeyError (mixed into NotFound) would otherwise show the message in quotes.
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, status={self.status})"


class InvalidRequest(RingstoreError, ValueError):
    """The server refused the request as malformed (400 and other 4xx)."""


class InvalidName(InvalidRequest):
    """The file name is not valid: empty, ``.``/``..``/empty segments, control characters."""


class InvalidRange(InvalidRequest):
    """The byte range cannot be satisfied (416); ``size`` is the file's size when known."""

    def __init__(
        self,
        message: str,
        *,
        size: int | None = None,
        code: str | None = None,
        status: int | None = None,
        peer: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, peer=peer)
        self.size = size


class IncompleteBody(InvalidRequest):
    """The server received less of an upload than it was promised."""


class BadDigest(InvalidRequest):
    """The body does not match the Content-MD5 or digest sent with it; nothing was stored."""


class PreconditionFailed(RingstoreError):
    """A condition of the request (``if_match``, ``if_none_match``) does not hold for the
    file's current version (412); nothing was changed."""


class NotFound(RingstoreError, KeyError):
    """Something the request names does not exist (404)."""


class FileNotFound(NotFound):
    """No live file has this name (404 file_not_found)."""


class Forbidden(InvalidRequest):
    """The access key has no grant for what was asked (403)."""


class Conflict(RingstoreError):
    """The request conflicts with the current state (409): e.g. a namespace not empty."""


class Unavailable(RingstoreError):
    """Too few peers are healthy to serve the request (503), after every retry."""


class PeerUnreachable(Unavailable):
    """No peer answered: connections were refused, reset or timed out on every attempt."""


class Unauthenticated(RingstoreError):
    """The peer wants credentials this request did not carry, or refused them (401)."""


class InsufficientStorage(RingstoreError):
    """A peer's disk is full (507)."""


class ServerError(RingstoreError):
    """The server failed (500 and other 5xx); its log says more."""


class CorruptData(ServerError):
    """Stored bytes failed their digest and could not be repaired (500 corrupt_data)."""


class UnexpectedResponse(RingstoreError):
    """An answer that is not what the API promises: wrong status, missing header, bad JSON."""


class ChecksumMismatch(UnexpectedResponse):
    """The bytes of a whole file, as received, do not hash to its etag (MD5 or xxh3-128):
    damaged on their way or on a disk the peer's own digests do not cover."""


class FileChanged(RingstoreError):
    """The file was replaced by a new version while a read was resuming on another peer."""


_BY_CODE: Mapping[str, type[RingstoreError]] = {
    "invalid_request": InvalidRequest,
    "invalid_name": InvalidName,
    "invalid_range": InvalidRange,
    "incomplete_body": IncompleteBody,
    "bad_digest": BadDigest,
    "payload_hash_mismatch": BadDigest,  # (S3 frontend: x-amz-content-sha256)
    "invalid_digest": InvalidRequest,
    "metadata_too_large": InvalidRequest,
    "not_found": NotFound,
    "file_not_found": FileNotFound,
    "namespace_not_found": NotFound,
    "access_key_not_found": NotFound,
    "forbidden": Forbidden,
    "access_denied": Forbidden,
    "invalid_namespace": InvalidRequest,
    "conflict": Conflict,
    "namespace_not_empty": Conflict,
    "namespace_exists": Conflict,
    "precondition_failed": PreconditionFailed,
    "chunk_not_found": NotFound,
    "unavailable": Unavailable,
    "peer_unavailable": Unavailable,
    "wrong_peer": Unavailable,
    "unauthenticated": Unauthenticated,
    "unknown_access_key": Unauthenticated,  # (S3 frontend: signed requests)
    "bad_signature": Unauthenticated,
    "insufficient_storage": InsufficientStorage,
    "corrupt_data": CorruptData,
    "internal": ServerError,
}

_BY_STATUS: Mapping[int, type[RingstoreError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    416: InvalidRange,
    503: Unavailable,
    507: InsufficientStorage,
}


def _class_for(status: int, code: str | None) -> type[RingstoreError]:
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return InvalidRequest
    if status >= 500:
        return ServerError
    return UnexpectedResponse


def error_from_response(
    status: int,
    body: bytes,
    *,
    peer: str,
    implied_code: str | None = None,
    content_range: str | None = None,
) -> RingstoreError:
    """The exception for an error answer: ``status`` and the body ``{"error": {code, message}}``.

    ``implied_code`` names the code a body-less answer (to HEAD) stands for; ``content_range``
    (``bytes */size``) gives an InvalidRange its ``size``. A body that is not the API's error
    JSON (a proxy's page) still gives the class its status implies.
    """
    code: str | None = None
    message = ""
    try:
        error = json.loads(body)["error"]
        code = str(error["code"])
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        code = implied_code
        text = body[:200].decode("utf-8", errors="replace").strip()
        detail = text or _MEANING.get(status, "")
        message = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    cls = _class_for(status, code)
    if cls is InvalidRange:
        return InvalidRange(
            message, size=_range_size(content_range), code=code, status=status, peer=peer
        )
    return cls(message, code=code, status=status, peer=peer)


# What a body-less error answer (to HEAD) means, said where no message came with it.
_MEANING = {
    401: "no access key, or one the cluster refused (wrong, revoked)",
    403: "the access key has no grant for this",
    404: "no such file",
    412: "a precondition failed",
}


def _range_size(content_range: str | None) -> int | None:
    if content_range is None:
        return None
    try:
        return int(content_range.rpartition("/")[2])
    except ValueError:
        return None


def error_from_exception(exc: BaseException, *, peer: str) -> PeerUnreachable:
    """The exception for a transport failure talking to ``peer``: refused, reset, timed out."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        detail = getattr(cause, "verify_message", None) or str(cause)
        reason = f"its TLS certificate is not trusted ({detail}); is the CA file (cafile) right?"
    elif isinstance(exc, aiohttp.ClientSSLError):
        reason = f"TLS failed ({exc.os_error})"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error  # errno > 0: a socket error; < 0: a name lookup error
        text = os.strerror(cause.errno) if cause.errno and cause.errno > 0 else cause.strerror
        reason = f"cannot connect ({text or cause})"
    elif isinstance(exc, asyncio.TimeoutError):
        reason = f"timed out: {exc}" if str(exc) else "timed out"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        reason = "the connection closed before an answer"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        reason = "the answer was cut off"
    else:
        reason = str(exc) or type(exc).__name__
    return PeerUnreachable(f"peer {peer}: {reason}", peer=peer)
