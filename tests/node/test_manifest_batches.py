"""Manifest calls from one peer to another go in batches, over real sockets: calls that
find a batch out leave together when it returns, each answered and logged as its own.
Batches are frames of a channel (``tests/node/test_channels.py`` holds the channel itself);
a peer without channels (an older release) gets them as requests, and one without the
batch routes either gets the calls one by one."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from node.api import peer as peer_api
from node.cluster import transport as transport_module
from node.cluster.channel import CHANNEL
from node.cluster.transport import Address, HttpTransport
from node.errors import CorruptData, InvalidRequest, PeerUnavailable
from node.model.manifest import Manifest, ReplicaRead, ReplicaWrite, SealedRead
from node.model.preconditions import ANY, EntityTag, Preconditions, TagList
from node.model.version import Version
from node.process.logs import ContextFilter
from node.tracing import REQUEST_ID, REQUEST_ID_HEADER
from tests.harness import LocalCluster, LocalPeer, eventually
from tests.harness.disk import flip_byte, manifest_record
from tests.harness.peer_api import peer_transport
from tests.node.shared.test_inline_files import served
from tests.node.shared.test_peer_input import a_manifest, far_ahead

T = TypeVar("T")


def as_request(request_id: str, call: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``call`` as a task of the public request ``request_id`` (what its peer calls carry)."""
    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, request_id)
    return context.run(asyncio.ensure_future, call)


def frames_served(caplog: pytest.LogCaptureFixture, peer: LocalPeer) -> list[int]:
    """The calls in each channel frame ``peer`` answered, in the order answered."""
    return [
        int(record.args[0])  # type: ignore[index, arg-type]
        for record in caplog.records
        if record.name == "node.access"
        and getattr(record, "peer", None) == peer.id
        and record.msg.startswith("peer frame of ")
    ]


def offer(transport: HttpTransport, to: Address, request_id: str | None, name: str) -> Any:
    """An offer of a fresh manifest of ``name``, made for ``request_id`` (None: for none)."""
    call = transport.put_manifest(to, a_manifest(name), None)
    return as_request(request_id, call) if request_id else asyncio.ensure_future(call)


@dataclass
class HeldOffer:
    """A transport from peer 0 to peer 1 with one offer out and held on peer 1."""

    transport: HttpTransport
    to: Address
    first: asyncio.Future[ReplicaWrite]
    release: asyncio.Event

    async def queue(self, *calls: Awaitable[Any]) -> list[asyncio.Future[Any]]:
        """Make ``calls`` (offers): queued behind the one held; their futures."""
        queued = [asyncio.ensure_future(call) for call in calls]
        await eventually(
            lambda: self.transport.manifest_calls.queued((self.to, "put")) == len(queued),
            what=f"{len(queued)} calls queued",
        )
        return queued


