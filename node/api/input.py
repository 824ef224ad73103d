"""Reading request input: streamed bodies and query parameters, with domain errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from node.api.numbers import decimal
from node.errors import IncompleteBody, InvalidRequest


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
        value = decimal(text)
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be an integer: {exc}") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return value
