"""Channels (``node.cluster.channel``): batches of manifest calls as frames of one WebSocket
per pair of peers, on real in-process peers. The hard cases first: a frame forged, replayed,
moved from another channel or unreadable closes the channel; a squatter's answers are
refused; a hung peer's calls time out and a stopped one's fail at once, and the next call
opens a new channel; then the ordinary case, many batches over one connection."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from yarl import URL

from node.api import peer as peer_api
from node.api.keys import CHANNELS
from node.cluster import channel as channel_module
from node.cluster.auth import Authenticator, FrameKeys, Request, content_digest
from node.cluster.channel import (
    ANSWERS,
    CALLS,
    CHANNEL,
    CONFIRMATIONS,
    FRAME_VERSIONS,
    OFFERED,
    SUBPROTOCOLS,
    Channel,
    SaltedKeys,
    changed_offer,
)
from node.cluster.protocol import (
    PEER_HEADER,
    ManifestAnswers,
    ManifestCalls,
    ManifestOffer,
    decode,
    encode,
)
from node.cluster.transport import Address
from node.errors import PeerUnavailable, Unauthenticated
from node.model.identity import ClusterIdentity, key_id
from node.model.manifest import ChunkMeta, Manifest
from tests.harness import LocalCluster, LocalPeer, eventually
from tests.harness.local import Served
from tests.harness.peer_api import peer_transport
from tests.harness.polling import spin
from tests.node.shared.test_peer_input import a_manifest

SALT = bytes(range(100, 116))  # a receiver's salt (version 2 keys)


def serves_channel_from(peer: LocalPeer, port: int) -> bool:
    """Whether ``peer`` has a channel open from local port ``port``."""
    assert peer.app is not None
    return any(
        request.transport is not None and request.transport.get_extra_info("peername")[1] == port
        for request in peer.app[CHANNELS].serving.values()
    )


def hold_first_offer(
    peer: LocalPeer, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """``peer``'s holder holds the next manifest offer until the second event is set (the
    first is set once it is held); later offers pass."""
    entered, release = asyncio.Event(), asyncio.Event()
    keep = peer.holder.put_manifest

    async def held(*args: object, **kwargs: object) -> object:
        if not entered.is_set():
            entered.set()
            await release.wait()
        return await keep(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(peer.holder, "put_manifest", held)
    return entered, release


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def offers(names: list[str]) -> bytes:
    """The body of a frame of offers of fresh manifests of ``names``."""
    return encode(ManifestCalls([ManifestOffer(a_manifest(n).to_bytes()) for n in names]))


@asynccontextmanager
async def upgraded(
    peer: LocalPeer,
    auth: Authenticator | None = None,
    version: int = 2,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[tuple[aiohttp.ClientWebSocketResponse, SaltedKeys]]:
    """A channel to ``peer`` opened by hand with frames of ``version``, signed with ``auth``
    (default: as a member) or sent with ``headers`` (a recorded upgrade); the WebSocket and
    the caller's keys of the receiver's salt (nothing read yet). Once it is closed, ``peer``
    holds nothing of it (within the default wait)."""
    auth = auth or peer.auth
    url = URL(f"{peer.url}{CHANNEL}")
    if headers is None:
        meant = {PEER_HEADER: peer.id}
        request = Request("GET", url.host_port_subcomponent or "", url.raw_path_qs, meant)
        headers = {**meant, **auth.sign(request, content_digest(b""))[1]}
    nonce = headers["X-Ringstore-Auth"].split()[3]
    protocols = [name for name, v in FRAME_VERSIONS.items() if v == version]
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers=headers, protocols=protocols) as ws,
    ):
        assert ws.protocol == protocols[0]
        port = ws.get_extra_info("sockname")[1]
        assert serves_channel_from(peer, port)
        yield ws, functools.partial(auth.frame_keys, nonce, version)
    await eventually(lambda: not serves_channel_from(peer, port), what="the channel closed")


async def salt_from(ws: aiohttp.ClientWebSocketResponse) -> bytes:
    """The receiver's salt, from its hello (version 2)."""
    first = await asyncio.wait_for(ws.receive(), 10)
    return channel_module.salt_of(first.type, first.data)


