"""Calls to one peer coalesced into batches while earlier ones are out: group commit for
requests.

Under load, one coordinator has many small manifest calls in flight to each replica at once
(16 concurrent 4 KiB PUTs on 7 peers: about 7 per replica), each a whole HTTP request on both
sides: a signature, a loopback ``send``, aiohttp's client and server, the middlewares. A
``Coalescer`` lets ``depth`` requests be out to one address; a call that finds them all out
waits in that address's queue, and when one comes back, everything queued by then (up to
``max_calls`` calls and ``max_bytes``) leaves as the next request. A lone call never waits:
with nothing out it leaves at once, so an idle peer's latency is unchanged and a busy one
sends fewer, larger requests (the manifest log then commits the whole batch with one fsync).
This is the batching of Nagle's algorithm (RFC 896) applied per request instead of per
segment, with no timer: only calls that would have queued behind earlier ones are joined.

A batch is sent by a task of its own, so a caller that goes away (cancelled) does not take
the other callers' calls with it: its own call is dropped if it had not left yet, and its
answer ignored if it had. The task runs in the context of the batch's first caller, so the
request carries that caller's request id (``node.tracing``); the calls carry their own. A
failure of the whole request is every call's failure, and that of the calls queued behind it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

C = TypeVar("C")  # a call
R = TypeVar("R")  # its answer
K = TypeVar("K", bound=Hashable)  # where calls go

# The answers to a batch, one per call in its order: a result, or the exception to raise.
Send = Callable[[K, list[C]], Awaitable[list["R | BaseException"]]]


@dataclass
class _Waiting(Generic[C, R]):
    call: C
    size: int
    answer: asyncio.Future[R]
    context: contextvars.Context  # its caller's (a batch runs in its first call's)


@dataclass
class _Lane(Generic[C, R]):
    """The calls queued for one address, and how many requests to it are out."""

    queue: deque[_Waiting[C, R]] = field(default_factory=deque)
    out: int = 0


class Coalescer(Generic[K, C, R]):
    """Calls to an address, sent at most ``depth`` requests at a time, the rest in batches.

    ``send(address, calls)`` makes one request of ``calls`` and returns one outcome per call
    (its result or an exception for that call alone); an exception it raises fails every
    call of the batch and every call then queued for that address. ``size(call)`` is the call's bytes on the wire, for ``max_bytes`` (a
    single call larger than that still leaves, alone).
    """

    def __init__(
        self,
        send: Send[K, C, R],
        size: Callable[[C], int],
        depth: int = 2,
        max_calls: int = 64,
        max_bytes: int = 1 << 20,
    ) -> None:
        if depth < 1 or max_calls < 1:
            raise ValueError("a coalescer sends at least one call, at least one at a time")
        self._send = send
        self._size = size
        self._depth = depth
        self._max_calls = max_calls
        self._max_bytes = max_bytes
        self._lanes: dict[K, _Lane[C, R]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0  # requests sent
        self.calls = 0  # calls they carried

    def __repr__(self) -> str:
        queued = sum(len(lane.queue) for lane in self._lanes.values())
        return f"Coalescer(depth={self._depth}, out={len(self._sending)}, queued={queued})"

    async def call(self, to: K, call: C) -> R:
        """Send ``call`` to ``to`` alone or with others; its result, or raises its failure."""
        lane = self._lanes.setdefault(to, _Lane())
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        lane.queue.append(_Waiting(call, self._size(call), answer, contextvars.copy_context()))
        self._dispatch(to, lane)
        return await answer  # cancelled: dropped from the queue, or its answer ignored

    def _dispatch(self, to: K, lane: _Lane[C, R]) -> None:
        """Send what is queued for ``to`` while fewer than ``depth`` requests are out."""
        while lane.out < self._depth:
            batch = self._next_batch(lane.queue)
            if not batch:
                break
            lane.out += 1
            # In its first caller's context: the request carries that caller's request id.
            task = batch[0].context.run(asyncio.ensure_future, self._run(to, lane, batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        if not lane.out and not lane.queue:
            del self._lanes[to]

    def _next_batch(self, queue: deque[_Waiting[C, R]]) -> list[_Waiting[C, R]]:
        batch: list[_Waiting[C, R]] = []
        size = 0
        while queue and len(batch) < self._max_calls:
            waiting = queue[0]
            if waiting.answer.done():  # its caller went away before it left
                queue.popleft()
                continue
            if batch and size + waiting.size > self._max_bytes:
                break
            batch.append(queue.popleft())
            size += waiting.size
        return batch

    async def _run(self, to: K, lane: _Lane[C, R], batch: list[_Waiting[C, R]]) -> None:
        self.batches += 1
        self.calls += len(batch)
        outcomes: list[R | BaseException] | None = None  # None: cancelled (the loop closes)
        try:
            outcomes = list(await self._send(to, [waiting.call for waiting in batch]))
            if len(outcomes) != len(batch):
                wrong = RuntimeError(f"{len(outcomes)} answers to {len(batch)} calls")
                outcomes = [wrong] * len(batch)
        except Exception as exc:  # the request failed: so did each of its calls...
            # ...and each call queued behind it, at once: it would go to the same peer, and
            # wait out its own timeout there after the first (a hung peer would cost twice).
            batch.extend(lane.queue)
            lane.queue.clear()
            outcomes = [exc] * len(batch)
        finally:
            lane.out -= 1
            for at, waiting in enumerate(batch):
                if waiting.answer.done():  # its caller went away
                    continue
                if outcomes is None:
                    waiting.answer.cancel()
                    continue
                outcome = outcomes[at]
                if isinstance(outcome, BaseException):
                    waiting.answer.set_exception(outcome)
                else:
                    waiting.answer.set_result(outcome)
            self._dispatch(to, lane)
