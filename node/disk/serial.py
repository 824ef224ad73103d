"""A thread of its own for blocking calls that one caller makes one after another.

The manifest log's group commit (``node.disk.manifest_store``) hands each batch to a thread
to write and sync, one batch at a time. ``asyncio.to_thread`` would give every batch to the
loop's pool: a ``concurrent.futures.Future`` chained to an asyncio one, a copy of the
context, and an idle worker woken through the pool's semaphore and queue. A thread that
serves one caller needs none of it: it waits on a ``queue.SimpleQueue`` and hands each
outcome back with ``call_soon_threadsafe``.

A hop is still two wake-ups, one each way, and on these VMs they cost far more than the
call itself (more than half of it goes when the process is pinned to one core, where no
wake-up crosses cores). ``python bench/hops.py``, a
call of nothing, one at a time, 3 rounds alternated on these 2-core VMs, twice: CPU per
hop 208-236 µs through ``to_thread``, 142-158 µs through a ``SerialThread`` (pinned to
one core: 98-137 and 58-85 µs). On the loop it would be 4-7 µs, but a sync may take
milliseconds, or seconds on a struggling disk, and the loop must never wait for one. The
store alone (``python bench/manifest_log.py --writers 1,16``, run from the tree before
and after, 3 rounds alternated): CPU per replica write 135-144 → 127-132 µs with 16
writers, 782-900 → 731-819 µs with one.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

IDLE = 5.0  # seconds a thread waits for a call before it ends (the next call starts one)

_Call = tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]


class _Worker:
    """One thread and its queue of calls (None: end)."""

    def __init__(self, name: str, serve: Callable[[_Worker], None]) -> None:
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=serve, args=(self,), name=name, daemon=True)


class SerialThread:
    """Runs ``await thread.run(fn, *args)`` calls in one daemon thread, in their order.

    A call's exception is raised to its caller. A caller that is cancelled does not stop
    its call (a thread cannot be interrupted): the call runs, and its outcome is dropped,
    as with ``asyncio.to_thread``. The thread starts with a call and ends after ``idle``
    seconds without one (a store that is dropped unclosed leaves no thread behind) or at
    ``stop``, after the calls queued before it. Unlike the loop's pool, nothing joins it
    when the loop ends: close what uses it first (``ManifestStore.close``).
    """

    def __init__(self, name: str, idle: float = IDLE) -> None:
        self._name = name
        self._idle = idle
        self._lock = threading.Lock()  # the loop's thread and the worker's both look
        self._worker: _Worker | None = None
        self._ending: list[_Worker] = []  # told to end by stop, maybe not yet ended

    def __repr__(self) -> str:
        return f"SerialThread({self._name!r}, running={self._worker is not None})"

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread, after the calls queued before it; its result."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            worker = self._worker
            if worker is None:
                worker = _Worker(self._name, self._serve)
                worker.thread.start()  # may fail (no threads left): then nothing is queued
                self._worker = worker
            worker.calls.put((answer, fn, args))
        return await answer

    async def stop(self) -> None:
        """End the thread once the calls queued so far are done, and wait for it (and for
        a thread an earlier ``stop`` is still waiting for). A call made meanwhile starts a
        new thread, which may run beside the calls queued before ``stop``."""
        with self._lock:
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.calls.put(None)
                self._ending.append(worker)
        while self._ending:
            ending = self._ending[0]
            await asyncio.to_thread(ending.thread.join)
            if self._ending and self._ending[0] is ending:  # (another stop may have)
                self._ending.pop(0)

    def _serve(self, worker: _Worker) -> None:
        while True:
            try:
                call = worker.calls.get(timeout=self._idle)
            except queue.Empty:
                with self._lock:  # no call can be queued for this worker meanwhile
                    if worker.calls.empty():
                        if self._worker is worker:
                            self._worker = None
                        return
                continue
            if call is None:
                return
            _run_one(*call)
            del call  # its arguments and result go now, not with the next call


def _run_one(answer: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run one call and hand its outcome to its caller's loop."""
    try:
        outcome: tuple[Any, BaseException | None] = (fn(*args), None)
    except BaseException as exc:  # handed to the caller, whatever it is
        outcome = (None, exc)
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        answer.get_loop().call_soon_threadsafe(_settle, answer, *outcome)
    del outcome  # an exception's traceback holds this frame: no cycle through it


def _settle(answer: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if answer.done():  # its caller was cancelled
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)
