"""Access keys, grants and namespaces on the public API of seven in-process peers.

Every grant combination meets every file route; keys made on one peer work on every other;
a revoked key is refused everywhere within 5 s; anonymous requests read only public-read
namespaces; bad credentials are 401 with a challenge and a JSON body; no secret reaches a
log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict

from client.credentials import Credentials
from node.errors import WriteContended
from tests.harness import LocalCluster, eventually
from tests.harness.access import ADMIN

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """This module's session sends no key by itself: each call says which it sends."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def auth(key: dict[str, Any] | tuple[str, str]) -> dict[str, str]:
    """Headers that send ``key`` (a created key's JSON, or (id, secret)) as Basic."""
    if isinstance(key, dict):
        key = (key["access_key"], key["secret_key"])
    return {"Authorization": Credentials(*key).authorization}


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    key: dict[str, Any] | tuple[str, str] | None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One request with ``key`` (None: anonymous) on ``http``, a session that sends no key of
    its own; returns the status and the JSON body (or None)."""
    headers = {**kwargs.pop("headers", {}), **({} if key is None else auth(key))}
    async with http.request(method, url, headers=headers, **kwargs) as response:
        body = await response.read()
        try:
            return response.status, await response.json(content_type=None) if body else None
        except ValueError:
            return response.status, None


async def new_key(http: aiohttp.ClientSession, url: str, **grants: Any) -> dict[str, Any]:
    status, made = await call(http, "POST", f"{url}/keys", ADMIN, json=grants)
    assert status == 201, made
    assert set(made) >= {"access_key", "secret_key", "grants"}
    return dict(made)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def keys(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    """Namespaces alpha and beta with a file each, and one key per grant combination."""
    url = cluster[0].url
    for namespace in ("alpha", "beta"):
        status, _ = await call(http, "PUT", f"{url}/namespaces/{namespace}", ADMIN)
        assert status == 201
        status, _ = await call(http, "PUT", f"{url}/files/{namespace}/seed", ADMIN, data=b"s")
        assert status == 201
    made = {
        "read_alpha": await new_key(http, url, name="r", read=["alpha"]),
        "write_alpha": await new_key(http, url, name="w", write=["alpha"]),
        "read_write_alpha": await new_key(http, url, read=["alpha"], write=["alpha"]),
        "read_all": await new_key(http, url, read=["*"]),
        "creator": await new_key(http, url, create=True),
        "nothing": await new_key(http, url),
    }
    yield made


# route, namespace it touches -> which keys may (beyond admin)
FILE_ROUTES = [
    ("GET", "/files/alpha/seed", {"read_alpha", "read_write_alpha", "read_all"}),
    ("HEAD", "/files/alpha/seed", {"read_alpha", "read_write_alpha", "read_all"}),
    ("GET", "/manifests/alpha/seed", {"read_alpha", "read_write_alpha", "read_all"}),
    ("GET", "/files?prefix=alpha/", {"read_alpha", "read_write_alpha", "read_all"}),
    ("GET", "/files/beta/seed", {"read_all"}),
    ("PUT", "/files/alpha/new-{key}", {"write_alpha", "read_write_alpha"}),
    ("PUT", "/files/beta/new-{key}", set()),
    ("POST", "/files/alpha/form-{key}/", {"write_alpha", "read_write_alpha"}),
    ("POST", "/files/beta/", set()),
    ("DELETE", "/files/alpha/gone-{key}", {"write_alpha", "read_write_alpha"}),
    ("DELETE", "/files/beta/seed", set()),
    ("GET", "/keys", set()),
    ("POST", "/keys", set()),
    ("DELETE", "/keys/RSAAAAAAAAAAAAAAAAAA", set()),
    ("DELETE", "/namespaces/beta", set()),
    ("PUT", "/namespaces/made-by-{key}", {"creator"}),
]


@pytest.mark.parametrize(("method", "path", "allowed"), FILE_ROUTES)
async def test_every_grant_on_every_route(
    cluster: LocalCluster,
    http: aiohttp.ClientSession,
    keys: dict[str, dict[str, Any]],
    method: str,
    path: str,
    allowed: set[str],
) -> None:
    for index, (label, key) in enumerate(sorted(keys.items())):
        url = cluster[index % 7].url + path.format(key=label.replace("_", "-"))
        if method == "DELETE" and "/gone-" in url:  # something to delete
            status, _ = await call(http, "PUT", url, ADMIN, data=b"doomed")
            assert status == 201
        kwargs: dict[str, Any] = {"data": b"body"} if path.startswith("/files/") else {}
        if method == "POST" and path.startswith("/files/"):  # a form upload
            form = aiohttp.FormData()
            form.add_field("file", b"body", filename="body.bin")
            kwargs = {"data": form}
        elif method == "POST":
            kwargs = {"json": {"read": ["alpha"]}}
        status, body = await call(http, method, url, key, **kwargs)
        if label in allowed:
            assert status < 400, (label, method, url, status, body)
        else:
            assert status == 403, (label, method, url, status, body)
            if method != "HEAD":
                assert body["error"]["code"] == "access_denied"
    # the file a refused DELETE named is still there
    status, _ = await call(http, "GET", f"{cluster[3].url}/files/beta/seed", ADMIN)
    assert status == 200


async def test_listing_shows_only_readable_namespaces(
    cluster: LocalCluster, http: aiohttp.ClientSession, keys: dict[str, dict[str, Any]]
) -> None:
    status, page = await call(http, "GET", f"{cluster[2].url}/files", keys["read_alpha"])
    assert status == 200
    names = [f["name"] for f in page["files"]]
    assert "alpha/seed" in names
    assert not [n for n in names if not n.startswith("alpha/")]
    status, listed = await call(http, "GET", f"{cluster[4].url}/namespaces", keys["read_alpha"])
    assert status == 200
    assert [ns["name"] for ns in listed["namespaces"]] == ["alpha"]
    status, everything = await call(http, "GET", f"{cluster[5].url}/namespaces", ADMIN)
    assert {"alpha", "beta"} <= {ns["name"] for ns in everything["namespaces"]}
    # no key listing ever shows a secret
    status, key_list = await call(http, "GET", f"{cluster[6].url}/keys", ADMIN)
    assert status == 200
    assert key_list["keys"]
    assert not [k for k in key_list["keys"] if "secret_key" in k]
    assert keys["read_alpha"]["secret_key"] not in str(key_list)


async def test_credentials_refused_with_a_challenge_and_json(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    url = f"{cluster[1].url}/files/alpha/seed"
    wrong = (ADMIN[0], ADMIN[1] + "x")
    cases: list[dict[str, str] | None] = [
        None,  # anonymous, namespace not public
        auth(wrong),  # wrong secret
        auth(("RSAAAAAAAAAAAAAAAAAA", "whatever")),  # unknown key
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic " + "QUJD" * 1000},  # oversized
    ]
    for headers in cases:
        async with http.get(url, headers=headers) as response:
            assert response.status == 401, headers
            assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
            body = await response.json()
            assert body["error"]["code"] == "unauthenticated"
    async with http.get(f"{cluster[1].url}/health") as response:
        assert response.status == 200  # health stays open
    # Sent twice, Authorization (no list: RFC 9110 5.3) is refused whole; once, the first
    # was taken, whatever a proxy in front meant by the second.
    good = auth(ADMIN)["Authorization"]
    for pair in ([good, good], [good, auth(wrong)["Authorization"]]):
        twice = CIMultiDict(("Authorization", value) for value in pair)
        async with http.get(url, headers=twice) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "invalid_request"


async def test_public_read_namespace(cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
    url = cluster[3].url
    status, _ = await call(
        http, "PUT", f"{url}/namespaces/open-data", ADMIN, json={"public_read": True}
    )
    assert status == 201
    status, _ = await call(http, "PUT", f"{url}/files/open-data/a.txt", ADMIN, data=b"hello")
    assert status == 201
    other = cluster[5].url
    assert (await call(http, "GET", f"{other}/files/open-data/a.txt", None))[0] == 200
    assert (await call(http, "HEAD", f"{other}/files/open-data/a.txt", None))[0] == 200
    status, page = await call(http, "GET", f"{other}/files?prefix=open-data/", None)
    assert status == 200
    assert [f["name"] for f in page["files"]] == ["open-data/a.txt"]
    status, page = await call(http, "GET", f"{other}/files", None)  # every namespace: public ones
    assert status == 200
    assert {f["name"].split("/")[0] for f in page["files"]} == {"open-data"}
    for method in ("PUT", "DELETE"):
        status, _ = await call(http, method, f"{other}/files/open-data/a.txt", None, data=b"x")
        assert status == 401
    assert (await call(http, "GET", f"{other}/files/open-data/a.txt", ADMIN))[1] is None
    status, _ = await call(http, "GET", f"{other}/files/alpha/seed", None)
    assert status == 401


async def test_namespaces_are_made_before_use_and_removed_only_empty(
    cluster: LocalCluster, http: aiohttp.ClientSession, keys: dict[str, dict[str, Any]]
) -> None:
    url = cluster[6].url
    writer = await new_key(http, url, write=["late"])
    status, body = await call(http, "PUT", f"{url}/files/late/x", writer, data=b"x")
    assert status == 404
    assert body["error"]["code"] == "namespace_not_found"
    status, body = await call(http, "PUT", f"{url}/files/Bad_Name/x", ADMIN, data=b"x")
    assert status == 400
    assert body["error"]["code"] == "invalid_namespace"
    status, body = await call(http, "PUT", f"{url}/files/single", ADMIN, data=b"x")
    assert status == 400
    assert body["error"]["code"] == "invalid_name"
    # the admin's first write creates the namespace; then the writer may write
    assert (await call(http, "PUT", f"{url}/files/late/first", ADMIN, data=b"1"))[0] == 201
    assert (await call(http, "PUT", f"{cluster[0].url}/files/late/x", writer, data=b"x"))[0] == 201
    status, body = await call(http, "PUT", f"{url}/namespaces/late", ADMIN)
    assert status == 409
    assert body["error"]["code"] == "namespace_exists"
    status, body = await call(http, "DELETE", f"{url}/namespaces/late", ADMIN)
    assert status == 409
    assert body["error"]["code"] == "namespace_not_empty"
    for name in ("first", "x"):
        assert (await call(http, "DELETE", f"{url}/files/late/{name}", ADMIN))[0] == 204
    assert (await call(http, "DELETE", f"{cluster[2].url}/namespaces/late", ADMIN))[0] == 204
    # the peer that removed it knows at once (others within the cache's 2 s)
    status, body = await call(http, "PUT", f"{cluster[2].url}/files/late/x", writer, data=b"x")
    assert status == 404
    assert body["error"]["code"] == "namespace_not_found"


async def test_a_namespace_whose_first_name_was_deleted_is_not_empty(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """The emptiness check listed one name: a deleted first name (a tombstone, kept for
    --tombstone-grace) made an empty page, and a namespace holding files was removed."""
    url = cluster[1].url
    assert (await call(http, "PUT", f"{url}/namespaces/holey", ADMIN))[0] == 201
    for name in ("a", "b"):
        assert (await call(http, "PUT", f"{url}/files/holey/{name}", ADMIN, data=b"x"))[0] == 201
    assert (await call(http, "DELETE", f"{url}/files/holey/a", ADMIN))[0] == 204
    status, body = await call(http, "DELETE", f"{cluster[2].url}/namespaces/holey", ADMIN)
    assert (status, body["error"]["code"]) == (409, "namespace_not_empty")
    status, page = await call(http, "GET", f"{url}/files?prefix=holey/&limit=1", ADMIN)
    assert [f["name"] for f in page["files"]] == ["holey/b"]  # not an empty page


async def test_two_creates_of_one_namespace_make_one(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Both answered 201 and the last one's flags won: a bucket made private by one
    client came out public-read from another's create (an attack: 5 of 20 rounds)."""
    for round_ in range(6):
        name = f"raced-{round_}"
        answers = await asyncio.gather(
            call(http, "PUT", f"{cluster[0].url}/namespaces/{name}", ADMIN),
            call(
                http,
                "PUT",
                f"{cluster[4].url}/namespaces/{name}",
                ADMIN,
                json={"public_read": True},
            ),
        )
        assert sorted(status for status, _ in answers) == [201, 409], answers
        winner = next(body for status, body in answers if status == 201)
        _, listed = await call(http, "GET", f"{cluster[2].url}/namespaces", ADMIN)
        (record,) = [ns for ns in listed["namespaces"] if ns["name"] == name]
        assert record["public_read"] == winner["public_read"]


