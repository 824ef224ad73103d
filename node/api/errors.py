"""The one place where errors become HTTP responses.

Every error response has the status that fits its exception class and a JSON body
``{"error": {"code": ..., "message": ...}}``; routes never pick error statuses themselves.
The same body is written for errors found before a request reaches the app (a malformed
request line, a connection over the limit: ``node.process.connections``), through
``error_response`` and ``raw_error_response``.

What a public client reads names no peer: a 5xx answer to a public route carries no peer
URL (the peer's log has the whole message). A client that went away is not an error of
this peer: it is logged at DEBUG (a normal event, and a flood of them must not flood the log).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus

from aiohttp import hdrs, web

from node.access.guard import REALM
from node.cluster.protocol import PEER_PREFIX
from node.errors import (
    Conflict,
    CorruptData,
    Forbidden,
    InsufficientStorage,
    InvalidRange,
    InvalidRequest,
    NotFound,
    Overloaded,
    PeerUnavailable,
    PreconditionFailed,
    RequestTimeout,
    RingstoreError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    WrongPeer,
)

log = logging.getLogger(__name__)
INTERNAL_MESSAGE = "internal error; see the peer's log"  # what a 500 tells of its cause

STATUS: dict[type[RingstoreError], int] = {
    InvalidRange: 416,
    UnsupportedMediaType: 415,
    TooLarge: 413,
    RequestTimeout: 408,
    Forbidden: 403,
    WrongPeer: 421,
    InvalidRequest: 400,
    Unauthenticated: 401,
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 412,
    Unavailable: 503,
    InsufficientStorage: 507,
    CorruptData: 500,
}
SERVER = "ringstore"  # the Server header of every answer: no versions for scanners to match
NOSNIFF = ("X-Content-Type-Options", "nosniff")  # browsers take Content-Type as given
ERROR_HEADER = "X-Ringstore-Error"  # the code again: answers to HEAD carry no body
_URL = re.compile(r"\bhttps?://[^\s'\"]+")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_of(error: RingstoreError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def worth_a_warning(error: RingstoreError) -> bool:
    """Whether a request's failure with ``error`` is logged at WARNING: a failure of this
    peer (5xx), but not an overload (logged sparingly where it is decided)."""
    return status_of(error) >= 500 and not isinstance(error, Overloaded)


def _body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(status: int, code: str, message: str, head: bool = False) -> web.Response:
    """The JSON error answer; ``head``: to a HEAD request aiohttp does not know as one (it
    failed to parse), so the body is left out here."""
    return web.Response(
        body=None if head else _body(code, message),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers={ERROR_HEADER: code, hdrs.SERVER: SERVER, NOSNIFF[0]: NOSNIFF[1]},
    )


def http_error_response(exc: web.HTTPException) -> web.Response:
    """The JSON answer for one of aiohttp's HTTP errors (404, 405, 413 ...)."""
    code = (exc.reason or "error").lower().replace(" ", "_")
    response = error_response(exc.status, code, exc.text or exc.reason)
    for header in (hdrs.ALLOW,):
        if header in exc.headers:
            response.headers[header] = exc.headers[header]
    return response


def raw_error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    head: bool = False,
) -> bytes:
    """The bytes of a complete HTTP/1.1 error answer that closes its connection, for errors
    found where there is no request to answer through aiohttp (a connection over the limit,
    a request head that never ended); ``head``: the answer to a HEAD, without the body."""
    body = _body(code, message)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        f"{ERROR_HEADER}: {code}",
        f"Date: {formatdate(usegmt=True)}",
        f"Server: {SERVER}",
        f"{NOSNIFF[0]}: {NOSNIFF[1]}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


def response_for(error: RingstoreError, public: bool) -> web.Response:
    """The answer to a request that failed with ``error``; ``public``: to a public route."""
    status = status_of(error)
    message = error.message
    if public and status >= 500:
        if isinstance(error, PeerUnavailable):
            message = "a peer this request needed failed; the peer's log says which"
        message = _URL.sub("<peer>", message)
    response = error_response(status, error.code, message)
    if isinstance(error, InvalidRange):
        response.headers[hdrs.CONTENT_RANGE] = f"bytes */{error.size}"
    if isinstance(error, Overloaded):
        response.headers[hdrs.RETRY_AFTER] = str(error.retry_after)
    if isinstance(error, Unauthenticated):
        response.headers[hdrs.WWW_AUTHENTICATE] = REALM
    return response


def close_after_error(request: web.Request, response: web.StreamResponse) -> None:
    """Answers that close their connection say so (``Connection: close``, RFC 9112 section
    9.6). A 408 always: the peer gave up waiting for the request (RFC 9110 section 15.5.9:
    it SHOULD send "close"). A public 503: behind an address several peers share
    (``--shared-port``, a shared S3 port, a load balancer) the client's retry then goes out
    on a new connection, which may reach another peer, where a kept-alive one would reach
    this one again; peer calls keep theirs."""
    public = not request.path.startswith(PEER_PREFIX)
    if response.status == 408 or (response.status == 503 and public):
        response.force_close()  # (too late for aiohttp to write the header: ours)
        response.headers[hdrs.CONNECTION] = "close"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RingstoreError as error:
        public = not request.path.startswith(PEER_PREFIX)
        response = response_for(error, public)
        if worth_a_warning(error):
            log.warning("%s %s: %s", request.method, request.path, error)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(exc)
    except ConnectionError as exc:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            log.exception("%s %s failed", request.method, request.path)  # not the client's
            return error_response(500, "internal", INTERNAL_MESSAGE)
        log.debug("%s %s: the client went away (%r)", request.method, request.path, exc)
        return web.Response(status=499)  # never sent: nobody is left to read it
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal", INTERNAL_MESSAGE)
