"""Small files kept inside their manifest (``--inline-max``, 16 KiB by default): no chunks,
3 manifest replicas, one round of manifest calls each way (issue 13).

The module's peers run with a real peer's default (``INLINE``); the rest of the suite cuts
every file into chunks (``tests.harness.local.FAST``).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import logging
import socket
from typing import Any

import aiohttp
import pytest

from node.process.logs import ContextFilter
from tests.harness import LocalCluster, eventually
from tests.harness.access import ADMIN_HEADERS
from tests.harness.local import INLINE
from tests.node.shared.test_cluster_files import get, payload, put

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = INLINE["inline_max"]


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    return dict(INLINE)


def chunk_count(cluster: LocalCluster) -> int:
    return sum(len(p.chunk_files()) for p in cluster)


async def manifest(http: aiohttp.ClientSession, url: str, name: str) -> dict[str, Any]:
    async with http.get(f"{url}/manifests/{name}") as response:
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]


async def chunked(data: bytes, piece: int = 1000) -> Any:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


@pytest.mark.parametrize("size", [0, 1, LIMIT - 1, LIMIT, LIMIT + 1, 5 * LIMIT])
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_files_up_to_the_limit_live_in_their_manifest_and_larger_ones_in_chunks(
    cluster: LocalCluster, http: aiohttp.ClientSession, size: int, framing: str
) -> None:
    """Either way the body is framed (a chunked body is read up to the limit + 1 to know),
    a file of at most ``--inline-max`` bytes stores no chunk, and one byte more is cut into
    7; both read back whole through every peer, with the same etag (the MD5 of the content,
    as S3 has it)."""
    name = f"inline/{framing}/{size}"
    data = payload(size, seed=size)
    before = chunk_count(cluster)
    body = io.BytesIO(data) if framing == "length" else chunked(data)
    async with http.put(f"{cluster[2].url}/files/{name}", data=body) as response:
        assert response.status == 201, await response.text()
        reply = await response.json()
    small = size <= LIMIT
    stored = (reply["inline"], reply["chunks"], reply["degraded"])
    assert stored == (small, 0 if small else 7, False)
    assert reply["etag"] == hashlib.md5(data).hexdigest()
    if small:
        assert chunk_count(cluster) == before
    for peer in cluster:
        assert await get(http, peer.url, name) == data
    shown = await manifest(http, cluster[5].url, name)
    assert (shown["inline"], len(shown["chunks"]), shown["size"]) == (small, reply["chunks"], size)


async def test_ranges_head_and_conditions_of_an_inline_file(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(3000, seed=7)
    reply = await put(http, cluster[0].url, "inline/ranged", data)
    url = f"{cluster[4].url}/files/inline/ranged"
    async with http.get(url, headers={"Range": "bytes=10-19"}) as response:
        assert response.status == 206
        assert await response.read() == data[10:20]
    async with http.get(url, headers={"Range": "bytes=-5"}) as response:
        assert (response.status, await response.read()) == (206, data[-5:])
    async with http.get(url, headers={"Range": "bytes=3000-"}) as response:
        assert response.status == 416
    async with http.head(url) as response:
        assert (response.status, response.headers["Content-Length"]) == (200, "3000")
        assert response.headers["ETag"] == f'"{reply["etag"]}"'
    async with http.get(url, headers={"If-None-Match": f'"{reply["etag"]}"'}) as response:
        assert response.status == 304
    async with http.put(url, data=b"new", headers={"If-Match": '"other"'}) as response:
        assert response.status == 412
    assert await get(http, cluster[1].url, "inline/ranged") == data


async def test_a_small_files_answer_leaves_in_one_send(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers and body of a file read in one piece go out in one send(2) (one packet, not
    headers then body), whole or a range; a HEAD's headers alone in one."""
    data = payload(3000, seed=11)
    await put(http, cluster[0].url, "inline/one-send", data)
    port = int(cluster[3].url.rpartition(":")[2])
    sent: list[tuple[Any, int]] = []  # (to whom, bytes) of each send from the peer's port

    def counted(method: Any) -> Any:
        def send(self: socket.socket, data: Any, *args: Any) -> Any:
            if self.getsockname()[1] == port:  # (gossip answers to other peers too)
                size = sum(map(len, data)) if method.__name__ == "sendmsg" else len(data)
                sent.append((self.getpeername(), size))
            return method(self, data, *args)

        return send

    async def sends(method: str, headers: dict[str, str]) -> tuple[list[int], bytes]:
        """The sizes of the peer's sends to a new connection of this test for one request
        (on a raw socket, whose address is known), and the body."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = writer.get_extra_info("sockname")
        fields = {"Host": f"127.0.0.1:{port}", "Connection": "close", **ADMIN_HEADERS, **headers}
        head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        sent.clear()
        writer.write(f"{method} /files/inline/one-send HTTP/1.1\r\n{head}\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 10)  # to the close
        writer.close()
        await writer.wait_closed()
        return [size for to, size in sent if to == client], answer.partition(b"\r\n\r\n")[2]

    for method in (socket.socket.send, socket.socket.sendmsg):
        monkeypatch.setattr(socket.socket, method.__name__, counted(method))
    for headers, expected in (({}, data), ({"Range": "bytes=100-199"}, data[100:200])):
        sizes, body = await sends("GET", headers)
        assert body == expected
        assert len(sizes) == 1, sizes
        assert sizes[0] > len(body)  # (the headers came with it)
    sizes, _ = await sends("HEAD", {})
    assert len(sizes) == 1, sizes


async def test_a_body_is_kept_as_sent_with_its_representation_fields(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Content-Encoding and user metadata are kept with an inline file as with chunks."""
    packed = gzip.compress(b"hello " * 100)
    headers = {
        "Content-Encoding": "gzip",
        "Content-Type": "text/plain",
        "X-Ringstore-Meta-Colour": "blue",
    }
    await put(http, cluster[3].url, "inline/encoded", packed, headers=headers)
    async with (
        aiohttp.ClientSession(auto_decompress=False, headers=ADMIN_HEADERS) as raw,
        raw.get(f"{cluster[6].url}/files/inline/encoded") as response,
    ):
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["X-Ringstore-Meta-Colour"] == "blue"
        assert await response.read() == packed


