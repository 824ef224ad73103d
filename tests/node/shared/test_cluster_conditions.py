"""Conditional requests (RFC 9110, section 13) through an in-process cluster of seven peers.

The inputs of issue 11, item 1, each a test: weak, listed and ``*`` If-None-Match on GET;
If-None-Match: * and a wrong If-Match on PUT and DELETE; then the rest of section 13 on
GET, HEAD, PUT and DELETE, and conditional writes racing through different peers. Every
test uses names of its own under ``cond/``.
"""

from __future__ import annotations

import asyncio
import io
import random
from typing import Any

import aiohttp
import pytest

from tests.harness import LocalCluster, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

RACE_ROUNDS = 5


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def put(
    http: aiohttp.ClientSession, url: str, name: str, data: bytes, **headers: str
) -> tuple[int, dict[str, Any]]:
    """PUT ``data`` (a file object: aiohttp warns about big bytes bodies) with ``headers``
    (``If_Match="..."`` becomes ``If-Match``); return the status and the JSON answer."""
    fields = {key.replace("_", "-"): value for key, value in headers.items()}
    async with http.put(f"{url}/files/{name}", data=io.BytesIO(data), headers=fields) as answer:
        return answer.status, await answer.json()


async def stored(http: aiohttp.ClientSession, url: str, name: str, data: bytes) -> dict[str, Any]:
    status, reply = await put(http, url, name, data)
    assert status == 201, reply
    return reply


async def content(http: aiohttp.ClientSession, url: str, name: str) -> tuple[str, bytes]:
    async with http.get(f"{url}/files/{name}") as response:
        assert response.status == 200, await response.text()
        return response.headers["ETag"], await response.read()


def assert_412(status: int, reply: dict[str, Any]) -> None:
    assert status == 412, reply
    assert reply["error"]["code"] == "precondition_failed"
    assert "nothing was changed" in reply["error"]["message"]


def stored_chunk_ids(cluster: LocalCluster) -> set[str]:
    return {path.name for peer in cluster.peers for path in peer.chunk_files()}


async def chunk_ids(http: aiohttp.ClientSession, url: str, name: str) -> set[str]:
    async with http.get(f"{url}/manifests/{name}") as response:
        return {chunk["id"] for chunk in (await response.json())["chunks"]}


# --- GET and HEAD -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "field",
    ['W/"{etag}"', '"x", "{etag}"', '"x",, W/"{etag}" ,', "*", '"{etag}"', "{etag}"],
    ids=["weak", "list", "list-weak", "any", "strong", "bare"],
)
async def test_if_none_match_that_matches_is_304_without_a_body(
    cluster: LocalCluster, http: aiohttp.ClientSession, method: str, field: str
) -> None:
    reply = await stored(http, cluster[0].url, "cond/inm", b"not modified")
    headers = {"If-None-Match": field.format(etag=reply["etag"])}
    async with http.request(method, f"{cluster[1].url}/files/cond/inm", headers=headers) as r:
        assert r.status == 304
        assert await r.read() == b""
        assert r.headers["ETag"] == f'"{reply["etag"]}"'
        assert r.headers["Last-Modified"].endswith(" GMT")
        assert "Content-Type" not in r.headers


