"""The client's pure parts, without a cluster: error mapping, retries, peers, names, bodies."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import xxhash

from client import (
    MAX_PAGE_SIZE,
    AsyncClient,
    BadDigest,
    Client,
    CorruptData,
    FileNotFound,
    IncompleteBody,
    InsufficientStorage,
    InvalidName,
    InvalidRange,
    InvalidRequest,
    NotFound,
    PeerUnreachable,
    PreconditionFailed,
    RingstoreError,
    ServerError,
    Unavailable,
    UnexpectedResponse,
)
from client.async_client import PEERS_ENV, default_peers, entity_tag, file_path
from client.body import PIECE, ProgressCallback, RequestBody
from client.credentials import Credentials, read_credentials
from client.errors import error_from_exception, error_from_response
from client.filesystem import RingstoreFileSystem
from client.loop_thread import LoopThread
from client.reader import HASH_OFF_LOOP, EtagCheck, range_header
from client.records import ClusterView, Manifest, PeerInfo, RingInfo, Upkeep
from client.transport import PeerList, RetryPolicy, Transport, peer_url
from node.api.public import MAX_LIST
from tests.harness import eventually


def error_body(code: str, message: str = "why") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_request", InvalidRequest),
        (400, "invalid_name", InvalidName),
        (400, "incomplete_body", IncompleteBody),
        (400, "bad_digest", BadDigest),
        (400, "invalid_digest", InvalidRequest),
        (400, "metadata_too_large", InvalidRequest),
        (416, "invalid_range", InvalidRange),
        (404, "not_found", NotFound),
        (404, "file_not_found", FileNotFound),
        (404, "chunk_not_found", NotFound),
        (503, "unavailable", Unavailable),
        (503, "peer_unavailable", Unavailable),
        (507, "insufficient_storage", InsufficientStorage),
        (412, "precondition_failed", PreconditionFailed),
        (412, "", PreconditionFailed),
        (500, "corrupt_data", CorruptData),
        (500, "internal", ServerError),
        (405, "method_not_allowed", InvalidRequest),
        (502, "bad_gateway", ServerError),
    ],
)
def test_error_answers_map_to_one_class_each(
    status: int, code: str, cls: type[RingstoreError]
) -> None:
    error = error_from_response(status, error_body(code, "the reason"), peer="http://p:1")
    assert type(error) is cls
    assert (error.status, error.code, error.peer, str(error)) == (
        status,
        code,
        "http://p:1",
        "the reason",
    )


def test_error_answers_without_the_json_body() -> None:
    # HEAD answers carry no body: the caller says what the status stands for.
    head = error_from_response(404, b"", peer="p", implied_code="file_not_found")
    assert type(head) is FileNotFound
    assert str(head) == "HTTP 404: no such file"
    refused = error_from_response(401, b"", peer="p")  # it said only "HTTP 401"
    assert str(refused) == "HTTP 401: no access key, or one the cluster refused (wrong, revoked)"
    assert str(error_from_response(418, b"", peer="p")) == "HTTP 418"
    assert type(error_from_response(404, b"", peer="p")) is NotFound
    proxy = error_from_response(502, b"<html>Bad Gateway</html>", peer="p")
    assert type(proxy) is ServerError
    assert "Bad Gateway" in str(proxy)
    ranged = error_from_response(
        416, error_body("invalid_range"), peer="p", content_range="bytes */1234"
    )
    assert isinstance(ranged, InvalidRange)
    assert ranged.size == 1234
    assert type(error_from_response(302, b"", peer="p")) is UnexpectedResponse
    assert isinstance(FileNotFound("x"), KeyError)
    assert isinstance(InvalidName("x"), ValueError)


@pytest.mark.parametrize(
    ("given", "sent"),
    [("abc", '"abc"'), ('"abc"', '"abc"'), ('W/"abc"', 'W/"abc"'), ("*", "*")],
)
def test_etags_are_quoted_for_conditions(given: str, sent: str) -> None:
    assert entity_tag(given) == sent


def test_transport_failures_become_peer_unreachable() -> None:
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        ConnectionRefusedError(111, "Connection refused"),
    )
    for exc, reason in [
        (refused, "cannot connect (Connection refused)"),
        (asyncio.TimeoutError(), "timed out"),
        (aiohttp.ServerDisconnectedError(), "the connection closed before an answer"),
    ]:
        error = error_from_exception(exc, peer="http://p:1")
        assert isinstance(error, PeerUnreachable)
        assert isinstance(error, Unavailable)
        assert str(error) == f"peer http://p:1: {reason}"


def test_retry_policy_backs_off_exponentially_up_to_a_cap() -> None:
    policy = RetryPolicy(attempts=6, backoff=0.1, max_backoff=0.5)
    assert [policy.delay(a) for a in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.5, 0.5]
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


def test_peer_list_normalises_and_moves_past_failed_peers() -> None:
    peers = PeerList(["http://a:1/", " http://b:2", "http://a:1", "https://c"])
    assert peers.urls == ("http://a:1", "http://b:2", "https://c")
    peers.failed("http://b:2")  # not the current one: nothing moves
    assert peers.current == "http://a:1"
    peers.failed("http://a:1")
    assert peers.current == "http://b:2"
    peers.failed("http://b:2")
    peers.failed("https://c")
    assert peers.current == "http://a:1"
    for bad in ([], ["127.0.0.1:8000"], ["ftp://x"]):
        with pytest.raises(ValueError, match="peer"):
            PeerList(bad)


def test_default_peers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEERS_ENV, raising=False)
    assert default_peers() == ["http://127.0.0.1:8000"]
    monkeypatch.setenv(PEERS_ENV, "http://a:1, http://b:2,")
    assert default_peers() == ["http://a:1", "http://b:2"]
    assert AsyncClient().peers == ("http://a:1", "http://b:2")
    assert AsyncClient("http://c:3,http://d:4").peers == ("http://c:3", "http://d:4")


def test_names_are_percent_encoded_by_segment() -> None:
    assert file_path("a b/c%d/é?#") == "/files/a%20b/c%25d/%C3%A9%3F%23"
    assert file_path("a/../b", "/manifests/") == "/manifests/a/../b"  # the server judges
    with pytest.raises(InvalidName, match="UTF-8"):
        file_path("lone \udc80 surrogate")


@pytest.mark.parametrize(
    ("start", "end", "header"),
    [(0, None, None), (5, None, "bytes=5-"), (0, 1, "bytes=0-0"), (-3, None, "bytes=-3")],
)
def test_range_headers_are_half_open(start: int, end: int | None, header: str | None) -> None:
    assert range_header(start, end) == header


def test_impossible_ranges_are_refused_before_asking() -> None:
    for start, end, why in [(4, 4, "greater"), (5, 2, "greater"), (-3, 10, "takes no end")]:
        with pytest.raises(ValueError, match=why):
            range_header(start, end)


def progress_into(calls: list[tuple[int, int | None]]) -> ProgressCallback:
    return lambda done, total: calls.append((done, total))


async def test_bodies_know_their_size_and_whether_they_rewind(tmp_path: Path) -> None:
    async def replay(body: RequestBody) -> bytes:
        return b"".join([piece async for piece in body.pieces()])

    data = os.urandom(2 * PIECE + 3)
    path = tmp_path / "f"
    path.write_bytes(data)
    for source in (data, bytearray(data), memoryview(data), path, io.BytesIO(data)):
        progress: list[tuple[int, int | None]] = []
        async with await RequestBody.prepare(source, progress_into(progress)) as body:
            assert body.size == len(data)
            assert await replay(body) == data
            assert body.can_send
            assert await replay(body) == data  # and again, from the start
        once = [(0, len(data)), (PIECE, len(data)), (2 * PIECE, len(data)), (len(data), len(data))]
        assert progress == once + once

    def pieces() -> Iterator[bytes]:
        yield b"ab"
        yield bytearray(b"cd")

    async def async_pieces() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    for one_shot in (pieces(), async_pieces()):
        async with await RequestBody.prepare(one_shot, None) as body:
            assert body.size is None
            assert body.can_send
            assert await replay(body) == b"abcd"
            assert not body.can_send
            with pytest.raises(RuntimeError, match="cannot be sent again"):
                await replay(body)

    async with await RequestBody.prepare(iter([b"ok", "text"]), None) as body:  # type: ignore[list-item]
        with pytest.raises(TypeError, match="must yield bytes"):
            await replay(body)
        assert isinstance(body.failure, TypeError)
        assert not body.can_send
    with pytest.raises(TypeError, match="not str"):
        await RequestBody.prepare("some text", None)  # type: ignore[arg-type]


async def test_devices_and_procfs_files_are_streamed_not_measured() -> None:
    """/dev/urandom seeks to its end at 0: it was stored as 0 bytes; /proc files cannot
    seek to their end (EINVAL, a one-line error naming no file)."""
    for path in ("/dev/zero", "/proc/self/status"):
        with await asyncio.to_thread(Path(path).open, "rb") as file:
            body = await RequestBody.prepare(file, None)
            assert (body.size, body.can_send) == (None, True)
            first = await anext(body.pieces())
            assert first
            assert not body.can_send  # one-shot, like a pipe
    assert (await RequestBody.prepare(io.BytesIO(b"abc"), None)).size == 3


class Recorded(io.FileIO):
    """A pipe's read end that records which thread read it."""

    readers: set[str]

    def read(self, size: int | None = -1) -> bytes:
        self.readers.add(threading.current_thread().name)
        return super().read(size)


