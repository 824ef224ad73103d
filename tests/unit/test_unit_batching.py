"""The Batcher: calls in a lane leave at once while fewer than ``max_out`` requests are out,
the rest leave together when one comes back; each call gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.cluster.batching import Batcher
from tests.harness.polling import eventually


class Echo(Exception):
    """What the batch's other calls get when its request fails."""


class Remote:
    """A ``send`` that records each request and holds it until the test lets it answer."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[str]]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def send(self, lane: str, calls: list[str]) -> list[str | Exception]:
        self.requests.append((lane, list(calls)))
        await self.release.wait()
        if "hung" in calls:
            raise TimeoutError("no answer in time")  # repeats: the queue fails with it
        if "reset" in calls:
            raise ConnectionResetError("connection reset")  # may pass: the queue goes next
        return [ValueError(call) if call.startswith("bad") else call.upper() for call in calls]


def batcher(remote: Remote, max_out: int = 1, **limits: Any) -> Batcher[str, str, str]:
    settings = {"max_calls": 64, "max_bytes": 1 << 20, **limits}
    return Batcher(
        remote.send,
        len,
        max_out=max_out,
        echo=lambda exc: Echo(str(exc)),
        fails_queue=lambda exc: isinstance(exc, TimeoutError),
        **settings,
    )


async def out_and_queued(
    remote: Remote, calls: Batcher[str, str, str], out: int, queued: int
) -> None:
    await eventually(
        lambda: len(remote.requests) == out and calls.queued("a") == queued,
        what=f"{out} requests out, {queued} calls queued",
    )


async def test_a_lone_call_leaves_at_once_and_alone() -> None:
    remote = Remote()
    calls = batcher(remote)
    assert await calls.call("a", "x") == "X"
    assert await calls.call("a", "y") == "Y"
    assert remote.requests == [("a", ["x"]), ("a", ["y"])]


async def test_calls_that_find_the_requests_out_leave_together_each_with_its_answer() -> None:
    remote = Remote()
    remote.release.clear()
    calls = batcher(remote, max_out=2)
    first = [asyncio.ensure_future(calls.call("a", "p"))]
    await out_and_queued(remote, calls, 1, 0)
    first.append(asyncio.ensure_future(calls.call("a", "q")))  # one out: q leaves too
    await out_and_queued(remote, calls, 2, 0)
    queued = [asyncio.ensure_future(calls.call("a", f"c{i}")) for i in range(5)]
    other = asyncio.ensure_future(calls.call("b", "elsewhere"))  # its own lane: not held back
    await out_and_queued(remote, calls, 3, 5)
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
    assert (calls.counts.requests, calls.counts.calls) == (4, 8)


async def test_calls_made_before_a_request_leaves_leave_in_it() -> None:
    """Calls made in the loop's same turn (requests handled together) are one request, at
    no cost to the first: its request would not have left before the next turn anyway."""
    remote = Remote()
    calls = batcher(remote)
    together = [asyncio.ensure_future(calls.call("a", name)) for name in ("x", "y", "z")]
    assert await asyncio.gather(*together) == ["X", "Y", "Z"]
    assert remote.requests == [("a", ["x", "y", "z"])]
    assert (calls.counts.requests, calls.counts.calls) == (1, 3)


async def test_a_request_whose_callers_all_went_away_sends_nothing() -> None:
    remote = Remote()
    calls = batcher(remote)
    gone = asyncio.ensure_future(calls.call("a", "gone"))
    await asyncio.sleep(0)  # its call is queued, its request started, not yet run
    assert (calls.queued("a"), remote.requests) == (1, [])
    gone.cancel()
    await eventually(lambda: calls.queued("a") == 0, what="the request to drop the call")
    assert remote.requests == []
    assert await calls.call("a", "later") == "LATER"  # the lane works on
    assert remote.requests == [("a", ["later"])]


async def test_closing_before_a_started_request_runs_fails_its_calls() -> None:
    remote = Remote()
    calls = batcher(remote)
    waiting = asyncio.ensure_future(calls.call("a", "x"))
    await asyncio.sleep(0)  # queued, its request started, not yet run
    assert (calls.queued("a"), remote.requests) == (1, [])
    await calls.close(RuntimeError("stopping"))
    with pytest.raises(Echo, match="stopping"):
        await asyncio.wait_for(waiting, 5)  # answered, never left waiting
    assert remote.requests == []


def held(**limits: Any) -> tuple[Remote, Batcher[str, str, str]]:
    """A batcher whose remote holds every request until the test releases it."""
    remote = Remote()
    remote.release.clear()
    return remote, batcher(remote, **limits)


async def one_out_then(
    remote: Remote, calls: Batcher[str, str, str], first: str, *queued: str
) -> list[asyncio.Future[str]]:
    """Send ``first`` (held out), then queue ``queued`` behind it: their calls, in order."""
    sent = [asyncio.ensure_future(calls.call("a", first))]
    await out_and_queued(remote, calls, 1, 0)
    sent += [asyncio.ensure_future(calls.call("a", name)) for name in queued]
    await out_and_queued(remote, calls, 1, len(queued))
    return sent


async def test_a_call_that_fails_fails_alone() -> None:
    remote, calls = held()
    sent = await one_out_then(remote, calls, "first", "good", "bad", "fine")
    remote.release.set()
    outcomes = await asyncio.gather(*sent, return_exceptions=True)
    assert outcomes[:2] == ["FIRST", "GOOD"]
    assert outcomes[3] == "FINE"
    assert isinstance(outcomes[2], ValueError)


async def test_a_failed_request_fails_its_calls_the_first_with_its_error_the_rest_an_echo() -> None:
    """One failed request is one failure (the caller counts it once, ``Peers``): the first
    call gets the exception raised, each other one an exception of its own."""
    remote, calls = held()
    sent = await one_out_then(remote, calls, "first", "reset", "x", "y")
    remote.release.set()
    outcomes = await asyncio.gather(*sent, return_exceptions=True)
    assert outcomes[0] == "FIRST"
    assert isinstance(outcomes[1], ConnectionResetError)
    assert all(isinstance(outcome, Echo) for outcome in outcomes[2:])
    assert outcomes[2] is not outcomes[3]


async def test_a_timeout_fails_the_calls_queued_behind_it_at_once() -> None:
    """They would go to the same hung peer next, and wait out a second timeout there."""
    remote, calls = held()
    sent = await one_out_then(remote, calls, "hung", "q1", "q2")
    remote.release.set()
    outcomes = await asyncio.gather(*sent, return_exceptions=True)
    assert isinstance(outcomes[0], TimeoutError)
    assert all(isinstance(outcome, Echo) for outcome in outcomes[1:])
    assert remote.requests == [("a", ["hung"])]  # the queued calls never left
    assert await calls.call("a", "later") == "LATER"  # the next call tries again


async def test_a_failure_that_may_pass_sends_the_queued_calls_next() -> None:
    remote, calls = held()
    reset, *queued = await one_out_then(remote, calls, "reset", "q1", "q2")
    remote.release.set()
    with pytest.raises(ConnectionResetError):
        await reset
    assert await asyncio.gather(*queued) == ["Q1", "Q2"]
    assert remote.requests == [("a", ["reset"]), ("a", ["q1", "q2"])]


async def test_a_caller_that_goes_away_takes_only_its_own_call() -> None:
    remote, calls = held()
    out, gone, stays = await one_out_then(remote, calls, "out", "gone", "stays")
    gone.cancel()
    out.cancel()  # its request goes on: the callers queued behind it are not cancelled
    remote.release.set()
    assert await stays == "STAYS"
    assert remote.requests == [("a", ["out"]), ("a", ["stays"])]  # the gone call never left
    assert gone.cancelled()
    assert out.cancelled()
    assert calls.queued("a") == 0


async def test_closing_fails_the_calls_out_and_queued_and_refuses_new_ones() -> None:
    remote, calls = held()
    sent = await one_out_then(remote, calls, "out", "queued")
    await calls.close(RuntimeError("stopping"))
    for call in sent:
        with pytest.raises(Echo, match="stopping"):
            await call
    with pytest.raises(Echo, match="stopping"):
        await calls.call("a", "late")
    assert len(remote.requests) == 1


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
    remote, calls = held(**limits)
    sent = await one_out_then(remote, calls, "x", "aa", "bb", "cc", "dd", "eeeeeeee")
    remote.release.set()
    await asyncio.gather(*sent)
    assert [batch for _, batch in remote.requests[1:]] == expected  # one too large goes alone


def test_a_batcher_sends_something() -> None:
    with pytest.raises(ValueError, match="at least one"):
        batcher(Remote(), max_out=0)
