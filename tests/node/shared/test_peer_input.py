"""Malformed input on the peer-to-peer API: refused with a 4xx, nothing changed, peer healthy.

Each input here once hung, crashed or misled a peer through a single ``/internal/`` request
(issue 9). Every test sends it, checks the status and the JSON error body, checks that the
peer kept nothing of it (members, chunks, manifests, clock), and checks that the peer still
answers ``/health`` and serves a file PUT and GET.

Every raw ``/internal/`` request goes through ``internal``, which signs it as a fellow
member would: input is checked even from an authenticated peer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web

from node.api.keys import GOSSIP
from node.api.peer import MAX_LIST_PAGE
from node.cluster.protocol import (
    CONFIRMED,
    CONFIRMED_BATCH,
    MANIFEST_BATCH,
    MSGPACK,
    GossipMessage,
    ManifestAnswer,
    ManifestAnswers,
    ManifestCalls,
    ManifestOffer,
    ManifestRead,
    MemberRecord,
    PullOrder,
    decode,
    encode,
)
from node.disk.data_dir import MEMBERS_FILE
from node.model.layout import Layout
from node.model.manifest import ChunkRef, Manifest, chunk_id, file_id
from node.model.version import MAX_SKEW_MS, Version
from tests.harness import (
    LocalCluster,
    LocalPeer,
    Served,
    eventually,
    fully_redundant,
    get_file,
    put_file,
)
from tests.harness import internal as signed_call

pytestmark = pytest.mark.asyncio(loop_scope="module")

BLOCK = 4096
NOW_MS = int(time.time() * 1000)
BAD_NAMES = ["../../etc/passwd", "red\x1b[31mtext", "two\nlines"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


async def internal(
    http: aiohttp.ClientSession,
    peer: LocalPeer,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Answer:
    """Send one raw request to ``peer``'s peer API (``path`` under ``/internal/``).

    The one place raw peer requests are made in this module: signed as a fellow member
    would sign them, since input must be checked even from an authenticated peer.
    """
    assert path.startswith("/internal/")
    async with signed_call(
        http, peer, method, path, data=body, headers=headers or {}, params=params
    ) as response:
        if response.content_type == "application/json":
            return Answer(response.status, await response.json())
        return Answer(response.status, await response.read())


def assert_refused(answer: Answer, status: int, code: str | None = None) -> None:
    """A 4xx with the usual JSON error body (and its code, if given)."""
    assert answer.status == status, answer
    error = answer.body["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error


def state(peer: LocalPeer) -> tuple[list[str], list[Path], list[str]]:
    """What a refused request must not change: members, chunk files, manifest replicas."""
    manifests, _ = peer.holder.list_manifests("", "", 100_000)
    members = [m.id for m in peer.membership.members()]
    return members, peer.chunk_files(), sorted(m.name for m in manifests)


async def assert_healthy(http: aiohttp.ClientSession, peer: LocalPeer, name: str) -> None:
    """``peer`` answers ``/health`` and stores and serves a file, dated by a sane clock.

    Returns once every chunk of that file is stored (a PUT answers after k+1 of them), so
    the next test's snapshot of the peer's disk does not race the last chunk's arrival.
    """
    async with http.get(f"{peer.url}/health") as response:
        assert response.status == 200, await response.text()
    data = uuid.uuid4().bytes * 1000
    name = f"healthy/{name}-{uuid.uuid4().hex[:8]}"  # never an overwrite: no deferred deletes
    stored = await put_file(http, peer.url, name, data)
    assert await get_file(http, peer.url, name) == data
    await eventually(
        lambda: fully_redundant(http, peer.url, [name]), what=f"every chunk of {name} stored"
    )
    wall_ms = Version.parse(stored["version"]).wall_ms
    assert abs(wall_ms - time.time() * 1000) < 60_000, f"the clock moved: {stored['version']}"


def gossip_from(peer: LocalPeer, sender: MemberRecord, **changes: Any) -> bytes:
    """A gossip message as ``peer`` would send it, from ``sender``, with ``changes``."""
    message = peer._app()[GOSSIP].message()
    return msgspec.msgpack.encode(msgspec.structs.replace(message, sender=sender, **changes))


async def gossip(http: aiohttp.ClientSession, peer: LocalPeer, body: bytes) -> Answer:
    """POST a gossip body to ``peer`` as a member would."""
    headers = {"Content-Type": MSGPACK}
    return await internal(http, peer, "POST", "/internal/gossip", body=body, headers=headers)


def stranger(url: str = "http://127.0.0.1:9", weight: int = 1) -> MemberRecord:
    return MemberRecord(str(uuid.uuid4()), url, weight)


def sealed(manifest: Manifest) -> bytes:
    return manifest.to_bytes()


def far_ahead(manifest: Manifest) -> Manifest:
    """``manifest`` versioned past the clock skew any peer accepts (a call it refuses)."""
    version = Version(int(time.time() * 1000) + 10 * MAX_SKEW_MS, 0, manifest.version.peer)
    return dataclasses.replace(manifest, version=version)


def a_manifest(name: str, layout: Layout | None = None) -> Manifest:
    layout = layout or Layout(100, 5, 2, BLOCK)
    refs = (ChunkRef(0, "holder", bytes(16 * layout.stripes)),)
    return Manifest(name, Version(NOW_MS, 0, "peer"), layout, "etag", "text/plain", refs)


# --- block sizes --------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [0, 1])
async def test_chunk_put_with_a_tiny_block_size_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, block_size: int
) -> None:
    peer = cluster[1]
    before = state(peer)
    chunk = chunk_id(file_id("tiny", Version(NOW_MS, 0, "p")), 0)
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Ringstore-Name": "tiny",
        "X-Ringstore-Version": f"{NOW_MS}.0.p",
        "X-Ringstore-Block-Size": str(block_size),
    }
    answer = await internal(
        http, peer, "PUT", f"/internal/chunks/{chunk}", body=b"x" * 1000, headers=headers
    )
    assert_refused(answer, 400, "invalid_request")
    assert "block size" in answer.body["error"]["message"]
    assert state(peer) == before
    await assert_healthy(http, peer, f"block-size-{block_size}")


async def test_a_chunk_read_sends_its_bytes_and_ranges_of_them_never_its_sidecar(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """The chunk's file ends in its sidecar and trailer: a read of the whole chunk, of a
    range, of a suffix or a HEAD sees the chunk's bytes alone; past them is a 416."""
    peer = cluster[1]
    data = bytes(range(256)) * 40  # 10,240 bytes
    chunk = chunk_id(file_id("reads", Version(NOW_MS, 0, "p")), 3)
    path = f"/internal/chunks/{chunk}"
    owner = {
        "Content-Type": "application/octet-stream",
        "X-Ringstore-Name": "reads",
        "X-Ringstore-Version": f"{NOW_MS}.0.p",
        "X-Ringstore-Block-Size": str(BLOCK),
    }
    assert (await internal(http, peer, "PUT", path, body=data, headers=owner)).status == 201
    try:
        assert peer.chunks.path(chunk).stat().st_size > len(data)  # the sidecar follows
        for wanted, status, expected, content_range in [
            (None, 200, data, None),
            ("bytes=100-199", 206, data[100:200], f"bytes 100-199/{len(data)}"),
            ("bytes=10000-", 206, data[10000:], f"bytes 10000-10239/{len(data)}"),
            ("bytes=-10", 206, data[-10:], f"bytes 10230-10239/{len(data)}"),
            ("bytes=10000-99999", 206, data[10000:], f"bytes 10000-10239/{len(data)}"),
        ]:
            headers = {"Range": wanted} if wanted else {}
            async with signed_call(http, peer, "GET", path, headers=headers) as response:
                assert response.status == status, wanted
                assert await response.read() == expected, wanted
                assert response.headers.get("Content-Range") == content_range, wanted
        for refused in ["bytes=10240-", "bytes=200-100", "bytes=abc"]:  # past it, or invalid
            answer = await internal(http, peer, "GET", path, headers={"Range": refused})
            assert_refused(answer, 416, "invalid_range")
        async with signed_call(http, peer, "HEAD", path) as response:
            assert response.status == 200
            assert response.content_length == len(data)
            assert await response.read() == b""
    finally:
        assert (await internal(http, peer, "DELETE", path)).status == 204
    await assert_healthy(http, peer, "chunk-reads")


