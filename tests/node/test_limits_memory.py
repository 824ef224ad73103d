"""Admission to a peer's buffer memory (``--buffer-memory``, ``--admission-wait``).

A GET or PUT that moves chunks waits until its blocks in hand fit in the peer's budget,
first come first served, and is answered 503 (``Retry-After``, the JSON body) when they have
not within ``--admission-wait``; the others go on, and one that waited is served once the
memory comes back. Files kept inline need no buffer and never wait.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp
import pytest

from node.datapath.chunk_streams import write_in_hand
from tests.harness import LocalCluster, eventually
from tests.harness.clients import RawClient, public_request, raw_request
from tests.harness.local import INLINE
from tests.node.shared.test_observability import scrape, value

BLOCK = 4096  # the cluster fixture's
HELD = 100_000  # a PUT of this many bytes (5 stripes) holds 19 blocks of 4 KiB
BUDGET = write_in_hand(HELD, 5, 2, BLOCK)


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    # The wait is long enough for a waiting GET to be let in on a loaded machine (below).
    return {"buffer_memory": BUDGET, "admission_wait": 3.0, "client_timeout": 60.0, **INLINE}


async def admission(http: aiohttp.ClientSession, url: str, name: str) -> float:
    return value(await scrape(http, url), name)


async def test_requests_wait_for_buffer_memory_are_refused_in_time_or_served_once_it_is_back(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    busy = cluster[0]
    files = f"{busy.url}/files/memory"
    stored = os.urandom(200_000)
    async with public_request(http, "PUT", f"{files}/stored", data=stored) as response:
        assert response.status == 201, await response.text()

    held = await RawClient.connect(busy)
    try:  # a PUT whose body stops after 1,000 of its 100,000 bytes: all the budget in hand
        head = raw_request("PUT", "/files/memory/held", {"Content-Length": str(HELD)}, keyed=True)
        await held.send(head + b"x" * 1000)

        async def taken() -> bool:
            return await admission(http, busy.url, "ringstore_block_buffer_admitted_bytes") > 0

        await eventually(taken, what="the held PUT admitted")

        async with public_request(http, "GET", f"{files}/stored") as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            error = json.loads(await response.read())["error"]
            assert error["code"] == "overloaded"
            assert "--buffer-memory" in error["message"]
        async with public_request(http, "PUT", f"{files}/refused", data=os.urandom(HELD)) as r:
            assert r.status == 503
        assert await admission(http, busy.url, "ringstore_admission_refused_total") == 2

        small = os.urandom(1000)  # kept inline: no buffer, no wait
        async with public_request(http, "PUT", f"{files}/small", data=small) as response:
            assert response.status == 201, await response.text()
        async with public_request(http, "GET", f"{files}/small") as response:
            assert await response.read() == small

        # A GET that waits is served once the held PUT lets go of its memory.
        waits = await admission(http, busy.url, "ringstore_admission_waits_total")

        async def get_stored() -> bytes:
            async with public_request(http, "GET", f"{files}/stored") as response:
                assert response.status == 200, await response.text()
                return await response.read()

        waiting = asyncio.ensure_future(get_stored())

        async def queued() -> bool:
            now = await admission(http, busy.url, "ringstore_admission_waits_total")
            return now > waits

        await eventually(queued, what="the GET waiting for memory")
        await held.close()
        assert await waiting == stored
    finally:
        await held.close()
    samples = await scrape(http, busy.url)
    assert value(samples, "ringstore_block_buffer_admitted_bytes") == 0
    assert value(samples, "ringstore_admission_refused_total") == 2
