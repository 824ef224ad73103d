"""The loop watchdog every cluster test runs under: it must catch a blocked loop, and name
the code that blocked it, and stay quiet otherwise."""

from __future__ import annotations

import asyncio
import gc
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


async def test_a_garbage_collection_pause_is_told_apart_from_blocking_code() -> None:
    def slow_collection(phase: str, info: dict[str, object]) -> None:
        if phase == "start":
            block_the_loop_for(1.5)  # what a full collection of a big test heap looks like

    async with LoopWatchdog(1.0) as watchdog:
        await asyncio.sleep(0.1)
        gc.callbacks.append(slow_collection)  # after the watchdog's: timed as collecting
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(slow_collection)
        await asyncio.sleep(0.1)
        block_the_loop_for(2.5)  # and code blocking right after is still caught
        await asyncio.sleep(0.1)
    assert len(watchdog.gc_pauses) == 1, watchdog
    assert len(watchdog.stalls) == 1, watchdog
    assert "block_the_loop_for" in watchdog.stalls[0]