# --- clocks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wall_ms", [2**63, 2**64 - 1, NOW_MS + MAX_SKEW_MS + 3_600_000], ids=["2^63", "2^64-1", "1h"]
)
async def test_gossip_with_a_clock_far_ahead_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, wall_ms: int
) -> None:
    # As a peer of before the wall clock field sends it: judged by its hybrid clock.
    peer = cluster[2]
    before = state(peer)
    body = gossip_from(peer, stranger(), clock=Version(wall_ms, 0, "future"), wall_ms=None)
    answer = await gossip(http, peer, body)
    assert_refused(answer, 400, "invalid_request")
    assert state(peer) == before  # the sender was not learned either
    await assert_healthy(http, peer, f"clock-{wall_ms}")  # its versions are dated now


@pytest.mark.parametrize("off_ms", [MAX_SKEW_MS + 1000, 3_600_000, -MAX_SKEW_MS - 1000, -NOW_MS])
async def test_gossip_from_a_wall_clock_past_the_hard_limit_is_heard_but_not_followed(
    cluster: LocalCluster, http: aiohttp.ClientSession, off_ms: int
) -> None:
    # Either way: a member an hour behind would refuse every version the others make. It is
    # answered (so it can measure how far off it is) but its clock is not followed, and
    # nothing else it says is kept but the members it names.
    peer, member = cluster[2], cluster[3]
    before = state(peer)
    now = int(time.time() * 1000)
    clock = Version(max(0, now + off_ms), 0, member.id)
    record = MemberRecord.of(member.membership.me)
    body = gossip_from(peer, record, clock=clock, wall_ms=now + off_ms, used_bytes=123)
    answer = await gossip(http, peer, body)
    assert answer.status == 200, answer
    assert msgspec.msgpack.decode(answer.body, type=GossipMessage).sender.id == peer.id
    assert state(peer) == before
    assert peer.membership.liveness(member.id).figures.used_bytes != 123
    await assert_healthy(http, peer, f"wall-{off_ms}")  # its versions are still dated now


