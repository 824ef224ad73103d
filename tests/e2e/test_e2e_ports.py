"""Listening ports of real peer processes: the peers of one host share one S3 port with
``--s3-reuse-port`` (SO_REUSEPORT, socket(7): the kernel hands each new connection to one of
them, to none that is not ready yet, and to the survivors once one dies); a port another
process holds stops a peer's start with one line saying so, not a traceback. Clients of a
shared port ride out the kill of one of its peers: their keep-alive connections to it break,
and boto3's retries go over new connections to the others. ``--shared-port`` does the same
for the files API (``ringstore up --files-shared``)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ResponseStreamingError
from yarl import URL

from client import Client
from node.disk.data_dir import CREDENTIALS_FILE
from node.process.tls import client_context
from tests.harness import ProcessCluster, eventually, free_port, free_port_block
from tests.harness.access import ADMIN, ADMIN_HEADERS
from tests.harness.metrics import scrape, value
from tests.harness.up import ringstore_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
T = TypeVar("T")
SHARING = 2  # peers 0 and 1 share the S3 port; the cluster's others serve no S3
WRITES = 24  # each on a new connection: all on one peer by chance has p = 2 * 2**-24
LOADERS = 16  # clients under load when a sharing peer is killed (none on it: p = 2**-16)


def fresh_client(url: str, retries: int = 1) -> BaseClient:
    """A boto3 S3 client of its own (its own connection pool: a new TCP connection), making
    at most ``retries`` attempts per request (standard retry mode), each given 10 s to
    connect and 30 s to read; it presigns with Signature V4."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ADMIN[0],
        aws_secret_access_key=ADMIN[1],
        region_name="us-east-1",
        config=Config(
            retries={"max_attempts": retries, "mode": "standard"},
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            max_pool_connections=1,
            connect_timeout=10,
            read_timeout=30,
        ),
    )


def on_new_connection(url: str, call: Callable[[BaseClient], T]) -> T:
    client = fresh_client(url)
    try:
        return call(client)
    finally:
        client.close()


class Loader:
    """A client (its own keep-alive connection; boto3's standard retries, and a body cut
    off read again: ``read_whole``) that PUTs and GETs its own objects in turn until
    ``stop`` is set (at most 500 pairs), counting the pairs done, and keeps the first
    failure."""

    def __init__(self, url: str, number: int) -> None:
        self.url, self.number = url, number
        self.stop = threading.Event()
        self.pairs = 0
        self.failure: str | None = None

    def run(self) -> None:
        client = fresh_client(self.url, retries=4)
        try:
            for i in range(500):
                if self.stop.is_set():
                    return
                key, body = f"load/{self.number}/{i}", f"{self.number} {i}".encode() * 64
                client.put_object(Bucket="shared", Key=key, Body=body)
                got = read_whole(client, key)
                if got != body:
                    self.failure = f"{key}: other bytes came back"
                    return
                self.pairs += 1
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()


def read_whole(client: BaseClient, key: str) -> bytes:
    """GetObject of ``key``, its body read again once if the connection broke while the body
    came (retries cover the request, not the body: as s3transfer does, the reader retries)."""
    for attempt in (1, 2):
        try:
            body: bytes = client.get_object(Bucket="shared", Key=key)["Body"].read()
            return body
        except ResponseStreamingError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def progressed(loaders: list[Loader], floor: list[int]) -> bool:
    """Whether every loader has done its ``floor`` of pairs; fails the test on a failure."""
    assert [ld.failure for ld in loaders] == [None] * len(loaders)
    return all(ld.pairs >= n for ld, n in zip(loaders, floor, strict=True))


# A shared port of each kind: its flags, an unsigned GET there and its status, its listener.
KINDS = {
    "s3": (lambda port: [f"--s3-port={port}", "--s3-reuse-port"], "/", 403, "s3"),
    "files": (lambda port: [f"--shared-port={port}"], "/health", 200, "shared"),
}


async def answered(session: aiohttp.ClientSession, peer_url: str, listener: str) -> float:
    """Requests the peer at ``peer_url`` answered on ``listener``, from its metrics."""
    samples = await scrape(session, peer_url)
    return value(samples, "ringstore_http_requests_total", listener=listener)


