"""Small chunks as frames of the channel between two peers (``node.cluster.channel``), on
real in-process peers: the hard cases first (a frame past its limit, a chunk id that names
a path, a holder's refusal, a short body, peers of the two releases before: frames of
version 1 with and without chunks, a chunk too large for a frame), then the ordinary case:
writes and reads of whole chunks and ranges without an HTTP request. (Forged, replayed or
moved frames of any kind, and a hung peer's chunk read: ``test_channels``.)"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode

from node.cluster import channel as channel_module
from node.cluster import transport as transport_module
from node.cluster.channel import ANSWERS, CHUNK_WRITE
from node.cluster.protocol import FRAME_CHUNK_MAX, ChunkAnswer, ChunkWrite, decode, encode
from node.cluster.transport import Address, FramedChunk, HttpTransport
from node.errors import ChunkNotFound, IncompleteBody, InvalidRequest
from node.model.manifest import ChunkMeta
from tests.harness import LocalCluster
from tests.harness.local import PACKED
from tests.harness.peer_api import peer_transport
from tests.node.test_channels import closed_with, raw_channel

OWNER = ChunkMeta("frames/file", "1.0.peer", 0, 1 << 20)
Caller = tuple[HttpTransport, Address]  # (the ``caller`` fixture of tests/node/conftest.py)


def chunk_id(number: int, index: int = 0) -> str:
    return f"{number:032x}-{index}"


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def requests_of(transport: HttpTransport, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the HTTP requests ``transport`` makes from now on (channels aside)."""
    paths: list[str] = []
    request = transport._request

    def recorded(method: str, to: Address, path: str, *args: Any, **kwargs: Any) -> Any:
        paths.append(path)
        return request(method, to, path, *args, **kwargs)

    monkeypatch.setattr(transport, "_request", recorded)
    return paths


def a_write(name: str, data: bytes) -> bytes:
    return encode(ChunkWrite(name, OWNER.name, OWNER.version, OWNER.block_size, memoryview(data)))


async def test_a_members_chunk_frame_past_the_frame_limit_closes_the_channel(
    two_peers: LocalCluster,
) -> None:
    """A frame that fails its record's bounds is unreadable: no member sends one."""
    target = two_peers[1]
    async with raw_channel(target) as (ws, keys):
        frame = a_write(chunk_id(1), bytes(FRAME_CHUNK_MAX + 1))
        await ws.send_bytes(keys.seal(CHUNK_WRITE, 1, frame))
        assert await closed_with(ws) == WSCloseCode.UNSUPPORTED_DATA
    assert await target.holder.chunks.missing([chunk_id(1)]) == [chunk_id(1)]


async def test_a_chunk_frame_naming_a_path_is_refused_in_its_answer(
    two_peers: LocalCluster,
) -> None:
    target = two_peers[1]
    async with raw_channel(target) as (ws, keys):
        await ws.send_bytes(keys.seal(CHUNK_WRITE, 1, a_write("../../chunks-v2/x-0", b"x")))
        kind, seq, body = keys.open((await asyncio.wait_for(ws.receive(), 10)).data)
        answer = decode(body, ChunkAnswer)
        assert (kind, seq, answer.size) == (ANSWERS, 1, None)
        assert answer.failure is not None
        assert answer.failure.code == InvalidRequest.code
        assert "malformed chunk id" in answer.failure.message
        await ws.send_bytes(keys.seal(CHUNK_WRITE, 2, a_write(chunk_id(1), b"fine")))
        kind, seq, body = keys.open((await asyncio.wait_for(ws.receive(), 10)).data)
        assert (seq, decode(body, ChunkAnswer).size) == (2, 4)  # the channel goes on


async def test_a_holders_refusal_comes_back_as_its_error_and_the_channel_stays(
    two_peers: LocalCluster, caller: Caller
) -> None:
    transport, to = caller
    with pytest.raises(ChunkNotFound):
        async with transport.open_chunk(to, chunk_id(2), 0, 100):
            pass
    unnamed = ChunkMeta("", "1.0.peer", 0, 1 << 20)
    with pytest.raises(InvalidRequest):
        await transport.put_chunk(to, chunk_id(3), body(b"data"), 4, unnamed)
    with pytest.raises(InvalidRequest, match="malformed chunk id"):
        await transport.put_chunk(to, "zz-0", body(b"data"), 4, OWNER)
    assert await transport.put_chunk(to, chunk_id(4), body(b"data"), 4, OWNER) == 4
    assert transport.channels_opened == 1  # refusals are answers, not broken channels
    assert transport.frame_versions == {to.url: 2}  # this release's frames
    assert await two_peers[1].holder.chunks.missing([chunk_id(3)]) == [chunk_id(3)]


async def test_a_body_shorter_than_its_size_is_not_sent(
    two_peers: LocalCluster, caller: Caller
) -> None:
    transport, to = caller
    with pytest.raises(IncompleteBody, match="a body of 3 bytes, not 4"):
        await transport.put_chunk(to, chunk_id(5), body(b"abc"), 4, OWNER)
    assert await two_peers[1].holder.chunks.missing([chunk_id(5)]) == [chunk_id(5)]


