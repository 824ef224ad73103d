"""Streaming reads of one file, resumed on another peer if a connection dies mid-way.

A reader holds one piece at a time (plus aiohttp's read buffer), never the whole file. It
knows the byte range it must deliver, so a body that ends short is a failure, not an end of
file: the peer closes the connection short of Content-Length when it cannot finish. On such a
failure the reader asks the next peer for the rest (``Range: bytes=offset-``) and goes on if
the ETag is still the one it started with; if a new version replaced the file in between, it
raises FileChanged rather than splice two versions together.

A reader of a whole file hashes it as it is delivered and compares the hash with its ETag
(``EtagCheck``), as swift's client does with Swift's MD5 ETags: ringstore checks every
block's digest on the disks, but not the bytes after they leave them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp
import xxhash

from client.errors import (
    ChecksumMismatch,
    FileChanged,
    PeerUnreachable,
    RingstoreError,
    UnexpectedResponse,
    error_from_exception,
)
from client.records import FileStat, entity_tag
from client.transport import TRANSPORT_ERRORS, Transport

DEFAULT_CHUNK_SIZE = 256 * 1024

# Pieces at least this long are hashed in a worker thread (hashlib and xxhash release the
# GIL), overlapping the receipt of the next: MD5 takes ~1.4 ms per MiB here.
HASH_OFF_LOOP = 64 << 10

_HEX128 = re.compile(r"[0-9a-f]{32}")


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


class EtagCheck:
    """The hash of a whole file's bytes, in order, compared with its etag at the end.

    An etag of 32 hex digits is the content's MD5 (``--etag md5``, the default; S3's ETag
    of a single-part object) or, for files stored before 2026-11-30, its xxh3-128: both are
    computed (xxh3 costs ~4% of MD5). ``xxh3-<32 hex digits>`` is the xxh3-128
    (``--etag xxh3``). Other etags (an S3 multipart upload's ``<hex>-<parts>``) are no hash
    of the content: ``for_etag`` gives None and nothing is checked.
    """

    def __init__(self, etag: str, hashes: list[_Hash]) -> None:
        self.etag = etag
        self._hashes = hashes
        self._pending: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        hashing = "hashing" if self._pending is not None else "idle"
        return f"EtagCheck({self.etag!r}, {len(self._hashes)} hash(es), {hashing})"

    @classmethod
    def for_etag(cls, etag: str) -> EtagCheck | None:
        """The check of the content whose etag is ``etag`` (without quotes), or None for an
        etag that is no hash of the content."""
        if _HEX128.fullmatch(etag):
            return cls(etag, [hashlib.md5(usedforsecurity=False), xxhash.xxh3_128()])
        if etag.startswith("xxh3-") and _HEX128.fullmatch(etag[5:]):
            return cls(etag[5:], [xxhash.xxh3_128()])
        return None

    def _update(self, piece: bytes) -> None:
        for hashed in self._hashes:
            hashed.update(piece)

    def update(self, piece: bytes) -> None:
        """Hash ``piece``, the bytes after those hashed before (``settle`` first): a long one
        in a thread while the caller goes on. Not a coroutine: a piece taken from the
        network is always counted, whatever is cancelled afterwards."""
        if self._pending is not None:
            raise RuntimeError("update before the piece before was hashed (settle first)")
        if len(piece) >= HASH_OFF_LOOP:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._update, piece))
        else:
            self._update(piece)

    async def settle(self) -> None:
        """Wait for the piece being hashed in a thread, if any. Cancelling the wait leaves
        the hashing running (shielded) and waited for by the next ``settle``: one thread at
        a time updates the hashes."""
        if self._pending is not None:
            await asyncio.shield(self._pending)
            self._pending = None

    async def matches(self) -> bool:
        """Whether the bytes hashed so far hash to the etag."""
        await self.settle()
        return any(hashed.hexdigest() == self.etag for hashed in self._hashes)


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
        verify: bool = True,
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
        whole = start == 0 and end == stat.size
        self._check = EtagCheck.for_etag(stat.etag) if verify and whole else None
        self._failure: RingstoreError | None = None  # raised by every read once set
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
        verify: bool = True,
    ) -> AsyncFileReader:
        """Start reading ``[start, end)`` of the file at ``path`` (percent-encoded); with
        ``if_match`` (an etag), only of that version. With ``verify``, a reader of the whole
        file raises ChecksumMismatch instead of its last piece when the bytes do not hash
        to the etag (``EtagCheck``).

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
        return cls(transport, path, stat, first, last, chunk_size, peer, response, verify)

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
        """The next ``n`` bytes (all that remain when ``n`` < 0); fewer only at the end.
        Raises ChecksumMismatch (``open``) and what ``Transport.send`` raises."""
        if self._failure is not None:
            raise self._failure
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
        if self._failure is not None:
            raise self._failure
        if self._check is not None:
            await self._check.settle()  # the piece before is hashed before the next is taken
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
                    if self._check is not None:
                        self._check.update(piece)
                    if self._offset == self.end:
                        self._finish()
                        if self._check is not None:
                            await self._verify(self._check)
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

    async def _verify(self, check: EtagCheck) -> None:
        """Raise ChecksumMismatch, at this read and every later one, unless the whole
        file's bytes hash to its etag. Until the check is over the reader counts as failed:
        cancelled then, the last piece was taken but never delivered."""
        self._failure = RingstoreError(
            f"{self.stat.name!r}: a read was cancelled after its last piece was received:"
            " open the file again",
            peer=self._peer,
        )
        if await check.matches():
            self._failure = None
            return
        self._failure = ChecksumMismatch(
            f"{self.stat.name!r}: the {self.stat.size} bytes received do not hash to its"
            f" etag {self.stat.etag}",
            peer=self._peer,
        )
        raise self._failure

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
        if self._check is not None:
            await self._check.settle()  # no hashing thread outlives the reader
