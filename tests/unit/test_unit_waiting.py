"""Waiting with a time limit (``node.waiting``)."""

from __future__ import annotations

import asyncio

import pytest

from node.waiting import Expired, within


async def test_within_tells_its_own_time_running_out_from_a_timeout_it_awaited() -> None:
    """Its time running out is Expired (still an asyncio.TimeoutError, as callers catch);
    a timeout the awaited work raised itself comes out as it was (a read that timed out is
    a failed read, not a slow one: ``Coordinator._read_alone``)."""
    hung = asyncio.get_running_loop().create_future()
    with pytest.raises(Expired):
        await within(hung, 0.01)
    assert hung.cancelled()

    async def timed_out() -> None:
        raise asyncio.TimeoutError("the socket's")

    with pytest.raises(asyncio.TimeoutError) as raised:
        await within(timed_out(), 10)
    assert not isinstance(raised.value, Expired)
    assert await within(asyncio.sleep(0, "done"), 10) == "done"
