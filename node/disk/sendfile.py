"""sendfile(2) of a file range to a connection, on asyncio's event loop and on uvloop's,
given up when the reader takes nothing for a while.

The send goes on a duplicate of the connection's descriptor (dup(2): the same socket under
a number the loop's transport does not own; it also keeps the socket open while a send is
under way, should the transport close), once the transport's own buffer is empty; where it
is not, nothing is sent and the caller reads and writes the range itself. Between sends it
waits for the socket to take more (``add_writer`` on the duplicate), as asyncio's own
``loop.sendfile`` does, so the loop serves others meanwhile; once the reader has taken
nothing for ``stall`` seconds (the bytes the socket holds unacknowledged, ``SIOCOUTQ``, did
not shrink), the send ends with ReaderStalled. ``loop.sendfile`` is not used: uvloop has
none (``NotImplementedError``, and it refuses ``add_writer`` on a descriptor one of its
transports owns), and asyncio's can only be bounded as a whole, so a reader that stopped
held a file, a descriptor and a task for good.

A range is sent ``WINDOW`` bytes at a time. Where the caller can run a call in a worker
thread (``in_thread``), a window not wholly in the page cache (``node.disk.cached.in_cache``)
is sent from there (up to ``THREAD_WINDOW`` bytes, as many as the socket takes):
sendfile(2) of a cold file waits for the disk as it reads, and on the event loop that wait
stopped every other request of the peer (a slow or busy disk: tens of milliseconds per
window). The thread sends on a duplicate of its own, which it closes after its send (or
the loop, if the send was given up before the thread began: ``_Lent``), so no descriptor
is closed under it, however the send ends (cancelled, or its loop closing); ``in_thread``
keeps the file open until it returns. Pages in the cache are sent on the loop: a thread
hop costs more than sending them. A send that finds the connection reset or broken aborts
its transport and raises a ConnectionError, so the request reads as one whose client went
away (``node.api.errors``), not as the server's failure; one that fails otherwise partway
aborts it too, so that no error answer follows the bytes sent on the same connection.

Why sendfile at all (``node.process.event_loop``; 1 GiB GET through 7 peer processes on
this 2-core VM, chunk files dropped from the page cache first, 2 runs each, 2026-12-03):
reading and writing in Python on uvloop, 235-311 MB/s at 5.2-5.9 CPU-s across the
cluster; sendfile on asyncio's loop, 387-399 MB/s at 3.3 CPU-s.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import os
import sys
import termios
import threading
from collections.abc import Awaitable, Callable
from typing import BinaryIO

from node.disk.cached import in_cache

_CONNECTION_LOST = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT, errno.EHOSTUNREACH}
)
_SIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None)  # (on Linux, = SIOCOUTQ)
WINDOW = 1 << 20  # bytes per sendfile(2) call on the loop: what one look at the cache covers
# Bytes per call in a thread (as many as the socket takes): a hop costs a few hundred µs of
# CPU on these VMs, so one sends more than a window once there.
THREAD_WINDOW = 4 << 20

# Runs ``call(descriptor of the file)`` in a worker thread and returns what it returns, the
# file kept open until it has (``ChunkRange``: ``close`` meanwhile leaves it to the thread).
InThread = Callable[[Callable[[int], int]], Awaitable[int]]


class ReaderStalled(TimeoutError):
    """The reader took nothing of a send for its ``stall`` seconds (not the connection's
    own ETIMEDOUT, which is a TimeoutError too)."""


async def sendfile(
    transport: asyncio.WriteTransport,
    file: BinaryIO,
    offset: int,
    count: int,
    stall: float,
    in_thread: InThread | None = None,
) -> int:
    """Send bytes ``[offset, offset + count)`` of ``file`` on ``transport``'s socket with
    sendfile(2); the bytes sent (fewer where the file ends first), the file's position
    then after them. With ``in_thread``, the windows not in the page cache are sent from a
    worker thread (module docstring); without, all on the loop.

    Raises asyncio.SendfileNotAvailableError, nothing sent, where it cannot (a TLS
    transport, bytes still queued on the transport, no descriptor left, a file sendfile(2)
    cannot read), ReaderStalled when the reader took nothing for ``stall`` seconds (the
    caller drops the connection, whose stream is cut partway; where the kernel does not
    say what the socket still holds, not Linux: when the socket was not writable for that
    long), ConnectionResetError when the transport closes meanwhile (its protocol saw the
    connection end), BrokenPipeError or ConnectionResetError when the connection fails
    (its transport aborted: a reset, a broken pipe, a timeout), another OSError when the
    file or the system fails partway (its transport aborted too: the answer is cut), and
    what ``in_thread`` raises.
    Cancelled or stalled, it stops between sends (the position after what went); cancelled
    while a thread sends, that thread's window may still go after it (the connection is
    the caller's to drop, as it is once cancelled anyway).
    """
    if transport.get_extra_info("sslcontext") is not None:  # (TLS: the bytes are encrypted)
        raise asyncio.SendfileNotAvailableError("a TLS connection cannot take sendfile(2)")
    if transport.is_closing():
        raise ConnectionResetError("the connection closed before the file was sent")
    sock = transport.get_extra_info("socket")
    if sock is None:
        raise asyncio.SendfileNotAvailableError("no socket under this transport")
    if transport.get_write_buffer_size():  # (its bytes would come after ours)
        raise asyncio.SendfileNotAvailableError("the transport still has bytes to write")
    try:
        fd = os.dup(sock.fileno())
    except OSError as exc:  # (out of descriptors: read and write instead)
        raise asyncio.SendfileNotAvailableError(f"no descriptor to send on: {exc}") from exc
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        while sent < count:
            at, size = offset + sent, min(count - sent, WINDOW)
            try:
                if in_thread is not None and not _cached(file.fileno(), at, size):
                    size = min(count - sent, THREAD_WINDOW)
                    done = await _from_thread(in_thread, fd, at, size)
                else:
                    done = os.sendfile(fd, file.fileno(), at, size)
            except (BlockingIOError, InterruptedError):
                await _writable(loop, transport, fd, stall)
                continue
            except OSError as exc:
                if exc.errno in _CONNECTION_LOST:  # this connection's own end: the reader's
                    transport.abort()  # (as the transport would once it noticed)
                    if isinstance(exc, ConnectionError):
                        raise
                    raise ConnectionResetError(exc.errno, exc.strerror) from exc
                if sent:  # partway: the answer can neither be finished nor followed
                    transport.abort()
                    raise
                # Nothing sent, and not the connection: a file sendfile cannot read from.
                raise asyncio.SendfileNotAvailableError(f"sendfile(2): {exc}") from exc
            if not done:  # the file ended
                break
            sent += done
            if sent < count:  # as asyncio's loop does: let the loop in between sends
                await _writable(loop, transport, fd, stall)
    finally:
        os.close(fd)
        if sent:
            file.seek(offset + sent)
    return sent


class _Lent:
    """A duplicate of a socket's descriptor lent to one worker thread's send: closed by the
    thread once it has sent, or by the loop (``withdraw``) if the thread has not begun by
    the time the send is given up; a thread that begins after that sends nothing."""

    def __init__(self, sock: int) -> None:
        self._fd = os.dup(sock)  # (OSError: out of descriptors)
        self._lock = threading.Lock()
        self._state = "lent"  # -> "taken" (by the thread) or "withdrawn" (by the loop)

    def send(self, offset: int, count: int, file: int) -> int:
        """sendfile(2) of ``count`` bytes of ``file`` at ``offset`` on the duplicate, then
        close it (blocking: the worker thread, whose reads wait for the disk); 0 if the send
        was given up before."""
        with self._lock:
            if self._state != "lent":
                return 0
            self._state = "taken"
        try:
            return os.sendfile(self._fd, file, offset, count)
        finally:
            os.close(self._fd)

    def withdraw(self) -> None:
        """Close the duplicate unless a thread has taken it (which closes it itself)."""
        with self._lock:
            lent, self._state = self._state == "lent", "withdrawn"
        if lent:
            os.close(self._fd)


async def _from_thread(in_thread: InThread, sock: int, offset: int, count: int) -> int:
    """Send ``count`` bytes of the file at ``offset`` on ``sock`` from a worker thread
    (``in_thread``), on a duplicate of its own; the bytes sent."""
    lent = _Lent(sock)
    try:
        return await in_thread(functools.partial(lent.send, offset, count))
    finally:
        lent.withdraw()


def _cached(fd: int, offset: int, length: int) -> bool:
    """Whether sendfile(2) of the range starts no disk read; False where that cannot be
    told (the send goes to a thread then)."""
    try:
        return in_cache(fd, offset, length)
    except OSError:  # (Unsupported too)
        return False


async def _writable(
    loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport, fd: int, stall: float
) -> None:
    """Wait until socket ``fd`` takes more bytes (or fails: the next send says how);
    ReaderStalled once the reader has taken nothing for ``stall`` seconds,
    ConnectionResetError when ``transport`` closed meanwhile.

    A socket is writable again only once much of its send buffer is free (a third, on
    Linux), which takes far longer than ``stall`` for a slow reader of a large buffer; so
    where the kernel says how many bytes the socket still holds (``_unsent``), the wait
    goes on for as long as that shrinks, each ``stall`` seconds: the reader took some.
    """
    ready: asyncio.Future[None] = loop.create_future()
    held = _unsent(fd)
    timer: asyncio.TimerHandle

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    def check() -> None:
        nonlocal held, timer
        if ready.done():
            return
        now = _unsent(fd)
        if held is not None and now is not None and now < held:  # the reader took some
            held = now
            timer = loop.call_later(stall, check)
            return
        ready.set_exception(ReaderStalled(f"the reader took nothing for {stall:g}s"))

    loop.add_writer(fd, wake)
    timer = loop.call_later(stall, check)
    try:
        await ready
    finally:
        timer.cancel()
        loop.remove_writer(fd)
    if transport.is_closing():  # (the duplicate would keep the socket, and the send, going)
        raise ConnectionResetError("the connection closed while the file was sent")


def _unsent(fd: int) -> int | None:
    """Bytes socket ``fd`` holds that its reader has not acknowledged (``SIOCOUTQ``, see
    tcp(7)); None where the kernel does not say (not Linux)."""
    if _SIOCOUTQ is None:
        return None
    try:
        return int.from_bytes(fcntl.ioctl(fd, _SIOCOUTQ, bytes(4)), sys.byteorder, signed=True)
    except OSError:
        return None
