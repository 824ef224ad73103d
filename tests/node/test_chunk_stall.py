"""A member that stops reading a chunk it asked for (hung, or its own client stalled) is
dropped after the holder's ``--send-timeout``: the holder's sendfile(2) waits for the
socket with a limit (``node.disk.sendfile``), lets go of the chunk's file, and serves on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from node.api import peer as peer_api
from node.cluster.transport import Address
from node.model.manifest import ChunkMeta
from tests.harness import LocalCluster, LocalPeer, eventually
from tests.harness.peer_api import peer_transport

SEND_TIMEOUT = 0.5
MARGIN = 10.0  # seconds the drop may be late on a loaded machine
OWNER = ChunkMeta("stall/file", "1.0.peer", 0, 1 << 20)
CHUNK = f"{7:032x}-0"


def past_the_buffers() -> int:
    """Bytes well past what loopback's socket buffers at their largest (tcp(7): the third
    of ``tcp_rmem`` and of ``tcp_wmem``) and the reader's own buffer take."""
    largest = sum(
        int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
        for name in ("tcp_rmem", "tcp_wmem")
    )
    return max(48 << 20, 2 * largest + (8 << 20))


SIZE = past_the_buffers()


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1 << 20):
        yield data[start : start + (1 << 20)]


def chunk_files_open(peer: LocalPeer) -> list[str]:
    """The chunk's files that this process (the in-process ``peer``) holds open."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # (closed meanwhile)
            continue
        if target.startswith(str(peer.data_dir)) and target.endswith(CHUNK):
            held.append(target)
    return held


async def test_a_member_that_stops_reading_a_chunk_is_dropped_after_the_send_timeout(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(tmp_path, send_timeout=SEND_TIMEOUT)
    await cluster.start(2)
    try:
        holder = cluster[1]
        data = os.urandom(SIZE)
        async with peer_transport(cluster[0].auth) as transport:
            to = Address(holder.url, holder.id)
            assert await transport.put_chunk(to, CHUNK, pieces(data), SIZE, OWNER) == SIZE
            dropped = peer_api.stalled_readers.count
            async with transport.open_chunk(to, CHUNK, 0, 0) as stream:
                assert await stream.readexactly(1 << 20) == data[: 1 << 20]
                assert chunk_files_open(holder), "the holder sends from the chunk's file"
                # ...and nothing more: the holder's sends fill the socket, then wait
                await eventually(
                    lambda: peer_api.stalled_readers.count > dropped,
                    SEND_TIMEOUT + MARGIN,
                    "the reader that stopped to be dropped",
                )
                with pytest.raises((aiohttp.ClientPayloadError, asyncio.IncompleteReadError)):
                    await stream.readexactly(SIZE - (1 << 20))  # what was buffered, then cut
            await eventually(
                lambda: not chunk_files_open(holder),
                MARGIN,
                "the holder to let go of the chunk's file",
            )
            async with transport.open_chunk(to, CHUNK, 0, 0) as stream:  # and it serves on
                assert await stream.readexactly(SIZE) == data
    finally:
        await cluster.stop()