async def test_a_pipe_is_read_in_whole_pieces_off_the_executor_its_errors_raised() -> None:
    """An unbuffered pipe (``put -``'s standard input) is read in a daemon thread of its
    own, never the loop's executor (a read that never ends would hold up its shutdown);
    a piece is filled to PIECE bytes across the pipe's 64 KiB reads while bytes keep
    coming, and goes as it is once they pause (a slow producer's first bytes must not
    wait for a whole piece); a non-blocking descriptor is waited on, not taken as ended;
    whatever a read raises reaches the body's reader."""
    reading, writing = os.pipe()
    os.set_blocking(reading, False)  # as a shell may leave it: "would block" is no end
    data = os.urandom(PIECE + 5)
    go_on = threading.Event()

    def produce() -> None:
        with open(writing, "wb", buffering=0) as out:
            out.write(b"first")
            go_on.wait(30)  # (a slow producer: its first bytes must go on without the rest)
            for start in range(0, len(data), 50_000):  # in bits, as a producer writes
                out.write(data[start : start + 50_000])

    with Recorded(reading, "rb") as stream:
        stream.readers = set()
        producer = threading.Thread(target=produce)
        producer.start()
        try:
            async with await RequestBody.prepare(stream, None) as body:
                pieces = body.pieces()
                assert await asyncio.wait_for(anext(pieces), 10) == b"first"
                go_on.set()
                rest = [piece async for piece in pieces]
        finally:
            go_on.set()
            producer.join()
        assert stream.readers == {"ringstore-stream-read"}
    assert b"".join(rest) == data
    assert len(rest) < 8  # filled across reads (17 pieces of a pipe's 64 KiB reads)

    class Stop(BaseException):  # (not an Exception: the thread must hand over any)
        pass

    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            raise Stop

    async with await RequestBody.prepare(Failing(), None) as body:
        with pytest.raises(Stop):
            await asyncio.wait_for(anext(body.pieces()), 10)

    held_open, _keep = os.pipe()  # a writer that never writes nor closes
    with Recorded(held_open, "rb") as never:
        never.readers = set()
        async with await RequestBody.prepare(never, None) as body:
            pending = asyncio.ensure_future(anext(body.pieces()))
            await eventually(lambda: bool(never.readers), 10, "the read to start")
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        assert never.readers == {"ringstore-stream-read"}  # left behind, not in the pool
    os.close(_keep)


