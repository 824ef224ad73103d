"""What a PUT says about its body is kept, through seven real peers (issue 11, item 2).

A body with any Content-Encoding is stored as the bytes sent (with a Content-Length or
chunked) and served back byte-identical with its Content-Encoding, ranges counting stored
bytes; Content-Disposition, Cache-Control, Content-Language, Expires and
``X-Ringstore-Meta-*`` come back on GET, HEAD and in the manifest, within their bounds, and
a value past them leaves nothing stored. curl is the real client where a test is about what
clients send. The helpers here serve ``test_integrity.py`` too.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import LocalCluster, eventually, manifest_replica, sidecar_of
from tests.harness.access import ADMIN_HEADERS
from tests.node.shared.test_cluster_files import payload

pytestmark = pytest.mark.asyncio(loop_scope="module")

RAW = {"auto_decompress": False}  # read what the peer sends, not what aiohttp makes of it


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha256_field(data: bytes) -> str:
    return f"sha-256=:{b64(hashlib.sha256(data).digest())}:"


async def put(
    http: aiohttp.ClientSession, url: str, name: str, data: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """PUT ``data`` with a Content-Length; the status and the JSON answer."""
    body = io.BytesIO(data)  # aiohttp warns that big bytes bodies may block the loop
    async with http.put(f"{url}/files/{name}", data=body, headers=headers) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


async def read_back(
    http: aiohttp.ClientSession, url: str, name: str, headers: dict[str, str] | None = None
) -> tuple[bytes, Any]:
    """GET ``name`` undecoded; its body and headers."""
    async with http.get(f"{url}/files/{name}", headers=headers, **RAW) as response:
        assert response.status in (200, 206), await response.text()
        return await response.read(), response.headers


async def curl(url: str, *args: str) -> tuple[int, bytes]:
    """Run curl against ``url`` with the admin key; its HTTP status and answer body."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    process = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-H",
        f"Authorization: {ADMIN_HEADERS['Authorization']}",
        "-w",
        "\n%{http_code}",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    body, _, status = out.rpartition(b"\n")
    return int(status), body


async def nothing_stored(cluster: LocalCluster, http: aiohttp.ClientSession, name: str) -> None:
    """No version of ``name`` is readable, no peer keeps a manifest or chunk of it, and no
    peer is still receiving one."""
    async with http.get(f"{cluster[1].url}/files/{name}") as response:
        assert response.status == 404, await response.text()
    assert not any(manifest_replica(p.data_dir, name) for p in cluster.peers)

    def settled() -> bool:
        owners = [sidecar_of(path).name for peer in cluster.peers for path in peer.chunk_files()]
        incoming = [f for p in cluster.peers for f in (p.data_dir / "incoming").iterdir()]
        return name not in owners and not incoming

    await eventually(settled, what=f"no chunk of {name!r} and nothing in incoming/")


def assert_refused(status: int, answer: dict[str, Any], code: str) -> None:
    assert status == 400, answer
    assert answer["error"]["code"] == code, answer


