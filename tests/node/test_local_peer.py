"""The test harness's own promise: stopping an in-process peer leaks no sockets.

Without it a test fails for an earlier test's leak, whenever the garbage collector runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path

import pytest

from tests.harness import LocalPeer


@pytest.mark.parametrize("turns", range(6))
async def test_stopping_while_connections_are_being_accepted_leaks_nothing(
    tmp_path: Path, turns: int
) -> None:
    # Connects, then the stop after `turns` loop turns: some turn lands between asyncio
    # accepting a connection and its set-up task running (CPython gh-109564).
    peer = LocalPeer(tmp_path, ())
    await peer.start()
    connects = [
        asyncio.ensure_future(asyncio.open_connection("127.0.0.1", peer.port)) for _ in range(5)
    ]
    for _ in range(turns):
        await asyncio.sleep(0)
    await peer.stop()
    for connect in connects:
        with contextlib.suppress(OSError):
            _, writer = await connect
            writer.close()
            await writer.wait_closed()
    gc.collect()  # a leaked socket warns here, and -W error makes that a failure