def test_the_end_of_standard_input_after_a_ctrl_c_is_not_taken_for_the_file_s() -> None:
    """``put -`` reads standard input through ``_StandardInput``: an end that comes once a
    SIGINT came (a producer the same Ctrl-C ended) raises instead of ending the file, so
    the upload is aborted; ``_SigintSeen`` sees a SIGINT from any thread once its handler
    ran, and gives the wakeup descriptor back when left."""
    from client.cli import _SigintSeen, _StandardInput

    reading, writing = os.pipe()
    os.write(writing, b"the start of a file")
    os.close(writing)
    interrupted = False
    with _StandardInput(reading, lambda: interrupted) as stream:
        assert stream.read(100) == b"the start of a file"
        interrupted = True
        with pytest.raises(InterruptedError, match="Ctrl-C"):
            stream.read(100)
    os.close(reading)

    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _: caught.append(number))
    before, spare = socket.socketpair()
    spare.setblocking(False)
    wakeup = signal.set_wakeup_fd(spare.fileno())
    try:
        answers: list[bool] = []

        def ask() -> None:
            asker = threading.Thread(target=lambda: answers.append(seen()))
            asker.start()
            asker.join()

        with _SigintSeen() as seen:
            ask()
            signal.raise_signal(signal.SIGINT)
            ask()
            ask()  # (once seen, always)
        assert answers == [False, True, True]
        assert caught == [signal.SIGINT]
        assert signal.set_wakeup_fd(spare.fileno()) == spare.fileno()  # given back
    finally:
        signal.set_wakeup_fd(wakeup)
        signal.signal(signal.SIGINT, previous)
        before.close()
        spare.close()