@asynccontextmanager
async def raw_channel(
    peer: LocalPeer, auth: Authenticator | None = None, version: int = 2
) -> AsyncIterator[tuple[aiohttp.ClientWebSocketResponse, FrameKeys]]:
    """``upgraded``, with the receiver's hello read (version 2): the WebSocket and the keys
    that seal frames for it."""
    async with upgraded(peer, auth, version) as (ws, keys):
        yield ws, keys(await salt_from(ws) if version == 2 else b"")


@pytest.fixture(params=[2, 1], ids=["gmac", "hmac"])
def version(request: pytest.FixtureRequest) -> int:
    """A frame version: this release's, and the one before's (a peer of that release)."""
    return int(request.param)


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the channel closes (within 10 s); its close code (answers before it are
    dropped)."""
    for _ in range(100):
        message = await ws.receive(timeout=10)
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code
    raise AssertionError("the channel answered 100 messages and stayed open")


# --- frames the receiver refuses -------------------------------------------------------------


async def test_a_frame_sealed_with_another_clusters_secret_closes_the_channel(
    two_peers: LocalCluster, version: int
) -> None:
    target = two_peers[1]
    async with raw_channel(target, version=version) as (ws, _):
        stranger = Authenticator(ClusterIdentity.create()).frame_keys("0" * 32, version, SALT)
        await ws.send_bytes(stranger.seal(CALLS, 1, offers(["forged/a"])))
        assert await closed_with(ws) == WSCloseCode.POLICY_VIOLATION
    assert (await target.holder.get_manifest("forged/a")).manifest is None


async def test_a_replayed_frame_is_answered_once_and_closes_the_channel(
    two_peers: LocalCluster, version: int
) -> None:
    target = two_peers[1]
    async with raw_channel(target, version=version) as (ws, keys):
        frame = keys.seal(CALLS, 1, offers(["replayed/a"]))
        await ws.send_bytes(frame)
        answer = await asyncio.wait_for(ws.receive(), 10)
        kind, seq, body = keys.open(answer.data)
        assert (kind, seq) == (channel_module.ANSWERS, 1)
        written = decode(body, ManifestAnswers).answers[0].written
        assert written is not None
        assert written.stored
        await ws.send_bytes(frame)  # the same bytes again
        assert await closed_with(ws) == WSCloseCode.POLICY_VIOLATION


async def test_a_frame_of_another_channel_is_refused(two_peers: LocalCluster, version: int) -> None:
    """Sealed with the members' secret, but for another upgrade's nonce."""
    target = two_peers[1]
    async with raw_channel(target, version=version) as (first, first_keys):
        async with raw_channel(target, version=version) as (second, _):
            await second.send_bytes(first_keys.seal(CALLS, 1, offers(["moved/a"])))
            assert await closed_with(second) == WSCloseCode.POLICY_VIOLATION
        await first.send_bytes(first_keys.seal(CALLS, 1, offers(["moved/b"])))
        answer = await asyncio.wait_for(first.receive(), 10)  # the first still serves
        assert first_keys.open(answer.data)[:2] == (channel_module.ANSWERS, 1)
    assert (await target.holder.get_manifest("moved/a")).manifest is None
    assert (await target.holder.get_manifest("moved/b")).manifest is not None


REFUSED, UNREADABLE = WSCloseCode.POLICY_VIOLATION, WSCloseCode.UNSUPPORTED_DATA


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(lambda k: k.seal(CALLS, 1, b"\xc1 not msgpack"), UNREADABLE, id="unreadable"),
        pytest.param(
            lambda k: k.seal(CONFIRMATIONS, 1, offers(["x"])), UNREADABLE, id="wrong-kind"
        ),
        pytest.param(lambda k: k.seal(CALLS, 2, offers(["x"])), REFUSED, id="out-of-order"),
        pytest.param(lambda k: k.seal(channel_module.ANSWERS, 1, b""), REFUSED, id="an-answer"),
        pytest.param(lambda k: k.seal(CALLS, 1, offers(["x"]))[:30], REFUSED, id="short"),
        pytest.param(
            lambda k: bytes([3 - k.VERSION]) + k.seal(CALLS, 1, offers(["x"]))[1:],
            REFUSED,
            id="other-version",
        ),
    ],
)
async def test_a_malformed_frame_closes_the_channel(
    two_peers: LocalCluster, frame: Callable[[FrameKeys], bytes], code: int, version: int
) -> None:
    target = two_peers[1]
    async with raw_channel(target, version=version) as (ws, keys):
        await ws.send_bytes(frame(keys))
        assert await closed_with(ws) == code
    assert (await target.holder.get_manifest("x")).manifest is None


async def test_an_upgrade_replayed_after_a_restart_gets_new_keys_and_no_frame_answered(
    two_peers: LocalCluster,
) -> None:
    """A receiver forgets the nonces it saw when it restarts, so within the signature's
    window a recorded upgrade is accepted again; but its hello brings a new salt, and the
    recorded frames do not open under the keys it makes (nor would its answers repeat an
    IV under the old ones)."""
    caller, target = two_peers
    url = URL(f"{target.url}{CHANNEL}")
    meant = {PEER_HEADER: target.id}
    request = Request("GET", url.host_port_subcomponent or "", url.raw_path_qs, meant)
    headers = {**meant, **caller.auth.sign(request, content_digest(b""))[1]}
    async with upgraded(target, caller.auth, headers=headers) as (ws, keys):
        salt = await salt_from(ws)
        recorded = keys(salt).seal(CALLS, 1, offers(["replayed/a"]))
        await ws.send_bytes(recorded)
        answer = (await asyncio.wait_for(ws.receive(), 10)).data
        assert keys(salt).open(answer)[:2] == (ANSWERS, 1)
    with pytest.raises(aiohttp.WSServerHandshakeError) as remembered:
        async with upgraded(target, caller.auth, headers=headers):
            pass
    assert remembered.value.status == 401
    await target.restart()
    async with upgraded(target, caller.auth, headers=headers) as (ws, _):
        assert await salt_from(ws) != salt
        await ws.send_bytes(recorded)
        assert await closed_with(ws) == WSCloseCode.POLICY_VIOLATION


async def test_a_text_message_closes_the_channel(two_peers: LocalCluster) -> None:
    async with raw_channel(two_peers[1]) as (ws, _):
        await ws.send_str("hello")
        assert await closed_with(ws) == WSCloseCode.UNSUPPORTED_DATA


@pytest.mark.parametrize(
    "sent", [(), ("ringstore.chunks.1",), ("ringstore.chunks.1", "ringstore.chunks.2")]
)
async def test_an_upgrade_whose_subprotocols_were_changed_on_the_way_is_refused(
    two_peers: LocalCluster, sent: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """Its caller signed what it offered (``OFFERED``): stripping version 2 from the
    unsigned ``Sec-WebSocket-Protocol``, or putting version 1 first, gets no channel at
    all, not a version 1 one."""
    caller, target = two_peers
    url = URL(f"{target.url}{CHANNEL}")
    offer = {OFFERED: ",".join(SUBPROTOCOLS), PEER_HEADER: target.id}
    request = Request("GET", url.host_port_subcomponent or "", url.raw_path_qs, offer)
    headers = {**offer, **caller.auth.sign(request, content_digest(b""))[1]}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(url, headers=headers, protocols=sent):
                pass
    assert refused.value.status == 400
    assert "where the caller signed" in caplog.text


def test_an_offer_differing_only_in_spaces_is_the_same() -> None:
    signed = "ringstore.chunks.2,ringstore.chunks.1"
    assert changed_offer(signed, "ringstore.chunks.2, ringstore.chunks.1") is None
    assert changed_offer(None, None) is None  # a caller of a release before the header
    assert changed_offer(signed, None) is not None


async def test_an_upgrade_without_a_members_signature_is_refused(two_peers: LocalCluster) -> None:
    stranger = Authenticator(ClusterIdentity.create())
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with raw_channel(two_peers[1], stranger):
            pass
    assert refused.value.status == 401
    async with aiohttp.ClientSession() as session:  # nor unsigned (a browser page's)
        url = f"{two_peers[1].url}{CHANNEL}"
        with pytest.raises(aiohttp.WSServerHandshakeError) as unsigned:
            async with session.ws_connect(url, origin="http://example.test"):
                pass
    assert unsigned.value.status == 401


async def test_a_frame_whose_answer_fails_closes_the_channel_and_is_logged(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug answering a frame: the caller's calls fail now, not at their timeout, and the
    log says which frame."""

    async def failing(holder: object, kind: int, body: memoryview) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(peer_api, "_answer_frame", failing)
    async with raw_channel(two_peers[1]) as (ws, keys):
        await ws.send_bytes(keys.seal(CALLS, 1, offers(["bug/a"])))
        assert await closed_with(ws) == WSCloseCode.INTERNAL_ERROR
    assert "frame 1 failed" in caplog.text
    assert "a bug" in caplog.text


