"""Sending a file's bytes as an answer: shared by every frontend that serves reads.

The first stripe is read before the headers go out, so that a file with too few readable
chunks is an error answer (503) with the frontend's body, not a 200 with a truncated one.
Once the headers are gone, a failure can only cut the body short on a closed connection.
A block is let go once written: a slow client holds one block, not the file.
"""

from __future__ import annotations

import contextlib
import logging
import traceback

from aiohttp import web

from node.datapath.coordinator import Coordinator
from node.errors import RingstoreError
from node.model.digests import Buffer
from node.model.manifest import Manifest

log = logging.getLogger(__name__)


async def send_file(
    request: web.Request,
    response: web.StreamResponse,
    coordinator: Coordinator,
    manifest: Manifest,
    start: int,
    end: int,
) -> web.StreamResponse:
    """Prepare ``response`` and stream bytes ``[start, end)`` of ``manifest`` into it.

    Raises what the coordinator raises before the first bytes (Unavailable...); after
    them, errors end the body early and are logged.
    """
    name = manifest.name
    async with contextlib.aclosing(coordinator.stream(manifest, start, end)) as pieces:
        first = await anext(pieces, None)
        await response.prepare(request)
        piece: Buffer | None = None
        try:
            if first is not None:
                await response.write(first)
                first = None  # held no longer than the others
            async for piece in pieces:
                await response.write(piece)
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