async def every_peer_listens(
    session: aiohttp.ClientSession,
    fresh: aiohttp.ClientSession,
    url: str,
    kind: str,
    peers: list[str],
) -> None:
    """Wait until each of ``peers`` has answered a request on the shared port at ``url``
    (each listens once it is first ready), asking on new connections (``fresh``)."""
    _, path, status, listener = KINDS[kind]

    async def all_answered() -> bool:
        async with fresh.get(f"{url}{path}") as answer:
            assert answer.status == status, await answer.text()
        return all([await answered(session, peer, listener) for peer in peers])

    await eventually(all_answered, 30, "every peer to take connections on the shared port")


async def serves_s3(session: aiohttp.ClientSession, peer_url: str) -> bool:
    """Whether the peer at ``peer_url`` says it serves S3 (``/cluster``: its ``s3_url``)."""
    async with session.get(f"{peer_url}/cluster") as answer:
        view = await answer.json()
    (mine,) = (p for p in view["peers"] if p["id"] == view["self"])
    return mine["s3_url"] is not None


async def test_peers_of_one_host_share_an_s3_port_and_the_survivor_keeps_it(
    tmp_path: Path,
) -> None:
    port = free_port_block(1)
    url = f"http://127.0.0.1:{port}"
    shared = [f"--s3-port={port}", "--s3-reuse-port"]
    cluster = ProcessCluster(tmp_path, 7, per_peer=[shared] * SHARING)
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        try:
            await cluster.start(session)
            for peer_url in cluster.urls[:SHARING]:  # each listens once it is ready
                await eventually(lambda u=peer_url: serves_s3(session, u), 30, "S3 listening")
            await asyncio.to_thread(
                on_new_connection, url, lambda c: c.create_bucket(Bucket="shared")
            )
            for i in range(WRITES):
                body = f"object {i}".encode()
                await asyncio.to_thread(
                    on_new_connection,
                    url,
                    lambda c, i=i, body=body: c.put_object(Bucket="shared", Key=f"k{i}", Body=body),
                )
            served = [await answered(session, cluster.urls[i], "s3") for i in range(SHARING)]
            assert sum(served) == 1 + WRITES, served
            assert all(count > 0 for count in served), f"one peer took every connection: {served}"

            # Clients on keep-alive connections to both, one of them killed under their load.
            loaders = [Loader(url, n) for n in range(LOADERS)]
            threads = [threading.Thread(target=loader.run, daemon=True) for loader in loaders]
            for thread in threads:
                thread.start()
            try:
                await eventually(lambda: progressed(loaders, [3] * LOADERS), 60, "load")
                assert await answered(session, cluster.urls[0], "s3") > served[0]  # it had some
                await cluster.crash(0)  # kill -9: its listening socket leaves the group with it
                floor = [loader.pairs + 3 for loader in loaders]
                await eventually(lambda: progressed(loaders, floor), 60, "load after the kill")
            finally:
                for loader in loaders:
                    loader.stop.set()
                deadline = time.monotonic() + 60  # all of them together
                for thread in threads:
                    await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
            assert not [thread for thread in threads if thread.is_alive()], "a loader hangs"
            assert [ld.failure for ld in loaders] == [None] * LOADERS

            before = await answered(session, cluster.urls[1], "s3")
            for i in range(0, WRITES, 2):
                got = await asyncio.to_thread(
                    on_new_connection,
                    url,
                    lambda c, i=i: c.get_object(Bucket="shared", Key=f"k{i}")["Body"].read(),
                )
                assert got == f"object {i}".encode()
            assert await answered(session, cluster.urls[1], "s3") == before + WRITES // 2
        finally:
            await cluster.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_peer_not_ready_yet_takes_no_connection_on_a_shared_port(
    tmp_path: Path, kind: str
) -> None:
    port = free_port_block(1)
    flags, path, status, listener = KINDS[kind]
    shared = [*flags(port), "--metrics-auth=public"]
    cluster = ProcessCluster(tmp_path, 1, *shared)  # a cluster of one: ready at once
    async with aiohttp.ClientSession() as session:
        try:
            await cluster.start(session)
            # The second never joins (its only seed does not answer), so it is never ready.
            dead = f"--join=http://127.0.0.1:{free_port()}"
            joining = await cluster.add_peer(session, dead, seeded=False)
            async with session.get(f"{joining.url}/ready") as ready:
                assert ready.status == 503, await ready.text()
            urls = [cluster.urls[0], joining.url]
            one_each = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=one_each) as fresh:
                for _ in range(WRITES):  # unsigned: S3's 403, counted like any answer
                    async with fresh.get(f"http://127.0.0.1:{port}{path}") as answer:
                        assert answer.status == status, await answer.text()
            assert [await answered(session, u, listener) for u in urls] == [WRITES, 0]
        finally:
            await cluster.stop()


