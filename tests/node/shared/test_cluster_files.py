"""Files through an in-process cluster of seven real peers: round trips, ranges, errors.

Every test here uses names of its own and leaves the peers running, so one cluster serves
the whole module (its loop is the module's): starting seven peers per test cost more than
most of these tests themselves.
"""

from __future__ import annotations

import io
import os
import random

import aiohttp
import pytest

from tests.harness import LocalCluster, chunk_bytes, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

BLOCK = 4096  # the cluster fixture's block size: one stripe is 5 blocks
SIZES = [
    0,
    1,
    4,
    5,
    6,
    5 * BLOCK - 1,
    5 * BLOCK,
    5 * BLOCK + 1,
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 1,
]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def put(http: aiohttp.ClientSession, url: str, name: str, data: bytes, **kw: object) -> dict:
    body = io.BytesIO(data)  # aiohttp warns that big bytes bodies may block the loop
    async with http.put(f"{url}/files/{name}", data=body, **kw) as response:  # type: ignore[arg-type]
        assert response.status == 201, await response.text()
        return await response.json()  # type: ignore[no-any-return]


async def get(http: aiohttp.ClientSession, url: str, name: str) -> bytes:
    async with http.get(f"{url}/files/{name}") as response:
        assert response.status == 200, await response.text()
        return await response.read()


@pytest.mark.parametrize("size", SIZES)
async def test_round_trip_through_different_coordinators(
    cluster: LocalCluster, http: aiohttp.ClientSession, size: int
) -> None:
    data = payload(size, seed=size)
    reply = await put(http, cluster[3].url, f"dir/file-{size}.bin", data)
    assert reply["size"] == size
    assert reply["chunks"] == 7
    for peer in (cluster[0], cluster[6]):
        assert await get(http, peer.url, f"dir/file-{size}.bin") == data


async def test_chunked_upload_without_content_length(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(300_001, seed=7)

    async def pieces():  # type: ignore[no-untyped-def]
        for start in range(0, len(data), 7777):
            yield data[start : start + 7777]

    async with http.put(f"{cluster[1].url}/files/files/chunked", data=pieces()) as response:
        assert response.status == 201
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert (await response.json())["size"] == len(data)
    assert await get(http, cluster[5].url, "files/chunked") == data


async def test_chunks_are_equal_and_on_distinct_peers(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(123_457)
    await put(http, cluster[0].url, "files/spread", data)
    async with http.get(f"{cluster[2].url}/manifests/files/spread") as response:
        manifest = await response.json()
    chunks = manifest["chunks"]
    assert [c["index"] for c in chunks] == list(range(7))
    assert [c["kind"] for c in chunks] == ["data"] * 5 + ["parity"] * 2
    assert len({c["holder"] for c in chunks}) == 7
    assert {c["size"] for c in chunks} == {manifest["chunk_size"]}
    # Exactly equal on disk too, and together no more than 4 bytes of padding per stripe.
    sizes = set()
    for chunk in chunks:
        path = cluster.holder(chunk["holder"]).chunks.path(chunk["id"])
        sizes.add(len(chunk_bytes(path)))
    assert sizes == {manifest["chunk_size"]}
    assert 5 * manifest["chunk_size"] - len(data) <= 4 * manifest["stripes"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 1)),
        ("bytes=100-20479", (100, 20480)),
        ("bytes=20480-", (20480, 50_000)),
        ("bytes=-1", (49_999, 50_000)),
        ("bytes=49000-999999", (49_000, 50_000)),
    ],
)
async def test_range_reads(
    cluster: LocalCluster, http: aiohttp.ClientSession, header: str, expected: tuple[int, int]
) -> None:
    data = payload(50_000, seed=3)
    await put(http, cluster[0].url, "files/ranged", data)
    async with http.get(
        f"{cluster[4].url}/files/files/ranged", headers={"Range": header}
    ) as response:
        assert response.status == 206
        start, end = expected
        assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/50000"
        assert await response.read() == data[start:end]


