"""A watchdog that catches a blocked event loop and names the code that blocked it.

The loop beats every ``TICK`` seconds; a thread watches the beats. When the loop misses them
for ``limit`` seconds, one step of it (a callback, a coroutine step: a disk write, a big
hash, a ring build) is holding it, and the thread records where the loop's thread is at that
moment. Unlike asyncio's debug mode it costs nothing measurable: debug mode made the
in-process suite three to four times slower.

A stall the garbage collector spent (a full collection of a test process's heap, with its
many clusters' objects, took 1.47 s once on a loaded CI machine) is not code blocking the
loop: the watchdog times collections with ``gc.callbacks`` and files a stall that is mostly
collection under ``gc_pauses`` instead of ``stalls``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import Any

TICK = 0.05
NAME = "loop-watchdog"  # of its task and its thread, for tests that count tasks and threads


class LoopWatchdog:
    """``async with LoopWatchdog(limit) as dog``: ``dog.stalls`` lists each stall seen
    (how long, and the loop thread's stack while it lasted); ``dog.gc_pauses`` lists the
    stalls the garbage collector spent."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.stalls: list[str] = []
        self.gc_pauses: list[str] = []
        self.worst = 0.0
        self._beat = time.monotonic()
        self._gc_seconds = 0.0  # spent in finished collections
        self._gc_started: float | None = None  # when the collection under way started
        self._gc_at_beat = 0.0
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._beating: asyncio.Task[None] | None = None
        self._watcher = threading.Thread(target=self._watch, name=NAME, daemon=True)

    def __repr__(self) -> str:
        return (
            f"LoopWatchdog(limit={self.limit}s, worst={self.worst:.3f}s, stalls={len(self.stalls)},"
            f" gc_pauses={len(self.gc_pauses)})"
        )

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase == "start":
            self._gc_started = now
        elif self._gc_started is not None:
            self._gc_seconds += now - self._gc_started
            self._gc_started = None

    def _gc_time(self) -> float:
        started = self._gc_started
        return self._gc_seconds + (time.monotonic() - started if started is not None else 0.0)

    async def __aenter__(self) -> LoopWatchdog:
        self._loop_thread = threading.get_ident()
        gc.callbacks.append(self._on_gc)
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
        gc.callbacks.remove(self._on_gc)

    async def _beat_forever(self) -> None:
        while True:
            before = time.monotonic()
            self._gc_at_beat = self._gc_time()
            self._beat = before
            await asyncio.sleep(TICK)
            self.worst = max(self.worst, time.monotonic() - before - TICK)

    def _watch(self) -> None:
        reported = 0.0  # the beat a stall was already recorded for
        collected = 0.0  # the beat a collection's pause was already recorded for
        while not self._stop.wait(TICK):
            beat = self._beat
            late = time.monotonic() - beat
            if late <= self.limit or beat == reported:
                continue
            collecting = self._gc_time() - self._gc_at_beat
            if late - collecting <= self.limit:  # the collector's, so far
                if beat != collected:
                    collected = beat
                    self.gc_pauses.append(f"{late:.2f}s, {collecting:.2f}s of it collecting")
            else:
                reported = beat
                frame = sys._current_frames().get(self._loop_thread)
                where = "".join(traceback.format_stack(frame)) if frame else "(no frame)"
                self.stalls.append(f"the event loop was blocked for over {late:.2f}s in:\n{where}")