async def test_a_shared_port_not_listened_on_yet_is_still_held(tmp_path: Path) -> None:
    """A peer waiting to be ready holds its shared port bound: no other socket can take it
    meanwhile (SO_REUSEADDR on a bound, unlistened socket would let one bind and listen)."""
    port = free_port_block(1)
    cluster = ProcessCluster(tmp_path, 1, "--metrics-auth=public")  # serves no S3
    async with aiohttp.ClientSession() as session:
        try:
            await cluster.start(session)
            dead = f"--join=http://127.0.0.1:{free_port()}"  # never joins: never ready
            shared = [f"--s3-port={port}", "--s3-reuse-port"]
            joining = await cluster.add_peer(session, *shared, dead, seeded=False)
            async with session.get(f"{joining.url}/ready") as ready:
                assert ready.status == 503, await ready.text()
            with socket.socket() as intruder:
                intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                with pytest.raises(OSError, match="in use"):
                    intruder.bind(("127.0.0.1", port))
        finally:
            await cluster.stop()


async def run_peer(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run ``ringstore peer`` with ``args`` until it exits (within 60 s): exit code, output."""
    command = [sys.executable, "-m", "node", "peer", "--data-dir", str(tmp_path / "peer")]
    process = await asyncio.create_subprocess_exec(
        *command, "--discovery", "none", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize("listener", ["files", "s3", "shared s3", "shared files"])
async def test_a_port_another_process_holds_stops_the_start_with_one_line(
    tmp_path: Path, listener: str
) -> None:
    with socket.socket() as holder:  # SO_REUSEPORT unset: nothing may share it
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = [f"--port={taken}"] if listener == "files" else [f"--port={free_port()}"]
        if listener in ("s3", "shared s3"):
            ports.append(f"--s3-port={taken}")
        if listener == "shared s3":
            ports.append("--s3-reuse-port")
        if listener == "shared files":
            ports.append(f"--shared-port={taken}")
        code, output = await run_peer(tmp_path, *ports)
    assert code == 1, output
    assert "Traceback" not in output, output
    assert "Unclosed" not in output, output  # what started before the bind was stopped
    last = output.strip().splitlines()[-1]
    assert last.startswith("ringstore peer: cannot serve"), last
    assert "address already in use" in last.lower(), last
    assert ("SO_REUSEPORT" in last) == listener.startswith("shared"), last
    assert ("the files API on --shared-port" in last) == (listener == "shared files"), last


@pytest.mark.parametrize("kind", KINDS)
async def test_a_shared_port_serves_https_with_each_peers_certificate(
    tmp_path: Path, kind: str
) -> None:
    port = free_port_block(1)
    flags, path, status, listener = KINDS[kind]
    tls_dir = tmp_path / "tls"
    cluster = ProcessCluster(tmp_path, 2, *flags(port), tls_dir=tls_dir)
    trusted = aiohttp.TCPConnector(ssl=client_context(tls_dir / "ca.pem"))
    url = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession(connector=trusted, headers=ADMIN_HEADERS) as session:
        try:
            await cluster.start(session)
            fresh = aiohttp.TCPConnector(ssl=client_context(tls_dir / "ca.pem"), force_close=True)
            async with aiohttp.ClientSession(connector=fresh) as anonymous:
                await every_peer_listens(session, anonymous, url, kind, cluster.urls)
                before = sum([await answered(session, u, listener) for u in cluster.urls])
                for _ in range(8):  # new connections, each a TLS handshake the CA must trust
                    async with anonymous.get(f"{url}{path}") as answer:
                        assert answer.status == status, await answer.text()
                        if kind == "s3":  # unsigned: S3's no
                            assert "<Code>AccessDenied</Code>" in await answer.text()
            after = sum([await answered(session, u, listener) for u in cluster.urls])
            assert after == before + 8
        finally:
            await cluster.stop()


async def trickle(
    session: aiohttp.ClientSession, url: URL, seconds: float, sent: asyncio.Event, **kw: Any
) -> int:
    """PUT 16 pieces of 512 bytes to ``url`` over ``seconds`` (a slow client); its status.
    ``sent`` is set once the first piece has gone out: the request is the server's."""

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(16):
            yield bytes([i]) * 512
            if i == 1:
                sent.set()
            await asyncio.sleep(seconds / 16)

    headers = {**kw.pop("headers", {}), "Content-Length": str(16 * 512)}
    async with session.put(url, data=pieces(), headers=headers, **kw) as answer:
        await answer.read()
        return answer.status


def refused(port: int) -> bool:
    """Whether a connection to 127.0.0.1:``port`` is refused (nothing listens there)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_a_stopping_peer_leaves_the_s3_port_at_once_and_finishes_what_is_under_way(
    tmp_path: Path,
) -> None:
    """SIGTERM: the S3 port and the shared files port take no new connection at once (a
    shared port's other peers take them), while an upload on the files port (3 s) and one
    on the S3 port (6 s) go on; each port's requests under way get 5 s (SHUTDOWN_GRACE) and
    both uploads are stored."""
    port, files_port = free_port_block(1), free_port()
    inline = "--inline-max=16384"  # the uploads are kept in their manifests: 3 peers do
    first = [f"--s3-port={port}", f"--shared-port={files_port}"]
    cluster = ProcessCluster(tmp_path, 3, inline, per_peer=[first, [], []])
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        try:
            await cluster.start(session)
            await eventually(lambda: serves_s3(session, cluster.urls[0]), 30, "S3 listening")
            await eventually(lambda: not refused(files_port), 30, "the shared port listening")
            s3_url = f"http://127.0.0.1:{port}"
            signer = fresh_client(s3_url)
            try:
                await asyncio.to_thread(signer.create_bucket, Bucket="stopping")
                presigned = await asyncio.to_thread(
                    signer.generate_presigned_url,
                    "put_object",
                    Params={"Bucket": "stopping", "Key": "s3"},
                    ExpiresIn=300,
                )
            finally:
                signer.close()
            async with aiohttp.ClientSession() as anonymous:  # the URL carries the signature
                sent = [asyncio.Event(), asyncio.Event()]
                uploads = [
                    asyncio.ensure_future(
                        trickle(session, URL(f"{cluster.urls[0]}/files/stopping/f"), 3.0, sent[0])
                    ),
                    asyncio.ensure_future(
                        trickle(anonymous, URL(presigned, encoded=True), 6.0, sent[1])
                    ),
                ]
                await eventually(lambda: all(e.is_set() for e in sent), 10, "uploads under way")
                process = cluster.peers[0].process
                assert process is not None
                process.send_signal(signal.SIGTERM)
                await eventually(
                    lambda: refused(port) and refused(files_port), 2, "no new connection"
                )
                assert not uploads[0].done(), "the files port's upload was meant to be under way"
                assert await asyncio.gather(*uploads) == [201, 200]
                assert await asyncio.wait_for(process.wait(), 30) == 0
            for name in ("f", "s3"):
                async with session.get(f"{cluster.urls[1]}/files/stopping/{name}") as answer:
                    assert answer.status == 200, name
                    assert await answer.read() == b"".join(bytes([i]) * 512 for i in range(16))
        finally:
            await cluster.stop()


async def test_ringstore_up_files_shared_serves_every_peer_on_one_port(tmp_path: Path) -> None:
    """``ringstore up --files-shared``: the files API of every peer on --port + 2000 too,
    printed as the address to use; the Python client writes and reads through it, each
    request on a new connection the kernel hands to one of the peers."""
    base = free_port_block(3)
    data = tmp_path / "data"
    shared = f"http://127.0.0.1:{base + 2000}"
    flags = ["--no-s3", "--files-shared"]
    async with ringstore_up(data, base, 3, *flags, until="ringstore ls") as printed:
        assert f"the files API of every peer: {shared} (a shared port)" in printed, printed
        assert f"-T README.md {shared}/files/docs/README.md" in printed, printed
        credentials = data / CREDENTIALS_FILE

        def round_trips() -> list[bytes]:
            found = []
            for i in range(6):
                with Client([shared], credentials_file=credentials) as store:  # new connection
                    store.put(f"docs/shared-{i}", f"file {i}".encode())
                with Client([shared], credentials_file=credentials) as store:
                    found.append(store.get(f"docs/shared-{i}"))
            return found

        found = await asyncio.to_thread(round_trips)
        assert found == [f"file {i}".encode() for i in range(6)]