async def test_a_namespace_is_not_made_again_over_files_left_from_its_removal(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A write acknowledged while its namespace's removal was under way (the writing peer's
    cache still had the namespace) outlives it; made again, by a key that may then make it
    public-read, the namespace would show that file. Such a file is written here past the
    namespace check, as that write was."""

    async def body() -> AsyncIterator[bytes]:
        yield b"private"

    await cluster[0].coordinator.put("leftover/payroll.csv", body(), 7, "text/csv")
    creator = await new_key(http, cluster[1].url, create=True)
    url = f"{cluster[1].url}/namespaces/leftover"
    status, answer = await call(http, "PUT", url, creator, json={"public_read": True})
    assert (status, answer["error"]["code"]) == (409, "namespace_not_empty")
    assert "left under 'leftover'/" in answer["error"]["message"]
    anonymous = await call(http, "GET", f"{cluster[2].url}/files/leftover/payroll.csv", None)
    assert anonymous[0] == 401
    # An admin key reads and deletes what was left; then the name is free again.
    assert (await call(http, "DELETE", f"{cluster[3].url}/files/leftover/payroll.csv", ADMIN))[
        0
    ] == 204
    assert (await call(http, "PUT", url, creator, json={"public_read": True}))[0] == 201


async def test_first_writes_racing_into_a_new_namespace_are_all_stored(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin key's first write into a namespace makes it. Of writes racing through
    different peers, one makes it and may store its file before another, whose read found
    no namespace, looks for leftover files: that file is not a leftover (CI saw a 409)."""
    store = cluster[1].access
    looks = store._holds_files

    async def raced(name: str) -> bool:
        status, _ = await call(
            http, "PUT", f"{cluster[0].url}/files/{name}/first", ADMIN, data=b"1"
        )
        assert status == 201
        return await looks(name)

    monkeypatch.setattr(store, "_holds_files", raced)
    status, answer = await call(
        http, "PUT", f"{cluster[1].url}/files/racing/second", ADMIN, data=b"2"
    )
    assert status == 201, answer
    monkeypatch.undo()
    # Racing creates may also split the record's replicas so that none wins (Unavailable):
    # the first write tries again.
    creates: list[str] = []
    create = store.create_namespace

    async def split_once(name: str, **flags: Any) -> Any:
        creates.append(name)
        if len(creates) == 1:
            raise WriteContended("conditional write: 3 answered, 0 accepted, no 2 agreeing")
        return await create(name, **flags)

    monkeypatch.setattr(store, "create_namespace", split_once)
    status, answer = await call(http, "PUT", f"{cluster[1].url}/files/split/x", ADMIN, data=b"3")
    assert (status, creates) == (201, ["split", "split"]), answer
    monkeypatch.undo()
    answers = await asyncio.gather(
        *(
            call(http, "PUT", f"{cluster[i % 7].url}/files/crowd/{i}", ADMIN, data=b"x")
            for i in range(28)
        )
    )
    assert [status for status, _ in answers] == [201] * 28, answers


