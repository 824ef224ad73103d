"""Limits on file requests, against seven peers with small limits shared by the module.

A body past ``--max-file-size`` is refused before a byte of it is read (Content-Length) or
cut off when it passes the limit (chunked); a body that stalls ends with 408; a client that
reads nothing of an answer, or a trickle, is dropped; in every case nothing of the file is
kept. File answers cannot run in a browser, and absurd ranges are a 416.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.cluster.transport import Address
from node.model.manifest import ChunkMeta
from tests.harness import LocalCluster, LocalPeer, eventually, fully_redundant
from tests.harness.clients import RawClient, public_request, raw_request
from tests.harness.disk import chunk_files_in, incoming_files_in
from tests.harness.peer_api import peer_transport

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_FILE = 256 << 10
TIMEOUT = 1.0  # client and send timeouts of the module's peers
MIN_RATE = 4000  # a body may keep a peer waiting TIMEOUT + 1 s per MIN_RATE bytes, in all
STALL = 3.0  # seconds a coordinator waits for a holder to take a block (HANG_DETECTION's)
MARGIN = 5.0  # seconds a timeout may be late on a loaded machine

# the shared cluster stores the harness's admin key: every raw request sends it
keyed_request = functools.partial(raw_request, keyed=True)


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    return {
        "max_file_size": MAX_FILE,
        "client_timeout": TIMEOUT,
        "client_min_rate": MIN_RATE,
        "send_timeout": TIMEOUT,
        "stall_timeout": STALL,
    }


def unique(prefix: str) -> str:
    return f"limits/{prefix}-{uuid.uuid4().hex[:8]}"


def chunk_files(cluster: LocalCluster) -> set[Path]:
    return {path for peer in cluster.peers for path in chunk_files_in(peer.data_dir)}


def nothing_incoming(cluster: LocalCluster) -> bool:
    """No chunk write left on any peer, in memory or in incoming/."""
    return not any(
        incoming_files_in(peer.data_dir) or peer.chunks.writing for peer in cluster.peers
    )


async def status_of(http: aiohttp.ClientSession, method: str, url: str) -> int:
    async with public_request(http, method, url) as response:
        return response.status


async def assert_nothing_kept(
    http: aiohttp.ClientSession, cluster: LocalCluster, name: str, chunks_before: set[Path]
) -> None:
    """No manifest, no listing entry, no new chunk file and nothing left in incoming/."""
    url = cluster[3].url
    assert await status_of(http, "GET", f"{url}/files/{name}") == 404
    async with public_request(http, "GET", f"{url}/files", params={"prefix": name}) as response:
        assert (await response.json())["files"] == []
    await eventually(lambda: nothing_incoming(cluster), what="partial chunks discarded")
    assert chunk_files(cluster) == chunks_before


def error_of(body: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(body)["error"]
    return error


@pytest.mark.parametrize("expect", [True, False], ids=["100-continue", "no Expect"])
async def test_a_content_length_past_the_limit_is_413_before_a_byte_is_sent(
    cluster: LocalCluster, expect: bool
) -> None:
    headers = {"Content-Length": str(10**15)}
    if expect:
        headers["Expect"] = "100-continue"
    async with await RawClient.connect(cluster[0]) as client:
        await client.send(keyed_request("PUT", f"/files/{unique('huge')}", headers))
        status, got, body = await client.answer()  # the head alone is answered
        assert status == 413, "refused, not 100 Continue"
        assert error_of(body)["code"] == "too_large"
        assert got["x-ringstore-error"] == "too_large"


@pytest.mark.parametrize("refusal", ["bad key", "too large"])
async def test_a_put_refused_before_100_continue_closes_its_connection(
    http: aiohttp.ClientSession, cluster: LocalCluster, refusal: str
) -> None:
    """Its client may send the body now or never (RFC 9110 section 10.1.1): reading on,
    the peer would take the client's next request on the connection as body bytes."""
    name = unique("unasked")
    headers = {"Content-Length": "11", "Expect": "100-continue"}
    if refusal == "bad key":
        headers["Authorization"] = "Basic " + base64.b64encode(b"RSNOSUCHKEY:nope").decode()
    else:
        headers["Content-Length"] = str(10**15)
    async with await RawClient.connect(cluster[0]) as client:
        await client.send(keyed_request("PUT", f"/files/{name}", headers))
        status, got, _ = await client.answer()
        assert status == (401 if refusal == "bad key" else 413)
        assert got["connection"] == "close"
        # What a client would send next on a kept connection is never read as this body.
        await client.send(keyed_request("PUT", f"/files/{name}", {"Content-Length": "0"}))
        assert await client.closed_by_peer(timeout=10) == b""
    assert await status_of(http, "GET", f"{cluster[1].url}/files/{name}") == 404


