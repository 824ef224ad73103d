"""The loop watchdog every cluster test runs under: it must catch a blocked loop, and name
the code that blocked it, and stay quiet otherwise."""

from __future__ import annotations

import asyncio
import time

from tests.harness.watchdog import LoopWatchdog


def block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # what a disk write or a big hash on the event loop looks like


async def test_a_blocking_call_on_the_loop_is_caught_and_named() -> None:
    async with LoopWatchdog(1.0) as watchdog:
        await asyncio.sleep(0.1)
        block_the_loop_for(2.5)  # margins wide enough for a loaded 2-core machine
        await asyncio.sleep(0.1)
    assert len(watchdog.stalls) == 1
    assert "block_the_loop_for" in watchdog.stalls[0]
    assert watchdog.worst >= 2.0


async def test_awaiting_never_counts_as_blocking() -> None:
    async with LoopWatchdog(1.0) as watchdog:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(block_the_loop_for, 1.5)
    assert watchdog.stalls == []