@asynccontextmanager
async def one_offer_held(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch, request_id: str, name: str
) -> AsyncIterator[HeldOffer]:
    """Peer 1's holder holds the first manifest offer until ``release``; peer 0 makes it."""
    target = two_peers[1]
    entered, release = asyncio.Event(), asyncio.Event()
    keep = target.holder.put_manifest

    async def held(
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        if not entered.is_set():
            entered.set()
            await release.wait()
        return await keep(manifest, expect, condition)

    monkeypatch.setattr(target.holder, "put_manifest", held)
    to = Address(target.url, target.id)
    async with peer_transport(two_peers[0].auth, 5.0) as transport:
        first = offer(transport, to, request_id, name)
        await asyncio.wait_for(entered.wait(), 10)  # out, and held there
        yield HeldOffer(transport, to, first, release)


async def test_calls_behind_a_request_out_leave_as_one_each_answered_and_logged(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.DEBUG, logger="node.access")
    target = two_peers[1]
    async with one_offer_held(two_peers, monkeypatch, "call-0", "batched/0") as held:
        transport, to = held.transport, held.to
        queued = await held.queue(
            *(offer(transport, to, f"call-{i}", f"batched/{i}") for i in range(1, 5)),
            offer(transport, to, None, "batched/no-id"),  # a background call's
        )
        held.release.set()
        written = await asyncio.gather(held.first, *queued)
        found = (await transport.get_manifest(to, "batched/3")).manifest  # a lane of its own
    assert all(write.stored for write in written)
    assert found is not None
    assert found.name == "batched/3"
    ids = {f"call-{i}" for i in range(5)}
    # Two batches: the first alone, then the five that queued behind it...
    assert transport.manifest_calls.counts.requests == 3  # and the read's
    assert transport.manifest_calls.counts.calls == 7
    assert frames_served(caplog, target) == [1, 5, 1]
    # ...and each call in the target's access log under its own request's id (logged before
    # the batch's answer), the one made for no request under an id of its own.
    for request_id in sorted(ids):
        assert served(caplog, request_id, CHANNEL) == {target.id}, request_id
    no_id = [r for r in caplog.records if "batched/no-id" in r.getMessage()]
    assert len(no_id) == 1
    assert no_id[0].request_id not in ids  # type: ignore[attr-defined]


@pytest.mark.parametrize("logged", [False, True], ids=["answered-at-once", "logged"])
async def test_reads_of_one_frame_come_back_in_order_however_each_is_read(
    two_peers: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    logged: bool,
) -> None:
    """A replica answers the reads it has in its page cache in place, the others (a record
    out of the cache, a damaged one) as before: every answer in its call's place, the
    damaged replica written off and answered as none. Where peer calls are logged, each
    read is logged under its own request's id."""
    caplog.handler.addFilter(ContextFilter())
    if logged:
        caplog.set_level(logging.DEBUG, logger="node.access")
    target = two_peers[1]
    store = target.holder.manifests
    names = [f"reads/{what}" for what in ("cached", "cold", "damaged", "provisional")]
    for name in names[:3]:
        assert (await store.put(a_manifest(name))).stored
    first = a_manifest(names[3])
    await store.put(first)
    newer = Version(first.version.wall_ms + 1, 0, first.version.peer)
    condition = Preconditions(if_match=TagList(False, (EntityTag(first.etag),)))
    assert (await store.put(dataclasses.replace(first, version=newer), None, condition)).stored
    found = manifest_record(target.data_dir, names[2])
    assert found is not None
    segment, offset, length = found
    flip_byte(segment, offset + length - 40)  # inside the record's payload
    cold = store._index.where(names[1])
    read_cached = store._log.read_cached
    monkeypatch.setattr(
        store._log, "read_cached", lambda where: None if where == cold else read_cached(where)
    )
    awaited: list[str] = []  # the reads answered in a task of their own
    get_manifest = target.holder.get_manifest

    async def counted(name: str) -> ReplicaRead:
        awaited.append(name)
        return await get_manifest(name)

    monkeypatch.setattr(target.holder, "get_manifest", counted)
    to = Address(target.url, target.id)
    asked = [*names, "reads/none"]
    async with peer_transport(two_peers[0].auth, 5.0) as transport:
        reads = await asyncio.gather(
            *(as_request(f"read-{i}", transport.get_manifest(to, n)) for i, n in enumerate(asked))
        )
        counts = transport.manifest_calls.counts
        assert (counts.requests, counts.calls) == (1, 5)  # one frame
    got = [(r.manifest.name if r.manifest else None, r.provisional) for r in reads]
    assert got == [
        (names[0], False),
        (names[1], False),
        (None, False),  # damaged: written off
        (names[3], True),
        (None, False),
    ]
    at_once = not logged and store._log._nowait  # (tmpfs cannot tell what is cached)
    assert sorted(awaited) == sorted(names[1:3] if at_once else asked)
    assert store._index.where(names[2]) is None
    assert "damaged; written off" in caplog.text
    if logged:  # (unlogged, no line names a request: ``awaited`` above tells the ways)
        for i in range(len(asked)):
            assert served(caplog, f"read-{i}", CHANNEL) == {target.id}


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "alone"])
async def test_a_read_answered_with_another_names_manifest_is_refused(
    two_peers: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    batched: bool,
) -> None:
    """A replica sends the manifest it stored without decoding it; the reader checks it is
    the name asked for, and takes another name's as a failed call, not as its answer,
    logged once (per replica and name, a minute)."""
    target = two_peers[1]
    mine, other = a_manifest("reads/mine"), a_manifest("reads/other")
    assert (await target.holder.manifests.put(mine)).stored

    async def astray(name: str) -> ReplicaRead:
        return ReplicaRead(other)

    if batched:
        monkeypatch.setattr(
            target.holder, "get_manifest_now", lambda name: SealedRead(other.to_bytes())
        )
    else:
        monkeypatch.setattr(target.holder, "get_manifest", astray)
    to = Address(target.url, target.id)
    async with peer_transport(two_peers[0].auth, 5.0) as transport:
        read = transport.get_manifest if batched else transport._get_manifest_alone
        assert (await read(to, "reads/other")).manifest == other
        for _ in range(2):
            with pytest.raises(
                CorruptData, match="'reads/mine' with the manifest of 'reads/other'"
            ):
                await read(to, "reads/mine")
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert [r.levelname for r in refused] == ["WARNING"]
        monkeypatch.undo()  # (and its own answers it again)
        assert (await read(to, "reads/mine")).manifest == mine


