"""Manifest calls from one peer to another coalesce into batches over real HTTP: calls that
find a request out leave together when it returns, each answered and logged as its own;
a peer without the batch route (an older release) gets them one by one."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from node.api import peer as peer_api
from node.cluster.transport import Address, HttpTransport
from node.errors import InvalidRequest
from node.model.manifest import Manifest, ReplicaWrite
from node.model.preconditions import Preconditions
from node.model.version import MAX_SKEW_MS, Version
from node.process.logs import ContextFilter
from node.tracing import REQUEST_ID, REQUEST_ID_HEADER
from tests.harness import LocalCluster, LocalPeer, eventually
from tests.node.shared.test_inline_files import served
from tests.node.shared.test_peer_input import a_manifest

T = TypeVar("T")
BATCH = "/internal/manifests/batch"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(tmp_path)
    try:
        await local.start(2)
        yield local
    finally:
        await local.stop()


def as_request(request_id: str, call: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``call`` as a task of the public request ``request_id`` (what its peer calls carry)."""
    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, request_id)
    return context.run(asyncio.ensure_future, call)


def requests_served(caplog: pytest.LogCaptureFixture, peer: LocalPeer, ids: set[str]) -> int:
    """HTTP requests to the batch route that ``peer`` answered for any of ``ids``."""
    return sum(
        1
        for record in caplog.records
        if record.name == "node.access"
        and hasattr(record, "duration")  # the access log's line for a request, not a call's
        and getattr(record, "peer", None) == peer.id
        and getattr(record, "request_id", None) in ids
        and BATCH in record.getMessage()
    )


def hold_offers(peer: LocalPeer, monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, ...]:
    """Make ``peer``'s holder hold the first manifest offer until the test releases it."""
    entered, release = asyncio.Event(), asyncio.Event()
    offer = peer.holder.put_manifest

    async def held(
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        if not entered.is_set():
            entered.set()
            await release.wait()
        return await offer(manifest, expect, condition)

    monkeypatch.setattr(peer.holder, "put_manifest", held)
    return entered, release


async def test_calls_behind_a_request_out_leave_as_one_each_answered_and_logged(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.DEBUG, logger="node.access")
    target = cluster[1]
    to = Address(target.url, target.id)
    await target.holder.put_manifest(a_manifest("batched/read-me"), None)
    entered, release = hold_offers(target, monkeypatch)
    async with aiohttp.ClientSession() as session:
        transport = HttpTransport(session, 5.0, cluster[0].auth)
        first = as_request("call-0", transport.put_manifest(to, a_manifest("batched/0"), None))
        await asyncio.wait_for(entered.wait(), 10)  # out, and held there
        offers = [
            as_request(f"call-{i}", transport.put_manifest(to, a_manifest(f"batched/{i}"), None))
            for i in range(1, 5)
        ]
        reads = [
            as_request(f"call-{i}", transport.get_manifest(to, name))
            for i, name in ((5, "batched/read-me"), (6, "batched/none-here"))
        ]
        await asyncio.sleep(0)  # all queued behind the held request
        release.set()
        written = await asyncio.gather(first, *offers)
        found = await asyncio.gather(*reads)
    assert all(write.stored for write in written)
    assert found[0] is not None
    assert found[0].name == "batched/read-me"
    assert found[1] is None
    for i in range(5):
        assert await target.holder.get_manifest(f"batched/{i}") is not None
    ids = {f"call-{i}" for i in range(7)}
    # Two requests: the first alone, then the six that queued behind it (a request's line is
    # logged once its answer is sent)...
    assert (transport.manifest_calls.batches, transport.manifest_calls.calls) == (2, 7)
    await eventually(lambda: requests_served(caplog, target, ids) == 2, what="2 requests")
    # ...and each call in the target's access log under its own request's id (logged before
    # the batch's answer).
    for request_id in sorted(ids):
        assert served(caplog, request_id, BATCH) == {target.id}, request_id


async def test_one_calls_failure_is_its_own(cluster: LocalCluster) -> None:
    target = cluster[1]
    to = Address(target.url, target.id)
    ahead = a_manifest("batched/ahead")
    ahead = Manifest(
        ahead.name,
        Version(int(time.time() * 1000) + 10 * MAX_SKEW_MS, 0, "peer"),
        ahead.layout,
        ahead.etag,
        ahead.content_type,
        ahead.chunks,
    )
    async with aiohttp.ClientSession() as session:
        transport = HttpTransport(session, 5.0, cluster[0].auth)
        outcomes = await asyncio.gather(
            transport.put_manifest(to, a_manifest("batched/fine-1"), None),
            transport.put_manifest(to, ahead, None),
            transport.put_manifest(to, a_manifest("batched/fine-2"), None),
            return_exceptions=True,
        )
    assert isinstance(outcomes[1], InvalidRequest)
    assert all(isinstance(o, ReplicaWrite) and o.stored for o in (outcomes[0], outcomes[2]))
    assert transport.manifest_calls.batches == 2  # the last two went together


async def test_a_peer_without_batches_gets_each_call_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[str] = []

    async def no_such_route(request: web.Request) -> web.Response:
        if request.headers.get(REQUEST_ID_HEADER) == "old-peer":  # not the peers' own calls
            tried.append("old-peer")
        raise web.HTTPNotFound()  # as a release before batches answers: no such route

    monkeypatch.setattr(peer_api, "manifest_calls", no_such_route)
    cluster = LocalCluster(tmp_path)
    try:
        await cluster.start(2)
        target = cluster[1]
        to = Address(target.url, target.id)
        async with aiohttp.ClientSession() as session:
            transport = HttpTransport(session, 5.0, cluster[0].auth)
            written = await asyncio.gather(
                as_request("old-peer", transport.put_manifest(to, a_manifest("old/0"), None)),
                *(transport.put_manifest(to, a_manifest(f"old/{i}"), None) for i in (1, 2)),
            )
            assert all(write.stored for write in written)
            found = await as_request("old-peer", transport.get_manifest(to, "old/1"))
            assert found is not None
            assert found.name == "old/1"
            assert await transport.get_manifest(to, "old/none") is None
        assert tried == ["old-peer"]  # once: later calls went alone at once
    finally:
        await cluster.stop()
