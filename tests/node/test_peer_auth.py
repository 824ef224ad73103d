"""The peer API admits members only: every route refuses unsigned, wrongly signed, stale and
replayed requests before doing anything, gossip cannot be forged, and a peer joins only with
the cluster's token or secret."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from client.credentials import Credentials
from node.cluster import gossip as gossip_module
from node.cluster.auth import Authenticator, Request, content_digest
from node.cluster.channel import CHANNEL
from node.cluster.gossip import FOUND_TRIES
from node.cluster.protocol import (
    CONFIRMED,
    MSGPACK,
    PEER_HEADER,
    GossipMessage,
    MemberRecord,
    PullOrder,
    encode,
)
from node.cluster.transport import Address, HttpTransport
from node.errors import PeerUnavailable, StartRefused
from node.model.access import Grants
from node.model.identity import ClusterIdentity, join_token, parse_join_token
from node.process.admin import create_key_as_cluster
from node.process.identity import token_for
from tests.harness import (
    LocalCluster,
    LocalPeer,
    Served,
    eventually,
    get_file,
    internal,
    put_file,
)

BLOCK = 4096
STRANGER_ID = "00000000-0000-4000-8000-00000000beef"


@pytest.fixture
async def five(tmp_path: Path, loop_guard: None) -> AsyncIterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "cluster", block_size=BLOCK)
    try:
        await cluster.start(5)
        yield cluster
    finally:
        await cluster.stop()


def snapshot(peer: LocalPeer) -> dict[str, tuple[int, int]]:
    """Every file under a peer's data directory with its size and mtime (ns)."""
    found = {}
    for path in sorted(peer.data_dir.rglob("*")):
        if path.is_file() and path.name != "peer.log":
            stat = path.stat()
            found[str(path.relative_to(peer.data_dir))] = (stat.st_size, stat.st_mtime_ns)
    return found


def host(peer: LocalPeer) -> str:
    """The peer's address as its Host header gives it."""
    return f"127.0.0.1:{peer.port}"


def forged_gossip(peer: LocalPeer) -> bytes:
    """A gossip message that would add a member at an address of the forger's choosing."""
    stranger = MemberRecord(STRANGER_ID, "http://127.0.0.1:9", 1)
    return encode(GossipMessage(sender=stranger, members=[stranger]))


