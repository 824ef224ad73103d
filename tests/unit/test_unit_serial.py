"""``SerialThread``: the manifest log's own thread (``node.disk.serial``)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from node.disk.serial import SerialThread


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
        await asyncio.sleep(0)  # both queued
        release.set()
        await thread.stop()
        assert await first is True
        assert await second == "queued"
        assert "serial-stop-test" not in {t.name for t in threading.enumerate()}
        assert await thread.run(str, "again") == "again"  # a new thread
    finally:
        await thread.stop()
    assert "serial-stop-test" not in {t.name for t in threading.enumerate()}


async def test_an_idle_thread_ends_and_the_next_call_starts_another() -> None:
    thread = SerialThread("serial-idle-test", idle=0.05)
    threads: list[threading.Thread] = []  # kept: an ended thread's ident may come back
    try:
        for _ in range(3):
            threads.append(await thread.run(threading.current_thread))
            for _ in range(200):  # bounded: 10 s at most
                if "serial-idle-test" not in {t.name for t in threading.enumerate()}:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the idle thread did not end")
    finally:
        await thread.stop()
    assert len(set(threads)) == 3, "each call after an idle spell ran in a new thread"