async def test_if_none_match_that_does_not_match_sends_the_file(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await stored(http, cluster[0].url, "cond/inm-miss", b"the file")
    for field in ['"other"', 'W/"other", "x"', ""]:
        headers = {"If-None-Match": field}
        async with http.get(f"{cluster[2].url}/files/cond/inm-miss", headers=headers) as r:
            assert r.status == 200, field
            assert await r.read() == b"the file"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_match_on_reads(
    cluster: LocalCluster, http: aiohttp.ClientSession, method: str
) -> None:
    reply = await stored(http, cluster[0].url, "cond/im-read", b"read me")
    url = f"{cluster[3].url}/files/cond/im-read"
    for field in [f'"{reply["etag"]}"', f'"x", "{reply["etag"]}"', "*"]:
        async with http.request(method, url, headers={"If-Match": field}) as r:
            assert r.status == 200, field
    for field in ['"x"', f'W/"{reply["etag"]}"']:  # If-Match compares strongly
        async with http.request(method, url, headers={"If-Match": field}) as r:
            assert r.status == 412, field
            assert r.headers["X-Ringstore-Error"] == "precondition_failed"
            if method == "GET":
                assert (await r.json())["error"]["code"] == "precondition_failed"


async def test_dates_on_reads(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    await stored(http, cluster[0].url, "cond/dates", b"dated")
    url = f"{cluster[4].url}/files/cond/dates"
    async with http.head(url) as r:
        modified = r.headers["Last-Modified"]
        etag = r.headers["ETag"]
    earlier = "Thu, 01 Jan 1970 00:00:00 GMT"
    cases = [
        ({"If-Modified-Since": modified}, 304),
        ({"If-Modified-Since": earlier}, 200),
        ({"If-Modified-Since": "not a date"}, 200),  # invalid: ignored
        ({"If-Modified-Since": modified, "If-None-Match": '"x"'}, 200),  # INM decides
        ({"If-Modified-Since": earlier, "If-None-Match": etag}, 304),
        ({"If-Unmodified-Since": modified}, 200),
        ({"If-Unmodified-Since": earlier}, 412),
        ({"If-Unmodified-Since": earlier, "If-Match": etag}, 200),  # If-Match decides
        ({"If-Unmodified-Since": "not a date"}, 200),
    ]
    for headers, status in cases:
        async with http.get(url, headers=headers) as r:
            assert r.status == status, headers
            if status == 304:
                assert r.headers["Last-Modified"] == modified


async def test_if_range(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    data = payload(30_000, seed=1)
    await stored(http, cluster[0].url, "cond/range", data)
    url = f"{cluster[5].url}/files/cond/range"
    async with http.head(url) as r:
        modified, etag = r.headers["Last-Modified"], r.headers["ETag"]
    cases = [
        (etag, 206),
        (f"W/{etag}", 200),  # a weak tag never matches strongly
        ('"other"', 200),
        (modified, 206),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 200),
        ("neither a tag nor a date", 200),
    ]
    for if_range, status in cases:
        headers = {"Range": "bytes=100-199", "If-Range": if_range}
        async with http.get(url, headers=headers) as r:
            assert r.status == status, if_range
            body = await r.read()
            assert body == (data[100:200] if status == 206 else data)
    async with http.get(url, headers={"If-Range": '"other"'}) as r:  # no Range: ignored
        assert r.status == 200
    # an unsatisfiable Range is ignored, not refused, when If-Range does not match
    async with http.get(url, headers={"Range": "bytes=99999-", "If-Range": '"x"'}) as r:
        assert r.status == 200
    async with http.get(url, headers={"Range": "bytes=99999-", "If-Range": etag}) as r:
        assert r.status == 416


async def test_a_missing_file_is_404_whatever_the_conditions(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    for method in ("GET", "HEAD", "DELETE"):
        headers = {"If-Match": '"x"', "If-None-Match": "*"}
        async with http.request(
            method, f"{cluster[0].url}/files/cond/absent", headers=headers
        ) as r:
            assert r.status == 404, method


async def test_malformed_entity_tags_are_400(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await stored(http, cluster[0].url, "cond/malformed", b"x")
    for method in ("GET", "PUT", "DELETE"):
        for field in ('"unclosed', '*, "x"', '"a" "b"'):
            async with http.request(
                method, f"{cluster[1].url}/files/cond/malformed", headers={"If-Match": field}
            ) as r:
                assert r.status == 400, (method, field)
                assert (await r.json())["error"]["code"] == "invalid_request"
    assert (await content(http, cluster[2].url, "cond/malformed"))[1] == b"x"


async def test_access_is_checked_before_conditions(cluster: LocalCluster) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for method in ("GET", "PUT", "DELETE"):
            async with anonymous.request(
                method, f"{cluster[0].url}/files/cond/private", headers={"If-Match": '"bad'}
            ) as r:
                assert r.status == 401, method


# --- PUT and DELETE -----------------------------------------------------------------------


async def test_if_none_match_any_never_overwrites(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    status, created = await put(http, cluster[0].url, "cond/once", b"first", If_None_Match="*")
    assert status == 201, created
    before = stored_chunk_ids(cluster)
    status, reply = await put(http, cluster[1].url, "cond/once", b"second", If_None_Match="*")
    assert_412(status, reply)
    assert await content(http, cluster[2].url, "cond/once") == (f'"{created["etag"]}"', b"first")
    assert stored_chunk_ids(cluster) <= before, "nothing of the refused PUT stays"


async def test_if_match_on_put(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    first = await stored(http, cluster[0].url, "cond/cas", b"one")
    for wrong in ['"x"', f'W/"{first["etag"]}"']:
        status, reply = await put(http, cluster[1].url, "cond/cas", b"two", If_Match=wrong)
        assert_412(status, reply)
    assert (await content(http, cluster[2].url, "cond/cas"))[1] == b"one"
    status, second = await put(
        http, cluster[3].url, "cond/cas", b"two", If_Match=f'"{first["etag"]}"'
    )
    assert status == 201, second
    status, reply = await put(
        http, cluster[4].url, "cond/cas", b"three", If_Match=f'"{first["etag"]}"'
    )
    assert_412(status, reply)  # the etag moved on
    status, _ = await put(http, cluster[4].url, "cond/cas", b"four", If_Match="*")
    assert status == 201
    status, reply = await put(http, cluster[5].url, "cond/cas-new", b"x", If_Match="*")
    assert_412(status, reply)  # "*" needs a current version
    status, reply = await put(
        http, cluster[5].url, "cond/cas", b"x", If_Unmodified_Since="Thu, 01 Jan 1970 00:00:00 GMT"
    )
    assert_412(status, reply)
    assert (await content(http, cluster[6].url, "cond/cas"))[1] == b"four"


async def test_if_match_on_delete(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    reply = await stored(http, cluster[0].url, "cond/doomed", b"doomed")
    url = f"{cluster[1].url}/files/cond/doomed"
    async with http.delete(url, headers={"If-Match": '"not-it"'}) as r:
        assert_412(r.status, await r.json())
    assert (await content(http, cluster[2].url, "cond/doomed"))[1] == b"doomed"
    async with http.delete(url, headers={"If-Match": f'"{reply["etag"]}"'}) as r:
        assert r.status == 204
    async with http.delete(url, headers={"If-Match": f'"{reply["etag"]}"'}) as r:
        assert r.status == 412  # deleted: no current version matches
    async with http.delete(url) as r:
        assert r.status == 204  # an unconditional retry is still not an error


# --- races --------------------------------------------------------------------------------


async def test_two_creates_racing_through_different_peers_one_wins(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    before = stored_chunk_ids(cluster)
    winners: set[str] = set()
    for round_ in range(RACE_ROUNDS):
        name = f"cond/race-{round_}"
        bodies = [payload(9_000, seed=2 * round_), payload(9_000, seed=2 * round_ + 1)]
        peers = [cluster[round_ % 7], cluster[(round_ + 3) % 7]]
        answers = await asyncio.gather(
            *(
                put(http, peer.url, name, data, If_None_Match="*")
                for peer, data in zip(peers, bodies, strict=True)
            )
        )
        statuses = sorted(status for status, _ in answers)
        assert statuses == [201, 412], answers
        won = next(i for i, (status, _) in enumerate(answers) if status == 201)
        assert (await content(http, cluster[6].url, name))[1] == bodies[won]
        winners |= await chunk_ids(http, cluster[0].url, name)

    await eventually(
        lambda: stored_chunk_ids(cluster) - before == winners,
        what="only the winners' chunks stay",
    )


async def test_two_writers_holding_one_etag_one_wins(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    name = "cond/cas-race"
    current = await stored(http, cluster[0].url, name, b"start")
    for round_ in range(RACE_ROUNDS):
        bodies = [f"round {round_} from a".encode(), f"round {round_} from b".encode()]
        peers = [cluster[(round_ + 1) % 7], cluster[(round_ + 4) % 7]]
        answers = await asyncio.gather(
            *(
                put(http, peer.url, name, data, If_Match=f'"{current["etag"]}"')
                for peer, data in zip(peers, bodies, strict=True)
            )
        )
        assert sorted(status for status, _ in answers) == [201, 412], answers
        won = next(i for i, (status, _) in enumerate(answers) if status == 201)
        current = answers[won][1]
        assert (await content(http, cluster[round_ % 7].url, name))[1] == bodies[won]