async def test_two_if_none_match_puts_racing_through_different_peers_store_one(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """The condition is checked by each manifest replica at the commit, inline or not."""

    async def create(index: int) -> int:
        url = f"{cluster[index].url}/files/inline/lock"
        async with http.put(url, data=b"owner %d" % index, headers={"If-None-Match": "*"}) as r:
            return r.status

    statuses = sorted(await asyncio.gather(create(1), create(5)))
    assert statuses == [201, 412]
    assert (await get(http, cluster[0].url, "inline/lock")).startswith(b"owner ")


async def test_overwrites_between_inline_and_chunks_leave_no_chunk_behind(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """small -> large -> small: the large version's chunks are deleted after the grace,
    and every step reads back as written."""
    name = "inline/grows"
    before = chunk_count(cluster)
    for size in (100, 3 * LIMIT, 200):
        data = payload(size, seed=size)
        await put(http, cluster[size % 7].url, name, data)
        assert await get(http, cluster[(size + 1) % 7].url, name) == data
    await eventually(lambda: chunk_count(cluster) == before, 15, "the large version's chunks gone")
    async with http.delete(f"{cluster[2].url}/files/{name}") as response:
        assert response.status == 204
    async with http.get(f"{cluster[3].url}/files/{name}") as response:
        assert response.status == 404


async def test_listings_and_the_manifest_index_show_inline_files_without_their_bytes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await put(http, cluster[0].url, "inline-list/a", b"x" * 1234)
    async with http.get(f"{cluster[1].url}/files", params={"prefix": "inline-list/"}) as r:
        listed = await r.json()
    assert [(f["name"], f["size"]) for f in listed["files"]] == [("inline-list/a", 1234)]
    for peer in cluster:  # an index entry keeps no file bytes (a million small files)
        kept = peer.manifests._index.get("inline-list/a")
        assert kept is None or kept.inline == b""


async def test_a_cut_off_small_body_stores_nothing(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A client that promises 1000 bytes and hangs up after 500 leaves no file."""
    host, port = cluster[4].url.removeprefix("http://").split(":")
    auth = ADMIN_HEADERS["Authorization"]
    head = (
        f"PUT /files/inline/cut HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + b"x" * 500)
    await writer.drain()
    writer.transport.get_extra_info("socket").shutdown(socket.SHUT_WR)
    await reader.read()  # the peer answers (400) or closes; either way nothing is stored
    writer.close()
    async with http.get(f"{cluster[0].url}/files/inline/cut") as response:
        assert response.status == 404


async def test_an_inline_file_survives_two_of_its_replicas_stopped(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """3 manifest replicas survive 2 lost peers, as 5 + 2 chunks do."""
    data = payload(5000, seed=3)
    await put(http, cluster[0].url, "inline/two-down", data)
    homes = cluster[0].membership.replicas("inline/two-down").members
    stopped = [p for p in cluster if p.id in homes[:2]]
    try:
        for peer in stopped:
            await peer.stop()
        for peer in stopped:
            await cluster.wait_down(peer)
        reader = next(p for p in cluster if p.running)
        assert await get(http, reader.url, "inline/two-down") == data
    finally:
        for peer in stopped:
            await peer.restart()
        await cluster.wait_converged()


def served(caplog: pytest.LogCaptureFixture, request_id: str, route: str) -> set[str]:
    """The peers whose routes under ``route`` served peer calls of the request
    ``request_id`` (their access logs; the test must log ``node.access`` at DEBUG)."""
    return {
        record.peer  # type: ignore[attr-defined]
        for record in caplog.records
        if getattr(record, "request_id", None) == request_id
        and record.name == "node.access"
        and route in record.getMessage()
    }


async def test_a_coordinator_writes_its_own_chunk_without_a_peer_call(
    cluster: LocalCluster, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """On 7 peers every file has a chunk on each, its coordinator's included: that one is
    written straight to its holder (``LocalFirst``), not sent over the network to itself
    (the others' access-log lines name the chunk route, by request or channel frame)."""
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.DEBUG, logger="node.access")
    coordinator = cluster[2]
    data = payload(80_003, 9)  # past the inline limit: chunks
    await put(http, coordinator.url, "own-chunk/a", data, headers={"X-Request-Id": "own-chunk"})
    everyone = {peer.id for peer in cluster}
    await eventually(
        lambda: served(caplog, "own-chunk", "/internal/chunks") == everyone - {coordinator.id},
        what="the other 6 holders' chunk writes",
    )
    # Its own chunk is stored all the same (by id: other tests' garbage collection may change
    # the peer's chunk count meanwhile).
    manifest = await coordinator.coordinator.stat("own-chunk/a")
    own = next(i for i, holder in manifest.holders().items() if holder == coordinator.id)
    assert coordinator.chunks.path(manifest.chunk_id(own)).exists()
    assert await get(http, cluster[5].url, "own-chunk/a") == data
    # (Counted as a chunk write: test_observability's 7 writes per PUT across the cluster.)


async def test_a_coordinator_reads_its_own_data_chunk_without_a_peer_call(
    cluster: LocalCluster, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A GET through the holder of one of the file's data chunks reads that chunk from its
    own file (``LocalFirst``), and the other data chunks from their holders as always."""
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.DEBUG, logger="node.access")
    data = payload(80_003, 11)  # past the inline limit: chunks
    await put(http, cluster[0].url, "own-chunk/read", data)
    manifest = await cluster[0].coordinator.stat("own-chunk/read")
    holders = manifest.holders()
    reader = cluster.holder(holders[0])  # holds data chunk 0
    async with http.get(
        f"{reader.url}/files/own-chunk/read", headers={"X-Request-Id": "own-chunk-read"}
    ) as answer:
        assert await answer.read() == data
    others = {holders[index] for index in range(1, manifest.layout.k)}
    await eventually(
        lambda: others <= served(caplog, "own-chunk-read", "/internal/chunks"),
        what="the other data chunks read from their holders",
    )
    read_over_http = served(caplog, "own-chunk-read", "/internal/chunks")
    assert reader.id not in read_over_http
    # Read, not decoded around: no parity chunk was needed.
    parity = {holders[index] for index in range(manifest.layout.k, len(holders))}
    assert not parity & read_over_http


async def test_a_coordinator_keeps_and_reads_its_own_replica_without_a_peer_call(
    cluster: LocalCluster, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that is one of a name's 3 replicas stores and reads its own straight from its
    holder (``LocalFirst``), not over HTTP to itself; the others are called as always.
    (The peers' access logs, by the request id every peer call carries: a request's other
    manifest calls, for its namespace's records, go wherever those live.)"""
    caplog.handler.addFilter(ContextFilter())  # as the process's own handler has
    caplog.set_level(logging.DEBUG, logger="node.access")
    coordinator = cluster[3]
    name = next(
        f"own/{i}"
        for i in range(1000)
        if coordinator.id in coordinator.membership.replicas(f"own/{i}").members
    )
    others = set(coordinator.membership.replicas(name).members) - {coordinator.id}

    def called(request_id: str) -> set[str]:
        return served(caplog, request_id, "/internal/manifests")

    data = payload(1000, 5)
    await put(http, coordinator.url, name, data, headers={"X-Request-Id": "own-replica-put"})
    async with http.get(
        f"{coordinator.url}/files/{name}", headers={"X-Request-Id": "own-replica-get"}
    ) as answer:
        assert await answer.read() == data
    # A PUT writes all 3 replicas; a GET reads 2 (its own and one other; the third only
    # when hedging around a slow one).
    await eventually(lambda: others <= called("own-replica-put"), what="the PUT's calls")
    await eventually(lambda: bool(others & called("own-replica-get")), what="the GET's calls")
    for request_id in ("own-replica-put", "own-replica-get"):
        assert coordinator.id not in called(request_id)
