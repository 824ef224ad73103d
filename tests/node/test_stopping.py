"""A stopping peer's HTTP server (``PeerRunner.cleanup``): requests under way keep reading
their bodies and finish whole, on raw sockets against a bare app with the peer's server.

aiohttp's own shutdown closes every connection, and a closed connection drops what
arrives: an upload under way starved until the grace ran out. ``PeerConnection`` reads on
for a request under way, from the moment its head is parsed (not only once its handler
runs), and never takes a read after it dropped one, so no body comes through with a piece
missing. The end-to-end case (SIGTERM, both ports) is in ``tests/e2e/test_e2e_ports.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from node.api.keys import CONFIG
from node.config import PeerConfig
from node.process.connections import PeerConnection, PeerRunner
from tests.harness import eventually

pytestmark = pytest.mark.timeout(60)
CHUNKS = (b"AAAAA", b"BBBBB", b"CCCCC")


def chunk(piece: bytes) -> bytes:
    """``piece`` as one chunk of a chunked body (RFC 9112 section 7.1)."""
    return b"%x\r\n%s\r\n" % (len(piece), piece)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[PeerRunner, int, dict[str, bytes]]]:
    """A runner serving ``PUT /x`` (answers the length and MD5 of the body it read, and
    keeps the body), its port, and what the handler got."""
    got: dict[str, bytes] = {}

    async def put(request: web.Request) -> web.Response:
        got["body"] = body = await request.read()
        return web.Response(text=f"{len(body)} {hashlib.md5(body).hexdigest()}")

    app = web.Application()
    app[CONFIG] = PeerConfig(data_dir=tmp_path)
    app.router.add_put("/x", put)
    runner = PeerRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner, runner.addresses[0][1], got
    finally:
        await runner.cleanup()


async def open_upload(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    await writer.drain()
    return reader, writer


async def finish_upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Send the last two CHUNKS and the end of the body; the answer, read to its end."""
    for piece in CHUNKS[1:]:
        writer.write(chunk(piece))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_an_upload_under_way_at_the_stop_is_read_whole_and_answered(
    served: tuple[PeerRunner, int, dict[str, bytes]],
) -> None:
    runner, port, got = served
    reader, writer = await open_upload(port)
    writer.write(chunk(CHUNKS[0]))
    await writer.drain()
    stopping = asyncio.ensure_future(runner.cleanup())  # waits for the request under way
    answer = await finish_upload(reader, writer)
    await asyncio.wait_for(stopping, 10)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert got["body"] == b"".join(CHUNKS)


async def test_a_body_arriving_before_its_handler_runs_is_read_whole(
    served: tuple[PeerRunner, int, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop comes between the head being parsed and its handler starting, and a read of
    the body arrives right then: it is read (it was dropped, and the later reads taken, so
    the handler answered 200 for a body without its first piece)."""
    runner, port, got = served
    assert runner.server is not None
    server = runner.server
    receive = PeerConnection.data_received
    in_window: list[bool] = []

    def stop_in_the_window(self: PeerConnection, data: bytes) -> None:
        receive(self, data)
        if not in_window and self._messages and not self._request_in_progress:
            in_window.append(True)
            server.pre_shutdown()  # what the runner's cleanup does first
            receive(self, chunk(CHUNKS[0]))

    monkeypatch.setattr(PeerConnection, "data_received", stop_in_the_window)
    reader, writer = await open_upload(port)
    await eventually(lambda: bool(in_window), 10, "the stop between head and handler")
    answer = await finish_upload(reader, writer)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert got["body"] == b"".join(CHUNKS)