async def test_a_hybrid_clock_past_the_limit_from_a_sane_wall_clock_is_not_followed(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    # A member whose own clock is fine but whose hybrid clock ran ahead (it followed a
    # member near the limit) is still heard, but this peer's clock does not follow it.
    peer, member = cluster[2], cluster[3]
    before = state(peer)
    now = int(time.time() * 1000)
    ahead = Version(now + 3_600_000, 0, member.id)
    body = gossip_from(peer, MemberRecord.of(member.membership.me), clock=ahead, wall_ms=now)
    answer = await gossip(http, peer, body)
    assert answer.status == 200, answer
    assert state(peer) == before
    await assert_healthy(http, peer, "hybrid-ahead")  # its versions are still dated now


# --- weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [3000, 10**6])
async def test_gossip_with_a_weight_out_of_range_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, weight: int
) -> None:
    peer = cluster[3]
    before = state(peer)
    body = gossip_from(peer, stranger(weight=weight))
    answer = await gossip(http, peer, body)
    assert_refused(answer, 400, "invalid_request")
    assert "weight" in answer.body["error"]["message"]
    assert state(peer) == before
    await assert_healthy(http, peer, f"weight-{weight}")


# --- member ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("member_id", ["bad\x0bid", "bad\nid", "bad id", "x" * 65, ""], ids=repr)
async def test_gossip_with_a_member_id_unfit_for_a_header_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, member_id: str
) -> None:
    """A member's id goes out in the header of every call to it (X-Ringstore-Peer): one
    with a control character would make each of those calls fail in the HTTP client, with a
    traceback at ERROR, on every peer that learned it."""
    peer = cluster[4]
    before = state(peer)
    message = peer._app()[GOSSIP].message()
    odd = MemberRecord(member_id, "http://127.0.0.1:9", 1)
    body = gossip_from(peer, MemberRecord.of(peer.membership.me), members=[*message.members, odd])
    answer = await gossip(http, peer, body)
    assert_refused(answer, 400, "invalid_request")
    assert "member id" in answer.body["error"]["message"]
    assert state(peer) == before
    await assert_healthy(http, peer, "member-id")


