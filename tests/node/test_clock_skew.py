"""A member whose clock is wrong, through real in-process peers (issue 11, item 4).

One peer started an hour fast once made every later write on every peer carry a
``Last-Modified`` an hour in the future, later than the answer's own ``Date``. Here a peer
is given a skewed wall clock (``LocalPeer``'s ``wall_ms``: its versions, its gossip and its
answers' ``Date``; request signing keeps the system clock) and the clock policy of
``node.model.version`` is checked end to end: past the hard limit the member is refused
and followed by no one, between the limits it is followed, and either way it is reported
``skewed`` in ``GET /cluster`` and no answer dates ``Last-Modified`` after ``Date``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.model.version import MAX_OFFSET_MS, MAX_SKEW_MS, Version, system_wall_ms
from tests.harness import LocalCluster, LocalPeer, eventually, put_file

HOUR_MS = 3_600_000
BETWEEN_MS = 20_000  # past the max offset (0.5 s), within the hard limit (30 s)
BLOCK = 4096
IN_STEP = 5_000  # how far an in-step peer's versions may be from the system clock here
assert MAX_OFFSET_MS < BETWEEN_MS < MAX_SKEW_MS < HOUR_MS


def fast_by(ms: int) -> Callable[[], int]:
    return lambda: system_wall_ms() + ms


@pytest.fixture
async def six(tmp_path: Path, loop_guard: None) -> AsyncIterator[LocalCluster]:
    """Six peers in step; each test adds a seventh with a skewed clock."""
    cluster = LocalCluster(tmp_path, block_size=BLOCK)
    try:
        await cluster.start(6)
        yield cluster
    finally:
        await cluster.stop()


def measured(peer: LocalPeer, other: LocalPeer, offset_ms: int) -> bool:
    """``peer`` has measured ``other``'s clock about ``offset_ms`` off and marked it skewed."""
    if other.id not in {m.id for m in peer.membership.members()}:
        return False
    clock = peer.membership.liveness(other.id).clock
    return clock is not None and clock.skewed and abs(clock.offset_ms - offset_ms) < 5_000


async def cluster_view(http: aiohttp.ClientSession, peer: LocalPeer) -> dict[str, Any]:
    async with http.get(f"{peer.url}/cluster") as response:
        assert response.status == 200, await response.text()
        view: dict[str, Any] = await response.json()
        return view


async def dates(
    http: aiohttp.ClientSession, method: str, url: str, served: bool = True
) -> tuple[float, float] | None:
    """``(Last-Modified, Date)`` of an answer, in seconds; with ``served`` the test fails
    unless it is a 200 with both, else None stands for an answer without Last-Modified."""
    async with http.request(method, url) as response:
        if served:
            assert response.status == 200, await response.text()
        await response.read()
        if "Last-Modified" not in response.headers and not served:
            return None
        modified = parsedate_to_datetime(response.headers["Last-Modified"]).timestamp()
        return modified, parsedate_to_datetime(response.headers["Date"]).timestamp()


def in_order(answer: tuple[float, float] | None) -> bool:
    return answer is None or answer[0] <= answer[1]


async def test_a_peer_an_hour_fast_is_refused_shown_skewed_and_drags_no_version(
    six: LocalCluster, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    in_step = list(six.peers)
    with caplog.at_level(logging.WARNING, logger="node.cluster.gossip"):
        fast = await six.add_peer(wall_ms=fast_by(HOUR_MS))
        # Every peer in step measures it an hour ahead, refuses its gossip, sees it down.
        await eventually(
            lambda: all(measured(p, fast, HOUR_MS) for p in in_step), what="the skew measured"
        )
        await six.wait_down(fast)
    assert any("past the 0.5s the cluster allows" in r.getMessage() for r in caplog.records)

    view = await cluster_view(http, in_step[0])
    assert view["max_clock_offset_ms"] == MAX_OFFSET_MS
    peers = {p["id"]: p for p in view["peers"]}
    assert peers[fast.id]["skewed"] is True
    assert peers[fast.id]["state"] == "down"
    assert abs(peers[fast.id]["clock_offset_ms"] - HOUR_MS) < 5_000
    for peer in in_step:
        assert peers[peer.id]["skewed"] is False
        assert abs(peers[peer.id]["clock_offset_ms"]) < IN_STEP

    # Writes through every peer in step are dated now, not an hour ahead; the fast peer's
    # own write is refused by the peers it would store on.
    names = []
    for i, peer in enumerate(in_step):
        names.append(f"skew/hour-{i}")
        reply = await put_file(http, peer.url, names[-1], uuid.uuid4().bytes * 100)
        assert Version.parse(reply["version"]).wall_ms - system_wall_ms() < IN_STEP
    async with http.put(f"{fast.url}/files/skew/from-fast", data=b"x" * 1000) as response:
        assert response.status != 201, await response.text()
    for peer in in_step:
        assert peer.clock.now().wall_ms - system_wall_ms() < IN_STEP

    # No answer dates Last-Modified after its Date, whichever clock the answering peer has
    # (the fast one sees every other peer down: it cannot read, and says so).
    for name in names:
        for peer in [*in_step, fast]:
            for method in ("GET", "HEAD"):
                url = f"{peer.url}/files/{name}"
                assert in_order(await dates(http, method, url, peer is not fast)), (url, method)

    # And when it stops, nothing of it remains in the others' clocks.
    await fast.stop()
    reply = await put_file(http, in_step[1].url, "skew/after", b"after")
    assert Version.parse(reply["version"]).wall_ms - system_wall_ms() < IN_STEP


async def test_a_peer_seconds_fast_is_followed_shown_skewed_and_never_dates_the_future(
    six: LocalCluster, http: aiohttp.ClientSession
) -> None:
    in_step = list(six.peers)
    fast = await six.add_peer(wall_ms=fast_by(BETWEEN_MS))
    await six.wait_converged()  # within the hard limit it is a member like any other
    # (and it places by a ring of all seven, which it builds shortly after learning them)
    await eventually(lambda: len(fast.membership.ring) == 7, what="the fast peer's ring")
    await eventually(
        lambda: all(measured(p, fast, BETWEEN_MS) for p in in_step), what="the skew measured"
    )
    view = await cluster_view(http, in_step[2])
    peers = {p["id"]: p for p in view["peers"]}
    assert (peers[fast.id]["state"], peers[fast.id]["skewed"]) == ("up", True)
    assert not any(peers[p.id]["skewed"] for p in in_step)

    # Its versions are followed, so a write after one of its writes is newer (causal order).
    first = Version.parse((await put_file(http, fast.url, "skew/between", b"one"))["version"])
    assert first.wall_ms - system_wall_ms() > BETWEEN_MS - IN_STEP  # dated by its clock
    # A version in the future of the peers in step: their answers date Last-Modified no
    # later than their Date (here: exactly their Date), the fast peer's by its own clock.
    for peer in [*in_step, fast]:
        answer = await dates(http, "HEAD", f"{peer.url}/files/skew/between")
        assert answer is not None, peer
        assert in_order(answer), peer
        if peer is not fast:
            assert answer[0] == answer[1], peer  # brought down to Date, not left in the future
    await eventually(
        lambda: all(p.clock.now() > first for p in in_step), what="every clock past it"
    )
    second = Version.parse(
        (await put_file(http, in_step[3].url, "skew/between", b"two"))["version"]
    )
    assert second > first
    for peer in in_step:
        assert in_order(await dates(http, "GET", f"{peer.url}/files/skew/between")), peer
