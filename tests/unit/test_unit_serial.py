"""``SerialThread``: the manifest log's own thread (``node.disk.serial``)."""

from __future__ import annotations

import asyncio
import threading
import weakref

import pytest

from node.disk.serial import SerialThread
from tests.harness.polling import eventually, spin


def alive(name: str) -> bool:
    """Whether a thread of that name runs in this process."""
    return name in {t.name for t in threading.enumerate()}


async def test_calls_run_in_one_thread_in_their_order_and_answer_their_caller() -> None:
    thread = SerialThread("test")
    ran: list[tuple[int, str]] = []

    def call(i: int) -> int:
        ran.append((i, threading.current_thread().name))
        return i * i

    try:
        answers = await asyncio.gather(*(thread.run(call, i) for i in range(50)))
    finally:
        await thread.stop()
    assert answers == [i * i for i in range(50)]
    assert ran == [(i, "test") for i in range(50)]


async def test_an_error_is_raised_to_its_caller_alone() -> None:
    thread = SerialThread("test")

    def fail() -> None:
        raise OSError(5, "Input/output error")

    try:
        with pytest.raises(OSError, match="Input/output"):
            await thread.run(fail)
        assert await thread.run(len, "after") == 5
    finally:
        await thread.stop()


async def test_a_cancelled_caller_leaves_its_call_to_finish_and_the_next_to_run() -> None:
    thread = SerialThread("test")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "dropped"

    try:
        waiting = asyncio.ensure_future(thread.run(slow))
        assert await asyncio.to_thread(started.wait, 10)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not finished.is_set()
        release.set()
        assert await thread.run(str, "next") == "next"  # queued behind the slow one
        assert finished.is_set()
    finally:
        release.set()
        await thread.stop()


async def test_stop_finishes_the_calls_queued_and_ends_the_thread() -> None:
    thread = SerialThread("serial-stop-test")
    release = threading.Event()
    try:
        first = asyncio.ensure_future(thread.run(release.wait, 10))
        second = asyncio.ensure_future(thread.run(str, "queued"))
        await spin()  # both queued
        release.set()
        await thread.stop()
        assert await first is True
        assert await second == "queued"
        assert not alive("serial-stop-test")
        assert await thread.run(str, "again") == "again"  # a new thread
    finally:
        await thread.stop()
    assert not alive("serial-stop-test")


async def test_an_idle_thread_ends_and_the_next_call_starts_another() -> None:
    thread = SerialThread("serial-idle-test", idle=0.05)
    threads: list[threading.Thread] = []  # kept: an ended thread's ident may come back
    try:
        for _ in range(3):
            threads.append(await thread.run(threading.current_thread))
            await eventually(lambda: not alive("serial-idle-test"), 10, "the idle thread to end")
    finally:
        await thread.stop()
    assert len(set(threads)) == 3, "each call after an idle spell ran in a new thread"


async def test_a_thread_that_cannot_start_fails_its_call_and_the_next_call_tries_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    thread = SerialThread("test")
    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        monkeypatch.setattr(threading.Thread, "start", start)  # once
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    try:
        with pytest.raises(RuntimeError, match="can't start"):
            await thread.run(str, "lost")
        assert await asyncio.wait_for(thread.run(str, "next"), 10) == "next"
    finally:
        await thread.stop()


async def test_a_call_and_its_arguments_are_let_go_once_answered() -> None:
    class Batch:
        pass

    thread = SerialThread("test", idle=60.0)  # the thread stays, waiting for a next call
    try:
        batch = Batch()
        gone = weakref.ref(batch)
        await thread.run(id, batch)
        del batch
        await eventually(lambda: gone() is None, 10, "the idle thread to let go of its call")
    finally:
        await thread.stop()


async def test_every_stop_waits_for_the_thread_to_end() -> None:
    thread = SerialThread("serial-stops-test")
    release = threading.Event()
    try:
        running = asyncio.ensure_future(thread.run(release.wait, 10))
        await spin()  # queued
        stops = [asyncio.ensure_future(thread.stop()) for _ in range(2)]
        await asyncio.sleep(0.05)  # a period for the stops to (wrongly) return early
        assert not any(stop.done() for stop in stops)
        release.set()
        await asyncio.gather(*stops)
        assert not alive("serial-stops-test")
        assert await running is True
    finally:
        release.set()
        await thread.stop()
