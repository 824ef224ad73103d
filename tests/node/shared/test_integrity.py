"""What a PUT asks to check is checked, through seven real peers (issue 11, item 3).

Content-MD5, Repr-Digest and Content-Digest that match the body let it be stored; one that
does not (``400 bad_digest``), or a malformed one (``400 invalid_digest``), leaves nothing
stored: no manifest, no chunk, nothing still arriving. Bodies span several hashing batches
and end on and off a stripe boundary; curl sends Content-MD5 as S3 tools do.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import LocalCluster
from tests.node.shared.test_cluster_files import payload
from tests.node.shared.test_representation import (
    assert_refused,
    b64,
    curl,
    nothing_stored,
    put,
    read_back,
    sha256_field,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

STRIPE = 5 * 4096  # the shared cluster's stripe: 5 blocks of 4 KiB


def digest_headers(data: bytes) -> dict[str, dict[str, str]]:
    """Headers that match ``data``, one case per field and algorithm."""
    return {
        "content-md5": {"Content-MD5": b64(hashlib.md5(data).digest())},
        "repr-sha-256": {"Repr-Digest": sha256_field(data)},
        "repr-sha-512": {"Repr-Digest": f"sha-512=:{b64(hashlib.sha512(data).digest())}:"},
        "content-digest": {"Content-Digest": sha256_field(data)},
        "unknown-ignored": {"Repr-Digest": f"md5=:{b64(bytes(16))}:, {sha256_field(data)}"},
        "all": {
            "Content-MD5": b64(hashlib.md5(data).digest()),
            "Repr-Digest": sha256_field(data) + ";note=x, crc32c=:AAAAAA==:",
            "Content-Digest": sha256_field(data),
        },
    }


CASES = list(digest_headers(b""))
BIG = 3 * (1 << 20) + 12_345  # several hashing batches, and a short last one


@pytest.mark.parametrize("case", CASES)
async def test_a_body_matching_its_digests_is_stored(
    cluster: LocalCluster, http: aiohttp.ClientSession, case: str
) -> None:
    for size in (0, 30_000, BIG):
        data = payload(size, seed=size)
        name = f"meta/digest-ok-{case}-{size}"
        status, answer = await put(
            http, cluster[size % 7].url, name, data, digest_headers(data)[case]
        )
        assert status == 201, answer
        got, _ = await read_back(http, cluster[(size + 1) % 7].url, name)
        assert got == data


@pytest.mark.parametrize("size", [BIG, 20 * STRIPE])  # the last stripe: short, and full
@pytest.mark.parametrize("case", CASES)
async def test_a_body_failing_its_digest_stores_nothing(
    cluster: LocalCluster, http: aiohttp.ClientSession, case: str, size: int
) -> None:
    data = payload(size, seed=9)
    wrong = digest_headers(data[:-1] + bytes([data[-1] ^ 1]))[case]  # the last byte differs
    name = f"meta/digest-bad-{case}-{size}"
    status, answer = await put(http, cluster[3].url, name, data, wrong)
    assert_refused(status, answer, "bad_digest")
    await nothing_stored(cluster, http, name)


async def test_a_chunked_body_failing_its_digest_stores_nothing(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(200_000, seed=11)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 7777):
            yield data[start : start + 7777]

    url = f"{cluster[2].url}/files/meta/digest-chunked"
    headers = {"Repr-Digest": sha256_field(b"something else")}
    async with http.put(url, data=pieces(), headers=headers) as response:
        assert_refused(response.status, await response.json(), "bad_digest")
    await nothing_stored(cluster, http, "meta/digest-chunked")


async def test_curl_with_content_md5(
    cluster: LocalCluster, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = payload(250_000, seed=4)
    file = tmp_path / "upload.bin"
    file.write_bytes(data)
    md5 = b64(hashlib.md5(data).digest())
    url = f"{cluster[4].url}/files/meta/curl-md5"
    status, answer = await curl(url, "-T", str(file), "-H", f"Content-MD5: {md5}")
    assert status == 201, answer
    assert (await read_back(http, cluster[0].url, "meta/curl-md5"))[0] == data
    wrong = b64(hashlib.md5(b"not it").digest())
    url = f"{cluster[4].url}/files/meta/curl-md5-wrong"
    status, answer = await curl(url, "-T", str(file), "-H", f"Content-MD5: {wrong}")
    assert status == 400
    assert b'"bad_digest"' in answer
    await nothing_stored(cluster, http, "meta/curl-md5-wrong")


async def test_a_digest_covers_the_encoded_bytes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    encoded = gzip.compress(payload(40_000, seed=8))
    headers = {"Content-Encoding": "gzip", "Repr-Digest": sha256_field(encoded)}
    status, answer = await put(http, cluster[5].url, "meta/encoded-digest", encoded, headers)
    assert status == 201, answer


MALFORMED = [
    ("Content-MD5", "not base64!"),
    ("Content-MD5", b64(bytes(15))),  # one byte short of an MD5
    ("Content-MD5", b64(bytes(32))),  # a SHA-256 where an MD5 belongs
    ("Repr-Digest", "sha-256=abc"),  # a token, not a byte sequence
    ("Repr-Digest", f"sha-256=:{b64(bytes(16))}:"),  # too short for SHA-256
    ("Repr-Digest", "sha-256=:@@@@:"),  # not base64
    ("Repr-Digest", "sha-256"),  # a bare key is the boolean true
    ("Repr-Digest", f"sha-256=:{b64(bytes(32))}:,"),  # trailing comma
    ("Repr-Digest", f"SHA-256=:{b64(bytes(32))}:"),  # keys are lower-case
    ("Repr-Digest", f"sha-256=:{b64(bytes(32))}: sha-512=:{b64(bytes(64))}:"),  # no comma
    ("Content-Digest", 'sha-512="not bytes"'),
]


@pytest.mark.parametrize(("header", "value"), MALFORMED)
async def test_a_malformed_digest_field_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, header: str, value: str
) -> None:
    status, answer = await put(http, cluster[6].url, "meta/malformed", b"body", {header: value})
    assert_refused(status, answer, "invalid_digest")
    await nothing_stored(cluster, http, "meta/malformed")
