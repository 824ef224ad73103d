"""The one place where errors become HTTP responses.

Every error response has the status that fits its exception class and a JSON body
``{"error": {"code": ..., "message": ...}}``; routes never pick error statuses themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from node.access.guard import REALM
from node.errors import (
    Conflict,
    CorruptData,
    Forbidden,
    InsufficientStorage,
    InvalidRange,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    RingstoreError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    WrongPeer,
)

log = logging.getLogger(__name__)

STATUS: dict[type[RingstoreError], int] = {
    InvalidRange: 416,
    UnsupportedMediaType: 415,
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_of(error: RingstoreError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str) -> web.Response:
    # The code is repeated in a header because answers to HEAD carry no body.
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=status,
        headers={"X-Ringstore-Error": code},
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RingstoreError as error:
        status = status_of(error)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.path, error)
        response = error_response(status, error.code, error.message)
        if isinstance(error, InvalidRange):
            response.headers[hdrs.CONTENT_RANGE] = f"bytes */{error.size}"
        if isinstance(error, Unauthenticated):
            response.headers[hdrs.WWW_AUTHENTICATE] = REALM
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        response = error_response(exc.status, code, exc.text or exc.reason)
        for header in (hdrs.ALLOW,):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error; see the peer's log")