# --- the caller's side -----------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def fake_receiver(handler: Handler) -> AsyncIterator[str]:
    """A process that is no member serving ``handler`` as the channel route; its URL."""
    app = web.Application()
    app.router.add_get(CHANNEL, handler)
    served = Served()
    await served.serve(app)
    try:
        yield f"http://127.0.0.1:{served.port}"
    finally:
        await served.stop()


async def test_a_squatter_that_upgrades_gets_no_answer_believed(
    tmp_path: Path, version: int
) -> None:
    """A process at a member's address without the secret accepts the channel and answers
    every frame with a forged "stored": the call fails, as an unsigned answer does."""
    answered: list[int] = []

    async def squat(request: web.Request) -> web.StreamResponse:
        # (version 1: it selects no subprotocol, as a peer of two releases before)
        ws = web.WebSocketResponse(protocols=SUBPROTOCOLS if version == 2 else ())
        await ws.prepare(request)
        nonce = request.headers["X-Ringstore-Auth"].split()[3]  # the upgrade's, seen
        if version == 2:
            await ws.send_bytes(channel_module.hello(SALT))
        forger = Authenticator(ClusterIdentity.create()).frame_keys(
            nonce, version, SALT, receiver=True
        )
        async for message in ws:
            seq = forger.HEAD.unpack_from(message.data)[2]  # it cannot check the MAC
            answered.append(seq)
            await ws.send_bytes(forger.seal(channel_module.ANSWERS, seq, b"\x91\x80"))
        return ws

    async with (
        fake_receiver(squat) as url,
        peer_transport(Authenticator(ClusterIdentity.create())) as transport,
    ):
        with pytest.raises(PeerUnavailable, match="not a key of this cluster"):
            await transport.put_manifest(
                Address(url, "some-member"), a_manifest("squatted/a"), None
            )
    assert answered == [1]


