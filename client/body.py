"""Upload bodies: bytes, a path, a file object or an iterator, sent as a stream of pieces.

A body knows its size when it can (so the server gets a Content-Length) and whether it can
be sent again after a failed attempt. Bytes, paths and seekable files rewind; a one-shot
source (an iterator, a pipe) can be sent again only if no piece was taken from it yet, such as
when the first peer refused the connection. File reads and a sync iterator's ``next`` run in a
worker thread so a slow disk or a blocking generator never stalls the event loop. A read of
an unbuffered stream (a pipe or a terminal opened raw, as ``ringstore put -`` opens its
standard input) runs in a daemon thread of its own (``_read_detached``): it can block for as
long as its writer keeps it open, and nothing may wait for it to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import selectors
import stat
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, TypeAlias, runtime_checkable

PIECE = 1 << 20  # bytes per read from a file and per piece handed to aiohttp (at most)
FILL_WAIT = 0.05  # seconds a stream's piece waits for more bytes once it has some

ProgressCallback: TypeAlias = Callable[[int, int | None], None]
"""Called with (bytes done so far, total bytes or None when unknown)."""


@runtime_checkable
class BinaryReader(Protocol):
    """Anything with a binary ``read(n)``: an open file, ``io.BytesIO``, ``sys.stdin.buffer``."""

    def read(self, size: int = ..., /) -> bytes:
        """Read up to ``size`` bytes; ``b""`` at the end."""


BodySource: TypeAlias = (
    bytes
    | bytearray
    | memoryview
    | os.PathLike[str]
    | BinaryReader
    | BinaryIO
    | Iterable[bytes]
    | AsyncIterable[bytes]
)
"""What ``put`` accepts as file content."""


class _Source(Protocol):
    size: int | None
    rewindable: bool

    def pieces(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class _BytesSource:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self.size: int | None = len(self._view)
        self.rewindable = True

    async def pieces(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._view), PIECE):
            yield bytes(self._view[start : start + PIECE])

    async def aclose(self) -> None:
        self._view.release()


class _FileSource:
    """An open binary file; rewindable when seekable, read from where it stood at the start."""

    def __init__(self, file: BinaryReader, *, owned: bool) -> None:
        self._file = file
        self._owned = owned
        self._start = 0
        self.size: int | None = None
        self.rewindable = False

    @classmethod
    async def from_path(cls, path: os.PathLike[str]) -> _FileSource:
        file = await asyncio.to_thread(Path(path).open, "rb")
        source = cls(file, owned=True)
        await asyncio.to_thread(source._measure)
        return source

    @classmethod
    async def from_file(cls, file: BinaryReader) -> _FileSource:
        source = cls(file, owned=False)
        await asyncio.to_thread(source._measure)
        return source

    def _measure(self) -> None:
        """Size and rewind a regular file; anything else (a device, whose end is its
        start: /dev/urandom was stored as 0 bytes; a pipe; a procfs file, which cannot
        seek to its end) is streamed, its size unknown."""
        fileno = getattr(self._file, "fileno", None)
        try:
            if fileno is not None and not stat.S_ISREG(os.fstat(fileno()).st_mode):
                return
        except (OSError, ValueError):  # no descriptor (io.BytesIO: UnsupportedOperation)
            pass
        seekable = getattr(self._file, "seekable", None)
        if seekable is None or not seekable():
            return
        file: BinaryIO = self._file  # type: ignore[assignment]  # seekable() said so
        self._start = file.tell()
        try:
            self.size = file.seek(0, os.SEEK_END) - self._start
        except OSError:  # procfs: a regular file that cannot seek to its end
            self.size = None
            return
        finally:
            file.seek(self._start)
        self.rewindable = True

    def _rewind(self) -> None:
        if self.rewindable:
            self._file.seek(self._start)  # type: ignore[attr-defined]

    async def pieces(self) -> AsyncIterator[bytes]:
        await asyncio.to_thread(self._rewind)
        file = self._file
        stream = file if isinstance(file, io.RawIOBase) and not self.rewindable else None
        remaining = self.size
        while remaining is None or remaining > 0:
            want = PIECE if remaining is None else min(PIECE, remaining)
            if stream is not None:
                piece = await _read_detached(stream, want)  # (may never end)
            else:
                piece = await asyncio.to_thread(self._file.read, want)
            if not piece:
                if remaining is not None:
                    raise OSError(f"the file ended {remaining} bytes early; did it shrink?")
                return
            if remaining is not None:
                remaining -= len(piece)
            yield _checked(piece)

    async def aclose(self) -> None:
        if self._owned:
            await asyncio.to_thread(self._file.close)  # type: ignore[attr-defined]


async def _read_detached(file: io.RawIOBase, size: int) -> bytes:
    """Up to ``size`` bytes of ``file`` (fewer only at its end), read in a daemon thread of
    its own.

    A read of a pipe or a terminal blocks until its writer writes or closes it, which may
    be never (a producer that ignores Ctrl-C, a terminal nobody types at). A worker thread
    of the loop's executor blocked in one holds up the loop's shutdown and the
    interpreter's exit, which both join those threads: Ctrl-C during ``ringstore put -``
    left the command hanging for as long as its standard input stayed open. A daemon thread
    is joined by neither: cancelled, this read is left behind, and what it reads is dropped.
    Only for unbuffered files (``io.RawIOBase``): a buffered one's read holds its lock,
    which the interpreter's exit takes to close it, and a daemon thread left holding it
    stops the exit with a fatal error. The piece is filled with what keeps coming
    (``_read_full``: a pipe gives at most 64 KiB a read, and 64 KiB pieces took 1.5 times
    as long for a 300 MB ``put -``); a descriptor in non-blocking mode is waited on, not
    taken as ended.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[bytes] = loop.create_future()

    def settle(piece: bytes, error: BaseException | None) -> None:
        if outcome.done():  # cancelled meanwhile
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(piece)

    def run() -> None:
        piece, error = b"", None
        try:
            piece = _read_full(file, size)
        except BaseException as exc:  # every one is the awaiting task's to raise
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, piece, error)

    threading.Thread(target=run, name="ringstore-stream-read", daemon=True).start()
    return await outcome


