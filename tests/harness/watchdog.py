"""A watchdog that catches a blocked event loop and names the code that blocked it.

The loop beats every ``TICK`` seconds; a thread watches the beats. When the loop misses them
for ``limit`` seconds, one step of it (a callback, a coroutine step: a disk write, a big
hash, a ring build) is holding it, and the thread records where the loop's thread is at that
moment. Unlike asyncio's debug mode it costs nothing measurable: debug mode made the
in-process suite three to four times slower.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from types import TracebackType

TICK = 0.05
NAME = "loop-watchdog"  # of its task and its thread, for tests that count tasks and threads


class LoopWatchdog:
    """``async with LoopWatchdog(limit) as dog``: ``dog.stalls`` lists each stall seen
    (how long, and the loop thread's stack while it lasted)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.stalls: list[str] = []
        self.worst = 0.0
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._beating: asyncio.Task[None] | None = None
        self._watcher = threading.Thread(target=self._watch, name=NAME, daemon=True)

    def __repr__(self) -> str:
        return (
            f"LoopWatchdog(limit={self.limit}s, worst={self.worst:.3f}s, stalls={len(self.stalls)})"
        )

    async def __aenter__(self) -> LoopWatchdog:
        self._loop_thread = threading.get_ident()
        self._beating = asyncio.get_running_loop().create_task(self._beat_forever(), name=NAME)
        self._watcher.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._beating is not None
        self._beating.cancel()
        await asyncio.wait({self._beating})
        self._stop.set()
        await asyncio.to_thread(self._watcher.join)

    async def _beat_forever(self) -> None:
        while True:
            before = time.monotonic()
            self._beat = before
            await asyncio.sleep(TICK)
            self.worst = max(self.worst, time.monotonic() - before - TICK)

    def _watch(self) -> None:
        reported = 0.0  # the beat a stall was already recorded for
        while not self._stop.wait(TICK):
            beat = self._beat
            late = time.monotonic() - beat
            if late > self.limit and beat != reported:
                reported = beat
                frame = sys._current_frames().get(self._loop_thread)
                where = "".join(traceback.format_stack(frame)) if frame else "(no frame)"
                self.stalls.append(f"the event loop was blocked for over {late:.2f}s in:\n{where}")