async def test_a_peer_without_chunk_frames_gets_chunks_as_requests(
    caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a peer of two releases before: its upgrade selects no subprotocol (the
    receiver offers another; the caller still asks for ``SUBPROTOCOLS``)."""
    monkeypatch.setattr(channel_module, "SUBPROTOCOLS", ("ringstore.something-else",))
    transport, to = caller
    paths = requests_of(transport, monkeypatch)
    assert await transport.put_chunk(to, chunk_id(7), body(b"old peer"), 8, OWNER) == 8
    async with transport.open_chunk(to, chunk_id(7), 4, 4) as stream:
        assert not isinstance(stream, FramedChunk)
        assert await stream.readexactly(4) == b"peer"
    assert paths == [f"/internal/chunks/{chunk_id(7)}"] * 2
    assert transport.channels_open == 1  # opened, and kept for manifest calls
    assert transport.frame_versions == {to.url: 1}


@pytest.mark.parametrize("older", ["caller", "receiver"])
async def test_a_peer_of_the_release_before_gets_chunk_frames_of_its_version(
    caller: Caller, monkeypatch: pytest.MonkeyPatch, older: str
) -> None:
    """It offers (as a caller) or takes (as a receiver) only ``ringstore.chunks.1``
    (HMAC-SHA256 frames, no hello): the channel is of that version, with chunk frames."""
    side = transport_module if older == "caller" else channel_module
    monkeypatch.setattr(side, "SUBPROTOCOLS", ("ringstore.chunks.1",))
    transport, to = caller
    paths = requests_of(transport, monkeypatch)
    assert await transport.put_chunk(to, chunk_id(10), body(b"v1 frames"), 9, OWNER) == 9
    async with transport.open_chunk(to, chunk_id(10), 3, 6) as stream:
        assert isinstance(stream, FramedChunk)
        assert await stream.readexactly(6) == b"frames"
    assert paths == []
    assert transport.frame_versions == {to.url: 1}


async def test_chunks_larger_than_a_frame_and_whole_chunk_reads_stream_as_requests(
    caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, to = caller
    large = bytes(range(256)) * (FRAME_CHUNK_MAX // 256) + b"!"
    paths = requests_of(transport, monkeypatch)
    stored = await transport.put_chunk(to, chunk_id(8), body(large), len(large), OWNER)
    assert stored == len(large)
    assert await transport.put_chunk(to, chunk_id(9), body(b"no size"), None, OWNER) == 7
    async with transport.open_chunk(to, chunk_id(8), 0, 0) as stream:  # all of it
        assert await stream.readexactly(len(large)) == large
    assert paths == [f"/internal/chunks/{c}" for c in (chunk_id(8), chunk_id(9), chunk_id(8))]


async def test_small_chunks_and_ranges_travel_as_frames_of_one_channel(
    two_peers: LocalCluster, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, to = caller
    chunks = {chunk_id(100 + i): bytes([i]) * (1000 + i) for i in range(40)}
    paths = requests_of(transport, monkeypatch)
    sizes = await asyncio.gather(
        *(
            transport.put_chunk(to, name, body(data[:500], data[500:]), len(data), OWNER)
            for name, data in chunks.items()
        )
    )
    assert sizes == [len(data) for data in chunks.values()]

    async def read(name: str, offset: int, length: int) -> bytes:
        async with transport.open_chunk(to, name, offset, length) as stream:
            assert isinstance(stream, FramedChunk)
            return await stream.readexactly(length)

    whole = await asyncio.gather(*(read(n, 0, len(d)) for n, d in chunks.items()))
    assert whole == list(chunks.values())
    assert await read(chunk_id(101), 990, 11) == chunks[chunk_id(101)][990:]
    with pytest.raises(asyncio.IncompleteReadError):  # past the chunk's end: fewer bytes
        await read(chunk_id(101), 990, 12)
    assert paths == []  # not one HTTP request
    assert transport.channels_opened == 1
    stored = await two_peers[1].holder.chunks.meta(chunk_id(139))
    assert (stored.name, stored.size) == (OWNER.name, 1039)


async def test_a_chunk_range_the_page_cache_holds_is_read_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range of a packed chunk whose volume the page cache holds is read on the loop
    with no stream (``Holder.read_chunk_now``); a chunk stored as a file is read as before,
    through ``Holder.open_chunk``. The bytes, and what the holder counts as read, are the
    same either way."""
    local = LocalCluster(tmp_path, **PACKED)
    await local.start(2)
    try:
        target = local[1]
        holder = target.holder
        async with peer_transport(local[0].auth) as transport:
            to = Address(target.url, target.id)
            data = os.urandom(3000)
            await transport.put_chunk(to, chunk_id(300), body(data), len(data), OWNER)
            await transport.put_chunk(to, chunk_id(301), body(data), None, OWNER)  # a file
            if holder.read_chunk_now(chunk_id(300), 0, 1) is None:
                pytest.skip("this system cannot read from the kernel's caches alone")
            opened: list[str] = []
            counted: list[int] = []
            open_chunk = holder.open_chunk

            def recorded(name: str, offset: int, length: int) -> Any:
                opened.append(name)
                return open_chunk(name, offset, length)

            monkeypatch.setattr(holder, "open_chunk", recorded)
            monkeypatch.setattr(holder, "_on_chunk_read", counted.append)

            async def read(name: str) -> bytes:
                async with transport.open_chunk(to, name, 10, 2000) as stream:
                    return await stream.readexactly(2000)

            assert await read(chunk_id(300)) == data[10:2010]
            assert opened == []
            assert await read(chunk_id(301)) == data[10:2010]
            assert opened == [chunk_id(301)]
            assert counted == [2000, 2000]
    finally:
        await local.stop()
