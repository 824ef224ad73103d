"""One contract, two clients: every test runs against ``AsyncClient`` and the sync ``Client``.

Tests talk to a ``Driver`` that makes the same call on either client: awaited directly for
the async one, and in a worker thread for the sync one (its own loop runs on its own thread,
while this test's loop serves the in-process cluster). A few fake peers, small aiohttp apps on
127.0.0.1, stand in for failures the real peers cannot be made to show on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from client import (
    MAX_PAGE_SIZE,
    AsyncClient,
    ChecksumMismatch,
    Client,
    ClusterView,
    FileChanged,
    FileEntry,
    FileNotFound,
    FileStat,
    Folder,
    InvalidName,
    InvalidRange,
    InvalidRequest,
    Manifest,
    NotFound,
    PeerUnreachable,
    PreconditionFailed,
    PutResult,
    RingstoreError,
)
from tests.harness import LocalCluster, Served
from tests.harness.access import ADMIN_HEADERS
from tests.harness.clients import damaging_proxy


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class Driver:
    """The same client calls for both clients, as coroutines."""

    def __init__(self, client: AsyncClient | Client) -> None:
        self.client = client
        self.kind = "async" if isinstance(client, AsyncClient) else "sync"
        self.pulled = 0  # pieces taken from the last ``pieces`` iterator

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.client, method)
        if isinstance(self.client, AsyncClient):
            return await bound(*args, **kwargs)
        return await asyncio.to_thread(bound, *args, **kwargs)

    async def collect(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Run an iterator method (``list``, ``iter``) to its end."""
        if isinstance(self.client, AsyncClient):
            return [item async for item in getattr(self.client, method)(*args, **kwargs)]
        client = self.client
        return await asyncio.to_thread(lambda: list(getattr(client, method)(*args, **kwargs)))

    async def read_open(
        self, name: str, reads: list[int], **kwargs: Any
    ) -> tuple[FileStat, list[bytes], list[bytes]]:
        """``open``, then ``read(n)`` for each n of ``reads``, then iterate over the rest."""
        if isinstance(self.client, AsyncClient):
            async with self.client.open(name, **kwargs) as reader:
                parts = [await reader.read(n) for n in reads]
                return reader.stat, parts, [piece async for piece in reader]
        client = self.client

        def read() -> tuple[FileStat, list[bytes], list[bytes]]:
            with client.open(name, **kwargs) as reader:
                parts = [reader.read(n) for n in reads]
                return reader.stat, parts, list(reader)

        return await asyncio.to_thread(read)

    async def read_first_then_stop(self, name: str) -> bytes:
        """Take one piece of ``iter`` and stop early, closing the iterator."""
        if isinstance(self.client, AsyncClient):
            async with aclosing(self.client.iter(name, chunk_size=1000)) as pieces:
                return await anext(pieces)
        client = self.client

        def first() -> bytes:
            pieces = client.iter(name, chunk_size=1000)
            try:
                return next(pieces)
            finally:
                pieces.close()  # type: ignore[attr-defined]

        return await asyncio.to_thread(first)

    def pieces(self, data: bytes, size: int) -> Any:
        """``data`` as an iterator of the kind this client's users have: async or not."""
        self.pulled = 0

        def count() -> None:
            self.pulled += 1

        if self.kind == "async":

            async def async_pieces() -> AsyncIterator[bytes]:
                for start in range(0, len(data), size):
                    count()
                    yield data[start : start + size]

            return async_pieces()

        def sync_pieces() -> Iterator[bytes]:
            for start in range(0, len(data), size):
                count()
                yield data[start : start + size]

        return sync_pieces()


Connect = Callable[..., Awaitable[Driver]]


@pytest.fixture(params=["async", "sync"])
async def connect(request: pytest.FixtureRequest, cluster: LocalCluster) -> AsyncIterator[Connect]:
    """Make drivers for the parametrized client kind; close them all at the end."""
    drivers: list[Driver] = []

    async def make(peers: list[str] | None = None, **options: Any) -> Driver:
        urls = peers if peers is not None else cluster.urls[1:4]
        client: AsyncClient | Client
        if request.param == "async":
            client = AsyncClient(urls, **options)
        else:
            client = await asyncio.to_thread(Client, urls, **options)
        drivers.append(Driver(client))
        return drivers[-1]

    try:
        yield make
    finally:
        for driver in drivers:
            if isinstance(driver.client, AsyncClient):
                await driver.client.aclose()
            else:
                await asyncio.to_thread(driver.client.close)


