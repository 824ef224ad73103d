"""The Coalescer: calls to one address leave at once while fewer than ``depth`` requests are
out, the rest leave together when one comes back; each call gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from node.cluster.coalescing import Coalescer
from tests.harness.polling import eventually


class Remote:
    """A ``send`` that records each request and holds it until the test lets it answer."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[str]]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def send(self, to: str, calls: list[str]) -> list[str | BaseException]:
        self.requests.append((to, list(calls)))
        await self.release.wait()
        if "down" in calls:
            raise ConnectionError("no route to the peer")
        return [ValueError(call) if call.startswith("bad") else call.upper() for call in calls]


def coalescer(remote: Remote, depth: int = 1, **limits: int) -> Coalescer[str, str, str]:
    return Coalescer(remote.send, len, depth, **limits)


async def test_a_lone_call_leaves_at_once_and_alone() -> None:
    remote = Remote()
    calls = coalescer(remote)
    assert await calls.call("a", "x") == "X"
    assert await calls.call("a", "y") == "Y"
    assert remote.requests == [("a", ["x"]), ("a", ["y"])]


async def test_calls_that_find_the_requests_out_leave_together_each_with_its_answer() -> None:
    remote = Remote()
    remote.release.clear()
    calls = coalescer(remote, depth=2)
    first = [asyncio.ensure_future(calls.call("a", name)) for name in ("p", "q")]
    await eventually(lambda: len(remote.requests) == 2, what="two requests out")
    queued = [asyncio.ensure_future(calls.call("a", f"c{i}")) for i in range(5)]
    other = asyncio.ensure_future(calls.call("b", "elsewhere"))  # its own lane: not held back
    await eventually(lambda: len(remote.requests) == 3, what="the other address's request")
    assert remote.requests[2] == ("b", ["elsewhere"])
    remote.release.set()
    assert await asyncio.gather(*first, *queued, other) == [
        "P",
        "Q",
        *(f"C{i}" for i in range(5)),
        "ELSEWHERE",
    ]
    assert remote.requests[3] == ("a", [f"c{i}" for i in range(5)])
    assert len(remote.requests) == 4
    assert (calls.batches, calls.calls) == (4, 8)


async def test_a_call_that_fails_fails_alone_and_a_failed_request_fails_them_all() -> None:
    remote = Remote()
    remote.release.clear()
    calls = coalescer(remote)
    held = asyncio.ensure_future(calls.call("a", "first"))
    await eventually(lambda: len(remote.requests) == 1, what="the first request out")
    batch = [asyncio.ensure_future(calls.call("a", name)) for name in ("good", "bad", "fine")]
    remote.release.set()
    outcomes = await asyncio.gather(held, *batch, return_exceptions=True)
    assert outcomes[:2] == ["FIRST", "GOOD"]
    assert outcomes[3] == "FINE"
    assert isinstance(outcomes[2], ValueError)

    remote.release.clear()
    held = asyncio.ensure_future(calls.call("a", "first"))
    await eventually(lambda: len(remote.requests) == 3, what="the next request out")
    batch = [asyncio.ensure_future(calls.call("a", name)) for name in ("down", "innocent")]
    remote.release.set()
    outcomes = await asyncio.gather(held, *batch, return_exceptions=True)
    assert outcomes[0] == "FIRST"
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes[1:])


async def test_a_failed_request_fails_the_calls_queued_behind_it_at_once() -> None:
    """They would go to the same peer next: a hung one would make them wait out a second
    timeout after the first."""
    remote = Remote()
    remote.release.clear()
    calls = coalescer(remote)
    down = asyncio.ensure_future(calls.call("a", "down"))
    await eventually(lambda: len(remote.requests) == 1, what="the request out")
    queued = [asyncio.ensure_future(calls.call("a", name)) for name in ("q1", "q2")]
    remote.release.set()
    outcomes = await asyncio.gather(down, *queued, return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
    assert remote.requests == [("a", ["down"])]
    assert await calls.call("a", "later") == "LATER"  # the next call tries again


async def test_a_caller_that_goes_away_takes_only_its_own_call() -> None:
    remote = Remote()
    remote.release.clear()
    calls = coalescer(remote)
    out = asyncio.ensure_future(calls.call("a", "out"))
    await eventually(lambda: len(remote.requests) == 1, what="a request out")
    gone = asyncio.ensure_future(calls.call("a", "gone"))
    stays = asyncio.ensure_future(calls.call("a", "stays"))
    await asyncio.sleep(0)  # both queued
    gone.cancel()
    out.cancel()  # its request goes on: the callers queued behind it are not cancelled
    remote.release.set()
    assert await stays == "STAYS"
    assert remote.requests == [("a", ["out"]), ("a", ["stays"])]  # the gone call never left
    assert gone.cancelled()
    assert out.cancelled()
    assert not calls._lanes  # nothing queued or out: the lane is gone


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"max_calls": 2}, [["aa", "bb"], ["cc", "dd"], ["eeeeeeee"]]),
        ({"max_bytes": 5}, [["aa", "bb"], ["cc", "dd"], ["eeeeeeee"]]),
    ],
)
async def test_a_batch_is_bounded_in_calls_and_bytes(
    limits: dict[str, int], expected: list[list[str]]
) -> None:
    remote = Remote()
    remote.release.clear()
    calls = coalescer(remote, **limits)
    first = asyncio.ensure_future(calls.call("a", "x"))
    await eventually(lambda: len(remote.requests) == 1, what="a request out")
    rest = [asyncio.ensure_future(calls.call("a", c)) for c in ("aa", "bb", "cc", "dd", "eeeeeeee")]
    remote.release.set()
    await asyncio.gather(first, *rest)
    assert [batch for _, batch in remote.requests[1:]] == expected  # one too large goes alone


def test_a_coalescer_sends_something() -> None:
    with pytest.raises(ValueError, match="at least one"):
        coalescer(Remote(), depth=0)