def test_sync_client_closes_its_thread_and_refuses_calls_after() -> None:
    client = Client("http://127.0.0.1:9")
    with client:
        assert "running" in repr(client)
    client.close()  # idempotent
    assert "closed" in repr(client)
    with pytest.raises(RuntimeError, match="closed"):
        client.get("x")


async def test_closing_a_shared_client_ends_another_threads_call() -> None:
    """The loop stopped under a call another thread waited on, which then waited for good
    (an attack: a put still blocked 40 s after close)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # connected, never answered

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    client = Client(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", timeout=300)
    try:
        waiting = asyncio.ensure_future(asyncio.to_thread(client.stat, "a/b"))
        await eventually(lambda: bool(held), what="the call to reach the peer")
        await asyncio.to_thread(client.close)
        with pytest.raises(RuntimeError, match="closed during the call"):
            await asyncio.wait_for(waiting, 10)
    finally:
        client.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_sync_client_closes_from_a_thread_running_a_loop() -> None:
    """close() ended the loop from the caller's thread: in async code (a filesystem dropped
    and finalized there, as the suite saw) it failed with 'Cannot run the event loop while
    another loop is running', and the client's thread and loop were left behind."""
    client = Client("http://127.0.0.1:9")
    client.close()
    assert "closed" in repr(client)
    filesystem = RingstoreFileSystem("http://127.0.0.1:9", skip_instance_cache=True)
    threads = threading.active_count()
    del filesystem
    gc.collect()  # its finalizer closes its client, here, on this test's loop's thread
    assert threading.active_count() == threads - 1


async def test_an_abandoned_attempt_leaves_no_stall_for_the_next() -> None:
    """The stall watchdog reads when the piece being sent was handed over; an attempt given
    up on left its time set, and the retry on the next peer was cut off as stalled before
    it sent a byte (a review found it)."""
    body = await RequestBody.prepare(b"x" * 3 * PIECE, None)
    first = body.pieces()
    await anext(first)
    assert body.handed_at is not None
    await first.aclose()  # the attempt's request is given up on
    assert body.handed_at is None
    second = body.pieces()
    await anext(second)
    stale = body.handed_at
    await first.aclose()  # an old attempt closed late clears nothing of the new one's
    assert body.handed_at == stale
    await second.aclose()


async def test_the_stall_watchdog_keeps_its_callers_cancellation() -> None:
    """Cancelled while it waited for a stalled request to wind down, the watchdog raised
    TimeoutError instead: the caller's cancellation (Ctrl-C, close) became a failover."""
    transport = Transport(
        PeerList(["http://127.0.0.1:9"]), RetryPolicy(1), aiohttp.ClientTimeout(sock_read=0.2)
    )
    body = await RequestBody.prepare(b"x", None)
    body.handed_at = time.monotonic() - 60  # a piece the peer never took

    async def slow_to_stop() -> aiohttp.ClientResponse:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.5)  # winding down, as a connection being closed
        raise AssertionError("not reached")

    watched = asyncio.ensure_future(transport._watched(slow_to_stop(), body))
    await asyncio.sleep(0.2)  # past the first check: the request is being cancelled
    watched.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watched


def test_a_call_made_while_the_client_closes_is_refused_not_left_waiting() -> None:
    """close() cancelled the calls it found; one submitted while it was closing became a
    task nobody cancelled on a loop then closed: its caller waited for good."""
    loop = LoopThread()

    async def slow_to_cancel() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.5)

    results: dict[str, str] = {}

    def call(name: str, coroutine: Any) -> None:
        try:
            loop.run(coroutine)
        except RuntimeError as exc:
            results[name] = str(exc)

    first = threading.Thread(target=call, args=("first", slow_to_cancel()))
    first.start()
    time.sleep(0.2)
    closing = threading.Thread(target=loop.close)
    closing.start()
    time.sleep(0.2)  # close() is waiting for the first call to wind down
    late = threading.Thread(target=call, args=("late", asyncio.sleep(60)))
    late.start()
    for thread in (first, closing, late):
        thread.join(10)
        assert not thread.is_alive()
    assert results == {
        "first": "this client was closed during the call",
        "late": "this client is closed",
    }


