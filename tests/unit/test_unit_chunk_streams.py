"""Reading a chunk's blocks from what a holder sent (``node.datapath.chunk_streams``)."""

from __future__ import annotations

import asyncio
import os

import pytest

from node.cluster.transport import FramedChunk
from node.datapath.chunk_streams import READ_PIECE, read_block


async def test_a_block_of_a_channel_answer_is_a_view_of_it_and_a_streams_is_its_own() -> None:
    """Blocks that came whole in a channel answer are not copied (the answer stays held
    until its last block is let go); a stream's are read into a buffer of their own, a
    piece at a time."""
    answer = bytearray(os.urandom(1000))
    framed = FramedChunk(memoryview(answer))
    first, second = await read_block(framed, 400), await read_block(framed, 600)
    assert bytes(first) + bytes(second) == answer
    assert isinstance(first, memoryview)
    assert first.obj is answer  # a view: no copy
    with pytest.raises(asyncio.IncompleteReadError):
        await read_block(FramedChunk(memoryview(b"abc")), 4)
    data = os.urandom(READ_PIECE * 2 + 5)
    stream = asyncio.StreamReader()
    stream.feed_data(data)
    stream.feed_eof()
    block = await read_block(stream, len(data))
    assert isinstance(block, bytearray)
    assert block == data
