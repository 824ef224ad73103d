"""Waiting for a condition: poll with a deadline, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    timeout: float = 15.0,
    what: str = "",
    interval: float = 0.02,
) -> None:
    """Poll ``check`` every ``interval`` seconds until it is true; raise AssertionError (a
    failed test) if ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(interval)


async def spin(turns: int = 3) -> None:
    """Let the event loop run ``turns`` rounds of ready callbacks."""
    for _ in range(turns):
        await asyncio.sleep(0)
