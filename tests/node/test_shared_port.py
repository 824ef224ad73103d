"""The files API on a port the peers of one host share (``--shared-port``, SO_REUSEPORT):
each new connection goes to one of the peers listening on it, every one of them serves
any file, the peer-to-peer API and the web console are not on it, and a peer that stops
leaves the port to the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import LocalCluster, eventually, free_port_block
from tests.harness.access import ADMIN, ADMIN_HEADERS
from tests.harness.metrics import scrape, value

SHARING = 2  # peers 0 and 1 share the port; the cluster's other peers do not serve it
WRITES = 24  # each on a new connection: all on one peer by chance has p = 2 * 2**-24


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[LocalCluster, str]]:
    port = free_port_block(1)
    cluster = LocalCluster(tmp_path)
    await cluster.start(7, each=[{"shared_port": port}] * SHARING + [{}] * (7 - SHARING))
    try:
        yield cluster, f"http://127.0.0.1:{port}"
    finally:
        await cluster.stop()


async def shared_requests(http: aiohttp.ClientSession, peer_url: str) -> float:
    """Requests the peer at ``peer_url`` answered on the shared port, from its metrics."""
    samples = await scrape(http, peer_url)
    return value(samples, "ringstore_http_requests_total", listener="shared")


def new_connections() -> aiohttp.ClientSession:
    """A client that opens a new connection for each request (the kernel's draw each)."""
    connector = aiohttp.TCPConnector(force_close=True)
    return aiohttp.ClientSession(headers=ADMIN_HEADERS, connector=connector)


async def test_peers_of_a_host_share_the_files_api_port(
    cluster: tuple[LocalCluster, str],
) -> None:
    peers, shared = cluster
    async with new_connections() as http, aiohttp.ClientSession(headers=ADMIN_HEADERS) as own:

        async def both_listen() -> bool:  # (each listens once it is first ready)
            async with http.get(f"{shared}/health") as answer:
                assert answer.status == 200
            counts = [await shared_requests(own, peers[i].url) for i in range(SHARING)]
            return all(counts)

        await eventually(both_listen, 30, "both peers to take connections on the shared port")
        before = [await shared_requests(own, peers[i].url) for i in range(SHARING)]
        for i in range(WRITES):
            async with http.put(f"{shared}/files/docs/{i}", data=f"file {i}".encode()) as answer:
                assert answer.status == 201, await answer.text()
        served = [await shared_requests(own, peers[i].url) - before[i] for i in range(SHARING)]
        assert sum(served) == WRITES
        assert all(served), f"one peer took every connection: {served}"
        for i in range(WRITES):  # through a peer that does not share the port, and back
            async with own.get(f"{peers[6].url}/files/docs/{i}") as answer:
                assert await answer.read() == f"file {i}".encode()
        async with own.put(f"{peers[5].url}/files/docs/other", data=b"other") as answer:
            assert answer.status == 201
        async with http.get(f"{shared}/files/docs/other") as answer:
            assert (answer.status, await answer.read()) == (200, b"other")

        async with http.get(f"{shared}/files/docs/other", headers={"Authorization": ""}) as answer:
            assert answer.status == 401  # the same keys are asked for
        for path in ("/internal/manifests?name=docs/other", "/ui", "/ui/login"):
            async with http.get(f"{shared}{path}") as answer:
                assert answer.status == 404, path  # each peer's own port only
                assert answer.content_type == "application/json"

        async with aiohttp.ClientSession() as bare:  # a console login on peer 0's own port
            async with bare.post(
                f"{peers[0].url}/ui/login",
                data={"access_key": ADMIN[0], "secret_key": ADMIN[1]},
                headers={"Origin": peers[0].url},
                allow_redirects=False,
            ) as answer:
                assert answer.status == 303
                (cookie,) = answer.cookies.values()
            login = {"Cookie": f"{cookie.key}={cookie.value}"}
            async with bare.get(f"{peers[0].url}/files/docs/other", headers=login) as answer:
                assert answer.status == 200  # on the port the console is served from
            for _ in range(8):  # whichever peer takes it: no console session there
                shared_get = bare.get(
                    f"{shared}/files/docs/other", headers={**login, "Connection": "close"}
                )
                async with shared_get as answer:
                    assert answer.status == 401

        await peers[0].stop()  # its socket leaves the port's group: the other takes all
        for i in range(0, WRITES, 4):
            async with http.get(f"{shared}/files/docs/{i}") as answer:
                assert (answer.status, await answer.read()) == (200, f"file {i}".encode())