@pytest.fixture
async def fake_peer() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Serve a test's own aiohttp app on 127.0.0.1 and return its URL."""
    served: list[Served] = []

    async def serve(app: web.Application) -> str:
        served.append(Served())
        await served[-1].serve(app)
        return f"http://127.0.0.1:{served[-1].port}"

    try:
        yield serve
    finally:
        for one in served:
            await one.stop()


async def test_put_and_get_every_kind_of_body(connect: Connect, tmp_path: Path) -> None:
    d = await connect()
    big = payload(200_003, seed=1)  # many stripes of the fixture's 4 KiB blocks
    progress: list[tuple[int, int | None]] = []
    result = await d.call(
        "put",
        "kinds/bytes.bin",
        big,
        content_type="application/x-test",
        progress=lambda done, total: progress.append((done, total)),
    )
    assert isinstance(result, PutResult)
    assert (result.name, result.size, result.content_type) == (
        "kinds/bytes.bin",
        len(big),
        "application/x-test",
    )
    assert result.chunks == 7
    assert not result.degraded
    assert progress[0] == (0, len(big))
    assert progress[-1] == (len(big), len(big))
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert await d.call("get", "kinds/bytes.bin") == big

    source = tmp_path / "source.bin"
    source.write_bytes(payload(50_001, seed=2))
    assert (await d.call("put", "kinds/path.bin", source)).size == 50_001
    assert await d.call("get", "kinds/path.bin") == source.read_bytes()

    file = io.BytesIO(b"skipped header|" + payload(30_000, seed=3))
    file.seek(len(b"skipped header|"))  # a file object is sent from where it stands
    assert (await d.call("put", "kinds/file.bin", file)).size == 30_000
    assert await d.call("get", "kinds/file.bin") == payload(30_000, seed=3)

    streamed = payload(70_000, seed=4)
    result = await d.call("put", "kinds/iter.bin", d.pieces(streamed, 9_999))
    assert result.size == len(streamed)
    assert await d.call("get", "kinds/iter.bin") == streamed

    assert (await d.call("put", "kinds/empty", b"")).size == 0
    assert await d.call("get", "kinds/empty") == b""
    assert await d.call("get_range", "kinds/empty", -5) == b"" == b""[-5:]

    name = "photos/été 2026/naïve café #1?.jpg"  # every segment percent-encoded, '/' kept
    await d.call("put", name, b"jpeg")
    assert await d.call("get", name) == b"jpeg"

    with pytest.raises(TypeError, match="not str"):
        await d.call("put", "text", "a str is not a body")


async def test_download_open_iter_and_ranges_stream(connect: Connect, tmp_path: Path) -> None:
    d = await connect()
    data = payload(300_001, seed=5)
    put = await d.call("put", "stream/data.bin", data, content_type="text/plain")

    target = tmp_path / "out" / "data.bin"
    target.parent.mkdir()
    target.write_bytes(b"old content, replaced whole")
    progress: list[tuple[int, int | None]] = []
    stat = await d.call(
        "download", "stream/data.bin", target, progress=lambda *p: progress.append(p)
    )
    assert target.read_bytes() == data
    assert list(target.parent.iterdir()) == [target]  # the temporary file was renamed
    assert (stat.size, stat.etag, stat.version) == (len(data), put.etag, put.version)
    assert progress[-1] == (len(data), len(data))
    with pytest.raises(FileNotFound):
        await d.call("download", "stream/missing", tmp_path / "out" / "missing")
    assert not (tmp_path / "out" / "missing").exists()
    assert list(target.parent.iterdir()) == [target]
    # A target name of 250 bytes (of the 255 a name may have): its temporary file's name
    # added 15 and failed with "File name too long".
    longest = tmp_path / "out" / ("d" * 250)
    await d.call("download", "stream/data.bin", longest)
    assert longest.read_bytes() == data
    longest.unlink()

    stat, parts, rest = await d.read_open("stream/data.bin", [10, 100_000], chunk_size=65_536)
    assert stat.size == len(data)
    assert stat.content_type == "text/plain"
    assert parts == [data[:10], data[10:100_010]]
    assert all(0 < len(piece) <= 65_536 for piece in rest)
    assert b"".join(rest) == data[100_010:]

    pieces = await d.collect("iter", "stream/data.bin", chunk_size=50_000)
    assert all(0 < len(piece) <= 50_000 for piece in pieces)
    assert b"".join(pieces) == data
    assert await d.read_first_then_stop("stream/data.bin") == data[:1000]

    _, parts, rest = await d.read_open("stream/data.bin", [5], start=1000, end=2000)
    assert parts == [data[1000:1005]]
    assert b"".join(rest) == data[1005:2000]
    assert await d.call("get_range", "stream/data.bin", 0, 1) == data[:1]
    assert await d.call("get_range", "stream/data.bin", 299_990) == data[299_990:]
    assert await d.call("get_range", "stream/data.bin", 299_990, 10**9) == data[299_990:]
    assert await d.call("get_range", "stream/data.bin", -7) == data[-7:]
    assert await d.call("get_range", "stream/data.bin", 4096, 3 * 4096) == data[4096 : 3 * 4096]