def _read_full(file: io.RawIOBase, size: int) -> bytes:
    """Up to ``size`` bytes of ``file`` (blocking): fewer at its end, or once nothing more
    came within ``FILL_WAIT`` of the last bytes. A slow producer's bytes go on as they
    come: a piece held until full kept a request's head from the peer past its header
    timeout (aiohttp sends the head with the first piece), and a terminal's Ctrl-D, which
    ends input once, would have been asked for twice."""
    try:
        descriptor: int | None = file.fileno()
    except (OSError, ValueError):  # (no descriptor: io.UnsupportedOperation is both)
        descriptor = None
    with selectors.DefaultSelector() as selector:
        if descriptor is not None:
            selector.register(descriptor, selectors.EVENT_READ)
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            if parts and (descriptor is None or not selector.select(FILL_WAIT)):
                break  # nothing more for now: what came goes on
            piece = file.read(wanted)
            if piece is None:  # non-blocking, nothing there yet: not its end
                if descriptor is None:
                    time.sleep(FILL_WAIT)
                else:
                    selector.select()
                continue
            if not piece:
                break
            parts.append(piece)
            wanted -= len(piece)
    return b"".join(parts)


_END = object()


class _IterableSource:
    """A sync iterable of bytes, advanced in a worker thread: one-shot."""

    def __init__(self, data: Iterable[bytes]) -> None:
        self._iterator: Iterator[bytes] = iter(data)
        self.size: int | None = None
        self.rewindable = False

    async def pieces(self) -> AsyncIterator[bytes]:
        while True:
            piece = await asyncio.to_thread(next, self._iterator, _END)
            if piece is _END:
                return
            yield _checked(piece)

    async def aclose(self) -> None:
        pass  # the caller owns its iterator


