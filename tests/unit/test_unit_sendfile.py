"""sendfile(2) of a file range to a real loopback connection, on both event loops
(``node.disk.sendfile``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import importlib.util
import io
import os
import platform
import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import pytest

from node.disk import cached
from node.disk import sendfile as sending_module
from node.disk.cached import Unsupported, in_cache
from node.disk.chunk_store import ChunkRange
from node.disk.sendfile import WINDOW, ReaderStalled, sendfile
from node.process.event_loop import run
from tests.harness.disk import evict
from tests.harness.polling import eventually

T = TypeVar("T")
UVLOOP = pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed here"
)
LOOPS = ["asyncio", pytest.param("uvloop", marks=UVLOOP)]
STALL = 30.0  # seconds a send may wait for the reader (more than any test's own wait)


class _Accepted(asyncio.Protocol):
    def __init__(self, accepted: asyncio.Future[asyncio.Transport]) -> None:
        self._accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are no asyncio.Transport subclass, but have its methods)
        self._accepted.set_result(cast(asyncio.Transport, transport))


async def _connected(
    then: Callable[[asyncio.Transport, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[T]],
) -> T:
    """``then(server's transport, client's reader, client's writer)`` on a fresh connection."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()
    server = await loop.create_server(lambda: _Accepted(accepted), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = await asyncio.wait_for(accepted, 10)
    try:
        return await then(transport, reader, writer)
    finally:
        transport.close()
        writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_range_follows_what_was_written_before_and_leaves_the_position_after_it(
    loop: str, tmp_path: Path
) -> None:
    data = os.urandom(5 << 20)  # more than a socket buffer: the send waits for the reader
    path = tmp_path / "chunk"
    path.write_bytes(data)
    offset, count = 1234, (4 << 20) + 5

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[int, int, bytes]:
        transport.write(b"head:")
        with path.open("rb") as file:
            sending = asyncio.ensure_future(sendfile(transport, file, offset, count, STALL))
            got = await asyncio.wait_for(reader.readexactly(5 + count), 30)
            return await sending, file.tell(), got

    sent, position, got = run(_connected(exchange), loop)
    assert sent == count
    assert position == offset + count
    assert got == b"head:" + data[offset : offset + count]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_range_past_the_end_sends_what_the_file_has(loop: str, tmp_path: Path) -> None:
    path = tmp_path / "chunk"
    path.write_bytes(b"0123456789")

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[int, bytes]:
        with path.open("rb") as file:
            sent = await sendfile(transport, file, 4, 100, STALL)
        return sent, await asyncio.wait_for(reader.readexactly(sent), 10)

    assert run(_connected(exchange), loop) == (6, b"456789")


def _cut_partway(
    loop: str,
    tmp_path: Path,
    cut: Callable[[asyncio.Transport, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[BaseException | None, bool]:
    """The ConnectionError a 64 MiB send ends with when ``cut(server's transport, client's
    reader, client's writer)`` runs once the reader has 1 MiB of it (None if it ends well),
    and whether the server's transport is closing then."""
    path = tmp_path / "chunk"
    path.write_bytes(bytes(64 << 20))

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[BaseException | None, bool]:
        with path.open("rb") as file:
            sending = asyncio.ensure_future(sendfile(transport, file, 0, 64 << 20, STALL))
            await asyncio.wait_for(reader.readexactly(1 << 20), 10)
            await cut(transport, reader, writer)
            try:
                await asyncio.wait_for(sending, 30)
            except ConnectionError as exc:  # (not a timeout: also an OSError)
                return exc, transport.is_closing()
        return None, transport.is_closing()

    return run(_connected(exchange), loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_goes_away_fails_the_send(loop: str, tmp_path: Path) -> None:
    async def reset(
        server: asyncio.Transport, __: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        server.pause_reading()  # (so that only the send learns of the reset)
        client.transport.abort()  # a reset, unread bytes and all

    ended, closing = _cut_partway(loop, tmp_path, reset)
    assert isinstance(ended, (BrokenPipeError, ConnectionResetError))
    assert closing  # aborted: the request reads as one whose client went away


@pytest.mark.parametrize("loop", LOOPS)
def test_a_send_cancelled_partway_leaves_no_descriptor_and_the_position_after_what_went(
    loop: str, tmp_path: Path
) -> None:
    path = tmp_path / "chunk"
    path.write_bytes(bytes(64 << 20))

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[int, int, int]:
        descriptors = len(os.listdir("/proc/self/fd"))
        with path.open("rb") as file:
            sending = asyncio.ensure_future(sendfile(transport, file, 0, 64 << 20, STALL))
            await asyncio.wait_for(reader.readexactly(1 << 20), 10)  # under way, the reader
            sending.cancel()  # reads no more: the send waits for room, and is cancelled
            with pytest.raises(asyncio.CancelledError):
                await sending
            position = file.tell()
        transport.close()  # what it had sent arrives, then the end
        received = (1 << 20) + len(await asyncio.wait_for(reader.read(), 30))
        return position, received, len(os.listdir("/proc/self/fd")) - descriptors

    position, received, more = run(_connected(exchange), loop)
    assert 1 << 20 <= position < 64 << 20
    assert received == position
    assert more <= 0  # (the server's transport and the file are closed by then too)


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_still_queued_send_nothing(loop: str, tmp_path: Path) -> None:
    path = tmp_path / "chunk"
    path.write_bytes(b"x" * 1000)

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[bool, int]:
        while not transport.get_write_buffer_size():  # the reader reads nothing: fill up
            transport.write(bytes(1 << 20))
        with path.open("rb") as file:
            try:
                await sendfile(transport, file, 0, 1000, STALL)
            except asyncio.SendfileNotAvailableError:
                return True, file.tell()
        return False, -1

    assert run(_connected(exchange), loop) == (True, 0)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_stops_reading_times_the_send_out_and_a_slow_one_does_not(
    loop: str, tmp_path: Path
) -> None:
    size, stall = 64 << 20, 1.0
    path = tmp_path / "chunk"
    path.write_bytes(bytes(size))

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[int, float, int]:
        clock = asyncio.get_running_loop().time
        with path.open("rb") as file:
            sending = asyncio.ensure_future(sendfile(transport, file, 0, size, stall))
            # slower than the socket would go, but taking something within every ``stall``
            taken = 0
            while True:
                taken += len(await asyncio.wait_for(reader.read(1 << 20), 10))
                if taken >= 8 << 20:
                    break
                await asyncio.sleep(stall / 20)
            stopped = clock()  # then it reads nothing more
            assert not sending.done(), "a reader that takes something now and then is served"
            with pytest.raises(ReaderStalled):
                await asyncio.wait_for(sending, 30)
            return file.tell(), clock() - stopped, taken

    position, waited, taken = run(_connected(exchange), loop)
    assert taken <= position < size  # the position after what went
    assert stall <= waited < stall + 10


@pytest.mark.parametrize("loop", LOOPS)
def test_a_transport_closed_meanwhile_ends_the_send(loop: str, tmp_path: Path) -> None:
    """(The duplicate descriptor would keep the socket open and the send going.)"""

    draining: list[asyncio.Future[None]] = []

    async def close(
        server: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> None:
        server.close()  # as its protocol does when the connection ends
        # The reader goes on reading, so the send's waits end (a socket is writable again
        # only once much of its buffer is free: one read of what had arrived was not always
        # enough). Ended by the connection's end, or with the loop.
        draining.append(asyncio.ensure_future(_drain(reader)))

    assert isinstance(_cut_partway(loop, tmp_path, close)[0], ConnectionResetError)


def _dropped(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` and drop it from the page cache; whether it is out of the
    cache now (not on a file system whose pages never leave it, or that cannot tell)."""
    path.write_bytes(data)
    evict(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        return not in_cache(fd, 0, len(data))
    except Unsupported:
        return False
    finally:
        os.close(fd)


class _Threads:
    """An ``InThread`` of the file open at ``fd``: runs each call in a thread of its own
    pool, as ``ChunkRange`` does (not the loop's, which a closing loop waits for), and
    counts them; ``gate``, when given, is waited for by each call before it begins.
    ``close`` once no call waits."""

    def __init__(self, fd: int, gate: threading.Event | None = None) -> None:
        self.calls = 0
        self._fd = fd
        self._gate = gate
        self._pool = concurrent.futures.ThreadPoolExecutor(1)

    async def __call__(self, call: Callable[[int], int]) -> int:
        self.calls += 1

        def blocking() -> int:
            if self._gate is not None and not self._gate.wait(30):
                raise TimeoutError("the gate was never opened")
            return call(self._fd)

        return await asyncio.get_running_loop().run_in_executor(self._pool, blocking)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _SlowDisk:
    """sendfile(2) from a worker thread waits until ``ready`` is set (a slow disk), then
    sends; each such send's outcome (bytes, or the OSError) is kept in ``sends``. Every
    window counts as cold (``in_cache`` says no). sendfile(2) on the loop is untouched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ready = threading.Event()
        self.waiting = 0  # sends waiting for the disk now
        self.sends: list[int | OSError] = []
        real = os.sendfile

        def slow(out: int, file: int, offset: int | None, count: int) -> int:
            if threading.current_thread() is threading.main_thread():
                return real(out, file, offset, count)
            self.waiting += 1
            try:
                if not self.ready.wait(30):
                    raise TimeoutError("the disk never answered")
                sent = real(out, file, offset, count)
            except OSError as exc:
                self.sends.append(exc)
                raise
            finally:
                self.waiting -= 1
            self.sends.append(sent)
            return sent

        monkeypatch.setattr(os, "sendfile", slow)
        monkeypatch.setattr(sending_module, "in_cache", lambda fd, offset, length: False)


@pytest.mark.parametrize("loop", LOOPS)
def test_what_the_page_cache_lacks_is_sent_from_a_thread_and_what_it_holds_on_the_loop(
    loop: str, tmp_path: Path
) -> None:
    data = os.urandom(3 * WINDOW + 1234)
    path = tmp_path / "chunk"
    if not _dropped(path, data):
        pytest.skip("this file system keeps every page in the cache, or cannot tell")

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[list[int], list[int], list[bytes]]:
        calls, positions, received = [], [], []
        with path.open("rb") as file:
            for _ in range(2):  # cold, then (read once) in the cache
                threads = _Threads(file.fileno())
                try:
                    got, sent = await asyncio.gather(
                        asyncio.wait_for(reader.readexactly(len(data) - 100), 30),
                        sendfile(transport, file, 100, len(data) - 100, STALL, threads),
                    )
                finally:
                    threads.close()
                assert sent == len(data) - 100
                calls.append(threads.calls)
                positions.append(file.tell())
                received.append(got)
        return calls, positions, received

    calls, positions, received = run(_connected(exchange), loop)
    assert calls[0] >= 1  # (readahead may bring later windows in before they are sent)
    assert calls[1] == 0
    assert positions == [len(data)] * 2
    assert received == [data[100:]] * 2


@pytest.mark.parametrize("loop", LOOPS)
def test_the_loop_serves_others_while_a_thread_waits_for_the_disk(
    loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk: the thread's send waits until a task on the loop lets it go, which it
    could not if the send held the loop."""
    data = os.urandom(2 * WINDOW + 10)
    path = tmp_path / "chunk"
    path.write_bytes(data)
    disk = _SlowDisk(monkeypatch)

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> bytes:
        with path.open("rb") as file:
            threads = _Threads(file.fileno())
            sending = asyncio.ensure_future(sendfile(transport, file, 0, len(data), STALL, threads))
            try:
                await eventually(lambda: disk.waiting == 1)  # the send waits in its thread
                disk.ready.set()  # from the loop
                got = await asyncio.wait_for(reader.readexactly(len(data)), 30)
                await asyncio.wait_for(sending, 30)
            finally:
                disk.ready.set()
                threads.close()
        return got

    assert run(_connected(exchange), loop) == data


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("ends", ["cancelled", "loop closed"])
def test_a_send_given_up_while_its_thread_waits_for_the_disk_closes_nothing_under_it(
    loop: str, ends: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread sends on a duplicate of its own, closed once it is done: a descriptor
    closed under its sendfile(2) could be another file or socket by then. Given up by a
    cancel, or by its loop closing (which cancels every task left, the thread's too)."""
    data = os.urandom(64 << 10)  # (as much as any socket buffer takes in one send)
    path = tmp_path / "chunk"
    path.write_bytes(data)
    disk = _SlowDisk(monkeypatch)
    received = bytearray()
    file = path.open("rb")
    threads = _Threads(file.fileno())
    socket_inode = 0
    counts = []  # descriptors of the server's socket: during the thread's wait, after the cancel

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> None:
        nonlocal socket_inode
        socket_inode = os.fstat(transport.get_extra_info("socket").fileno()).st_ino
        sending = asyncio.ensure_future(sendfile(transport, file, 0, len(data), STALL, threads))
        await eventually(lambda: disk.waiting == 1)
        counts.append(_socket_descriptors(socket_inode))
        if ends == "cancelled":
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            counts.append(_socket_descriptors(socket_inode))
            disk.ready.set()
            received.extend(await asyncio.wait_for(reader.readexactly(len(data)), 30))
        # ("loop closed": the send still waits for the disk as the loop ends)

    try:
        run(_connected(exchange), loop)
    finally:
        disk.ready.set()  # (the loop closed: the disk answers now)
        threads.close()  # (once its send is done, as ``ChunkRange`` closes its file)
        file.close()
    # the transport's own, the send's duplicate, the thread's; then the send's, closed
    assert counts == ([3, 2] if ends == "cancelled" else [3])
    assert len(disk.sends) == 1
    assert not (isinstance(disk.sends[0], OSError) and disk.sends[0].errno == errno.EBADF)
    assert _socket_descriptors(socket_inode) == 0  # the thread closed its own when done
    if ends == "cancelled":
        assert disk.sends == [len(data)]
        assert received == data


async def _drain(reader: asyncio.StreamReader) -> None:
    """Read until the connection ends (at most 100,000 reads)."""
    for _ in range(100_000):
        if not await reader.read(1 << 20):
            return


def _socket_descriptors(inode: int) -> int:
    """How many of this process's descriptors are the socket ``inode``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (closed meanwhile)
            count += os.readlink(f"/proc/self/fd/{fd}") == f"socket:[{inode}]"
    return count


@pytest.mark.parametrize("loop", LOOPS)
def test_a_send_given_up_before_its_thread_begins_sends_nothing_and_leaves_nothing_open(
    loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(WINDOW)
    path = tmp_path / "chunk"
    path.write_bytes(data)
    disk = _SlowDisk(monkeypatch)
    gate = threading.Event()  # the thread does not begin until it is set

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[int, int, bytes]:
        with path.open("rb") as file:
            descriptors = len(os.listdir("/proc/self/fd"))
            threads = _Threads(file.fileno(), gate)
            sending = asyncio.ensure_future(sendfile(transport, file, 0, len(data), STALL, threads))
            try:
                await eventually(lambda: threads.calls == 1)
                sending.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await sending
            finally:
                gate.set()
                disk.ready.set()
                threads.close()
            left = len(os.listdir("/proc/self/fd")) - descriptors
            transport.close()
            rest = await asyncio.wait_for(reader.read(), 30)
        return left, len(disk.sends), rest

    assert run(_connected(exchange), loop) == (0, 0, b"")


def test_the_cache_is_asked_of_the_range_and_past_the_end_nothing_is(tmp_path: Path) -> None:
    data = os.urandom(4 * WINDOW)
    path = tmp_path / "chunk"
    if not _dropped(path, data):
        pytest.skip("this file system keeps every page in the cache, or cannot tell")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not in_cache(fd, 0, WINDOW)
        os.pread(fd, WINDOW, 0)  # read: in the cache (and readahead's pages after it)
        assert in_cache(fd, 0, WINDOW)
        assert in_cache(fd, 100, 4096)
        evict(path)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead on this descriptor
        os.pread(fd, 1, 0)
        os.pread(fd, 1, WINDOW - 1)  # the first and last pages alone
        # pages between missing: seen where the kernel counts them (cachestat, Linux 6.5+)
        if _kernel() >= (6, 5):
            assert cached._cachestat[0] is not None, "cachestat was refused"
        assert in_cache(fd, 0, WINDOW) is (cached._cachestat[0] is None)
        assert not in_cache(fd, len(data) - 10, 20)  # past the end
        assert in_cache(fd, 0, 0)
    finally:
        os.close(fd)


def _kernel() -> tuple[int, int]:
    major, minor, *_ = (int(part) for part in re.findall(r"\d+", platform.release())[:2])
    return major, minor


@pytest.mark.parametrize("loop", LOOPS)
def test_a_chunk_range_closed_while_its_thread_sends_is_closed_by_that_thread_after(
    loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The range's file, as the socket's duplicate: a request cancelled (its client gone)
    closes its range at once, while the thread's sendfile(2) still reads the file."""
    data = os.urandom(64 << 10)  # (as much as any socket buffer takes in one send)
    path = tmp_path / "chunk"
    path.write_bytes(data)
    disk = _SlowDisk(monkeypatch)

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[bool, bytes]:
        chunk = ChunkRange(path, 0, len(data))
        file = chunk._file = io.FileIO(os.open(path, os.O_RDONLY), "rb")
        chunk._left = chunk.size = len(data)
        try:
            sending = asyncio.ensure_future(chunk.send(transport, STALL))
            await eventually(lambda: disk.waiting == 1, what="the send in its thread")
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            chunk.close()
            open_meanwhile = not file.closed
            disk.ready.set()
            got = await asyncio.wait_for(reader.readexactly(len(data)), 30)
            await eventually(lambda: file.closed, what="closed by the thread once done")
            return open_meanwhile, got
        finally:
            disk.ready.set()
            if not file.closed:
                file.close()

    assert run(_connected(exchange), loop) == (True, data)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (OSError(errno.ENOTCONN, "not connected"), ConnectionResetError),  # the reader's end
        (OSError(errno.EIO, "input/output error"), OSError),  # the disk's: no ConnectionError
    ],
)
def test_a_send_failing_partway_aborts_its_connection(
    loop: str,
    failure: OSError,
    raised: type[OSError],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once bytes went, no error answer may follow them on the same connection; and a
    failure of the connection itself reads as the client gone (a ConnectionError), not as
    the server's (``node.api.errors``). The first send on the loop (as much of the first window
    as the socket takes), the next fails in its thread."""
    data = os.urandom(2 * WINDOW)
    path = tmp_path / "chunk"
    path.write_bytes(data)
    real = os.sendfile

    def failing(out: int, file: int, offset: int | None, count: int) -> int:
        if threading.current_thread() is threading.main_thread():
            return real(out, file, offset, count)
        raise failure

    monkeypatch.setattr(os, "sendfile", failing)
    monkeypatch.setattr(sending_module, "in_cache", lambda fd, offset, length: offset == 0)

    async def exchange(
        transport: asyncio.Transport, reader: asyncio.StreamReader, _: asyncio.StreamWriter
    ) -> tuple[BaseException, bool, bytes]:
        reading = asyncio.ensure_future(asyncio.wait_for(reader.read(), 30))
        with path.open("rb") as file:
            threads = _Threads(file.fileno())
            try:
                with pytest.raises(raised, match=failure.strerror) as caught:
                    await sendfile(transport, file, 0, len(data), STALL, threads)
            finally:
                threads.close()
            return caught.value, transport.is_closing(), await reading

    error, closing, got = run(_connected(exchange), loop)
    assert type(error) is raised
    assert error.errno == failure.errno
    assert closing
    # what the first send took (as much of the window as the socket had room for), then the
    # connection's end
    assert 0 < len(got) <= WINDOW
    assert got == data[: len(got)]


def test_the_cache_is_asked_without_reading_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cachestat reads nothing and starts no read; a probe's miss starts the kernel's
    readahead from the caller (the event loop). So where cachestat counts pages missing,
    no probe is made."""
    path = tmp_path / "chunk"
    if not _dropped(path, os.urandom(WINDOW)):
        pytest.skip("this file system keeps every page in the cache, or cannot tell")
    fd = os.open(path, os.O_RDONLY)
    try:
        in_cache(fd, 0, 4096)  # (learns whether cachestat works here)
        if cached._cachestat[0] is None:
            pytest.skip("no cachestat here")

        def probed(*_: object) -> int:
            raise AssertionError("a probe where cachestat said no")

        monkeypatch.setattr(cached, "preadinto_cached", probed)
        assert not in_cache(fd, 0, WINDOW)
    finally:
        os.close(fd)


def test_where_the_cache_cannot_be_asked_a_window_goes_to_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> bool:
        raise Unsupported(errno.EOPNOTSUPP, "no RWF_NOWAIT here")

    monkeypatch.setattr(sending_module, "in_cache", unsupported)
    assert not sending_module._cached(0, 0, WINDOW)