async def test_stat_exists_and_delete(connect: Connect) -> None:
    d = await connect()
    put = await d.call("put", "life/cycle", b"some text", content_type="text/plain")
    stat = await d.call("stat", "life/cycle")
    assert isinstance(stat, FileStat)
    assert (stat.name, stat.size, stat.content_type) == ("life/cycle", 9, "text/plain")
    assert (stat.version, stat.etag) == (put.version, put.etag)
    assert stat.last_modified.tzinfo is not None
    assert await d.call("exists", "life/cycle") is True
    assert await d.call("exists", "life/other") is False

    assert await d.call("delete", "life/cycle") is None
    assert await d.call("exists", "life/cycle") is False
    for method in ("get", "stat", "manifest"):
        with pytest.raises(FileNotFound):
            await d.call(method, "life/cycle")
    assert await d.call("delete", "life/cycle") is None  # deleting again is not an error
    with pytest.raises(FileNotFound):
        await d.call("delete", "life/never")


async def test_conditional_put_and_delete(connect: Connect) -> None:
    d = await connect()
    created = await d.call("put", "cond/lock", b"mine", if_none_match="*")
    with pytest.raises(PreconditionFailed) as refused:
        await d.call("put", "cond/lock", b"theirs", if_none_match="*")
    assert (refused.value.status, refused.value.code) == (412, "precondition_failed")
    assert await d.call("get", "cond/lock") == b"mine"

    swapped = await d.call("put", "cond/lock", b"mine, v2", if_match=created.etag)
    with pytest.raises(PreconditionFailed):  # the etag moved on
        await d.call("put", "cond/lock", b"stale writer", if_match=created.etag)
    assert await d.call("get", "cond/lock") == b"mine, v2"

    with pytest.raises(PreconditionFailed):
        await d.call("delete", "cond/lock", if_match=created.etag)
    assert await d.call("exists", "cond/lock") is True
    await d.call("delete", "cond/lock", if_match=f'"{swapped.etag}"')
    assert await d.call("exists", "cond/lock") is False


async def test_put_keeps_representation_fields_and_metadata(connect: Connect) -> None:
    d = await connect()
    encoded = gzip.compress(b"col\n1\n" * 100)
    put = await d.call(
        "put",
        "meta/table.csv.gz",
        encoded,
        content_type="text/csv",
        content_encoding="gzip",
        content_disposition='attachment; filename="table.csv"',
        cache_control="no-cache",
        content_language="en",
        expires=datetime(2033, 12, 1, 17, 0, tzinfo=timezone(timedelta(hours=1))),
        metadata={"Owner": "ops", "run": "42"},
    )
    assert put.size == len(encoded)  # stored as given, not decoded
    assert await d.call("get", "meta/table.csv.gz") == encoded
    stat = await d.call("stat", "meta/table.csv.gz")
    manifest = await d.call("manifest", "meta/table.csv.gz")
    for record in (stat, manifest):
        assert record.content_encoding == "gzip"
        assert record.content_disposition == 'attachment; filename="table.csv"'
        assert record.cache_control == "no-cache"
        assert record.content_language == "en"
        assert record.expires == "Thu, 01 Dec 2033 16:00:00 GMT"
        assert record.metadata == {"owner": "ops", "run": "42"}
    with pytest.raises(ValueError, match="timezone"):
        await d.call("put", "meta/naive", b"x", expires=datetime(2033, 1, 1))

    await d.call("put", "meta/plain", b"x")
    plain = await d.call("stat", "meta/plain")
    assert (plain.content_encoding, plain.expires, plain.metadata) == (None, None, {})
    with pytest.raises(InvalidRequest) as refused:
        await d.call("put", "meta/too-much", b"x", metadata={"big": "v" * 3000})
    assert refused.value.code == "metadata_too_large"