async def test_a_persisted_member_with_a_huge_weight_is_skipped_at_start(
    cluster: LocalCluster, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    peer = cluster[6]
    members_before = [m.id for m in peer.membership.members()]
    await peer.stop()
    path = peer.data_dir / MEMBERS_FILE
    records = msgspec.msgpack.decode(path.read_bytes(), type=list[MemberRecord])
    heavy = stranger(weight=10**6)
    path.write_bytes(msgspec.msgpack.encode([*records, heavy]))
    with caplog.at_level(logging.WARNING, logger="node.cluster.membership"):
        await peer.start()
    assert any("skipping a member record" in r.getMessage() for r in caplog.records)
    assert [m.id for m in peer.membership.members()] == members_before
    await cluster.wait_converged()
    await assert_healthy(http, peer, "persisted-weight")


# --- manifests ----------------------------------------------------------------------------


async def test_manifest_with_huge_parity_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    peer = cluster[4]
    before = state(peer)
    manifest = a_manifest("huge-parity", Layout(100, 5, 10**7, BLOCK))
    answer = await internal(
        http,
        peer,
        "PUT",
        "/internal/manifests",
        body=sealed(manifest),
        headers={"Content-Type": MSGPACK},
    )
    assert_refused(answer, 400, "invalid_request")
    assert state(peer) == before
    assert (await peer.holder.get_manifest("huge-parity")).manifest is None
    await assert_healthy(http, peer, "huge-parity")


CONDITIONAL = "/internal/manifests/conditional"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(CONDITIONAL, b"\x90", id="conditional-empty"),
        pytest.param(
            CONDITIONAL,
            msgspec.msgpack.encode([b"not a manifest", {"if_none_match": [True, []]}]),
            id="conditional-bad-manifest",
        ),
        pytest.param(
            CONDITIONAL,
            msgspec.msgpack.encode(
                [sealed(a_manifest("cond-date")), {"if_unmodified_since": 1 << 50}]
            ),
            id="conditional-far-date",
        ),
        pytest.param(
            CONDITIONAL,
            msgspec.msgpack.encode([sealed(a_manifest("cond-tags")), {"if_match": [False, "x"]}]),
            id="conditional-bad-tags",
        ),
        pytest.param(
            CONDITIONAL,
            msgspec.msgpack.encode([sealed(a_manifest("cond-none")), None]),
            id="conditional-no-condition",
        ),
        pytest.param(MANIFEST_BATCH, b"\x90", id="batch-empty"),
        pytest.param(MANIFEST_BATCH, msgspec.msgpack.encode({"calls": []}), id="batch-no-calls"),
        pytest.param(
            MANIFEST_BATCH,
            msgspec.msgpack.encode({"calls": [{"type": "get", "name": "x"}] * 257}),
            id="batch-too-many",
        ),
        pytest.param(
            MANIFEST_BATCH,
            msgspec.msgpack.encode({"calls": [{"type": "drop", "name": "x"}]}),
            id="batch-unknown-call",
        ),
        pytest.param(
            MANIFEST_BATCH,
            msgspec.msgpack.encode({"calls": [{"type": "put", "manifest": "text, not bytes"}]}),
            id="batch-bad-offer-field",
        ),
        pytest.param(
            MANIFEST_BATCH,
            msgspec.msgpack.encode({"calls": [{"type": "get", "name": "x", "new": 1}]}),
            id="batch-unknown-field",
        ),
        pytest.param(
            CONFIRMED_BATCH, msgspec.msgpack.encode({"confirmations": []}), id="confirmations-none"
        ),
        pytest.param(
            CONFIRMED_BATCH,
            msgspec.msgpack.encode({"confirmations": [{"name": "x", "version": [1, 0, "p"]}]}),
            id="confirmations-no-revision",
        ),
        pytest.param(
            CONFIRMED_BATCH,
            msgspec.msgpack.encode(
                {"confirmations": [{"name": "x", "version": [1, 0, "p"], "revision": -1}]}
            ),
            id="confirmations-bad-revision",
        ),
        pytest.param(
            CONFIRMED_BATCH,
            msgspec.msgpack.encode(
                {"confirmations": [{"name": "x", "version": [1, 0, "p"], "revision": 0, "new": 1}]}
            ),
            id="confirmations-unknown-field",
        ),
        pytest.param(
            CONFIRMED_BATCH,
            msgspec.msgpack.encode(
                {"confirmations": [{"name": "x", "version": [1, 0, "p"], "revision": 0}] * 257}
            ),
            id="confirmations-too-many",
        ),
    ],
)
async def test_a_malformed_conditional_manifest_or_batch_is_refused_whole(
    cluster: LocalCluster, http: aiohttp.ClientSession, path: str, body: bytes
) -> None:
    peer = cluster[4]
    before = state(peer)
    method = "POST" if path in (MANIFEST_BATCH, CONFIRMED_BATCH) else "PUT"
    headers = {"Content-Type": MSGPACK}
    answer = await internal(http, peer, method, path, body=body, headers=headers)
    assert_refused(answer, 400, "invalid_request")
    assert state(peer) == before
    await assert_healthy(http, peer, "malformed-manifest-body")