async def test_revocation_is_seen_by_every_peer_within_5_seconds(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    made = await new_key(http, cluster[0].url, read=["alpha"])
    for peer in cluster.peers:  # every peer has looked it up (and cached it)
        assert (await call(http, "GET", f"{peer.url}/files/alpha/seed", made))[0] == 200
    started = time.monotonic()
    status, _ = await call(http, "DELETE", f"{cluster[3].url}/keys/{made['access_key']}", ADMIN)
    assert status == 204
    refused: dict[str, float] = {}

    async def all_refuse() -> bool:
        for peer in cluster.peers:
            if peer.url not in refused:
                status, _ = await call(http, "GET", f"{peer.url}/files/alpha/seed", made)
                if status == 401:
                    refused[peer.url] = time.monotonic() - started
        return len(refused) == len(cluster.peers)

    await eventually(all_refuse, 10.0, "every peer to refuse the revoked key")
    assert max(refused.values()) < 5.0, refused
    status, _ = await call(http, "DELETE", f"{cluster[1].url}/keys/{made['access_key']}", ADMIN)
    assert status == 404


async def test_no_secret_in_any_log_line(
    cluster: LocalCluster, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    made = await new_key(http, cluster[2].url, write=["alpha"], read=["alpha"])
    await call(http, "PUT", f"{cluster[4].url}/files/alpha/logged", made, data=b"x")
    await call(http, "GET", f"{cluster[5].url}/files/alpha/logged", (made["access_key"], "bad"))
    await call(http, "DELETE", f"{cluster[2].url}/keys/{made['access_key']}", ADMIN)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused credentials" in text  # the log does say what happened
    for secret in (made["secret_key"], ADMIN[1]):
        assert secret not in text


async def test_a_json_body_in_pieces_is_read_whole(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A JSON body that arrives in two pieces is one document: a read of whatever had
    arrived took the first piece for the whole body (400: not JSON)."""
    document = b'{"read": ["alpha"], "write": ["alpha"]}'

    async def in_two_pieces() -> AsyncIterator[bytes]:
        yield document[:10]
        await asyncio.sleep(0.2)  # pacing: the peer reads the first piece alone
        yield document[10:]

    status, made = await call(
        http,
        "POST",
        f"{cluster[1].url}/keys",
        ADMIN,
        data=in_two_pieces(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 201, made
    assert made["grants"]["read"] == ["alpha"]