async def test_list_folder_yields_files_and_folders_in_name_order(connect: Connect) -> None:
    d = await connect()
    for name in ["fold/a/1", "fold/a/2", "fold/b", "fold/c/d/e", "fold/c-x"]:
        await d.call("put", name, b"xyz")
    for page_size in (1, 2, MAX_PAGE_SIZE):  # a folder is one entry, shown once
        entries = await d.collect("list_folder", "fold/", page_size=page_size)
        assert [e.name for e in entries] == ["fold/a/", "fold/b", "fold/c-x", "fold/c/"]
        assert [type(e) for e in entries] == [Folder, FileEntry, FileEntry, Folder]
    assert entries[1].size == 3
    entries = await d.collect("list_folder", "fold/", delimiter="-")
    assert [e.name for e in entries] == ["fold/a/1", "fold/a/2", "fold/b", "fold/c-", "fold/c/d/e"]
    assert [e.name for e in await d.collect("list_folder")] == ["fold/"]  # namespaces
    assert await d.collect("list_folder", "nothing/") == []
    for bad in ("", "x" * 65):
        with pytest.raises(InvalidRequest, match="delimiter"):
            await d.collect("list_folder", "fold/", delimiter=bad)


async def test_list_follows_pages(connect: Connect) -> None:
    d = await connect()
    names = [f"list/{i:03d}" for i in range(14)]
    for i, name in enumerate(names):
        await d.call("put", name, b"x" * i, content_type="text/plain")
    await d.call("put", "other/x", b"y")
    entries = await d.collect("list", "list/", page_size=3)  # five pages
    assert [e.name for e in entries] == names
    assert [e.size for e in entries] == list(range(14))
    assert {(e.content_type, e.deleted) for e in entries} == {("text/plain", False)}
    assert [e.name for e in await d.collect("list")] == [*names, "other/x"]
    assert await d.collect("list", "nothing/") == []
    for bad in (0, MAX_PAGE_SIZE + 1, 10_000):  # the server's bound, checked before asking
        with pytest.raises(InvalidRequest, match="page_size"):
            await d.collect("list", page_size=bad)
    assert [e.name for e in await d.collect("list", "list/", page_size=MAX_PAGE_SIZE)] == names


async def test_manifest_and_cluster_are_typed(connect: Connect, cluster: LocalCluster) -> None:
    d = await connect()
    data = payload(123_457, seed=6)
    put = await d.call("put", "typed/file", data)
    manifest = await d.call("manifest", "typed/file")
    assert isinstance(manifest, Manifest)
    assert (manifest.name, manifest.size, manifest.version) == (
        "typed/file",
        len(data),
        put.version,
    )
    assert (manifest.k, manifest.m, manifest.block_size) == (5, 2, 4096)
    assert [c.index for c in manifest.chunks] == list(range(7))
    assert [c.kind for c in manifest.chunks] == ["data"] * 5 + ["parity"] * 2
    assert {c.size for c in manifest.chunks} == {manifest.chunk_size}

    view = await d.call("cluster")
    assert isinstance(view, ClusterView)
    assert view.self_id == cluster[1].id  # the first peer the client was given
    assert {p.id for p in view.peers} == {p.id for p in cluster.peers}
    assert {p.url for p in view.peers} == set(cluster.urls)
    assert {p.state for p in view.peers} == {"up"}
    assert {c.holder for c in manifest.chunks} <= {p.id for p in view.peers}
    assert view.peer(cluster[2].id) is not None
    assert view.peer("nobody") is None
    assert view.ring.members == 7
    assert view.ring.evenness >= 1.0


