"""Waiting with a time limit without ever losing a cancellation.

``asyncio.wait_for`` on Python 3.10 and 3.11 can swallow the cancellation of the task that
awaits it when the inner awaitable finishes at the same moment (fixed in 3.12). A background
loop that loses its cancellation never stops, and a peer shutting down waits for it forever
(seen in CI on 3.11). These helpers are built on ``asyncio.wait``, which never does that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Expired(asyncio.TimeoutError):
    """``within``'s time ran out: not a timeout the awaited work raised itself."""


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """Await ``awaitable`` for at most ``timeout`` seconds; raises Expired (an
    asyncio.TimeoutError) when they pass first."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        # Not `await task` under suppress(CancelledError): that would also swallow a
        # cancellation of *this* task arriving meanwhile, the very bug this module avoids.
        await asyncio.wait({task})
        raise Expired
    return task.result()


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; return whether it was set."""
    try:
        await within(event.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


def consume(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned task's outcome as seen, so asyncio does not log it (a done callback
    for tasks cancelled or left behind on purpose)."""
    if not task.cancelled():
        task.exception()


class Pacer:
    """Spaces work out so that it averages at most ``rate`` bytes per second (0: no limit)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._free_at = 0.0

    def __repr__(self) -> str:
        return f"Pacer(rate={self._rate})"

    async def pace(self, size: int) -> None:
        """Wait until ``size`` more bytes fit within the rate."""
        if self._rate <= 0:
            return
        now = self._clock()
        start = max(now, self._free_at)
        self._free_at = start + size / self._rate
        if start > now:
            await asyncio.sleep(start - now)
