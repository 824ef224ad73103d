"""The test harness's own promise: stopping an in-process peer leaks no sockets.

Without it a test fails for an earlier test's leak, whenever the garbage collector runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from pathlib import Path

import pytest

from node.errors import StartRefused
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


async def test_a_second_peer_on_a_running_peers_data_dir_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """Started by mistake on a directory in use, a peer must refuse before it opens a store:
    its start would empty ``incoming/`` under the running peer's writes (and cut back the
    manifest log it appends to)."""
    first = LocalPeer(tmp_path, ())
    await first.start()
    try:
        in_flight = tmp_path / "incoming" / "0123456789abcdef0123456789abcdef-0.abc"
        in_flight.write_bytes(b"a chunk being received")
        second = LocalPeer(tmp_path, ())
        with pytest.raises(StartRefused, match=f"in use by another process .pid {os.getpid()}"):
            await second.start()
        assert in_flight.read_bytes() == b"a chunk being received"
        assert not second.running
    finally:
        await first.stop()
    await first.start()  # the lock went with the first peer's stop
    await first.stop()
