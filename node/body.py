"""Reading a request body as a stream of pieces, whatever way the client sends it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from node.errors import IncompleteBody


async def body_pieces(request: web.Request) -> AsyncIterator[bytes]:
    """Yield the body as it arrives (Content-Length or chunked), without re-joining buffers.

    Raises IncompleteBody when the client stops sending before the body is complete.
    """
    try:
        async for piece in request.content.iter_any():
            yield piece
    except Exception as exc:  # aiohttp raises several unrelated types for a cut-off body
        raise IncompleteBody(f"the request body was cut off: {exc!r}") from exc
