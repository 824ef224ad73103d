"""Streaming reads of one file, resumed on another peer if a connection dies mid-way.

A reader holds one piece at a time (plus aiohttp's read buffer), never the whole file. It
knows the byte range it must deliver, so a body that ends short is a failure, not an end of
file: the peer closes the connection short of Content-Length when it cannot finish. On such a
failure the reader asks the next peer for the rest (``Range: bytes=offset-``) and goes on if
the ETag is still the one it started with; if a new version replaced the file in between, it
raises FileChanged rather than splice two versions together.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from client.errors import (
    FileChanged,
    PeerUnreachable,
    RingstoreError,
    UnexpectedResponse,
    error_from_exception,
)
from client.records import FileStat, entity_tag
from client.transport import TRANSPORT_ERRORS, Transport

DEFAULT_CHUNK_SIZE = 256 * 1024


def range_header(start: int, end: int | None) -> str | None:
    """The ``Range`` header for the half-open range ``[start, end)``; None for the whole file.

    A negative ``start`` with no ``end`` asks for the last ``-start`` bytes. Raises
    ValueError for a range that cannot be written as one HTTP byte range.
    """
    if start < 0:
        if end is not None:
            raise ValueError("a negative start (the last N bytes) takes no end")
        return f"bytes={start}"
    if end is None:
        return None if start == 0 else f"bytes={start}-"
    if end <= start:
        raise ValueError(f"end ({end}) must be greater than start ({start})")
    return f"bytes={start}-{end - 1}"


def _covers_whole(start: int, end: int | None, size: int) -> bool:
    """Whether ``[start, end)`` asks for every byte of a file of ``size`` bytes, so that a
    ``200`` with the whole body answers it (a server sends that for the last N bytes of an
    empty file, which no ``206`` can carry)."""
    if start < 0:
        return size <= -start
    return start == 0 and (end is None or end >= size)


def _content_range(header: str) -> tuple[int, int, int]:
    """``bytes a-b/size`` as the half-open ``(a, b + 1, size)``; raises ValueError."""
    unit, _, spec = header.partition(" ")
    span, _, size = spec.partition("/")
    first, _, last = span.partition("-")
    if unit != "bytes":
        raise ValueError(f"unknown Content-Range unit in {header!r}")
    return int(first), int(last) + 1, int(size)


class AsyncFileReader:
    """An open file streaming from the cluster.

    ``async for piece in reader`` yields pieces of at most ``chunk_size`` bytes;
    ``await reader.read(n)`` returns the next ``n`` bytes (fewer only at the end, ``b""``
    after it). ``stat`` describes the file; ``start`` and ``end`` bound the bytes this reader
    delivers. Get one from ``AsyncClient.open``, which closes it.
    """

    def __init__(
        self,
        transport: Transport,
        path: str,
        stat: FileStat,
        start: int,
        end: int,
        chunk_size: int,
        peer: str,
        response: aiohttp.ClientResponse,
    ) -> None:
        self.stat = stat
        self.start = start
        self.end = end
        self.chunk_size = chunk_size
        self._transport = transport
        self._path = path
        self._offset = start
        self._peer = peer
        self._response: aiohttp.ClientResponse | None = response
        self._closed = False
        if self._offset == self.end:
            self._finish()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"at {self._offset} of [{self.start}, {self.end})"
        return f"AsyncFileReader({self.stat.name!r}, {state}, peer={self._peer!r})"

    @classmethod
    async def open(
        cls,
        transport: Transport,
        name: str,
        path: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        if_match: str | None = None,
    ) -> AsyncFileReader:
        """Start reading ``[start, end)`` of the file at ``path`` (percent-encoded); with
        ``if_match`` (an etag), only of that version.

        Raises FileNotFound, InvalidRange (416), PreconditionFailed (another version),
        ValueError for a malformed range, or what ``Transport.send`` raises.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        wanted = range_header(start, end)
        headers = {"Range": wanted} if wanted else {}
        if if_match is not None:
            headers["If-Match"] = entity_tag(if_match)
        peer, response = await transport.send("GET", path, headers=headers or None)
        try:
            stat = FileStat.from_headers(name, response.headers)
            if response.status == 206:
                first, last, _ = _content_range(response.headers["Content-Range"])
            elif response.status == 200 and _covers_whole(start, end, stat.size):
                first, last = 0, stat.size  # e.g. the last N bytes of an empty file
            else:
                raise ValueError(f"status {response.status} to a Range of {wanted!r}")
        except (KeyError, ValueError) as exc:
            response.close()
            raise UnexpectedResponse(
                f"GET {path}: unexpected answer: {exc!r}", status=response.status, peer=peer
            ) from exc
        return cls(transport, path, stat, first, last, chunk_size, peer, response)

    @property
    def position(self) -> int:
        """Offset in the file of the next byte this reader delivers."""
        return self._offset

    @property
    def remaining(self) -> int:
        """Bytes left to deliver."""
        return self.end - self._offset

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        while piece := await self._next_piece(self.chunk_size):
            yield piece

    async def read(self, n: int = -1) -> bytes:
        """The next ``n`` bytes (all that remain when ``n`` < 0); fewer only at the end."""
        want = self.remaining if n < 0 else min(n, self.remaining)
        parts: list[bytes] = []
        while want > 0:
            piece = await self._next_piece(want)
            parts.append(piece)
            want -= len(piece)
        return b"".join(parts)

    async def _next_piece(self, limit: int) -> bytes:
        """Up to ``limit`` bytes, resuming on the next peer when a connection fails."""
        if self._closed:
            raise ValueError("read from a closed reader")
        failures = 0
        while self._offset < self.end:
            response = self._response or await self._resume()
            failure: RingstoreError
            try:
                piece = await response.content.read(min(limit, self.end - self._offset))
            except TRANSPORT_ERRORS as exc:
                failure = error_from_exception(exc, peer=self._peer)
            else:
                if piece:
                    self._offset += len(piece)
                    if self._offset == self.end:
                        self._finish()
                    return piece
                failure = PeerUnreachable(
                    f"peer {self._peer}: the answer ended {self.remaining} bytes early",
                    peer=self._peer,
                )
            response.close()
            self._response = None
            self._transport.peers.failed(self._peer)
            failures += 1
            if failures >= self._transport.retry.attempts:
                raise failure
            await asyncio.sleep(self._transport.retry.delay(failures))
        return b""

    async def _resume(self) -> aiohttp.ClientResponse:
        headers = {"Range": f"bytes={self._offset}-{self.end - 1}"}
        peer, response = await self._transport.send("GET", self._path, headers=headers)
        etag = response.headers.get("ETag", "").removeprefix("W/").strip('"')
        if etag != self.stat.etag:
            response.close()
            raise FileChanged(
                f"{self.stat.name!r} was replaced while it was being read"
                f" (etag {self.stat.etag} became {etag})",
                peer=peer,
            )
        try:
            first, _, _ = _content_range(response.headers["Content-Range"])
            if response.status != 206 or first != self._offset:
                raise ValueError(f"status {response.status} from byte {first}")
        except (KeyError, ValueError) as exc:
            response.close()
            raise UnexpectedResponse(
                f"GET {self._path} resumed at {self._offset}: unexpected answer: {exc!r}",
                status=response.status,
                peer=peer,
            ) from exc
        self._peer = peer
        self._response = response
        return response

    def _finish(self) -> None:
        if self._response is not None:
            self._response.release()  # the body is fully read: the connection goes back
            self._response = None

    async def aclose(self) -> None:
        """Stop reading; an unfinished answer's connection is closed, not reused."""
        self._closed = True
        if self._response is not None:
            self._response.close()
            self._response = None