async def test_unsatisfiable_range_is_416(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await put(http, cluster[0].url, "files/small", b"hello")
    async with http.get(
        f"{cluster[1].url}/files/files/small", headers={"Range": "bytes=5-"}
    ) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == "bytes */5"
        assert (await response.json())["error"]["code"] == "invalid_range"


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=4-1", "bytes=+1-2", "bytes=1-2,4-"])
async def test_an_invalid_range_is_ignored(
    cluster: LocalCluster, http: aiohttp.ClientSession, header: str
) -> None:
    # RFC 9110 section 14.2 allows ignoring or refusing it; S3 (and so S3 clients), Apache
    # and Swift ignore it: the whole file, 200, as if no Range was sent.
    await put(http, cluster[0].url, "files/invalid-range", b"hello")
    url = f"{cluster[1].url}/files/files/invalid-range"
    async with http.get(url, headers={"Range": header}) as response:
        assert response.status == 200
        assert "Content-Range" not in response.headers
        assert await response.read() == b"hello"


@pytest.mark.parametrize("header", ["bytes=-5", "bytes=-1"])
async def test_a_suffix_range_of_an_empty_file_is_the_empty_file(
    cluster: LocalCluster, http: aiohttp.ClientSession, header: str
) -> None:
    # As S3 answers: 200 and no bytes, like ``b""[-5:]``; 416 only for ``bytes=0-``.
    await put(http, cluster[0].url, "files/empty-suffix", b"")
    url = f"{cluster[2].url}/files/files/empty-suffix"
    async with http.get(url, headers={"Range": header}) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "0"
        assert "Content-Range" not in response.headers
        assert await response.read() == b""
    async with http.get(url, headers={"Range": "bytes=0-"}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == "bytes */0"


async def test_head_and_metadata_headers(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    reply = await put(
        http, cluster[0].url, "files/doc.txt", b"some text", headers={"Content-Type": "text/plain"}
    )
    async with http.head(f"{cluster[2].url}/files/files/doc.txt") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "9"
        assert response.headers["Content-Type"] == "text/plain"
        assert response.headers["ETag"] == f'"{reply["etag"]}"'
        assert await response.read() == b""
    async with http.get(
        f"{cluster[3].url}/files/files/doc.txt", headers={"If-None-Match": f'"{reply["etag"]}"'}
    ) as response:
        assert response.status == 304


@pytest.mark.parametrize(
    "raw",
    [
        "a//b",
        "a/./b",
        "a/../b",
        "/abs",
        "trail/",
        "nul%00byte",
        "tab%09",
        "line%0Afeed",  # (was 404: the route's "." matched no newline)
        "bad%ffutf8",
        "x" * 1025,
    ],
)
async def test_bad_names_are_400(
    cluster: LocalCluster, http: aiohttp.ClientSession, raw: str
) -> None:
    for method, route in [
        ("PUT", "files"),
        ("GET", "files"),
        ("DELETE", "files"),
        ("GET", "manifests"),
    ]:
        url = aiohttp.client.URL(f"{cluster[0].url}/{route}/{raw}", encoded=True)
        async with http.request(method, url, data=b"x" if method == "PUT" else None) as response:
            assert response.status == 400, (method, route, await response.text())
            assert (await response.json())["error"]["code"] == "invalid_name"


async def test_an_empty_content_type_is_stored_as_the_default(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    url = f"{cluster[0].url}/files/types/empty"
    async with http.put(url, data=b"x", headers={"Content-Type": ""}) as response:
        assert response.status == 201, await response.text()
        assert (await response.json())["content_type"] == "application/octet-stream"
    async with http.get(url) as response:
        assert response.headers["Content-Type"] == "application/octet-stream"


async def test_names_with_unicode_and_spaces(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    name = "photos/été 2026/naïve café.jpg"
    await put(http, cluster[0].url, name, b"jpeg")
    assert await get(http, cluster[1].url, name) == b"jpeg"
    async with http.get(f"{cluster[2].url}/files", params={"prefix": "photos/"}) as response:
        assert [f["name"] for f in (await response.json())["files"]] == [name]


async def test_missing_file_is_404_json(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    for method in ("GET", "DELETE"):
        async with http.request(method, f"{cluster[0].url}/files/files/nope") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "file_not_found"
    async with http.head(f"{cluster[0].url}/files/files/nope") as response:
        assert response.status == 404
        assert response.headers["X-Ringstore-Error"] == "file_not_found"
    async with http.get(f"{cluster[0].url}/manifests/files/nope") as response:
        assert response.status == 404


async def test_unknown_route_is_json_404(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{cluster[0].url}/nowhere") as response:
        assert response.status == 404
        assert "error" in await response.json()


async def test_overwrite_makes_a_new_version_and_frees_the_old(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    first = await put(http, cluster[0].url, "files/same", payload(40_000, 1))
    old_ids = await chunk_ids(http, cluster, "files/same")
    second = await put(http, cluster[4].url, "files/same", payload(30_000, 2))
    assert second["version"] > first["version"]
    assert await get(http, cluster[2].url, "files/same") == payload(30_000, 2)
    await eventually(lambda: not (old_ids & stored_chunk_ids(cluster)), what="old chunks deleted")


async def test_delete_removes_file_and_chunks(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await put(http, cluster[0].url, "files/doomed", payload(60_000))
    ids = await chunk_ids(http, cluster, "files/doomed")
    used = sum(p.chunks.used_bytes for p in cluster.peers)
    async with http.delete(f"{cluster[5].url}/files/files/doomed") as response:
        assert response.status == 204
    async with http.delete(f"{cluster[2].url}/files/files/doomed") as response:
        assert response.status == 204  # a retried DELETE is not told the file never was
    for peer in cluster.peers:
        async with http.get(f"{peer.url}/files/files/doomed") as response:
            assert response.status == 404
    await eventually(lambda: not (ids & stored_chunk_ids(cluster)), what="chunks deleted")
    assert sum(p.chunks.used_bytes for p in cluster.peers) < used


async def test_listing_with_prefix_and_pages(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    names = [f"list/{i:03d}" for i in range(25)] + ["other/x"]
    for i, name in enumerate(names):
        await put(http, cluster[i % 7].url, name, b"x" * i)
    await http.delete(f"{cluster[0].url}/files/list/003")
    seen: list[str] = []
    after = ""
    for _ in range(10):
        params = {"prefix": "list/", "limit": "10", "start_after": after}
        async with http.get(f"{cluster[3].url}/files", params=params) as response:
            page = await response.json()
        seen += [f["name"] for f in page["files"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [n for n in names if n.startswith("list/") and n != "list/003"]


async def chunk_ids(http: aiohttp.ClientSession, cluster: LocalCluster, name: str) -> set[str]:
    async with http.get(f"{cluster[0].url}/manifests/{name}") as response:
        return {c["id"] for c in (await response.json())["chunks"]}


def stored_chunk_ids(cluster: LocalCluster) -> set[str]:
    return {path.name for peer in cluster.peers for path in peer.chunk_files()}


async def test_big_file_streams_through(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    data = os.urandom(8 << 20)
    await put(http, cluster[2].url, "files/big", data)
    assert await get(http, cluster[5].url, "files/big") == data
