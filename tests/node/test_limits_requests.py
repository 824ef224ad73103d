"""The limit on public requests at once: past it 503, while peers' calls are still served.

A peer at its ``--max-requests`` must refuse further public requests at once (503 with
``Retry-After`` and the JSON body), answer ``/health``, and go on serving the other peers:
their chunk writes and manifest calls to it, without which their own PUTs would fail.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import aiohttp
import pytest

from tests.harness import LocalCluster, eventually, fully_redundant, internal
from tests.harness.clients import RawClient, public_request, raw_request


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    return {"max_requests": 2, "client_timeout": 60.0}


async def test_past_the_request_limit_public_clients_wait_and_peers_do_not(
    http: aiohttp.ClientSession, cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    busy = cluster[0]
    stalled = [await RawClient.connect(busy) for _ in range(2)]
    try:
        for n, client in enumerate(stalled):  # two PUTs whose bodies never come: 2 slots
            headers = {"Content-Length": "100000"}
            head = raw_request("PUT", f"/files/limits/held-{n}", headers, keyed=True)
            await client.send(head + b"x" * 1000)

        async def refused() -> bool:
            url = f"{busy.url}/files/limits/anything"
            async with public_request(http, "GET", url) as response:
                if response.status != 503:
                    return False
                assert response.headers["Retry-After"] == "1"
                # closed: a retry through a shared address may then reach another peer
                assert response.headers["Connection"].lower() == "close"
                assert json.loads(await response.read())["error"]["code"] == "overloaded"
                return True

        await eventually(refused, what="a third public request refused")
        caplog.clear()
        for _ in range(50):
            assert await refused()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) <= 1, "refusals are logged once per period, not once each"
        async with public_request(http, "GET", f"{busy.url}/health") as response:
            assert response.status == 200, "/health takes no slot"
        path = "/internal/manifests"
        async with internal(http, busy, "GET", path, params={"name": "none"}) as response:
            assert response.status == 404, "a peer's call takes no slot"

        # A PUT through another peer places a chunk on every one of the seven: the busy
        # peer's holder must take its chunk while its public slots are all taken.
        data = os.urandom(100_000)
        url = f"{cluster[1].url}/files/limits/through-another"
        async with public_request(http, "PUT", url, data=data) as response:
            assert response.status == 201, await response.text()
        await eventually(
            lambda: fully_redundant(http, cluster[1].url, ["limits/through-another"]),
            what="every chunk stored, the busy peer's too",
        )
        async with public_request(http, "GET", url) as response:
            assert await response.read() == data
    finally:
        for client in stalled:
            await client.close()

    async def served() -> bool:
        async with public_request(http, "GET", f"{busy.url}/files/limits/through-another") as r:
            return r.status == 200

    await eventually(served, what="the slots given back")
    await cluster.wait_converged()
