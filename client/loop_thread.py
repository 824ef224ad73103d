"""An event loop on a private thread, so blocking code can call async code.

The sync ``Client`` runs every ``AsyncClient`` call here and blocks for the result. Because
the loop is its own, this works from plain scripts, from threads, and from code that is
itself called by a running loop (through ``asyncio.to_thread``), where ``asyncio.run`` would
refuse. Interrupting the waiting thread (Ctrl-C) cancels the call on the loop.

A waiting thread wakes every ``WAKE_EVERY`` seconds (``_result``): the kernel hands a
signal sent to the process to any of its threads, the C handler that takes it only sets a
flag, and Python raises Ctrl-C's KeyboardInterrupt in the main thread when that thread next
runs; asleep in one long wait for the loop's answer, it never did (Ctrl-C during
``ringstore put -`` was lost in 1 run of 7 on Python 3.11, 1 of 2 on 3.12). (Blocking the
signals in the loop's thread did it too, but threads it starts, and the processes they
start, inherit the mask: a child started from a progress callback ignored Ctrl-C and
SIGTERM.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")
CANCEL_ROUNDS = 10  # rounds of cancelling what is left on the loop when it closes
WAKE_EVERY = 0.2  # seconds between a waiting thread's looks at the signals that came


class LoopThread:
    """A running event loop on a daemon thread, until ``close``."""

    def __init__(self, name: str = "ringstore-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._closing = False
        self._lock = threading.Lock()  # ``_closing`` against calls being submitted
        self._closed_once = threading.Lock()  # one ``close`` at a time
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = "running" if self._thread.is_alive() else "closed"
        return f"LoopThread({self._thread.name!r}, {state})"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def closed(self) -> bool:
        """True once ``close`` has stopped the loop."""
        return self._loop.is_closed()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and block until it is done; return or raise its result.

        Raises RuntimeError if called from the loop's own thread (it would deadlock) or after
        ``close``.
        """
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a sync client call cannot be made from its own loop")
        with self._lock:  # no call is taken once ``close`` has begun
            if self._closing or self.closed:
                coroutine.close()
                raise RuntimeError("this client is closed")
            future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return _result(future)
        except CancelledError:
            if self._closing:
                raise RuntimeError("this client was closed during the call") from None
            raise
        except BaseException:
            future.cancel()  # KeyboardInterrupt in the waiting thread: stop the work too
            raise

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """A blocking iterator over an async iterator that lives on the loop.

        Closing the iterator (or leaving a ``for`` loop early and dropping it) closes the
        async iterator on the loop, so a connection it holds is let go.
        """
        try:
            while True:
                try:
                    item = self.run(_next(items))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None and not self.closed:
                # RuntimeError: still running after an interrupt; its cancellation ends it.
                with contextlib.suppress(RuntimeError):
                    self.run(_await(aclose()))

    def close(self) -> None:
        """Stop the loop, join its thread and close the loop. Idempotent. Calls other
        threads are still waiting on are cancelled first (and raise RuntimeError there):
        stopped with the loop, they would wait for good. The loop's own thread does the
        ending, so ``close`` works from any other thread, one running a loop of its own too
        (a client dropped, and so closed by the garbage collector, in async code)."""
        with self._closed_once:
            if self.closed:
                return
            with self._lock:
                self._closing = True
            _result(asyncio.run_coroutine_threadsafe(self._end(), self._loop))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _end(self) -> None:
        """Cancel what is left on the loop (in rounds: cancelled work may start more), then
        end its async generators and its default executor."""
        this = asyncio.current_task()
        for _ in range(CANCEL_ROUNDS):
            pending = asyncio.all_tasks() - {this}
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._loop.shutdown_asyncgens()
        await self._loop.shutdown_default_executor()


def _result(future: Future[T]) -> T:
    """``future``'s result, waited for in slices of ``WAKE_EVERY`` seconds (the module
    docstring: a signal another thread took is acted on within one)."""
    while True:
        try:
            return future.result(timeout=WAKE_EVERY)
        except FutureTimeout:
            if future.done():  # the work's own TimeoutError (3.11+: the same class)
                return future.result()  # (or it ended just now)


async def _next(items: AsyncIterator[T]) -> T:
    return await items.__anext__()


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable
