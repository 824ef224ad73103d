"""Form uploads (``POST /files/NS/`` with ``multipart/form-data``) against seven peers.

The file part is stored as it arrives, under the form's ``name`` or a new UUID; curl's
``-F file=@x`` and aiohttp's FormData are the real clients. A form that is cut off,
malformed, holds two files or none, a field past its bound or a bad name stores nothing,
and a browser page of another origin cannot send one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.credentials import Credentials
from node.api.forms import MAX_FIELD_BYTES
from tests.harness import LocalCluster, chunk_files_in, eventually, incoming_files_in
from tests.harness.access import ADMIN_HEADERS
from tests.harness.clients import RawClient, public_request, raw_request

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_FILE = 256 << 10
TIMEOUT = 1.0  # the client timeout of the module's peers
MARGIN = 5.0  # seconds a timeout may be late on a loaded machine
BOUNDARY = "form-boundary-7MA4YWxkTrZu0gW"


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    return {"max_file_size": MAX_FILE, "client_timeout": TIMEOUT}


def chunk_files(cluster: LocalCluster) -> set[Path]:
    return {path for peer in cluster.peers for path in chunk_files_in(peer.data_dir)}


async def listed(http: aiohttp.ClientSession, cluster: LocalCluster, prefix: str) -> list[str]:
    url = f"{cluster[3].url}/files"
    async with public_request(http, "GET", url, params={"prefix": prefix}) as response:
        return [entry["name"] for entry in (await response.json())["files"]]


async def assert_nothing_kept(
    http: aiohttp.ClientSession, cluster: LocalCluster, folder: str, chunks_before: set[Path]
) -> None:
    """No file in ``folder``, no new chunk file, no chunk write left (in memory or in
    incoming/)."""
    assert await listed(http, cluster, folder) == []
    await eventually(
        lambda: (
            not any(
                incoming_files_in(peer.data_dir) or peer.chunks.writing for peer in cluster.peers
            )
        ),
        what="partial chunks discarded",
    )
    assert chunk_files(cluster) - chunks_before == set()


def unique() -> str:
    return f"forms/{uuid.uuid4().hex[:8]}/"


def part(
    name: str, data: bytes = b"x", filename: str | None = None, ctype: str | None = None
) -> bytes:
    """One part of ``BOUNDARY``'s form: a field, or a file when it has a ``filename``."""
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, **headers: str
) -> tuple[int, dict[str, Any]]:
    sent = {"Content-Type": FORM_TYPE, **headers}
    async with public_request(http, "POST", url, data=body, headers=sent) as response:
        return response.status, await response.json()


async def read(http: aiohttp.ClientSession, url: str) -> tuple[bytes, str]:
    async with public_request(http, "GET", url) as response:
        assert response.status == 200, await response.text()
        return await response.read(), response.headers["Content-Type"]


async def test_form_data_stores_the_file_under_the_given_name(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    folder, data = unique(), os.urandom(100_000)  # several stripes, streamed
    body = aiohttp.FormData()
    body.add_field("name", "reports/q3.csv")
    body.add_field("file", data, filename="q3.csv", content_type="text/csv; charset=utf-8")
    url = f"{cluster[0].url}/files/{folder}"
    async with public_request(http, "POST", url, data=body) as response:
        assert response.status == 201, await response.text()
        answer = await response.json()
        assert response.headers["Location"] == f"/files/{folder}reports/q3.csv"
        assert response.headers["ETag"] == f'"{answer["etag"]}"'
    assert answer["name"] == f"{folder}reports/q3.csv"
    assert answer["size"] == len(data)
    assert answer["filename"] == "q3.csv"
    assert answer["content_type"] == "text/csv; charset=utf-8"
    assert answer["chunks"] == 7
    assert not answer["inline"]
    got, ctype = await read(http, f"{cluster[4].url}/files/{answer['name']}")
    assert got == data
    assert ctype == "text/csv; charset=utf-8"


async def test_without_a_name_the_file_gets_a_new_uuid(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    namespace = "forms-uuid"
    names = []
    for data in (b"small, stored inline", os.urandom(60_000)):
        body = aiohttp.FormData()
        body.add_field("name", "")  # an empty name input of a browser's form: none given
        body.add_field("file", data, filename="x.bin")
        url = f"{cluster[1].url}/files/{namespace}/"
        async with public_request(http, "POST", url, data=body) as response:
            assert response.status == 201, await response.text()
            answer = await response.json()
        prefix, _, generated = answer["name"].partition("/")
        assert prefix == namespace
        assert uuid.UUID(generated).version == 4
        assert str(uuid.UUID(generated)) == generated
        assert answer["content_type"] == "application/octet-stream"
        assert (await read(http, f"{cluster[2].url}/files/{answer['name']}"))[0] == data
        names.append(answer["name"])
    assert names[0] != names[1]


async def curl(*args: str) -> tuple[int, bytes]:
    """Run curl with the admin key; its HTTP status and answer body."""
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
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    body, _, status = out.rpartition(b"\n")
    return int(status), body


async def test_curl_form_uploads(
    http: aiohttp.ClientSession, cluster: LocalCluster, tmp_path: Path
) -> None:
    folder = unique()
    file = tmp_path / "data.csv"
    file.write_bytes(b"a,b\n" + b"1,2\n" * 30_000)  # 120 kB
    url = f"{cluster[5].url}/files/{folder}"
    status, body = await curl("-F", f"file=@{file}", url)
    assert status == 201, body
    generated = json.loads(body)
    assert generated["filename"] == "data.csv"
    assert uuid.UUID(generated["name"].rsplit("/", 1)[1]).version == 4
    status, body = await curl("-F", "name=named.csv", "-F", f"file=@{file};type=text/csv", url)
    assert status == 201, body
    named = json.loads(body)
    assert named["name"] == f"{folder}named.csv"
    for answer in (generated, named):
        got, ctype = await read(http, f"{cluster[0].url}/files/{answer['name']}")
        assert got == file.read_bytes()
    assert ctype == "text/csv"
    # curl's own way to fail: a file part without a file form field name
    status, body = await curl("-F", f"upload=@{file}", url)
    assert status == 400, body
    assert sorted(await listed(http, cluster, folder)) == sorted([generated["name"], named["name"]])


async def test_a_folder_in_the_path_prefixes_the_name(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    folder = unique() + "sub/dir/"
    status, answer = await post(
        http,
        f"{cluster[2].url}/files/{folder}",
        form(part("name", b"x.txt"), part("file", b"hello", "x.txt", "text/plain")),
    )
    assert status == 201, answer
    assert answer["name"] == f"{folder}x.txt"
    assert (await read(http, f"{cluster[3].url}/files/{folder}x.txt"))[0] == b"hello"


BIG = os.urandom(80_000)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (form(part("name", b"x")), 400, "invalid_request"),
        (form(part("file", BIG, "a"), part("file", b"two", "b")), 400, "invalid_request"),
        (form(part("file", BIG, "a"), part("other", b"two", "b")), 400, "invalid_request"),
        (form(part("other", b"two", "b"), part("file", BIG, "a")), 400, "invalid_request"),
        (form(part("file", BIG, "a"), part("name", b"late")), 400, "invalid_request"),
        (form(part("name", b"a"), part("name", b"b"), part("file", BIG)), 400, "invalid_request"),
        (form(part("note", b"n" * (MAX_FIELD_BYTES + 1)), part("file", BIG)), 413, "too_large"),
        (form(part("file", BIG), part("note", b"n" * (MAX_FIELD_BYTES + 1))), 413, "too_large"),
        (form(part("file", b"", "")), 400, "invalid_request"),
        (form(part("name", b"\xff"), part("file", BIG)), 400, "invalid_request"),
        (form(part("name", b"../up"), part("file", BIG)), 400, "invalid_name"),
        (form(part("name", b"a//b"), part("file", BIG)), 400, "invalid_name"),
        (form(part("name", b"a\x01b"), part("file", BIG)), 400, "invalid_name"),
        (form(part("name", b"x" * 1100), part("file", BIG)), 400, "invalid_name"),
        (form(part("file", BIG, "a", "text/\x01")), 400, "invalid_request"),
        (form(part("file", BIG, "a", "text/" + "x" * 1100)), 400, "invalid_request"),
        (form(part("file", os.urandom(MAX_FILE + 1), "a")), 413, "too_large"),
        (form(*[part(f"f{i}", b"v") for i in range(20)], part("file")), 400, "invalid_request"),
        (form(part("file", BIG, "a"))[:-10], 400, "invalid_request"),  # no closing boundary
        (b"no boundary anywhere" * 1000, 400, "invalid_request"),
    ],
    ids=[
        "no file part",
        "two files",
        "a second part with a filename",
        "a part with a filename before the file",
        "name after the file",
        "name twice",
        "huge field before the file",
        "huge field after the file",
        "no file chosen",
        "name not UTF-8",
        "name with ..",
        "name with an empty segment",
        "name with a control character",
        "name too long",
        "content type with a control character",
        "content type too long",
        "file past the limit",
        "too many parts",
        "cut before the closing boundary",
        "not multipart at all",
    ],
)
async def test_a_bad_form_is_refused_and_nothing_kept(
    http: aiohttp.ClientSession, cluster: LocalCluster, body: bytes, status: int, code: str
) -> None:
    folder, before = unique(), chunk_files(cluster)
    got, answer = await post(http, f"{cluster[6].url}/files/{folder}", body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    await assert_nothing_kept(http, cluster, folder, before)


@pytest.mark.parametrize(
    ("path", "content_type", "status"),
    [
        ("forms/", "application/x-www-form-urlencoded", 415),
        ("forms/", "multipart/mixed; boundary=x", 415),
        ("forms/", "multipart/form-data", 400),  # no boundary
        ("forms/", f"multipart/form-data; boundary={'b' * 71}", 400),
        ("forms", FORM_TYPE, 400),  # not a folder
        ("forms//", FORM_TYPE, 400),
        ("", FORM_TYPE, 400),
        ("Bad_Namespace/", FORM_TYPE, 400),
    ],
)
async def test_what_is_not_a_form_to_a_folder_is_refused(
    http: aiohttp.ClientSession, cluster: LocalCluster, path: str, content_type: str, status: int
) -> None:
    body = form(part("file", b"x", "x"))
    headers = {"Content-Type": content_type}
    url = f"{cluster[0].url}/files/{path}"
    async with public_request(http, "POST", url, data=body, headers=headers) as response:
        assert response.status == status, await response.text()


async def test_a_body_cut_mid_part_stores_nothing(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    folder, before = unique(), chunk_files(cluster)
    body = form(part("name", b"cut.bin"), part("file", os.urandom(200_000), "cut.bin"))
    headers = {"Content-Type": FORM_TYPE, "Content-Length": str(len(body))}
    async with await RawClient.connect(cluster[1]) as client:
        await client.send(raw_request("POST", f"/files/{folder}", headers, keyed=True))
        await client.send(body[:150_000])  # several stripes of the file, then the end
        await eventually(
            lambda: any(peer.chunks.writing for peer in cluster.peers),
            what="the file streaming to its holders",
        )
    await assert_nothing_kept(http, cluster, folder, before)


async def test_a_form_that_stalls_ends_with_408_and_nothing_kept(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    folder, before = unique(), chunk_files(cluster)
    body = form(part("file", os.urandom(100_000), "slow.bin"))
    headers = {"Content-Type": FORM_TYPE, "Content-Length": str(len(body))}
    async with await RawClient.connect(cluster[2]) as client:
        await client.send(raw_request("POST", f"/files/{folder}", headers, keyed=True))
        await client.send(body[:60_000])
        status, _, answer = await client.answer(timeout=TIMEOUT + MARGIN)
        assert status == 408, answer
    await assert_nothing_kept(http, cluster, folder, before)


async def test_a_content_length_past_the_limit_is_413_before_the_body(
    cluster: LocalCluster,
) -> None:
    headers = {"Content-Type": FORM_TYPE, "Content-Length": str(10**15)}
    headers["Expect"] = "100-continue"
    async with await RawClient.connect(cluster[3]) as client:
        await client.send(raw_request("POST", "/files/forms/", headers, keyed=True))
        status, _, _ = await client.answer()  # the head alone is answered
        assert status == 413


async def test_a_chunked_form_past_the_limit_is_cut_off(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> None:
    folder, before = unique(), chunk_files(cluster)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield part("file", b"", "endless.bin")[:-2]  # the part's head, then data for ever
        while sent < 100 * MAX_FILE:
            sent += 16 << 10
            yield os.urandom(16 << 10)

    url = f"{cluster[4].url}/files/{folder}"
    headers = {"Content-Type": FORM_TYPE}
    async with public_request(http, "POST", url, data=endless(), headers=headers) as response:
        assert response.status == 413
    assert sent < 50 * MAX_FILE, "the rest of the body was not waited for"
    await assert_nothing_kept(http, cluster, folder, before)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "{own}"}, 201),
        ({"Origin": "{own}"}, 201),
        ({"Sec-Fetch-Site": "none"}, 201),
    ],
)
async def test_a_browser_page_of_another_origin_cannot_send_a_form(
    http: aiohttp.ClientSession, cluster: LocalCluster, headers: dict[str, str], status: int
) -> None:
    """A page elsewhere could make a browser that holds Basic credentials for the peer
    post a form (no CORS preflight for forms): refused, whatever the key."""
    folder = unique()
    own = cluster[5].url
    sent = {name: value.replace("{own}", own) for name, value in headers.items()}
    got, answer = await post(http, f"{own}/files/{folder}", form(part("file", b"x", "x")), **sent)
    assert got == status, answer
    assert len(await listed(http, cluster, folder)) == (1 if status == 201 else 0)


async def test_forms_need_a_write_grant(http: aiohttp.ClientSession, cluster: LocalCluster) -> None:
    url = f"{cluster[0].url}/keys"
    order = {"name": "forms-reader", "read": ["forms"]}
    async with public_request(http, "POST", url, json=order) as response:
        assert response.status == 201
        key = await response.json()
    body = form(part("file", b"x", "x"))
    reader = {"Authorization": Credentials(key["access_key"], key["secret_key"]).authorization}
    target = f"{cluster[1].url}/files/forms/"
    async with aiohttp.ClientSession() as anonymous:
        for auth, status in [({}, 401), (reader, 403)]:
            headers = {"Content-Type": FORM_TYPE, **auth}
            async with anonymous.post(target, data=body, headers=headers) as response:
                assert response.status == status, await response.text()
    status, _ = await post(http, f"{cluster[1].url}/files/forms-new/", body)
    assert status == 201, "an admin key's first write creates the namespace, as PUT's"
    async with public_request(http, "DELETE", f"{url}/{key['access_key']}") as response:
        assert response.status == 204