def routes(peer: LocalPeer, chunk: str, name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """One request per peer-API route, each of which would read or change something."""
    owner = {
        "X-Ringstore-Name": name,
        "X-Ringstore-Version": "1.0.x",
        "X-Ringstore-Block-Size": str(BLOCK),
    }
    order = PullOrder(peer.url, peer.id, 10, BLOCK, bytes(16), name, "1.0.x")
    msgpack = {"Content-Type": MSGPACK}
    return [
        ("PUT", f"/internal/chunks/{chunk[:-2]}-9", {"data": b"x" * 10, "headers": owner}),
        ("GET", f"/internal/chunks/{chunk}", {}),
        ("DELETE", f"/internal/chunks/{chunk}", {}),
        ("POST", f"/internal/chunks/{chunk}/pull", {"data": encode(order), "headers": msgpack}),
        ("GET", "/internal/manifests", {"params": {"name": name}}),
        ("PUT", "/internal/manifests", {"data": b"\x90", "headers": msgpack}),
        ("PUT", "/internal/manifests/conditional", {"data": b"\x90", "headers": msgpack}),
        ("DELETE", "/internal/manifests", {"params": {"name": name, "version": "1.0.x"}}),
        ("POST", CONFIRMED, {"params": {"name": name, "version": "1.0.x", "revision": "0"}}),
        ("GET", "/internal/manifests/list", {"params": {"prefix": ""}}),
        ("POST", "/internal/gossip", {"data": forged_gossip(peer), "headers": msgpack}),
    ]


async def stored(cluster: LocalCluster, http: aiohttp.ClientSession) -> tuple[str, str]:
    """Store a file; return a chunk id that ``cluster[0]`` holds and the file's name."""
    name = "auth/target"
    for i in range(20):
        await put_file(http, cluster[0].url, f"{name}{i}", os.urandom(3 * BLOCK))
    chunks = await cluster[0].chunks.chunk_ids()
    assert chunks
    return chunks[0], f"{name}0"


def stranger() -> Authenticator:
    return Authenticator(ClusterIdentity.create())


def stale(peer: LocalPeer) -> Authenticator:
    """The cluster's own secret, on a clock two minutes behind."""
    return Authenticator(peer.identity, now=lambda: time.time() - 120)


async def unsigned(
    http: aiohttp.ClientSession, peer: LocalPeer, method: str, path: str, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, f"{peer.url}{path}", **kwargs) as response:
        return response.status, await response.json()


SIGNERS: dict[str, Callable[[LocalPeer], Authenticator | None]] = {
    "none": lambda peer: None,
    "wrong-secret": lambda peer: stranger(),
    "stale": stale,
}


@pytest.mark.parametrize("signer", list(SIGNERS))
async def test_every_route_refuses_bad_credentials_before_any_work(
    five: LocalCluster, http: aiohttp.ClientSession, signer: str
) -> None:
    peer = five[0]
    chunk, name = await stored(five, http)
    members_before = peer.membership.members()
    before = snapshot(peer)
    refused_before = peer.auth.refused
    for method, path, kwargs in routes(peer, chunk, name):
        auth = SIGNERS[signer](peer)
        if auth is None:
            status, body = await unsigned(http, peer, method, path, **kwargs)
        else:
            async with internal(http, peer, method, path, auth=auth, **kwargs) as response:
                status, body = response.status, await response.json()
        assert status == 401, (method, path, body)
        assert body["error"]["code"] == "unauthenticated"
    assert snapshot(peer) == before
    assert peer.membership.members() == members_before
    assert peer.auth.refused - refused_before == len(routes(peer, chunk, name))


async def test_a_replayed_request_is_refused_and_changes_nothing(
    five: LocalCluster, http: aiohttp.ClientSession
) -> None:
    peer = five[0]
    chunk, _ = await stored(five, http)
    # Capture a valid signed DELETE, as an eavesdropper on plain HTTP would.
    path = f"/internal/chunks/{chunk}"
    headers = addressed(peer, "DELETE", host(peer), path)
    async with http.delete(f"{peer.url}{path}", headers=headers) as response:
        assert response.status == 204
    await put_file(http, five[1].url, "auth/after", b"new data")
    before = snapshot(peer)
    async with http.delete(f"{peer.url}{path}", headers=headers) as response:
        assert response.status == 401
        assert "replayed" in (await response.json())["error"]["message"]
    assert snapshot(peer) == before


async def test_an_altered_body_or_header_breaks_the_signature(
    five: LocalCluster, http: aiohttp.ClientSession
) -> None:
    peer = five[0]
    body = forged_gossip(peer)
    path = "/internal/gossip"
    digest = "0" * 64  # well-formed, but not the body's
    _, headers = peer.auth.sign(Request("POST", host(peer), path, {}), digest)
    headers["Content-Type"] = MSGPACK
    async with http.post(f"{peer.url}{path}", data=body, headers=headers) as response:
        assert response.status == 401
        assert "digest" in (await response.json())["error"]["message"]
    # A header that was signed, changed on the way.
    signed = {"X-Ringstore-Peer": peer.id}
    request = Request("GET", host(peer), "/internal/chunks/x-1", signed)
    _, headers = peer.auth.sign(request, content_digest(b""))
    headers.update(signed)
    headers["X-Ringstore-Peer"] = five[1].id
    async with http.get(f"{peer.url}/internal/chunks/x-1", headers=headers) as response:
        assert response.status == 401
    assert STRANGER_ID not in {m.id for m in peer.membership.members()}


async def test_an_encoded_path_does_not_slip_past_the_check(
    five: LocalCluster, http: aiohttp.ClientSession
) -> None:
    peer = five[0]
    for path in ("/%69nternal/gossip", "/internal/%67ossip", "//internal/gossip"):
        data = forged_gossip(peer)
        async with http.post(
            f"{peer.url}{path}", data=data, headers={"Content-Type": MSGPACK}
        ) as response:
            assert response.status in (401, 404), (path, response.status)
    assert STRANGER_ID not in {m.id for m in peer.membership.members()}


async def test_a_peer_with_another_secret_is_not_admitted_and_gets_no_data(
    five: LocalCluster,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It knows where the cluster is (--join) but not its secret: its own cluster of one.
    others = LocalCluster(tmp_path / "others", block_size=BLOCK)
    try:
        intruder = await others.add_peer(join=(five[0].url,))
        await eventually(
            lambda: all(p.auth.refused >= 3 for p in five.peers[:1]),
            what="the intruder's gossip to be refused a few times",
        )
        # It says why it is not joined, in its log and in /ready (it once said only that
        # no member had answered yet, though one answered 401 every second).
        assert f"{five[0].url} refused this peer's credentials (HTTP 401)" in caplog.text
        async with http.get(f"{intruder.url}/ready") as response:
            assert response.status == 503
            reasons = (await response.json())["reasons"]
        assert any(r.startswith("credentials refused by 1 address(es)") for r in reasons)
        assert "127.0.0.1" not in str(reasons)  # the probe names no address
        for i in range(10):
            await put_file(http, five[i % 5].url, f"auth/kept/{i}", os.urandom(2 * BLOCK))
        for peer in five.peers:
            assert intruder.id not in {m.id for m in peer.membership.members()}
        assert [m.id for m in intruder.membership.members()] == [intruder.id]
        assert await intruder.chunks.chunk_ids() == []
    finally:
        await others.stop()


async def test_a_peer_with_the_token_is_admitted_and_fills(
    five: LocalCluster, http: aiohttp.ClientSession
) -> None:
    files = {f"auth/fill/{i}": os.urandom(3 * BLOCK + i) for i in range(30)}
    for i, (name, data) in enumerate(files.items()):
        await put_file(http, five[i % 5].url, name, data)
    identity = five[0].identity
    token = join_token(identity, [five[1].url])
    newcomer = await five.add_peer(join_token=token, cluster_secret_file=None, join=())
    await five.wait_converged()
    await eventually(lambda: newcomer.chunks.chunk_count > 0, 30, "the newcomer to take chunks")
    for name, data in files.items():
        assert await get_file(http, newcomer.url, name) == data
    assert (newcomer.data_dir / "cluster-secret.json").stat().st_mode & 0o777 == 0o600
    assert newcomer.data_dir.stat().st_mode & 0o777 == 0o700


async def test_the_secret_is_in_no_log_line(
    tmp_path: Path, loop_guard: None, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    cluster = LocalCluster(tmp_path, block_size=BLOCK)
    try:
        await cluster.start(5)
        identity = cluster[0].identity
        token = join_token(identity, [cluster[0].url])
        await cluster.add_peer(join_token=token, cluster_secret_file=None, join=())
        await cluster.wait_converged()
        await put_file(http, cluster[0].url, "auth/logged", b"x" * 9000)
        async with http.post(f"{cluster[0].url}/internal/gossip", data=b"x") as response:
            assert response.status == 401  # a refusal is logged too
    finally:
        await cluster.stop()
    secret = identity.signing_secret
    forms = [secret.hex(), repr(secret), token, identity.to_json().decode().split('"')[-2]]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused POST '/internal/gossip'" in text
    for form in forms:
        assert form not in text


async def test_a_cluster_from_before_secrets_gets_an_identity_and_keeps_its_data(
    tmp_path: Path, loop_guard: None, http: aiohttp.ClientSession
) -> None:
    cluster = LocalCluster(tmp_path, block_size=BLOCK)
    try:
        await cluster.start(5)
        files = {f"auth/old/{i}": os.urandom(2 * BLOCK + i) for i in range(10)}
        for name, data in files.items():
            await put_file(http, cluster[0].url, name, data)
        await cluster.stop()
        for peer in cluster.peers:  # as the previous release left them: no identity
            (peer.data_dir / "cluster-secret.json").unlink()
            peer.configure(cluster_secret_file=None)
        with pytest.raises(StartRefused, match="ringstore token --create"):
            await cluster[0].start()
        # The documented way: a token made on one member, the others restarted with it.
        token, identity = token_for(cluster[0].data_dir, [], create=True)
        assert sorted(parse_join_token(token)[1]) == sorted(p.url for p in cluster.peers)
        await cluster[0].start()
        for peer in cluster.peers[1:]:
            peer.configure(join_token=token)
            await peer.start()
        await cluster.wait_converged()
        for peer in cluster.peers:
            assert peer.identity == identity
        # Access keys sealed under the old secret are gone with it; the new identity makes
        # an admin key the documented way (`ringstore key create --data-dir`).
        made = await create_key_as_cluster(
            cluster[0].data_dir, cluster.urls, "admin", Grants(admin=True), patience=10.0
        )
        headers = {"Authorization": Credentials(made.access_key, made.secret_key).authorization}
        async with aiohttp.ClientSession(headers=headers) as admin:
            for name, data in files.items():
                assert await get_file(admin, cluster[4].url, name) == data
    finally:
        await cluster.stop()


async def test_the_signature_is_checked_before_the_body_is_read(
    five: LocalCluster, http: aiohttp.ClientSession
) -> None:
    peer = five[0]
    # Headers promising 100 MB, and no body at all: the refusal must not wait for it.
    reader, writer = await asyncio.open_connection("127.0.0.1", peer.port)
    try:
        writer.write(
            b"POST /internal/gossip HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 401"), status_line
    finally:
        writer.close()
    # A compressed body is refused even from a member (a small bomb would expand in memory).
    bomb = gzip.compress(b"\0" * (10 << 20))
    async with internal(
        http,
        peer,
        "POST",
        "/internal/gossip",
        data=bomb,
        headers={"Content-Type": MSGPACK, "Content-Encoding": "gzip"},
    ) as response:
        assert response.status == 401
        assert "Content-Encoding" in (await response.json())["error"]["message"]


async def test_a_request_signed_for_one_peer_is_refused_by_another(
    five: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A captured call replayed to another peer: with its own Host there, the signature
    fails; with the Host it was signed for, the peer it names refuses it (421); a call
    naming no peer is refused, but for gossip (a seed's id is not known yet), which only
    repeats what it says wherever it is replayed (an attack replayed a call signed
    without the peer's id to another peer within the window: 200)."""
    chunk, _ = await stored(five, http)
    holder, other = five[0], five[1]
    chunk_there = (await other.chunks.chunk_ids())[0]
    for target in (chunk, chunk_there):
        path = f"/internal/chunks/{target}"
        signed = addressed(holder, "DELETE", host(holder), path)
        async with http.delete(f"{other.url}{path}", headers=signed) as response:
            assert response.status == 401
        replayed = {**addressed(holder, "DELETE", host(holder), path), "Host": host(holder)}
        async with http.delete(f"{other.url}{path}", headers=replayed) as response:
            assert response.status == 421
        unnamed = peer_call(holder, "DELETE", host(holder), path, {})
        async with http.delete(f"{holder.url}{path}", headers=unnamed) as response:
            assert response.status == 401
            assert "name its receiver" in (await response.json())["error"]["message"]
    assert chunk in await holder.chunks.chunk_ids()
    assert chunk_there in await other.chunks.chunk_ids()
    body = encode(holder.gossip.message())
    unnamed = peer_call(holder, "POST", host(other), "/internal/gossip", {}, body)
    unnamed["Content-Type"] = MSGPACK
    async with http.post(f"{other.url}/internal/gossip", data=body, headers=unnamed) as response:
        assert response.status == 200, await response.text()


def peer_call(
    peer: LocalPeer, method: str, to: str, path: str, signed: dict[str, str], body: bytes = b""
) -> dict[str, str]:
    """The headers of a call signed with ``peer``'s secret for address ``to``: ``signed``
    and the signature over them."""
    _, headers = peer.auth.sign(Request(method, to, path, signed), content_digest(body))
    return {**signed, **headers}


def addressed(peer: LocalPeer, method: str, to: str, path: str) -> dict[str, str]:
    """The headers of a call signed for ``peer`` as its members sign them: naming it."""
    return peer_call(peer, method, to, path, {PEER_HEADER: peer.id})


async def test_a_non_member_cannot_answer_in_a_members_place(
    tmp_path: Path, loop_guard: None
) -> None:
    """A squatter at a member's address (or a man in the middle) answers without the
    secret: its "not found", "deleted" and gossip answers are all refused."""
    answers: list[str] = []

    async def squat(request: web.Request) -> web.StreamResponse:
        answers.append(request.path)
        if request.method == "DELETE":
            return web.Response(status=204)
        if request.path == "/internal/gossip":
            me = MemberRecord(STRANGER_ID, "http://127.0.0.1:9", 1)
            return web.Response(body=encode(GossipMessage(sender=me, members=[me])))
        error = {"error": {"code": "file_not_found", "message": "none here"}}
        return web.json_response(error, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", squat)
    served = Served()
    await served.serve(app)
    try:
        async with aiohttp.ClientSession() as session:
            transport = HttpTransport(session, 5.0, Authenticator(ClusterIdentity.create()))
            to = Address(f"http://127.0.0.1:{served.port}", "some-member")
            with pytest.raises(PeerUnavailable, match="signature"):
                await transport.get_manifest(to, "a/name")
            with pytest.raises(PeerUnavailable, match="signature"):
                await transport.delete_chunk(to, "0123456789abcdef0123456789abcdef-1")
            intro = GossipMessage(
                sender=MemberRecord(STRANGER_ID, "http://127.0.0.1:1", 1), members=[]
            )
            with pytest.raises(PeerUnavailable, match="signature"):
                await transport.exchange(to, intro)
    finally:
        await served.stop()
    # The read first asked for a channel (refused: 404, so it went as a request).
    assert answers[0] == CHANNEL
    assert len(answers) == 4


@contextlib.asynccontextmanager
async def no_member() -> AsyncIterator[tuple[str, list[GossipMessage]]]:
    """A server at an address that is no member's: it refuses gossip (401) and keeps what
    it heard; yields its URL and that list, and stops after the block."""
    heard: list[GossipMessage] = []

    async def refuse(request: web.Request) -> web.StreamResponse:
        heard.append(msgspec.msgpack.decode(await request.read(), type=GossipMessage))
        raise web.HTTPUnauthorized

    app = web.Application()
    app.router.add_post("/internal/gossip", refuse)
    served = Served()
    await served.serve(app)
    try:
        yield f"http://127.0.0.1:{served.port}", heard
    finally:
        await served.stop()


async def test_a_join_address_that_is_no_member_is_dropped_once_the_peer_has_joined(
    five: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A `--join` seed of another cluster (or a typo) was introduced to every gossip round
    for good, and its peer logged a refusal a second (an attack)."""
    async with no_member() as (wrong, heard):
        joiner = await five.add_peer(join=(five[0].url, wrong))
        await eventually(lambda: "seeds=1" in repr(joiner.gossip), what="the wrong one dropped")
        tried = len(heard)
        assert tried >= FOUND_TRIES
        for _ in range(3):
            await joiner.gossip.round()
        assert len(heard) == tried
        assert "did not answer as a member of this cluster" in caplog.text
        await eventually(lambda: joiner.id in five[0].membership.up_ids(), what="it joined")


async def test_a_peer_that_never_joins_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A joiner whose join address does not answer (or whose TLS trust is not the
    cluster's) ran on as a cluster of one and logged nothing past DEBUG: now a WARNING a
    minute per address, once it has failed for UNJOINED_WARN_AFTER seconds."""
    monkeypatch.setattr(gossip_module, "UNJOINED_WARN_AFTER", 0.0)
    with socket.socket() as closed:  # a port of this host where nothing listens
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"
    lone = LocalCluster(tmp_path / "lone", block_size=BLOCK)
    try:
        await lone.add_peer(join=(nobody,))
        await eventually(
            lambda: f"{nobody} has not answered this peer's gossip" in caplog.text,
            what="the warning",
        )
        assert caplog.text.count(f"{nobody} has not answered") == 1  # a minute apart
    finally:
        await lone.stop()


async def test_an_address_found_by_mdns_hears_only_an_introduction_and_is_dropped(
    five: LocalCluster,
) -> None:
    async with no_member() as (address, heard):
        peer = five[0]
        peer.gossip.add_seed(address)
        await eventually(lambda: len(heard) >= FOUND_TRIES, what="the address to be tried")
        await eventually(
            lambda: "found=0" in repr(peer.gossip), what="the failing address to be dropped"
        )
        tried = len(heard)
        await peer.gossip.round()  # dropped: not tried again
        assert len(heard) == tried
    for message in heard:  # nothing about the cluster but the sender itself
        assert [m.id for m in message.members] == [five[0].id]
        assert message.used_bytes == 0
        assert message.clock is None