async def test_100_continue_is_sent_once_the_body_is_wanted(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    name, data = unique("continued"), os.urandom(50_000)
    headers = {"Content-Length": str(len(data)), "Expect": "100-continue"}
    async with await RawClient.connect(cluster[1]) as client:
        await client.send(keyed_request("PUT", f"/files/{name}", headers))
        assert await client.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send(data)
        status, _, _ = await client.answer()
        assert status == 201
    async with public_request(http, "GET", f"{cluster[2].url}/files/{name}") as response:
        assert await response.read() == data
    await eventually(lambda: fully_redundant(http, cluster[0].url, [name]), what="all chunks")


async def test_a_chunked_body_past_the_limit_is_cut_off_and_nothing_kept(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    name, before = unique("chunked"), chunk_files(cluster)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 100 * MAX_FILE:
            sent += 16 << 10
            yield os.urandom(16 << 10)

    url = f"{cluster[0].url}/files/{name}"
    async with public_request(http, "PUT", url, data=endless()) as response:
        assert response.status == 413
        assert error_of(await response.read())["code"] == "too_large"
    assert sent < 50 * MAX_FILE, "the rest of the body was not waited for"
    await assert_nothing_kept(http, cluster, name, before)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_that_stalls_ends_with_408_and_nothing_kept(
    http: aiohttp.ClientSession, cluster: LocalCluster, chunked: bool
) -> None:
    name, before = unique("stalled"), chunk_files(cluster)
    if chunked:
        head = keyed_request("PUT", f"/files/{name}", {"Transfer-Encoding": "chunked"})
        start = b"%x\r\n%s\r\n" % (30_000, b"x" * 30_000)  # and never the last chunk
    else:
        head = keyed_request("PUT", f"/files/{name}", {"Content-Length": "100000"})
        start = b"x" * 30_000
    async with await RawClient.connect(cluster[2]) as client:
        await client.send(head + start)
        started = asyncio.get_running_loop().time()
        status, headers, body = await client.answer(timeout=TIMEOUT + MARGIN)
        assert status == 408
        assert headers["connection"] == "close"
        assert error_of(body)["code"] == "request_timeout"
        assert asyncio.get_running_loop().time() - started >= TIMEOUT - 0.1
        assert await client.closed_by_peer(MARGIN) == b"", "a broken body ends its connection"
    await assert_nothing_kept(http, cluster, name, before)


async def trickled(
    cluster: LocalCluster, name: str, piece: int, every: float, patience: float
) -> tuple[int, float]:
    """PUT 64 KiB to ``name`` in pieces of ``piece`` bytes, one each ``every`` seconds
    (less than TIMEOUT: never a stall), stopping once answered; the status and the seconds
    until the answer, waited for up to ``patience`` seconds."""
    size = 64 << 10
    head = keyed_request("PUT", f"/files/{name}", {"Content-Length": str(size)})
    async with await RawClient.connect(cluster[3]) as client:
        await client.send(head)
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def send() -> None:
            for at in range(0, size, piece):  # (bounded: at most 64 KiB in pieces)
                await client.send(b"t" * min(piece, size - at))
                await asyncio.sleep(every)

        sending = asyncio.ensure_future(send())
        try:
            status, _, body = await client.answer(timeout=patience)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sending
        if status == 408:
            assert error_of(body)["code"] == "request_timeout"
            assert b"slower than" in body
        return status, loop.time() - started


async def test_a_body_that_trickles_below_the_min_rate_ends_with_408_and_nothing_kept(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    """A piece every quarter second is no stall, but 400 bytes/s is a tenth of MIN_RATE:
    the body may take TIMEOUT plus a second per MIN_RATE bytes (about 1.1 s here), not the
    2.7 minutes its client would."""
    name, before = unique("trickled"), chunk_files(cluster)
    status, seconds = await trickled(cluster, name, 100, 0.25, TIMEOUT + MARGIN)
    assert status == 408
    assert TIMEOUT - 0.1 <= seconds <= TIMEOUT + MARGIN
    await assert_nothing_kept(http, cluster, name, before)


async def test_a_slow_body_above_the_min_rate_is_stored(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    """16,000 bytes/s, four times MIN_RATE, for four seconds, four times TIMEOUT."""
    name = unique("slow")
    status, seconds = await trickled(cluster, name, 4000, 0.25, 4.0 + MARGIN)
    assert status == 201
    assert seconds >= 3 * TIMEOUT
    async with public_request(http, "GET", f"{cluster[1].url}/files/{name}") as response:
        assert await response.read() == b"t" * (64 << 10)


async def test_a_members_chunk_upload_is_held_to_no_rate(cluster: LocalCluster) -> None:
    """A coordinator sends each holder 1/k of what its client sends, and holds its client
    to the rate itself: a chunk upload (here chunked, as an upload of unknown size goes)
    at a tenth of the rate for longer than a holder's stall limit (TIMEOUT + STALL, which
    would allow 4.6 s at the rate) is stored."""
    holder = cluster[5]
    owner = ChunkMeta("limits/slow-chunk", "1.0.peer", 0, 1 << 20)

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(24):  # 400 bytes/s for 6 s
            yield b"c" * 100
            await asyncio.sleep(0.25)

    async with peer_transport(cluster[0].auth, timeout=30.0) as transport:
        to = Address(holder.url, holder.id)
        assert await transport.put_chunk(to, f"{11:032x}-0", trickle(), None, owner) == 2400
        await transport.delete_chunk(to, f"{11:032x}-0")  # (the module's cluster is shared)


async def test_a_client_that_reads_nothing_is_dropped_after_the_send_timeout(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    name, data = unique("unread"), os.urandom(MAX_FILE)
    async with public_request(http, "PUT", f"{cluster[4].url}/files/{name}", data=data) as r:
        assert r.status == 201
    coordinator: LocalPeer = cluster[5]
    dropped = coordinator.server.slow.count
    requests = keyed_request("GET", f"/files/{name}") * 40  # 10 MiB of answers, none read
    async with await RawClient.connect(coordinator, receive_buffer=4096) as client:
        await client.send(requests)
        await eventually(
            lambda: coordinator.server.slow.count > dropped,
            TIMEOUT + MARGIN,
            "the client that reads nothing to be dropped",
        )
    async with public_request(http, "GET", f"{coordinator.url}/files/{name}") as response:
        assert await response.read() == data, "and the peer serves on"


async def test_a_client_that_reads_a_trickle_is_dropped_after_the_send_timeout(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    """A download has no min rate of its own, yet one read at 10 KB/s is dropped: the peer's
    send buffer drains below its low-water mark only after the client takes ~48 KiB
    (asyncio's and uvloop's 64 and 16 KiB marks), so a client slower than that per
    ``--send-timeout`` leaves the peer waiting that long."""
    name, data = unique("trickled"), os.urandom(MAX_FILE)
    async with public_request(http, "PUT", f"{cluster[4].url}/files/{name}", data=data) as r:
        assert r.status == 201
    coordinator: LocalPeer = cluster[5]
    dropped = coordinator.server.slow.count
    requests = keyed_request("GET", f"/files/{name}") * 40  # 10 MiB of answers
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 4 * (TIMEOUT + MARGIN)
    taken = 0
    async with await RawClient.connect(coordinator, receive_buffer=4096) as client:
        await client.send(requests)
        while coordinator.server.slow.count == dropped and loop.time() < deadline:
            with contextlib.suppress(ConnectionResetError):
                taken += len(await client.reader.read(1024))
            await asyncio.sleep(0.1)  # the client's pace: 1 KiB every 0.1 s
    assert coordinator.server.slow.count > dropped, f"a client that took {taken} bytes is served on"
    assert taken < 40 * len(data) // 4


async def test_absurd_ranges_are_416_not_500(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    name = unique("ranged")
    async with public_request(http, "PUT", f"{cluster[0].url}/files/{name}", data=b"abc") as r:
        assert r.status == 201
    for spec in ["0-" + "9" * 5000, "9" * 5000 + "-", "-" + "9" * 30, "18446744073709551616-"]:
        headers = {"Range": f"bytes={spec}"}
        url = f"{cluster[1].url}/files/{name}"
        async with public_request(http, "GET", url, headers=headers) as response:
            assert response.status == 416, spec[:20]
            assert response.headers["Content-Range"] == "bytes */3"
            assert len(await response.read()) < 300, "the header is not echoed"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_stored_files_cannot_run_in_a_browser(
    http: aiohttp.ClientSession, cluster: LocalCluster, method: str
) -> None:
    name = unique("page") + ".html"
    page = b"<script>document.cookie</script>"
    headers = {"Content-Type": "text/html"}
    url = f"{cluster[0].url}/files/{name}"
    async with public_request(http, "PUT", url, data=page, headers=headers) as response:
        assert response.status == 201
    for extra in [{}, {"Range": "bytes=0-3"}]:
        async with public_request(http, method, url, headers=extra) as response:
            assert response.status in (200, 206)
            assert response.headers["Content-Type"].startswith("text/html")  # as stored...
            policy = response.headers["Content-Security-Policy"]
            assert "sandbox" in policy  # ...but no script of it runs, on this origin or any
            assert "default-src 'none'" in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Server"] == "ringstore"


async def test_an_encoded_body_is_stored_as_sent_never_inflated(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    name = unique("bomb")
    bomb = gzip.compress(b"\0" * (MAX_FILE * 40))  # 10 MiB inflated, a few KiB sent
    headers = {"Content-Encoding": "gzip"}
    url = f"{cluster[6].url}/files/{name}"
    async with public_request(http, "PUT", url, data=bomb, headers=headers) as response:
        assert response.status == 201  # within the size limit: it is the bytes sent
        assert (await response.json())["size"] == len(bomb)
    async with public_request(http, "GET", url, auto_decompress=False) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert await response.read() == bomb