def test_a_credentials_file_s_errors_never_show_its_lines(tmp_path: Path) -> None:
    """configparser quotes the line it could not parse, which may be the secret; and it
    read "%" as interpolation (a traceback quoting the secret), where awscli reads it as
    it is."""
    secret = "mFYakiRI%LnSDsecret"
    broken = tmp_path / "broken"
    broken.write_text(f"[default]\naws_access_key_id = AK\n{secret}\n")
    with pytest.raises(ValueError, match="not a credentials file") as refused:
        read_credentials(broken)
    assert secret not in str(refused.value)
    assert "line 3" in str(refused.value)
    headless = tmp_path / "headless"
    headless.write_text(f"aws_access_key_id = {secret}\n")
    with pytest.raises(ValueError, match="no \\[section\\] line") as refused:
        read_credentials(headless)
    assert secret not in str(refused.value)
    good = tmp_path / "good"
    good.write_text(f"[default]\naws_access_key_id = AK\naws_secret_access_key = {secret}\n")
    assert read_credentials(good) == Credentials("AK", secret)


@pytest.mark.parametrize(
    "url",
    [
        "http://AK:topsecret@127.0.0.1:9200",  # credentials: refused, not shown
        "http://127.0.0.1:9200/files",  # a path every request's would follow
        "http://127.0.0.1:9200?x=1",
        "http://127.0.0.1:9200#f",
    ],
)
def test_peer_urls_are_a_scheme_host_and_port_only(url: str) -> None:
    with pytest.raises(ValueError, match="a peer URL") as refused:
        peer_url(url)
    assert "topsecret" not in str(refused.value)


async def test_header_values_with_control_characters_are_refused_before_sending() -> None:
    """aiohttp raised a bare ValueError (a CLI traceback) for CR/LF in a Content-Type."""
    async with AsyncClient("http://127.0.0.1:9") as client:  # never reached
        for fields in (
            {"content_type": "text/plain\r\nX-Evil: 1"},
            {"cache_control": "\x00"},
            {"metadata": {"x": "a\nb"}},
            {"metadata": {"bad name": "v"}},
        ):
            with pytest.raises(InvalidRequest):
                await client.put("a/b", b"x", **fields)


MANIFEST = {
    "name": "a/b",
    "version": "v1",
    "size": 10,
    "etag": "e",
    "content_type": "text/plain",
    "deleted": False,
    "degraded": True,
    "k": 5,
    "m": 2,
    "block_size": 4096,
    "chunk_size": 2,
    "stripes": 1,
    "chunks": [{"index": 0, "kind": "data", "holder": "p1", "id": "c-0", "size": 2, "digest": "d"}],
}


def test_records_read_every_field_with_its_type() -> None:
    manifest = Manifest.from_json({**MANIFEST, "size": "10"})
    assert (manifest.size, manifest.degraded, manifest.k) == (10, True, 5)
    assert not manifest.inline  # a peer of before inline files says nothing
    assert Manifest.from_json({**MANIFEST, "inline": True, "chunks": []}).inline
    assert manifest.chunks[0].holder == "p1"
    assert manifest.chunks[0].size == 2
    view = ClusterView.from_json(
        {
            "self": "p1",
            "cluster": "0123456789abcdef",
            "ring": {"digest": "r", "vnodes": 1024, "members": 1, "evenness": 1},
            "peers": [
                {"id": "p1", "url": "u", "state": "up", "weight": 1, "used_bytes": 0, "chunks": 0}
            ],
        }
    )
    assert view.ring.evenness == 1.0
    assert view.cluster_id == "0123456789abcdef"
    assert view.peer("p1") is view.peers[0]
    # A peer of before clock offsets were reported: not measured, not skewed.
    assert (view.peers[0].clock_offset_ms, view.peers[0].skewed) == (None, False)


def test_a_peers_clock_offset_and_skew_are_read() -> None:
    peer = {"id": "p2", "url": "u", "state": "down", "weight": 1, "used_bytes": 0, "chunks": 0}
    info = PeerInfo.from_json({**peer, "clock_offset_ms": -3_600_002, "skewed": True})
    assert (info.clock_offset_ms, info.skewed) == (-3_600_002, True)
    info = PeerInfo.from_json({**peer, "clock_offset_ms": None, "skewed": False})
    assert (info.clock_offset_ms, info.skewed) == (None, False)


