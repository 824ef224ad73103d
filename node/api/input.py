"""Reading request input: streamed bodies and query parameters, with domain errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec
from aiohttp import hdrs, web

from node.errors import IncompleteBody, InvalidRequest, UnsupportedMediaType

T = TypeVar("T")
MAX_JSON = 64 << 10  # bytes of a JSON request body


async def body_pieces(request: web.Request) -> AsyncIterator[bytes]:
    """Yield the body as it arrives (Content-Length or chunked), without re-joining buffers.

    Raises IncompleteBody when the client stops sending before the body is complete.
    """
    try:
        async for piece in request.content.iter_any():
            yield piece
    except Exception as exc:  # aiohttp raises several unrelated types for a cut-off body
        raise IncompleteBody(f"the request body was cut off: {exc!r}") from exc


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``[low, high]``; raises InvalidRequest otherwise."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return value


async def json_body(request: web.Request, kind: type[T]) -> T:
    """The request's JSON body decoded as ``kind`` (an empty body: ``kind()``), at most
    ``MAX_JSON`` bytes. Raises InvalidRequest naming what is wrong, UnsupportedMediaType for
    a body that is not JSON or has a Content-Encoding."""
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise InvalidRequest(f"a JSON body is at most {MAX_JSON} bytes")
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
        # bodies reach routes undecoded (node.process.wiring); JSON is taken as plain text
        raise UnsupportedMediaType("send a JSON body without Content-Encoding")
    data = await request.content.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise InvalidRequest(f"a JSON body is at most {MAX_JSON} bytes")
    if not data.strip():
        data = b"{}"
    elif request.content_type not in ("application/json", "application/octet-stream"):
        raise UnsupportedMediaType(f"send JSON (application/json), not {request.content_type}")
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