async def test_errors_map_to_exception_classes(connect: Connect) -> None:
    d = await connect()
    await d.call("put", "errors/small", b"hello")

    with pytest.raises(FileNotFound) as missing:
        await d.call("get", "errors/nope")
    assert isinstance(missing.value, KeyError)
    assert isinstance(missing.value, NotFound)
    assert (missing.value.status, missing.value.code) == (404, "file_not_found")
    assert str(missing.value) == "no file named 'errors/nope'"  # not KeyError's quoted repr
    assert missing.value.peer in d.client.peers

    for method in ("put", "get", "stat", "exists", "delete", "manifest"):
        args: tuple[Any, ...] = ("a//b", b"x") if method == "put" else ("a//b",)
        with pytest.raises(InvalidName) as bad:
            await d.call(method, *args)
        assert isinstance(bad.value, ValueError)
        assert bad.value.status == 400
    for name in ("", "a/../b", "trail/", "tab\tin", "x" * 1025):
        with pytest.raises(InvalidName):
            await d.call("put", name, b"x")

    with pytest.raises(InvalidRange) as unsatisfiable:
        await d.call("get_range", "errors/small", 5)
    assert unsatisfiable.value.size == 5
    assert unsatisfiable.value.status == 416
    with pytest.raises(ValueError, match="greater than start"):
        await d.call("get_range", "errors/small", 3, 3)
    with pytest.raises(RingstoreError):
        await d.call("get_range", "errors/nope", 0, 1)


async def test_failover_from_a_stopped_peer(connect: Connect, cluster: LocalCluster) -> None:
    data = payload(40_000, seed=7)
    seed = await connect()
    await seed.call("put", "failover/before", data)
    await cluster[0].stop()
    d = await connect([cluster[0].url, cluster[1].url])
    assert (
        await d.call("get", "failover/before") == data
    )  # refused by the first, served by the next

    d = await connect([cluster[0].url, cluster[1].url])
    assert (await d.call("put", "failover/replayed", data)).size == len(data)
    assert await d.call("get", "failover/replayed") == data
    assert [e.name for e in await d.collect("list")] == ["failover/before", "failover/replayed"]

    # A one-shot iterator: refused before its first piece was taken, so it is still whole.
    d = await connect([cluster[0].url, cluster[1].url])
    assert (await d.call("put", "failover/streamed", d.pieces(data, 10_000))).size == len(data)
    assert d.pulled == 4
    assert await d.call("get", "failover/streamed") == data

    d = await connect([cluster[0].url])
    with pytest.raises(PeerUnreachable, match=r"failed after 3 tries.*cannot connect"):
        await d.call("get", "failover/before")


async def test_one_shot_body_is_not_resent_after_a_peer_took_it(
    connect: Connect, cluster: LocalCluster, fake_peer: Callable[[web.Application], Awaitable[str]]
) -> None:
    bodies: list[int] = []

    async def take_body_then_hang_up(request: web.Request) -> web.StreamResponse:
        bodies.append(len(await request.read()))
        assert request.transport is not None
        request.transport.close()  # like a peer crashing before it answers
        return web.Response()

    app = web.Application()
    app.router.add_put("/files/{name:.*}", take_body_then_hang_up)
    crashing = await fake_peer(app)
    data = payload(20_000, seed=8)

    d = await connect([crashing, cluster[1].url])
    assert (await d.call("put", "oneshot/rewound", data)).size == len(data)
    assert bodies == [len(data)]  # sent whole to the crashing peer, then again to the next

    d = await connect([crashing, cluster[1].url])
    with pytest.raises(PeerUnreachable, match=r"not retried on another peer.*one-shot") as error:
        await d.call("put", "oneshot/lost", d.pieces(data, 5_000))
    assert error.value.peer == crashing
    assert bodies == [len(data)] * 2
    assert await d.call("exists", "oneshot/lost") is False