def test_a_peers_fill_upkeep_and_ring_share_are_read() -> None:
    peer = {"id": "p3", "url": "u", "state": "up", "weight": 2, "used_bytes": 50, "chunks": 1}
    old = PeerInfo.from_json(peer)  # a peer of before these figures: none, all idle
    assert (old.fill, old.capacity_bytes, old.token_share, old.share_ratio) == (None, 0, None, None)
    assert old.upkeep == Upkeep()
    assert old.upkeep.idle
    info = PeerInfo.from_json(
        {
            **peer,
            "capacity_bytes": 200,
            "max_bytes": 200,
            "fill": 0.25,
            "rebalance": {"pending": 3, "remaining_bytes": 4096, "moves": 9},
            "repair_queued": 2,
            "scrub": {"pass_chunks": 10, "pass_checked": 4},
            "deletions_pending": 1,
            "token_share": 0.3,
            "fair_share": 0.25,
            "figures_age_s": 0.4,
        }
    )
    assert (info.fill, info.capacity_bytes, info.max_bytes) == (0.25, 200, 200)
    assert info.upkeep == Upkeep(2, 3, 4096, 10, 4, 1)
    assert not info.upkeep.idle
    assert info.share_ratio == pytest.approx(1.2)
    assert info.figures_age_s == 0.4
    ring = {"digest": "r", "vnodes": 1024, "members": 2, "evenness": 1.01}
    assert RingInfo.from_json(ring).max_ratio is None
    balance = {"max_ratio": 1.04, "min_ratio": 0.97, "cv": 0.02}
    assert RingInfo.from_json({**ring, "balance": balance}).cv == 0.02


@pytest.mark.parametrize(
    ("change", "error"),
    [({"k": None}, TypeError), ({"size": "ten"}, ValueError), ({"chunks": [{}]}, KeyError)],
)
def test_records_refuse_an_answer_missing_a_field_or_of_the_wrong_kind(
    change: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        Manifest.from_json({**MANIFEST, **change})
    incomplete = {key: value for key, value in MANIFEST.items() if key != "etag"}
    with pytest.raises(KeyError):
        Manifest.from_json(incomplete)


def test_the_client_page_bound_is_the_servers() -> None:
    # One bound, stated twice because client/ may not import node/: this keeps them equal.
    assert MAX_PAGE_SIZE == MAX_LIST


@pytest.mark.parametrize("piece", [1000, HASH_OFF_LOOP, 3 * HASH_OFF_LOOP + 7])
async def test_an_etag_check_knows_each_kind_of_etag(piece: int) -> None:
    """MD5 (32 hex digits), xxh3-<hex>, and 32 hex digits that are an xxh3-128 (etags of
    files stored before MD5 etags) are checked; a multipart etag names no hash."""
    data = os.urandom(5 * HASH_OFF_LOOP + 3)
    etags = {
        hashlib.md5(data).hexdigest(): True,
        xxhash.xxh3_128_hexdigest(data): True,
        "xxh3-" + xxhash.xxh3_128_hexdigest(data): True,
        hashlib.md5(data[1:]).hexdigest(): False,
        "xxh3-" + hashlib.md5(data).hexdigest(): False,
    }
    for etag, good in etags.items():
        check = EtagCheck.for_etag(etag)
        assert check is not None
        for start in range(0, len(data), piece):
            await check.settle()
            check.update(data[start : start + piece])
        assert await check.matches() is good, etag
    for unchecked in (hashlib.md5(data).hexdigest() + "-2", "xxh3-zz", "", "W/x"):
        assert EtagCheck.for_etag(unchecked) is None


async def test_an_etag_check_hashes_one_piece_at_a_time_whatever_is_cancelled() -> None:
    """A wait for a piece's hashing that is cancelled (a read under a timeout) leaves that
    hashing running and waited for by the next wait; no second piece starts beside it."""
    data = os.urandom(16 * HASH_OFF_LOOP)
    check = EtagCheck.for_etag(hashlib.md5(data).hexdigest())
    assert check is not None
    half = len(data) // 2
    check.update(data[:half])
    with pytest.raises(RuntimeError, match="settle first"):
        check.update(data[half:])
    waiting = asyncio.ensure_future(check.settle())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await check.settle()
    check.update(data[half:])
    assert await check.matches()
