"""How long a request body may take (``node.api.input._StallWatch``): a gap of the stall
timeout, or in all the stall timeout plus a second per ``min_rate`` bytes of waiting for the
client; never the time the peer itself spends on the pieces (a slow holder's backpressure).
A content of pieces that come after given delays stands in for aiohttp's StreamReader.
The same limits through real peers and a raw client: ``tests/node/shared/test_limits_files.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast
from unittest import mock

import pytest
from aiohttp import StreamReader

from node.api.input import _Stalled, _StallWatch

TIMEOUT = 0.3  # seconds of stall timeout
RATE = 1000.0  # bytes/s


class _Trickle:
    """Pieces of ``size`` bytes, each after ``every`` seconds (then the end)."""

    def __init__(self, size: int, every: float, pieces: int) -> None:
        self._size, self._every, self._left = size, every, pieces
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.total_bytes = 0  # bytes arrived (here: each is read as it arrives)

    async def readany(self) -> bytes:
        waiting = asyncio.ensure_future(asyncio.sleep(self._every))
        await asyncio.wait([waiting, self._failed], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if self._failed.done():
            self._failed.result()
        if not self._left:
            return b""
        self._left -= 1
        self.total_bytes += self._size
        return b"x" * self._size

    def is_eof(self) -> bool:
        """Whether the body's end has arrived (all pieces sent): what aiohttp's says."""
        return self._left == 0

    def set_exception(self, exc: BaseException) -> None:
        if not self._failed.done():
            self._failed.set_exception(exc)


async def _read_all(content: _Trickle, hold: float = 0.0) -> tuple[int, str]:
    """Bytes read through a watch before the body ended or failed, and why it failed;
    the consumer holds each piece ``hold`` seconds (a slow holder)."""
    watch = _StallWatch(cast(StreamReader, content), TIMEOUT, RATE)
    try:
        while piece := await watch.read():
            await asyncio.sleep(hold)
            del piece
    except _Stalled:
        pass
    finally:
        watch.stop()
    return watch.received, watch.reason


async def test_a_body_below_the_rate_fails_once_its_allowance_is_spent() -> None:
    """10 bytes every 0.1 s (100 bytes/s, a tenth of RATE): no gap reaches TIMEOUT, but
    after t seconds of waiting only TIMEOUT + 100 t / RATE are allowed: about 0.33 s."""
    received, reason = await _read_all(_Trickle(10, 0.1, 100))
    assert reason.startswith("sent the body slower than 1000 bytes/s")
    assert 20 <= received <= 60


async def test_a_gap_of_the_stall_timeout_fails_whatever_the_rate() -> None:
    received, reason = await _read_all(_Trickle(10_000, TIMEOUT * 2, 3))
    assert reason == f"sent no byte of the body for {TIMEOUT:g}s"
    assert received == 0


async def test_a_body_above_the_rate_goes_on_past_the_stall_timeout() -> None:
    received, reason = await _read_all(_Trickle(300, 0.1, 15))  # 3,000 bytes/s for 1.5 s
    assert (received, reason) == (4500, "")


async def test_time_the_consumer_holds_the_pieces_does_not_count() -> None:
    """A fast client behind a slow holder: 10 bytes a piece, but each piece held 0.1 s by
    the consumer, 1.5 s in all (far past TIMEOUT + 150 / RATE); the client was waited for
    only a few milliseconds."""
    received, reason = await _read_all(_Trickle(10, 0.001, 15), hold=0.1)
    assert (received, reason) == (150, "")


async def test_no_rate_means_only_gaps_count() -> None:
    content = _Trickle(1, 0.1, 8)  # 10 bytes/s for 0.8 s
    watch = _StallWatch(cast(StreamReader, content), TIMEOUT, 0.0)
    try:
        while await watch.read():
            pass
    finally:
        watch.stop()
    assert (watch.received, watch.reason) == (8, "")


async def test_a_body_all_here_is_never_failed() -> None:
    """The end has arrived (the reader's task has yet to run, late on a busy loop): a
    stalled-looking read of it is no stall."""
    content = _Trickle(10, TIMEOUT * 2, 0)  # nothing but the end, which "takes" 0.6 s
    watch = _StallWatch(cast(StreamReader, content), TIMEOUT, RATE)
    try:
        assert await watch.read() == b""
    finally:
        watch.stop()
    assert watch.reason == ""


async def test_the_timer_does_not_poll_while_the_peer_holds_the_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client below the rate for a while has an allowance of milliseconds left (here
    0.3 + 30 / 1000 - 3 x 0.095 = 0.045 s after three pieces); while the peer holds a piece
    (no read waiting) the watch looks once a stall timeout, not once an allowance."""
    looks = 0
    real = _StallWatch._check

    def counted(self: _StallWatch) -> None:
        nonlocal looks
        looks += 1
        real(self)

    monkeypatch.setattr(_StallWatch, "_check", counted)
    received, reason = await _read_all(_Trickle(10, 0.095, 3), hold=1.0)
    assert (received, reason) == (30, "")
    assert looks <= 16  # about 3 s held / TIMEOUT, not ~35 (an allowance apart)


async def test_a_piece_that_arrived_in_time_is_not_failed_while_its_reader_runs_late() -> None:
    """A piece arrives 10 ms before the stall timeout, but the loop is busy 100 ms (another
    request) and the timer runs in the same step as the read's wake-up: the client sent in
    time, so neither this read nor the next (the end) fails. aiohttp's own StreamReader."""
    loop = asyncio.get_running_loop()
    content = StreamReader(mock.Mock(_reading_paused=False), 1 << 16, loop=loop)
    watch = _StallWatch(content, TIMEOUT, 0.0)
    start = loop.time()
    loop.call_at(start + TIMEOUT - 0.05, time.sleep, 0.1)  # the loop busy past the timeout
    loop.call_at(start + TIMEOUT - 0.01, content.feed_data, b"in time")
    loop.call_at(start + TIMEOUT + 0.1, content.feed_eof)
    try:
        assert await watch.read() == b"in time"
        assert await watch.read() == b""
    finally:
        watch.stop()
    assert watch.reason == ""


async def test_a_read_that_starts_with_little_allowance_left_is_judged_in_time() -> None:
    """The peer holds each piece 0.1 s (no read waits, so the watch looks a stall timeout
    apart); the client sends 10 bytes every 0.03 s, a third of RATE, so before read n it
    has 0.3 - 0.02 (n - 1) s of allowance left: under the 0.03 s a piece takes at read 15.
    That read must fail when its allowance ends, before its piece comes, not only if the
    watch happens to look during it (a read of 0.03 s in every 0.13)."""
    received, reason = await _read_all(_Trickle(10, 0.03, 20), hold=0.1)
    assert reason.startswith("sent the body slower than 1000 bytes/s")
    assert received <= 140