@pytest.mark.parametrize("first", [b"\x02\x06too short", "a text"], ids=["short", "text"])
async def test_a_channel_that_does_not_begin_with_a_hello_fails_its_calls(
    tmp_path: Path, first: bytes | str
) -> None:
    async def odd(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=SUBPROTOCOLS)
        await ws.prepare(request)
        await (ws.send_bytes(first) if isinstance(first, bytes) else ws.send_str(first))
        async for _ in ws:
            pass
        return ws

    async with (
        fake_receiver(odd) as url,
        peer_transport(Authenticator(ClusterIdentity.create())) as transport,
    ):
        with pytest.raises(PeerUnavailable, match="not a hello"):
            await transport.put_manifest(Address(url, "some-member"), a_manifest("odd/a"), None)


@pytest.mark.parametrize("receiver", ["closes", "is silent"])
async def test_calls_waiting_for_a_hello_that_never_comes_fail_and_count_once(
    tmp_path: Path, receiver: str
) -> None:
    """A receiver that closes before its hello (a stopping peer) or sends none: the calls
    queued behind it fail within the timeout, and one failed channel counts once against
    the peer (two counted failures mark a member down)."""

    async def no_hello(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=SUBPROTOCOLS)
        await ws.prepare(request)
        if receiver == "closes":
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"stopping")
        async for _ in ws:
            pass
        return ws

    auth = Authenticator(ClusterIdentity.create())
    refused: list[str] = []
    async with (
        fake_receiver(no_hello) as url,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}{CHANNEL}", protocols=SUBPROTOCOLS) as ws,
    ):
        keys = functools.partial(auth.frame_keys, "c" * 32, 2)
        opened = Channel(ws, keys, 2, "a-peer", 0.5, lambda *why: refused.append(str(why)))
        calls = [opened.call(CALLS, offers([f"waiting/{n}"])) for n in range(4)]
        failures = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(failure, PeerUnavailable) for failure in failures)
        assert sum(f.counted for f in failures if isinstance(f, PeerUnavailable)) == 1
        assert not opened.open
        await opened.close()
    assert refused == []  # nothing refused: no WARNING for a peer going away