@contextlib.asynccontextmanager
async def deaf_peer() -> AsyncIterator[str]:
    """A process on 127.0.0.1 that accepts connections and never reads from them: a hung
    or SIGSTOPped peer, once the socket buffers between are full."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_an_upload_to_a_peer_that_stops_reading_fails_over(
    connect: Connect, cluster: LocalCluster
) -> None:
    """aiohttp's read timeout bounds the wait for an answer, not a write: an upload past the
    socket buffers (4 MB here) to a peer that stopped reading hung for good (an attack
    waited 170 s with timeout=10); one below them failed over."""
    data = payload(16 << 20, seed=11)
    async with deaf_peer() as deaf:
        d = await connect([deaf, cluster[1].url], timeout=1.0)
        started = asyncio.get_running_loop().time()
        stored = await asyncio.wait_for(d.call("put", "stall/big", data), 60)
        assert stored.size == len(data)
        assert asyncio.get_running_loop().time() - started < 30
    assert await d.call("get", "stall/big") == data


async def test_reads_resume_on_the_next_peer(
    connect: Connect, cluster: LocalCluster, fake_peer: Callable[[web.Application], Awaitable[str]]
) -> None:
    data = payload(200_000, seed=9)
    seed = await connect()
    await seed.call("put", "resume/file", data)
    etag_of_the_fake: list[str] = []

    async def half_then_hang_up(request: web.Request) -> web.StreamResponse:
        async with (
            aiohttp.ClientSession(headers=ADMIN_HEADERS) as session,
            session.get(f"{cluster[2].url}/files/resume/file") as upstream,
        ):
            headers = CIMultiDict(upstream.headers)
            for header in ("Date", "Server"):
                headers.popall(header, None)
            if etag_of_the_fake:
                headers["ETag"] = etag_of_the_fake[0]
            response = web.StreamResponse(headers=headers)
            await response.prepare(request)
            await response.write(await upstream.content.readexactly(len(data) // 2))
        response.force_close()  # short of Content-Length, as a peer that lost its chunks
        return response

    app = web.Application()
    app.router.add_get("/files/{name:.*}", half_then_hang_up)
    broken = await fake_peer(app)

    d = await connect([broken, cluster[3].url])
    assert await d.call("get", "resume/file") == data
    d = await connect([broken, cluster[3].url])
    pieces = await d.collect("iter", "resume/file", chunk_size=30_000)
    assert b"".join(pieces) == data

    etag_of_the_fake.append('"an older version"')
    d = await connect([broken, cluster[3].url])
    with pytest.raises(FileChanged, match="replaced while it was being read"):
        await d.call("get", "resume/file")


async def test_a_whole_file_read_is_checked_against_its_etag(
    connect: Connect,
    cluster: LocalCluster,
    fake_peer: Callable[[web.Application], Awaitable[str]],
    tmp_path: Path,
) -> None:
    """Bytes damaged after the peers' digest checks (here by a proxy) are refused: get, iter
    and download raise ChecksumMismatch, and download leaves no file; verify=False takes
    them, and a range (with no hash of its own to compare) is not checked."""
    data = payload(300_000, seed=11)
    await (await connect()).call("put", "checked/file", data)
    d = await connect([await fake_peer(damaging_proxy(cluster[2].url))])
    with pytest.raises(ChecksumMismatch, match="do not hash to its etag"):
        await d.call("get", "checked/file")
    with pytest.raises(ChecksumMismatch):
        await d.collect("iter", "checked/file", chunk_size=100_000)
    if isinstance(d.client, AsyncClient):  # a read after the mismatch is no clean end
        async with d.client.open("checked/file") as reader:
            with pytest.raises(ChecksumMismatch):
                await reader.read()
            with pytest.raises(ChecksumMismatch):
                await reader.read(10)
    target = tmp_path / "down" / "file"
    target.parent.mkdir()
    with pytest.raises(ChecksumMismatch):
        await d.call("download", "checked/file", target)
    assert list(target.parent.iterdir()) == []  # neither the file nor its temporary
    await d.call("download", "checked/file", target, verify=False)
    damaged = target.read_bytes()
    assert len(damaged) == len(data)
    assert damaged != data
    assert len(await d.call("get_range", "checked/file", 1000, 3000)) == 2000
    assert await (await connect([cluster[2].url])).call("get", "checked/file") == data