async def test_a_bad_call_in_a_manifest_batch_fails_alone(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Each call of a batch is answered as its single route would answer it: a manifest
    that does not parse, or from a clock too far ahead, fails that call; the others run."""
    peer = cluster[4]
    ahead = far_ahead(a_manifest("batch/ahead"))
    calls = ManifestCalls(
        [
            ManifestOffer(b"not a manifest", request_id="bad-one"),
            ManifestOffer(sealed(ahead)),
            ManifestOffer(sealed(a_manifest("batch/kept"))),
            ManifestRead("batch/none-here", request_id="two\nlines"),  # ignored: not sane
        ]
    )
    answer = await internal(
        http, peer, "POST", MANIFEST_BATCH, body=encode(calls), headers={"Content-Type": MSGPACK}
    )
    assert answer.status == 200, answer
    answers = decode(answer.body, ManifestAnswers).answers
    codes = [a.failure.code if a.failure else None for a in answers]
    assert codes == ["invalid_request", "invalid_request", None, None]
    assert answers[2].written is not None
    assert answers[2].written.stored
    assert answers[3] == ManifestAnswer()  # a read: no replica here
    assert (await peer.holder.get_manifest("batch/kept")).manifest is not None
    assert (await peer.holder.get_manifest("batch/ahead")).manifest is None
    await assert_healthy(http, peer, "batch-call")


@pytest.mark.parametrize(
    "query",
    [
        {"name": "n"},
        {"name": "n", "version": "1.0.x", "revision": "-1"},
        {"name": "n", "version": "x.y", "revision": "0"},
        {"version": "1.0.x", "revision": "0"},
    ],
    ids=["no-version", "bad-revision", "bad-version", "no-name"],
)
async def test_a_malformed_confirmation_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, query: dict[str, str]
) -> None:
    peer = cluster[2]
    answer = await internal(http, peer, "POST", CONFIRMED, params=query)
    assert_refused(answer, 400, "invalid_request")
    await assert_healthy(http, peer, "malformed-confirmation")


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES, ids=["dotdot", "escape", "newline"])
async def test_manifest_with_a_bad_name_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, name: str
) -> None:
    peer = cluster[5]
    before = state(peer)
    answer = await internal(
        http,
        peer,
        "PUT",
        "/internal/manifests",
        body=sealed(a_manifest(name)),
        headers={"Content-Type": MSGPACK},
    )
    assert_refused(answer, 400, "invalid_request")
    assert "name" in answer.body["error"]["message"]
    assert state(peer) == before
    await assert_healthy(http, peer, f"manifest-name-{BAD_NAMES.index(name)}")


@pytest.mark.parametrize("name", BAD_NAMES, ids=["dotdot", "escape", "newline"])
async def test_chunk_with_a_bad_owner_name_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, name: str
) -> None:
    peer = cluster[5]
    before = state(peer)
    chunk = chunk_id(file_id(name, Version(NOW_MS, 0, "p")), 0)
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Ringstore-Name": quote(name, safe=""),
        "X-Ringstore-Version": f"{NOW_MS}.0.p",
        "X-Ringstore-Block-Size": str(BLOCK),
    }
    answer = await internal(
        http, peer, "PUT", f"/internal/chunks/{chunk}", body=b"x" * 1000, headers=headers
    )
    assert_refused(answer, 400, "invalid_name")
    assert state(peer) == before
    await assert_healthy(http, peer, f"chunk-name-{BAD_NAMES.index(name)}")


# --- member URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/evil", "http://user@127.0.0.1:9", "http://127.0.0.1:9?q"]
)
async def test_gossip_with_a_member_url_beyond_host_and_port_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, url: str
) -> None:
    peer = cluster[0]
    before = state(peer)
    body = gossip_from(peer, stranger(url))
    answer = await gossip(http, peer, body)
    assert_refused(answer, 400, "invalid_request")
    assert "member URL" in answer.body["error"]["message"]
    assert state(peer) == before
    await assert_healthy(http, peer, f"url-{len(url)}")


# --- pulls --------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def bystander() -> AsyncIterator[tuple[str, list[str]]]:
    """A server that is no member, recording every request that reaches it."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"secret")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    served = Served()
    await served.serve(app)
    try:
        yield f"http://127.0.0.1:{served.port}", seen
    finally:
        await served.stop()


@pytest.mark.parametrize("source_id", ["none", "stranger", "member"])
async def test_pull_from_a_url_that_is_no_members_is_refused(
    cluster: LocalCluster,
    http: aiohttp.ClientSession,
    bystander: tuple[str, list[str]],
    source_id: str,
) -> None:
    peer, url_seen = cluster[1], bystander
    url, seen = url_seen
    before = state(peer)
    ids = {"none": None, "stranger": str(uuid.uuid4()), "member": cluster[2].id}
    chunk = chunk_id(file_id("pulled", Version(NOW_MS, 0, "p")), 0)
    order = PullOrder(url, ids[source_id], 6, BLOCK, bytes(16), "pulled", f"{NOW_MS}.0.p")
    answer = await internal(
        http,
        peer,
        "POST",
        f"/internal/chunks/{chunk}/pull",
        body=msgspec.msgpack.encode(order),
        headers={"Content-Type": MSGPACK},
    )
    assert_refused(answer, 400, "invalid_request")
    assert seen == []  # nothing was fetched
    assert state(peer) == before
    await assert_healthy(http, peer, f"pull-{source_id}")


# --- browsers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({"Content-Type": MSGPACK, "Origin": "https://evil.example"}, 403, "forbidden"),
        ({"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403, "forbidden"),
    ],
    ids=["text-plain", "origin", "both"],
)
async def test_gossip_a_browser_could_send_is_refused(
    cluster: LocalCluster,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    peer = cluster[4]
    before = state(peer)
    body = gossip_from(peer, stranger("http://127.0.0.1:9"))
    answer = await internal(http, peer, "POST", "/internal/gossip", body=body, headers=headers)
    assert_refused(answer, status, code)
    assert state(peer) == before
    await assert_healthy(http, peer, f"browser-{status}-{len(headers)}")


async def test_origin_is_refused_on_every_peer_route(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    peer = cluster[3]
    answer = await internal(
        http,
        peer,
        "GET",
        "/internal/manifests/list",
        headers={"Origin": "https://evil.example"},
    )
    assert_refused(answer, 403, "forbidden")


@pytest.mark.parametrize("limit", [MAX_LIST_PAGE + 1, 1_000_000])
async def test_a_peer_listing_page_past_the_most_it_holds_is_refused(
    cluster: LocalCluster, http: aiohttp.ClientSession, limit: int
) -> None:
    """Each entry of a page is looked up and encoded on the event loop: a fellow member
    asking for a million at once would hold it for seconds."""
    peer = cluster[2]
    path = "/internal/manifests/list"
    answer = await internal(http, peer, "GET", path, params={"limit": str(limit)})
    assert_refused(answer, 400, "invalid_request")
    assert "limit" in str(answer.body)
    allowed = await internal(http, peer, "GET", path, params={"limit": str(MAX_LIST_PAGE)})
    assert allowed.status == 200