@pytest.mark.parametrize("hung_call", ["manifest offer", "chunk read"])
async def test_a_hung_peers_call_times_out_and_the_next_opens_a_new_channel(
    two_peers: LocalCluster, hung_call: str
) -> None:
    target = two_peers[1]
    to = Address(target.url, target.id)
    chunk, owner = f"{7:032x}-0", ChunkMeta("hung/file", "1.0.peer", 0, 1 << 20)

    async def call() -> None:
        if hung_call == "manifest offer":
            await transport.put_manifest(to, a_manifest("hung/during"), None)
        else:
            async with transport.open_chunk(to, chunk, 0, 6):
                pass

    async with peer_transport(two_peers[0].auth, timeout=0.5) as transport:
        assert (await transport.put_manifest(to, a_manifest("hung/before"), None)).stored
        assert await transport.put_chunk(to, chunk, _one(b"before"), 6, owner) == 6
        assert transport.channels_open == 1
        target.hang()
        try:
            with pytest.raises(PeerUnavailable, match="no answer within") as failed:
                await call()
            assert isinstance(failed.value.__cause__, asyncio.TimeoutError)  # fails the queue
        finally:
            target.unhang()
        assert (await transport.put_manifest(to, a_manifest("hung/after"), None)).stored
        assert transport.channels_opened == 2  # the hung one was closed, a new one opened
    assert (await target.holder.get_manifest("hung/after")).manifest is not None