class _AsyncIterableSource:
    """An async iterable of bytes: one-shot."""

    def __init__(self, data: AsyncIterable[bytes]) -> None:
        self._iterator = aiter(data)
        self.size: int | None = None
        self.rewindable = False

    async def pieces(self) -> AsyncIterator[bytes]:
        async for piece in self._iterator:
            yield _checked(piece)

    async def aclose(self) -> None:
        pass  # the caller owns its iterator


def _checked(piece: object) -> bytes:
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, (bytearray, memoryview)):
        return bytes(piece)
    raise TypeError(f"an upload iterator must yield bytes, not {type(piece).__name__}")


class RequestBody:
    """One upload's body across attempts: counts progress and knows if it can be resent.

    Use ``async with await RequestBody.prepare(data):`` so a file it opened is closed.
    """

    def __init__(self, source: _Source, progress: ProgressCallback | None) -> None:
        self._source = source
        self._progress = progress
        self._started = False
        self._attempt = 0  # attempts made: ``pieces`` calls
        self.failure: BaseException | None = None
        """An error raised by the source or the progress callback (not by the network)."""
        self.handed_at: float | None = None
        """When (``time.monotonic``) the piece being sent was handed to the connection,
        while it has not taken it yet (None otherwise): a peer that stops reading leaves it
        set (``Transport`` gives up on it), a slow source does not."""

    def __repr__(self) -> str:
        kind = "rewindable" if self._source.rewindable else "one-shot"
        return f"RequestBody({kind}, size={self.size}, started={self._started})"

    @classmethod
    async def prepare(cls, data: BodySource, progress: ProgressCallback | None) -> RequestBody:
        """Wrap ``data``; opens a path. Raises TypeError for a type it cannot send, like str."""
        source: _Source
        if isinstance(data, (bytes, bytearray, memoryview)):
            source = _BytesSource(data)
        elif isinstance(data, os.PathLike):
            source = await _FileSource.from_path(data)
        elif isinstance(data, str):
            raise TypeError("put takes bytes or a path (pathlib.Path), not str")
        elif isinstance(data, BinaryReader):
            source = await _FileSource.from_file(data)
        elif isinstance(data, AsyncIterable):
            source = _AsyncIterableSource(data)
        elif isinstance(data, Iterable):
            source = _IterableSource(data)
        else:
            raise TypeError(f"cannot upload a {type(data).__name__}")
        return cls(source, progress)

    @property
    def size(self) -> int | None:
        """The number of bytes to send, when known before sending."""
        return self._source.size

    @property
    def can_send(self) -> bool:
        """True while an attempt can send the whole body: rewindable, or never started."""
        return self.failure is None and (self._source.rewindable or not self._started)

    async def pieces(self) -> AsyncIterator[bytes]:
        """A fresh stream of the whole body for one attempt; reports progress as it goes."""
        if not self.can_send:
            raise RuntimeError(f"{self!r} cannot be sent again")
        self._started = True
        self._attempt += 1
        attempt = self._attempt
        self.handed_at = None  # (an abandoned attempt's generator never cleared its own)
        sent = 0
        try:
            if self._progress is not None:
                self._progress(0, self.size)
            async for piece in self._source.pieces():
                self.handed_at = time.monotonic()
                try:
                    yield piece
                finally:
                    if attempt == self._attempt:  # not a later attempt's, when closed late
                        self.handed_at = None
                sent += len(piece)
                if self._progress is not None:
                    self._progress(sent, self.size)
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException as exc:
            self.failure = exc
            raise

    async def aclose(self) -> None:
        """Close what ``prepare`` opened (a path's file); a caller's own file stays open."""
        await self._source.aclose()

    async def __aenter__(self) -> RequestBody:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
