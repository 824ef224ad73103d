"""Answering a read of a file: shared by every frontend that serves reads (files API, S3).

``answer_file`` evaluates the request's preconditions and Range (RFC 9110 sections 13 and
14) against the manifest, answers HEAD with headers alone, and streams the bytes. The
first stripe is read before the headers go out, so that a file with too few readable
chunks is an error answer (503) with the frontend's body, not a 200 with a truncated one.
Once the headers are gone, a failure can only cut the body short on a closed connection.
A block is read when the client is ready for it (``StripeRead.blocks``; earlier while the
peer's read-ahead budget allows), written in slices of ``SEND_SLICE`` and let go once
written, so a slow client holds about one block, not a stripe or the file. A body of up to
``ONE_WRITE`` bytes read in one piece goes out with its headers in one ``send``: one packet,
not two, for a small file.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Mapping

from aiohttp import hdrs, web

from node.api.conditions import answer_read, preconditions, wanted_range
from node.api.ranges import parse_range
from node.api.representation import META_PREFIX, representation_headers
from node.datapath.coordinator import Coordinator
from node.errors import RingstoreError
from node.model.digests import Buffer
from node.model.manifest import Manifest

log = logging.getLogger(__name__)

# A stored file is someone's content served from this origin (the web console's too): a
# browser must run none of it (no scripts, plugins, forms or same-origin access), nor guess
# a type other than the one stored (nosniff, on every answer: node.process.wiring).
SANDBOX = "sandbox; default-src 'none'"

# Bytes handed to the connection at once. What the socket does not take at once waits in the
# transport's buffer, a copy under Python 3.11 (a 1 MiB block: up to 1 MiB more per slow
# client), until aiohttp's drain lets the next slice go.
SEND_SLICE = 256 << 10

# Bodies up to this size, read in one piece, are answered as a whole (``web.Response``):
# aiohttp writes the headers and the body with one ``send``. No larger: a body written after
# the handler returns is past the read's admission (``Coordinator.admit_read``), and up to
# 64 KiB (aiohttp's write buffer limit) a write never waits for the client anyway.
ONE_WRITE = 64 << 10


def file_headers(manifest: Manifest, meta_prefix: str = META_PREFIX) -> dict[str, str]:
    """The headers of a GET or HEAD of ``manifest``: validators, type, kept representation
    headers and user metadata (under ``meta_prefix``)."""
    return {
        hdrs.ETAG: f'"{manifest.etag}"',
        hdrs.CONTENT_TYPE: manifest.content_type,
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.LAST_MODIFIED: time.strftime(
            "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(manifest.version.wall_ms / 1000)
        ),
        "Content-Security-Policy": SANDBOX,
        **representation_headers(manifest.representation, meta_prefix),
    }


async def answer_file(
    request: web.Request,
    coordinator: Coordinator,
    manifest: Manifest,
    headers: dict[str, str],
    span: tuple[int, int] | None = None,
    whole_only: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Answer a GET or HEAD of ``manifest`` with ``headers``: ``304``/``412`` by its
    preconditions, ``206`` for a satisfiable Range, else ``200``; raises InvalidRange and
    what ``send_file`` raises. ``span`` (bytes ``[start, end)``) is a range the frontend
    chose instead of the request's Range (S3's ``partNumber``): answered ``206`` with its
    Content-Range, as a Range of those bytes would be. ``whole_only``: headers only an
    answer of the whole file carries (a checksum of it), a ``200`` however its Range was
    passed over (none, invalid, several, or an If-Range that does not match)."""
    conditions = preconditions(request)
    if (not_modified := answer_read(conditions, manifest, headers)) is not None:
        return not_modified
    size = manifest.size
    if span is not None:
        wanted: tuple[int, int] | None = span
    else:
        wanted = parse_range(wanted_range(request, conditions, manifest), size)
    start, end = wanted if wanted is not None else (0, size)
    if wanted is None and whole_only:
        headers = {**headers, **whole_only}
    response = web.StreamResponse(status=200 if wanted is None else 206, headers=headers)
    if wanted is not None and end > start:  # (an empty span, an empty part, has none)
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{size}"
    response.content_length = end - start
    if request.method == hdrs.METH_HEAD:
        await response.prepare(request)
        return response
    return await send_file(request, response, coordinator, manifest, start, end)


async def send_file(
    request: web.Request,
    response: web.StreamResponse,
    coordinator: Coordinator,
    manifest: Manifest,
    start: int,
    end: int,
) -> web.StreamResponse:
    """Prepare ``response`` and stream bytes ``[start, end)`` of ``manifest`` into it, or
    answer a body of up to ``ONE_WRITE`` bytes read in one piece with a ``web.Response`` of
    the same status and headers (returned instead of ``response``).

    Raises what the coordinator raises before the first bytes (Unavailable; Overloaded when
    the peer's buffer memory stays taken, ``Coordinator.admit_read``); after them, errors
    end the body early and are logged.
    """
    name = manifest.name
    async with (
        coordinator.admit_read(manifest, start, end),
        contextlib.aclosing(coordinator.stream(manifest, start, end)) as pieces,
    ):
        first = await anext(pieces, None)
        if first is not None and len(first) == end - start <= ONE_WRITE:
            # (a copy: a small range of a big file is a view into a whole block)
            body = bytes(first)
            return web.Response(body=body, status=response.status, headers=response.headers)
        await response.prepare(request)
        piece: Buffer | None = None
        try:
            if first is not None:
                await write_sliced(response, first)
                first = None  # held no longer than the others
            async for piece in pieces:
                await write_sliced(response, piece)
        except RingstoreError as error:
            # Headers are gone: the honest signal left is a short body on a closed connection.
            log.error("GET %r failed after %s: %s", name, response.status, error)
            response.force_close()
            return response
        except ConnectionError as gone:
            log.info("GET %r: the client went away", name)
            # aiohttp keeps the error in a reference cycle: let go of the block being sent
            # now, not at the next full garbage collection (an idle peer may run none).
            traceback.clear_frames(gone.__traceback__)
            first = piece = None
            return response
    await response.write_eof()
    return response


async def write_sliced(response: web.StreamResponse, piece: Buffer) -> None:
    """Write ``piece`` in slices of at most ``SEND_SLICE`` bytes, each once the connection
    has taken the one before (aiohttp drains past 64 KiB buffered)."""
    view = memoryview(piece)
    for at in range(0, len(view), SEND_SLICE):
        await response.write(view[at : at + SEND_SLICE])