async def test_gzip_body_with_content_length_is_stored_as_sent(
    cluster: LocalCluster, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # The input: a gzip body with a Content-Length was a 400 (decoded length).
    text = b"hello hello hello hello hello\n" * 3
    encoded = gzip.compress(text)
    file = tmp_path / "hello.gz"
    file.write_bytes(encoded)
    url = f"{cluster[0].url}/files/meta/gzip-length.txt"
    status, answer = await curl(
        url, "-X", "PUT", "--data-binary", f"@{file}", "-H", "Content-Encoding: gzip"
    )
    assert status == 201, answer
    data, headers = await read_back(http, cluster[3].url, "meta/gzip-length.txt")
    assert data == encoded
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(encoded)
    assert gzip.decompress(data) == text
    # curl (a client that decodes when asked to) gets the text back from the same answer.
    status, decoded = await curl(f"{cluster[5].url}/files/meta/gzip-length.txt", "--compressed")
    assert (status, decoded) == (200, text)


async def test_gzip_body_sent_chunked_is_stored_as_sent(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    # The input: the same body chunked was stored decoded and served without a coding.
    encoded = gzip.compress(payload(100_000, seed=21) * 2)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(encoded), 3333):
            yield encoded[start : start + 3333]

    url = f"{cluster[1].url}/files/meta/gzip-chunked.bin"
    headers = {"Content-Encoding": "gzip"}
    async with http.put(url, data=pieces(), headers=headers) as response:
        assert response.status == 201, await response.text()
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        answer = await response.json()
    assert answer["size"] == len(encoded)
    data, got = await read_back(http, cluster[4].url, "meta/gzip-chunked.bin")
    assert data == encoded
    assert got["Content-Encoding"] == "gzip"
    async with http.head(f"{cluster[6].url}/files/meta/gzip-chunked.bin") as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert int(response.headers["Content-Length"]) == len(encoded)


@pytest.mark.parametrize("coding", ["br", "zstd", "deflate", "x-custom", "gzip, br"])
async def test_any_content_encoding_is_stored_as_bytes(
    cluster: LocalCluster, http: aiohttp.ClientSession, coding: str
) -> None:
    # ``br`` was a plain-text 400 asking to install Brotli: the peer never decodes.
    data = payload(30_001, seed=len(coding))  # not even valid in that coding: still stored
    name = f"meta/coded-{coding.replace(', ', '-')}"
    status, answer = await put(http, cluster[2].url, name, data, {"Content-Encoding": coding})
    assert status == 201, answer
    got, headers = await read_back(http, cluster[0].url, name)
    assert got == data
    assert headers["Content-Encoding"] == coding
    assert answer["etag"] == headers["ETag"].strip('"')


async def test_ranges_count_the_stored_bytes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    encoded = gzip.compress(payload(60_000, seed=5))
    status, _ = await put(
        http, cluster[0].url, "meta/ranged.gz", encoded, {"Content-Encoding": "gzip"}
    )
    assert status == 201
    part, headers = await read_back(
        http, cluster[2].url, "meta/ranged.gz", {"Range": "bytes=10-20009"}
    )
    assert part == encoded[10:20010]
    assert headers["Content-Range"] == f"bytes 10-20009/{len(encoded)}"
    assert headers["Content-Encoding"] == "gzip"


REPRESENTATION = {
    "Content-Encoding": "gzip",
    "Content-Disposition": "attachment; filename=\"report.csv\"; filename*=UTF-8''r%C3%A9port.csv",
    "Cache-Control": "public, max-age=3600",
    "Content-Language": "de-CH, en",
    "Expires": "Thu, 01 Dec 2033 16:00:00 GMT",
}


async def test_representation_headers_come_back_on_get_head_and_the_manifest(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    encoded = gzip.compress(b"a,b\n1,2\n")
    headers = {**REPRESENTATION, "Content-Type": "text/csv"}
    status, answer = await put(http, cluster[3].url, "meta/report.csv", encoded, headers)
    assert status == 201, answer
    _, got = await read_back(http, cluster[5].url, "meta/report.csv")
    async with http.head(f"{cluster[6].url}/files/meta/report.csv") as response:
        head = response.headers
    for header, value in headers.items():
        assert got[header] == value, header
        assert head[header] == value, header
    async with http.get(f"{cluster[0].url}/manifests/meta/report.csv") as response:
        manifest = await response.json()
    assert manifest["content_encoding"] == "gzip"
    assert manifest["content_disposition"] == REPRESENTATION["Content-Disposition"]
    assert manifest["cache_control"] == "public, max-age=3600"
    assert manifest["content_language"] == "de-CH, en"
    assert manifest["expires"] == "Thu, 01 Dec 2033 16:00:00 GMT"
    assert manifest["metadata"] == {}


async def test_a_new_version_keeps_only_its_own_fields(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await put(
        http, cluster[0].url, "meta/replaced", b"v1", {**REPRESENTATION, "X-Ringstore-Meta-A": "1"}
    )
    await put(http, cluster[0].url, "meta/replaced", b"v2", {"Cache-Control": "no-store"})
    data, headers = await read_back(http, cluster[1].url, "meta/replaced")
    assert data == b"v2"
    assert headers["Cache-Control"] == "no-store"
    for header in ("Content-Encoding", "Content-Disposition", "Expires", "X-Ringstore-Meta-A"):
        assert header not in headers


async def test_user_metadata_is_kept_with_lower_case_names(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    headers = [  # a list of pairs: one name may come twice
        ("X-Ringstore-Meta-Author", "Ada Lovelace"),
        ("x-ringstore-meta-PROJECT", "analytical engine"),
        ("X-Ringstore-Meta-Tag", "one"),
        ("X-Ringstore-Meta-Tag", "two"),  # lines of one name: joined, as HTTP allows
        ("X-Ringstore-Meta-Motto", "Zürich ✓"),  # UTF-8 text
        ("X-Ringstore-Meta-Empty", ""),
    ]
    url = f"{cluster[2].url}/files/meta/with-metadata"
    async with http.put(url, data=b"notes", headers=headers) as response:
        assert response.status == 201, await response.text()
    expected = {
        "author": "Ada Lovelace",
        "project": "analytical engine",
        "tag": "one, two",
        "motto": "Zürich ✓",
        "empty": "",
    }
    async with http.get(f"{cluster[4].url}/manifests/meta/with-metadata") as response:
        assert (await response.json())["metadata"] == expected
    async with http.head(f"{cluster[5].url}/files/meta/with-metadata") as response:
        shown = {
            key.lower().removeprefix("x-ringstore-meta-"): value
            for key, value in response.headers.items()
            if key.lower().startswith("x-ringstore-meta-")
        }
    assert shown == expected
    status, body = await curl(f"{cluster[1].url}/files/meta/with-metadata", "-I")
    assert status == 200
    assert b"X-Ringstore-Meta-author: Ada Lovelace\r\n" in body


async def test_user_metadata_is_bounded(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    # 2048 bytes of names and values in all (UTF-8), like S3's user metadata.
    fits = {f"X-Ringstore-Meta-k{i:02d}": "v" * 61 for i in range(32)}  # 32 x (3 + 61) = 2048
    status, answer = await put(http, cluster[0].url, "meta/bounded", b"x", fits)
    assert status == 201, answer
    over = {**fits, "X-Ringstore-Meta-k00": "v" * 62}
    status, answer = await put(http, cluster[0].url, "meta/too-much", b"x", over)
    assert_refused(status, answer, "metadata_too_large")
    status, answer = await put(
        http, cluster[0].url, "meta/too-much", b"x", {"X-Ringstore-Meta-Big": "é" * 1100}
    )
    assert_refused(status, answer, "metadata_too_large")
    await nothing_stored(cluster, http, "meta/too-much")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Ringstore-Meta-", "no name"),
        ("Content-Disposition", "attachment; filename=" + "x" * 1100),
        ("Content-Language", "en-" + "x" * 1100),
        ("Content-Type", "application/" + "x" * 1100),  # past what a manifest holds
    ],
)
async def test_bad_representation_fields_are_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, header: str, value: str
) -> None:
    status, answer = await put(http, cluster[1].url, "meta/bad-field", b"x", {header: value})
    assert_refused(status, answer, "invalid_request")
    await nothing_stored(cluster, http, "meta/bad-field")


@pytest.mark.parametrize(
    "line",
    [
        b"X-Ringstore-Meta-Tabbed: a\tb",  # HTTP allows a tab; a stored value has none
        b"X-Ringstore-Meta-Latin1: caf\xe9",  # not UTF-8: never given back as is
        b"Cache-Control: max-age=\xff",
        b"Content-Type: text/plain;\tcharset=utf-8",  # was 503: replicas refused it
        b"Content-Type: text/caf\xe9",
    ],
)
async def test_control_characters_and_undecodable_bytes_are_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, line: bytes
) -> None:
    # Raw bytes: aiohttp's client will not send these (and the peer's parser takes them).
    reader, writer = await asyncio.open_connection("127.0.0.1", cluster[2].port)
    request = [
        b"PUT /files/meta/raw-field HTTP/1.1",
        b"Host: x",
        b"Authorization: " + ADMIN_HEADERS["Authorization"].encode(),
        b"Connection: close",
        b"Content-Length: 1",
        line,
    ]
    writer.write(b"\r\n".join(request) + b"\r\n\r\nx")
    try:
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert_refused(400, json.loads(body), "invalid_request")
    await nothing_stored(cluster, http, "meta/raw-field")


async def test_json_bodies_take_no_content_encoding(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    # Bodies reach routes undecoded now; a JSON route says so instead of failing to parse.
    body = gzip.compress(b'{"name": "nope"}')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with http.post(f"{cluster[0].url}/keys", data=body, headers=headers) as response:
        assert response.status == 415
        assert (await response.json())["error"]["code"] == "unsupported_media_type"
