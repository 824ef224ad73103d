"""Public-API requests of the limits and fuzz tests, made in one place each way.

``public_request`` (an aiohttp session) and ``raw_request`` (bytes for a raw socket) are
how those tests reach public routes, so the credentials they send (the harness's admin key:
the ``http`` fixture's session, ``keyed=True``) are added here and nowhere else.
``RawClient`` is a socket on 127.0.0.1 that sends bytes as a test chooses (a byte at a time,
a head and no body) and reads what comes back. ``damaging_proxy`` is a peer whose answers
are damaged on their way, past every digest the peers check.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from node.waiting import within
from tests.harness.access import ADMIN_HEADERS
from tests.harness.local import LocalPeer


@asynccontextmanager
async def public_request(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    """One request to a public route (``url`` is whole); yields the response. ``session``
    sends the harness's admin key when it is the ``http`` fixture's."""
    async with session.request(method, url, **kwargs) as response:
        yield response


def raw_request(
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    keyed: bool = False,
) -> bytes:
    """The bytes of a request to a public route (``target``: its path and query), with a
    Host header unless ``headers`` has one, the harness's admin key if ``keyed`` (a cluster
    of one peer cannot look keys up: it has no read quorum), and ``body`` after the head as
    it is."""
    lines = [f"{method} {target} {version}"]
    given = dict(headers or {})
    named = {name.lower() for name in given}
    if "host" not in named:
        lines.append("Host: 127.0.0.1")
    if keyed and "authorization" not in named:
        lines += [f"{name}: {value}" for name, value in ADMIN_HEADERS.items()]
    lines += [f"{name}: {value}" for name, value in given.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawClient:
    """A plain TCP connection to a peer, for what no HTTP client library would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, peer: LocalPeer, receive_buffer: int | None = None) -> RawClient:
        """Connect to ``peer``; ``receive_buffer`` shrinks the socket's (before connecting,
        so the window the peer sees is small too)."""
        sock = socket.socket()
        try:
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", peer.port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """Read one answer (status, headers by lower-case name, body by Content-Length)."""
        head = await within(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await within(self.reader.readexactly(length), timeout)
        return int(status_line.split()[1]), headers, body

    async def closed_by_peer(self, timeout: float) -> bytes:
        """Read until the peer closes the connection (within ``timeout``); return the rest."""
        try:
            return await within(self.reader.read(), timeout)
        except ConnectionResetError:
            return b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):  # the peer closed it first
            await self.writer.wait_closed()

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def damaging_proxy(upstream: str) -> web.Application:
    """An app that forwards GET and HEAD to ``upstream`` (a peer's URL) with the request's
    credentials, Range and If-Match, and answers with one bit of the body's middle byte
    flipped: as a link or a disk cache might damage bytes after the peers' digest checks."""

    async def forward(request: web.Request) -> web.Response:
        wanted = ("Authorization", "Range", "If-Match")
        headers = {name: request.headers[name] for name in wanted if name in request.headers}
        async with (
            aiohttp.ClientSession() as session,
            session.request(request.method, upstream + request.path_qs, headers=headers) as got,
        ):
            body = bytearray(await got.read())
        if body:
            body[len(body) // 2] ^= 1
        dropped = {"Date", "Server", "Transfer-Encoding"} | (
            set() if request.method == "HEAD" else {"Content-Length"}  # (the body's own)
        )
        kept = {name: value for name, value in got.headers.items() if name not in dropped}
        return web.Response(status=got.status, body=bytes(body), headers=kept)

    app = web.Application()
    app.router.add_get("/{path:.*}", forward)  # (and HEAD)
    return app