async def test_a_stopping_peer_answers_the_frames_under_way_then_closes_its_channels(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call held on the target when it begins to stop is answered (it was kept), the
    channel then closes (1001), later calls fail at once, and once the peer is back a new
    channel reaches it."""
    target = two_peers[1]
    to = Address(target.url, target.id)
    entered, release = hold_first_offer(target, monkeypatch)
    assert target.app is not None
    channels = target.app[CHANNELS]
    async with peer_transport(two_peers[0].auth, timeout=30.0) as transport:
        call = asyncio.ensure_future(transport.put_manifest(to, a_manifest("stop/a"), None))
        await asyncio.wait_for(entered.wait(), 10)
        stopping = asyncio.ensure_future(target.stop())
        await eventually(lambda: channels.stopping, what="the peer to begin stopping")
        release.set()
        written = await asyncio.wait_for(call, 10)  # answered, not cut off
        assert written.stored
        await asyncio.wait_for(stopping, 10)
        with pytest.raises(PeerUnavailable):
            await asyncio.wait_for(transport.put_manifest(to, a_manifest("stop/b"), None), 10)
        await target.start()
        assert (await transport.put_manifest(to, a_manifest("stop/c"), None)).stored


def hold_every_offer(
    peer: LocalPeer, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], asyncio.Event]:
    """``peer``'s holder holds every manifest offer until the event is set; the names of
    those that reached it go into the list."""
    entered: list[str] = []
    release = asyncio.Event()
    keep = peer.holder.put_manifest

    async def held(manifest: Manifest, *args: object, **kwargs: object) -> object:
        entered.append(manifest.name)
        await release.wait()
        return await keep(manifest, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(peer.holder, "put_manifest", held)
    return entered, release


async def frames_begun_then_answered(
    peer: LocalPeer, monkeypatch: pytest.MonkeyPatch, frames: int, begun: int
) -> None:
    """Send ``frames`` frames of one offer each on a new channel to ``peer`` (whose offers
    are held: ``hold_every_offer``); check that exactly ``begun`` are worked on, then that
    all are answered once released."""
    entered, release = hold_every_offer(peer, monkeypatch)
    async with raw_channel(peer) as (ws, keys):
        for seq in range(1, frames + 1):
            await ws.send_bytes(keys.seal(CALLS, seq, offers([f"room/{seq}"])))
        await eventually(lambda: len(entered) == begun, what=f"{begun} frames begun")
        await spin()
        assert len(entered) == begun  # the rest wait, unread
        release.set()
        answered = set()
        for _ in range(frames):
            kind, seq, _ = keys.open((await ws.receive(timeout=10)).data)
            assert kind == channel_module.ANSWERS
            answered.add(seq)
    assert answered == set(range(1, frames + 1))
    assert len(entered) == frames


async def test_a_receiver_works_on_at_most_eight_frames_of_a_channel_at_once(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    await frames_begun_then_answered(two_peers[1], monkeypatch, 9, channel_module.FRAMES_IN_FLIGHT)


async def test_a_frame_past_the_byte_budget_is_worked_on_alone(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel_module, "BYTES_IN_FLIGHT", 1)  # every frame is past it
    await frames_begun_then_answered(two_peers[1], monkeypatch, 3, 1)


async def test_batches_share_one_channel_and_answers_come_back_to_their_calls(
    two_peers: LocalCluster,
) -> None:
    target = two_peers[1]
    to = Address(target.url, target.id)
    async with peer_transport(two_peers[0].auth) as transport:
        names = [f"many/{i}" for i in range(60)]
        written = await asyncio.gather(
            *(transport.put_manifest(to, a_manifest(name), None) for name in names)
        )
        assert all(write.stored for write in written)
        found = await asyncio.gather(*(transport.get_manifest(to, name) for name in names))
        assert [read.manifest.name for read in found if read.manifest] == names
        counts = transport.manifest_calls.counts
        assert counts.calls == 120
        assert counts.requests < counts.calls  # batched
        assert transport.channels_open == 1  # one channel carried every batch


def test_frame_keys_refuse_any_change_and_accept_every_secret_of_a_rotation(
    version: int,
) -> None:
    identity = ClusterIdentity.create()
    nonce = "a" * 32

    def ends(
        auth: Authenticator, nonce: str = nonce, salt: bytes = SALT
    ) -> tuple[FrameKeys, FrameKeys]:
        """The caller's and the receiver's keys of a channel."""
        caller = auth.frame_keys(nonce, version, salt)
        return caller, auth.frame_keys(nonce, version, salt, receiver=True)

    caller, receiver = ends(Authenticator(identity))
    # Mid-rotation, one peer signs with the new secret and another still with the old one;
    # both accept both.
    old, new = identity.signing_secret, ClusterIdentity.create().signing_secret
    ahead = ends(Authenticator(ClusterIdentity(identity.cluster_id, [new, old])))
    behind = ends(Authenticator(ClusterIdentity(identity.cluster_id, [old, new])))
    assert behind[1].open(ahead[0].seal(CALLS, 1, b"new"))[2] == b"new"
    assert ahead[1].open(behind[0].seal(CALLS, 1, b"old"))[2] == b"old"
    assert behind[0].open(ahead[1].seal(ANSWERS, 1, b"answer"))[2] == b"answer"
    frame = caller.seal(CALLS, 7, b"body")
    assert receiver.open(frame) == (CALLS, 7, memoryview(b"body"))
    for at in range(len(frame)):  # the key id's bytes too: no key of this cluster
        changed = bytearray(frame)
        changed[at] ^= 0x01
        with pytest.raises(Unauthenticated):
            receiver.open(bytes(changed))
    with pytest.raises(Unauthenticated):
        ends(Authenticator(identity), "b" * 32)[1].open(frame)
    for length in range(len(frame)):  # cut anywhere: too short, or the MAC fails
        with pytest.raises(Unauthenticated):
            receiver.open(frame[:length])
    other = 3 - version  # the other version's keys refuse it
    with pytest.raises(Unauthenticated):
        Authenticator(identity).frame_keys(nonce, other, SALT, receiver=True).open(frame)
    if version == 2:
        with pytest.raises(Unauthenticated):  # sent back to its sender: one key each way
            caller.open(frame)
        with pytest.raises(Unauthenticated):  # another salt (a replayed upgrade's)
            ends(Authenticator(identity), salt=bytes(16))[1].open(frame)
    unsafe = Authenticator(identity, enforced=False).frame_keys(nonce, version, SALT)
    assert unsafe.open(unsafe.seal(CALLS, 1, b"x"))[2] == b"x"


def test_gmac_frames_are_as_specified() -> None:
    """A known answer, worked out with the primitives named in ``FrameGmac``: the wire
    format cannot change by accident."""
    secret = bytes(range(32))
    auth = Authenticator(ClusterIdentity("c" * 16, [secret]))
    frame = auth.frame_keys("n" * 32, 2, SALT).seal(CALLS, 5, b"body")
    info = f"ringstore-frame-v2\n{'n' * 32}\n{SALT.hex()}\ncaller".encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
    iv = bytes([CALLS, 0, 0, 0]) + (5).to_bytes(8, "big")
    tag = AESGCM(key).encrypt(iv, b"", b"body")
    kid = bytes.fromhex(key_id(secret))
    assert frame == bytes([2, CALLS]) + (5).to_bytes(8, "big") + kid + tag + b"body"
    answer = auth.frame_keys("n" * 32, 2, SALT, receiver=True).seal(ANSWERS, 5, b"done")
    info = info.replace(b"\ncaller", b"\nreceiver")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
    tag = AESGCM(key).encrypt(bytes([ANSWERS, 0, 0, 0]) + (5).to_bytes(8, "big"), b"", b"done")
    assert answer == bytes([2, ANSWERS]) + (5).to_bytes(8, "big") + kid + tag + b"done"


@pytest.mark.parametrize(
    ("nonce", "version", "salt", "error"),
    [
        ("a" * 32, 3, SALT, "version 3"),
        ("a" * 32, 2, b"", "salt is 16 bytes, not 0"),
        ("", 2, SALT, "nonce"),
        ("", 1, b"", "nonce"),
    ],
)
def test_frame_keys_need_a_known_version_a_salt_and_a_nonce(
    nonce: str, version: int, salt: bytes, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        Authenticator(ClusterIdentity.create()).frame_keys(nonce, version, salt)


async def test_a_call_whose_caller_goes_away_leaves_the_channel_open(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its answer, when it comes, is dropped; calls before and after it are answered."""
    target = two_peers[1]
    entered, release = hold_first_offer(target, monkeypatch)
    async with upgraded(target) as (ws, keys):
        opened = Channel(ws, keys, 2, target.url, 10.0, target.auth.note_refusal)
        gone = asyncio.ensure_future(opened.call(CALLS, offers(["gone/a"])))
        await asyncio.wait_for(entered.wait(), 10)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        release.set()
        later = decode(await opened.call(CALLS, offers(["gone/b"])), ManifestAnswers)
        assert later.answers[0].written is not None
        assert opened.open
        await opened.close()
        assert not opened.open
        with pytest.raises(PeerUnavailable, match="closed by this peer"):
            await opened.call(CALLS, offers(["gone/c"]))
    assert (await target.holder.get_manifest("gone/a")).manifest is not None  # it did run
