"""Attacks on access keys and namespaces, on seven in-process peers.

Each test is one way a caller without the grant tried to learn or change what it may not:
file names of other namespaces through a listing's continuation, cluster records through a
listing prefix, a namespace's settings through a peer whose cache has not seen it yet, and
the failure penalty turned against the address of the key's real owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from client.credentials import Credentials
from tests.harness import LocalCluster
from tests.harness.access import ADMIN

pytestmark = pytest.mark.asyncio(loop_scope="module")

CEILING = 2.0  # seconds: the most a peer delays an address for its failures (Penalty)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """This module's session sends no key by itself: each call says which it sends."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    key: dict[str, Any] | tuple[str, str] | None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One request with ``key`` (None: anonymous); the status and the JSON body (or None)."""
    headers = {}
    if key is not None:
        pair = (key["access_key"], key["secret_key"]) if isinstance(key, dict) else key
        headers = {"Authorization": Credentials(*pair).authorization}
    async with http.request(method, url, headers=headers, **kwargs) as response:
        body = await response.read()
        try:
            return response.status, await response.json(content_type=None) if body else None
        except ValueError:
            return response.status, body.decode(errors="replace")


async def new_key(http: aiohttp.ClientSession, url: str, **grants: Any) -> dict[str, Any]:
    status, made = await call(http, "POST", f"{url}/keys", ADMIN, json=grants)
    assert status == 201, made
    return dict(made)


async def pages(
    http: aiohttp.ClientSession, url: str, key: Any, prefix: str = ""
) -> list[dict[str, Any]]:
    """Every page of ``GET /files?prefix=`` one name at a time, following ``next``."""
    seen: list[dict[str, Any]] = []
    after = ""
    for _ in range(200):
        query = {"prefix": prefix, "limit": "1", "start_after": after}
        status, page = await call(http, "GET", f"{url}/files", key, params=query)
        assert status == 200, page
        seen.append(page)
        if not page["next"]:
            return seen
        after = page["next"]
    raise AssertionError("the listing never ended")


async def test_listing_continuation_names_no_file_of_an_unreadable_namespace(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    url = cluster[0].url
    assert (
        await call(http, "PUT", f"{url}/namespaces/aa-open", ADMIN, json={"public_read": True})
    )[0] == 201
    for name in ("aa-open/1", "bb-hidden/payroll-2026.xlsx", "bb-hidden/zz", "cc-mine/1"):
        assert (await call(http, "PUT", f"{url}/files/{name}", ADMIN, data=b"x"))[0] == 201
    reader = await new_key(http, url, read=["cc-mine"])
    for key in (None, reader):  # anonymous (public-read only) and a key of another namespace
        shown = await pages(http, cluster[2].url, key)
        text = str(shown)
        assert "bb-hidden" not in text, text
        names = [f["name"] for page in shown for f in page["files"]]
        assert names == (["aa-open/1"] if key is None else ["aa-open/1", "cc-mine/1"])


async def test_a_read_everything_key_lists_no_cluster_records(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    reader = await new_key(http, cluster[0].url, name="reads-all", read=["*"])
    for prefix in ("/", "/keys/", "/namespaces/"):
        status, page = await call(
            http, "GET", f"{cluster[1].url}/files", reader, params={"prefix": prefix}
        )
        assert status in (400, 403), (prefix, page)
        assert ADMIN[0] not in str(page)
        assert reader["access_key"] not in str(page)


async def test_a_stale_peer_does_not_let_a_create_key_remake_an_existing_namespace(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A namespace just made on one peer, still cached as absent on another (any anonymous
    request puts it there), cannot be made again there: that would replace its record, e.g.
    turn a private namespace public-read."""
    creator = await new_key(http, cluster[0].url, create=True)
    stale = cluster[4].url
    # an anonymous probe makes the stale peer remember that 'vault' does not exist
    assert (await call(http, "GET", f"{stale}/files/vault/x", None))[0] == 401
    assert (await call(http, "PUT", f"{cluster[1].url}/namespaces/vault", ADMIN))[0] == 201
    status, body = await call(
        http, "PUT", f"{stale}/namespaces/vault", creator, json={"public_read": True}
    )
    assert status == 409, body
    assert (await call(http, "PUT", f"{cluster[1].url}/files/vault/plans", ADMIN, data=b"p"))[
        0
    ] == 201
    await asyncio.sleep(2.5)  # past every cache
    assert (await call(http, "GET", f"{cluster[5].url}/files/vault/plans", None))[0] == 401


async def test_a_burst_of_failures_slows_the_real_owner_but_never_fails_it(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Many wrong credentials at once from one address (they all pass the penalty check
    before any of them fails) must leave the key's owner behind that address slowed by at
    most the ceiling, not answered 500 nor locked out. Past ``--max-requests`` (or
    ``--max-connections``) the peer turns requests away with 503 ``overloaded`` and
    Retry-After, the attacker's and the owner's alike: the owner may have to retry during
    the burst, and must get in. Last in the module: it leaves peer 6 slow for us."""
    url = f"{cluster[6].url}/files/aa-open/1"
    wrong = (ADMIN[0], "not-the-secret")

    async def owner() -> tuple[int, Any]:
        """The real owner during the burst: retries while turned away by a limit."""
        for _ in range(30):
            status, body = await call(http, "GET", url, ADMIN)
            if status != 503:
                return status, body
            assert body["error"]["code"] == "overloaded", body
            await asyncio.sleep(1.0)  # as Retry-After says
        raise AssertionError("the owner was turned away for 30 s")

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as burst:
        attempts = [call(burst, "GET", url, wrong) for _ in range(1100)]
        *answers, owned = await asyncio.gather(*attempts, owner())
    assert {status for status, _ in answers} <= {401, 503}
    assert 401 in {status for status, _ in answers}, "the failures were counted"
    refused = {body["error"]["code"] for status, body in answers if status == 503}
    assert refused <= {"overloaded"}, "503 only from a limit, never from the key check"
    assert owned[0] == 200, owned
    started = time.monotonic()
    status, body = await call(http, "GET", url, ADMIN)
    assert status == 200, body
    assert time.monotonic() - started < CEILING + 5.0, "slowed by the ceiling at most"


async def test_a_namespace_too_long_for_a_record_reads_as_absent_and_breaks_no_channel(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A name within the 1,024-byte limit whose first segment is too long to name a
    namespace record: an anonymous read is refused as for any namespace that does not
    exist (401), an admin's reads 404 or an empty listing, and no peer call is sent that
    the replicas refuse (a refused frame closed the channel, so a burst of such requests
    marked healthy members down: an attack found 45-139 members marked down in 12 s)."""
    url = cluster[3].url
    for length in (1010, 1011, 1013, 1015, 1022):
        name = f"{'a' * length}/x"
        assert (await call(http, "GET", f"{url}/files/{name}", None))[0] == 401, length
        assert (await call(http, "GET", f"{url}/manifests/{name}", None))[0] == 401, length
        status, body = await call(http, "GET", f"{url}/files/{name}", ADMIN)
        assert status == 404, (length, body)
        status, body = await call(
            http, "GET", f"{url}/files", ADMIN, params={"prefix": f"{'a' * length}/"}
        )
        assert (status, body["files"]) == (200, []), (length, body)
    everyone = {peer.id for peer in cluster}
    for peer in cluster:
        assert peer.membership.up_ids() == everyone, peer.url