async def test_one_calls_failure_is_its_own(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_offer_held(two_peers, monkeypatch, "first", "failing/first") as held:
        transport, to = held.transport, held.to
        batch = await held.queue(
            transport.put_manifest(to, a_manifest("failing/fine-1"), None),
            transport.put_manifest(to, far_ahead(a_manifest("failing/ahead")), None),
            transport.put_manifest(to, a_manifest("failing/fine-2"), None),
        )
        held.release.set()
        outcomes = await asyncio.gather(held.first, *batch, return_exceptions=True)
    assert isinstance(outcomes[2], InvalidRequest)
    for kept in (outcomes[0], outcomes[1], outcomes[3]):
        assert isinstance(kept, ReplicaWrite)
        assert kept.stored
    assert transport.manifest_calls.counts.requests == 2  # the three went together


async def test_calls_queued_behind_a_hung_peer_fail_with_its_request(
    two_peers: LocalCluster,
) -> None:
    """Not after a second timeout of their own: they never leave. One failure counts against
    the peer; the calls that shared it do not count it again."""
    target = two_peers[1]
    to = Address(target.url, target.id)
    target.hang()
    try:
        async with peer_transport(two_peers[0].auth, 0.5) as transport:
            first = offer(transport, to, "hung-0", "hung/0")
            await eventually(lambda: transport.manifest_calls.counts.requests == 1, what="out")
            queued = [offer(transport, to, f"hung-{i}", f"hung/{i}") for i in (1, 2)]
            await eventually(lambda: transport.manifest_calls.queued((to, "put")) == 2, what="q")
            outcomes = await asyncio.gather(first, *queued, return_exceptions=True)
    finally:
        target.unhang()
    assert all(isinstance(outcome, PeerUnavailable) for outcome in outcomes)
    counted = [outcome.counted for outcome in outcomes if isinstance(outcome, PeerUnavailable)]
    assert counted == [True, False, False]
    assert transport.manifest_calls.counts.requests == 1  # the queued calls never left


@asynccontextmanager
async def a_peer_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str, tried: list[str]
) -> AsyncIterator[tuple[HttpTransport, Address, LocalPeer]]:
    """A transport from peer 0 to peer 1 of a fresh 2-peer cluster whose handler ``route``
        (a function of ``node.api.peer``) answers 404, as a release without it does, and which
        has no channels (a release before them); the request ids of the calls ``route`` refused
        go into ``tried`` ("" for none), and for each channel it refused ``CHANNELS_REFUSED`` and
    the request id of the call that opened it."""

    async def no_such_route(request: web.Request) -> web.Response:
        tried.append(request.headers.get(REQUEST_ID_HEADER, ""))
        raise web.HTTPNotFound()  # as a release before it answers: no such route

    async def no_channels(request: web.Request) -> web.Response:
        tried.append(f"{CHANNELS_REFUSED} {request.headers.get(REQUEST_ID_HEADER, '')}")
        raise web.HTTPNotFound()

    monkeypatch.setattr(peer_api, route, no_such_route)
    monkeypatch.setattr(peer_api, "manifest_channel", no_channels)
    local = LocalCluster(tmp_path)
    try:
        await local.start(2)
        target = local[1]
        async with peer_transport(local[0].auth) as transport:
            yield transport, Address(target.url, target.id), target
    finally:
        await local.stop()


CHANNELS_REFUSED = "(a channel)"


async def test_a_peer_without_batches_gets_each_call_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[str] = []
    async with a_peer_without(tmp_path, monkeypatch, "manifest_calls", tried) as opened:
        transport, to, target = opened
        written = await asyncio.gather(
            offer(transport, to, "old-peer", "old/0"),
            *(offer(transport, to, None, f"old/{i}") for i in (1, 2)),
        )
        assert all(write.stored for write in written)
        # Offers on a condition and over an expected replica go by their own routes.
        again = a_manifest("old/0")
        newer = Version(again.version.wall_ms + 1, 0, again.version.peer)
        create = Preconditions(if_none_match=ANY)
        refused = await transport.put_manifest(
            to, dataclasses.replace(again, version=newer), None, create
        )
        assert not refused.stored  # it exists: If-None-Match: * does not hold
        created = a_manifest("old/created")
        assert (await transport.put_manifest(to, created, None, create)).stored
        provisional = await transport.get_manifest(to, "old/created")
        assert provisional == ReplicaRead(created, provisional=True)  # told by a header
        target.manifests.provisional_for = 0.0
        overdue = await transport.get_manifest(to, "old/created")
        assert overdue == ReplicaRead(created, provisional=True, overdue=True)
        await transport.confirm_manifest(to, created)
        assert not (await transport.get_manifest(to, "old/created")).provisional
        moved = await transport.put_manifest(
            to, dataclasses.replace(again, revision=1), (again.version, again.revision)
        )
        assert moved.stored
        found = await as_request("old-peer", transport.get_manifest(to, "old/1"))
        assert found.manifest is not None
        assert found.manifest.name == "old/1"
        assert not found.provisional
        assert await transport.get_manifest(to, "old/none") == ReplicaRead(None)
        assert [t for t in tried if t == "old-peer"] == ["old-peer"]  # once: later calls alone
        opened_for = f"{CHANNELS_REFUSED} old-peer"
        assert tried.count(opened_for) == 1  # tried once, before the first batch
        # Once RETRY_BATCHES have passed, channels and batches are tried again (it may be
        # upgraded).
        monkeypatch.setattr(transport_module, "RETRY_BATCHES", 0.0)
        found = await as_request("old-peer", transport.get_manifest(to, "old/2"))
        assert found.manifest is not None
        assert [t for t in tried if t == "old-peer"] == ["old-peer", "old-peer"]
        assert tried.count(opened_for) == 2


async def provisional_replicas(
    transport: HttpTransport, to: Address, names: list[str]
) -> list[Manifest]:
    """Conditional writes (If-None-Match: *) of ``names`` kept on ``to``, not yet confirmed."""
    created = [a_manifest(name) for name in names]
    create = Preconditions(if_none_match=ANY)
    for manifest in created:
        assert (await transport.put_manifest(to, manifest, None, create)).stored
        assert (await transport.get_manifest(to, manifest.name)).provisional
    return created


async def test_confirmations_behind_one_out_leave_as_one_request(
    two_peers: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = two_peers[1]
    to = Address(target.url, target.id)
    entered, release = asyncio.Event(), asyncio.Event()
    confirm = target.holder.confirm_manifest

    async def held(name: str, precedence: tuple[Version, int]) -> None:
        if not entered.is_set():
            entered.set()
            await release.wait()
        await confirm(name, precedence)

    monkeypatch.setattr(target.holder, "confirm_manifest", held)
    async with peer_transport(two_peers[0].auth, 5.0) as transport:
        created = await provisional_replicas(transport, to, [f"cas/{i}" for i in range(5)])
        before = transport.manifest_calls.counts.requests
        first = asyncio.ensure_future(transport.confirm_manifest(to, created[0]))
        await asyncio.wait_for(entered.wait(), 10)  # out, and held there
        queued = [asyncio.ensure_future(transport.confirm_manifest(to, m)) for m in created[1:]]
        await eventually(
            lambda: transport.manifest_calls.queued((to, "confirm")) == 4, what="4 queued"
        )
        release.set()
        await asyncio.gather(first, *queued)
        assert transport.manifest_calls.counts.requests - before == 2  # alone, then the four
        for manifest in created:
            assert (await transport.get_manifest(to, manifest.name)) == ReplicaRead(manifest)


async def test_a_peer_without_confirmation_batches_gets_them_alone_and_the_rest_batched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release before confirmation batches has manifest batches: a 404 on one route
    does not send the other's calls alone."""
    tried: list[str] = []
    async with a_peer_without(tmp_path, monkeypatch, "manifest_confirmations", tried) as opened:
        transport, to, _ = opened
        created = await provisional_replicas(transport, to, ["old/a", "old/b"])
        batched = transport.manifest_calls.counts.requests
        for index, manifest in enumerate(created):
            await as_request(f"confirm-{index}", transport.confirm_manifest(to, manifest))
            assert await transport.get_manifest(to, manifest.name) == ReplicaRead(manifest)
        # Once: the second went alone at once. (The peers' own confirmations, of cluster
        # records written as they start, may reach the route too: not counted.)
        assert [t for t in tried if t.startswith("confirm-")] == ["confirm-0"]
        # Three requests more through the batcher: the refused confirmation and the two
        # reads (the second confirmation went alone; reads still go batched).
        assert transport.manifest_calls.counts.requests - batched == 3
