"""Blocks queued on chunk streams under one budget per peer (``BlockBudget``): many slow
readers hold what they are being sent, not full queues each; PUTs never queue past one block
per holder; with no budget at all every read and write still completes,
decoding around broken holders included; credit always comes back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable
from pathlib import Path
from typing import Any, cast

import pytest

from node.cluster.peers import Peers
from node.cluster.transport import CHUNK_STREAM_BUFFERED, ChunkStream
from node.datapath import chunk_streams
from node.datapath.chunk_streams import BlockBudget, ChunkWriter, read_in_hand, write_in_hand
from node.errors import Overloaded
from node.model.digests import Buffer
from node.model.layout import Layout
from node.model.manifest import ChunkMeta
from tests.harness.grid import Grid, GridPeer
from tests.harness.polling import eventually

BLOCK = 1024  # a stripe is 5 KiB
MIB = 1 << 20
SIZE = BLOCK * 5 * 12 + 77  # 13 stripes


async def stream(peer: GridPeer, name: str) -> AsyncGenerator[Buffer, None]:
    manifest = await peer.coordinator.stat(name)
    async for piece in peer.coordinator.stream(manifest, 0, manifest.size):
        yield piece


async def read_all(peer: GridPeer, name: str, start: int = 0, end: int | None = None) -> bytes:
    manifest = await peer.coordinator.stat(name)
    stop = manifest.size if end is None else end
    return b"".join([bytes(p) async for p in peer.coordinator.stream(manifest, start, stop)])


def record_credit(buffers: BlockBudget, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The credit held after every ``take`` of ``buffers`` from now on."""
    peaks: list[int] = []
    take = buffers.take

    def recording(size: int) -> bool:
        granted = take(size)
        peaks.append(buffers.held)
        return granted

    monkeypatch.setattr(buffers, "take", recording)
    return peaks


async def grid_of(tmp_path: Path, budget: int) -> Grid:
    grid = Grid(tmp_path, 8, block_size=BLOCK, buffer_memory=budget)
    await grid.start()
    return grid


async def test_slow_readers_together_never_hold_more_credit_than_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = 6 * BLOCK  # less than one reader's full read-ahead (5 chunks x 4 blocks)
    grid = await grid_of(tmp_path, budget)
    try:
        data = os.urandom(SIZE)
        await grid[0].coordinator.put("slow", _body(data), len(data), "application/octet-stream")
        reader = grid[1]
        buffers = reader.buffers
        peaks = record_credit(buffers, monkeypatch)
        streams = [stream(reader, "slow") for _ in range(4)]
        firsts = [await anext(s) for s in streams]  # every client got a piece, then stalls
        assert all(bytes(f) == data[: len(f)] for f in firsts)
        # Their readers read ahead until the budget is spent, and not past it.
        await eventually(lambda: buffers.held + BLOCK > budget, timeout=10, what="budget spent")
        await eventually(lambda: buffers.refused > 0, timeout=10, what="credit refused")
        assert max(peaks) <= budget
        # Each slow client still gets its whole file, block by block on demand.
        for s, first in zip(streams, firsts, strict=True):
            rest = b"".join([bytes(p) async for p in s])
            assert bytes(first) + rest == data
        assert max(peaks) <= budget
        assert buffers.held == 0
    finally:
        await grid.close()


async def test_with_no_budget_reads_complete_on_demand_even_decoding_around(
    tmp_path: Path,
) -> None:
    grid = await grid_of(tmp_path, 0)
    try:
        data = os.urandom(SIZE)
        manifest = await grid[0].coordinator.put(
            "f", _body(data), len(data), "application/octet-stream"
        )
        reader = grid[7]
        assert await read_all(reader, "f") == data
        assert await read_all(reader, "f", 3000, 40_000) == data[3000:40_000]
        assert reader.buffers.refused > 0
        assert reader.buffers.held == 0
        found = await reader.coordinator.stat("f")
        broken = [grid.peer_of(manifest.holders()[i]) for i in (0, 3)]
        for peer in broken:
            grid.break_peer(peer)
        assert await read_all(reader, "f") == data
        assert reader.buffers.held == 0
        assert found.size == len(data)
        # A rebuild reads the same way.
        spare = next(p for p in grid.peers if p.id not in manifest.holders().values())
        rebuilt = await reader.rebuilder.rebuild(found, {0: spare.id})
        assert rebuilt.holders()[0] == spare.id
        assert reader.buffers.held == 0
    finally:
        await grid.close()


async def test_past_the_budget_a_slow_client_holds_the_block_it_is_sent_not_a_stripe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no read-ahead credit, a block is read when the client is ready for it: one that
    took a piece and then stalls has made its peer read one block, not the stripe's five."""
    grid = await grid_of(tmp_path, 0)
    try:
        data = os.urandom(SIZE)
        await grid[0].coordinator.put("f", _body(data), len(data), "application/octet-stream")
        read = 0
        real = chunk_streams.read_block

        async def counted(stream: ChunkStream, size: int) -> Buffer:
            nonlocal read
            read += 1
            return await real(stream, size)

        monkeypatch.setattr(chunk_streams, "read_block", counted)
        async with contextlib.aclosing(stream(grid[7], "f")) as pieces:
            got = [bytes(await anext(pieces))]
            assert got[0] == data[:BLOCK]
            for _ in range(20):
                await asyncio.sleep(0)  # readers that would read ahead get every chance to
            assert read == 1
            got += [bytes(await anext(pieces)) for _ in range(6)]
            assert b"".join(got) == data[: 7 * BLOCK]
            assert read == 7  # into the second stripe, still block by block
    finally:
        await grid.close()


async def test_a_reader_that_goes_away_gives_its_credit_back(tmp_path: Path) -> None:
    grid = await grid_of(tmp_path, 1 << 20)
    try:
        data = os.urandom(SIZE)
        await grid[0].coordinator.put("f", _body(data), len(data), "application/octet-stream")
        reader = grid[2]
        for _ in range(3):
            pieces = stream(reader, "f")
            await anext(pieces)
            await eventually(lambda: reader.buffers.held > 0, timeout=10, what="reading ahead")
            await pieces.aclose()  # the client went away mid-file
            await eventually(lambda: reader.buffers.held == 0, timeout=10, what="credit back")
        tasks = [asyncio.ensure_future(read_all(reader, "f")) for _ in range(5)]
        await asyncio.sleep(0)
        for task in tasks[:2]:
            task.cancel()
        for task in tasks[:2]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert [await t for t in tasks[2:]] == [data] * 3
        await eventually(lambda: reader.buffers.held == 0, timeout=10, what="credit back")
    finally:
        await grid.close()


async def test_puts_together_queue_one_block_per_holder_and_take_no_credit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PUT queues a stripe only once the one before is written out (two stripes in hand,
    ``write_stripes``), so its writers never ask the budget for credit, however slow a
    holder: 12 PUTs while one holder answers nothing for a while and another breaks off
    every upload midway all complete, and the budget is whole again after them."""
    budget = 8 * BLOCK
    grid = await grid_of(tmp_path, budget)
    try:
        coordinator = grid[3]
        buffers = coordinator.buffers
        asked = record_credit(buffers, monkeypatch)
        files = {f"put-{i}": os.urandom(SIZE - i * 999) for i in range(12)}
        grid.hang_peer(grid[5])
        grid.fail_midway(grid[6])
        puts = asyncio.gather(
            *(
                coordinator.coordinator.put(name, _body(data), None, "application/octet-stream")
                for name, data in files.items()
            )
        )
        await eventually(lambda: buffers.admitted > 0, timeout=10, what="PUTs under way")
        grid.unhang_peer(grid[5])
        await puts
        assert asked == []
        assert buffers.held == 0
        for name, data in files.items():
            assert await read_all(grid[0], name) == data
    finally:
        await grid.close()


async def test_with_no_budget_a_put_goes_block_by_block(tmp_path: Path) -> None:
    grid = await grid_of(tmp_path, 0)
    try:
        data = os.urandom(SIZE)
        await grid[1].coordinator.put("f", _body(data), len(data), "application/octet-stream")
        assert grid[1].buffers.held == 0
        assert await read_all(grid[2], "f") == data
    finally:
        await grid.close()


class SlowHolder:
    """The one peer call a ChunkWriter makes, to a holder that takes a block every ``pace``
    seconds (steadily: never silent as long as a stall)."""

    def __init__(self, pace: float) -> None:
        self.pace = pace
        self.received: list[bytes] = []
        self.failures: list[str] = []

    async def put_chunk(
        self,
        member: str,
        chunk_id: str,
        body: AsyncIterable[Buffer],
        size: int | None,
        owner: ChunkMeta,
    ) -> int:
        async for block in body:
            await asyncio.sleep(self.pace)  # the holder's pace, not a wait for a condition
            self.received.append(bytes(block))
        return sum(map(len, self.received))

    def report_failure(self, member: str, reason: str) -> None:
        self.failures.append(reason)


async def test_a_chunk_request_is_made_when_its_first_block_is_there() -> None:
    """A request is signed when it is made, and checked against the holder's clock when its
    head arrives, with its first block: made before a slow client filled a stripe, it
    arrived too old (401 past 30 s; the upload failed with 503)."""
    holder = SlowHolder(pace=0.0)
    made: list[float] = []
    put_chunk = holder.put_chunk

    async def recorded(*args: Any) -> int:
        made.append(time.monotonic())
        return await put_chunk(*args)

    holder.put_chunk = recorded  # type: ignore[method-assign]
    buffers = BlockBudget(3 * BLOCK, depth=4)
    writer = ChunkWriter(
        cast(Peers, holder), "h", "c-0", ChunkMeta("f", "1", 0, BLOCK), None, buffers, 5
    )
    for _ in range(3):  # turns of the loop for the writer's task (a slow client's stripe)
        await asyncio.sleep(0)
    assert made == []
    queued = time.monotonic()
    await writer.send(b"x" * BLOCK)
    assert await writer.finish() == BLOCK
    assert len(made) == 1
    assert made[0] >= queued


async def test_a_slow_holder_that_keeps_taking_blocks_is_not_dropped_when_credit_runs_out() -> None:
    """Credit runs out while blocks are queued for it: the sender waits for room block by
    block, and the stall clock restarts with every block the holder takes."""
    holder = SlowHolder(pace=0.2)
    buffers = BlockBudget(3 * BLOCK, depth=4)
    owner = ChunkMeta("f", "1", 0, BLOCK)
    writer = ChunkWriter(cast(Peers, holder), "slow", "c-0", owner, None, buffers, 0.35)
    blocks = [bytes([i]) * BLOCK for i in range(8)]
    for block in blocks:
        await writer.send(block)
    assert await writer.finish() == 8 * BLOCK
    assert holder.received == blocks
    assert holder.failures == []
    assert buffers.refused > 0
    assert buffers.held == 0


async def test_puts_cancelled_while_a_holder_hangs_give_their_memory_back(
    tmp_path: Path,
) -> None:
    """One PUT admitted and waiting for a hung holder to take its stripe, three waiting to
    be admitted (each needs the whole budget): cancelled, all of it comes back."""
    grid = await grid_of(tmp_path, 4 * BLOCK)
    try:
        grid.hang_peer(grid[5])
        coordinator = grid[2]
        puts = [
            asyncio.ensure_future(
                coordinator.coordinator.put(
                    f"p{i}", _body(os.urandom(SIZE)), None, "application/octet-stream"
                )
            )
            for i in range(4)
        ]
        buffers = coordinator.buffers
        await eventually(
            lambda: buffers.admitted > 0 and buffers.waited == 3, timeout=10, what="one in"
        )
        for task in puts:
            task.cancel()
        await asyncio.wait(puts)
        await eventually(lambda: coordinator.buffers.held == 0, timeout=10, what="credit back")
    finally:
        await grid.close()


async def _body(data: bytes) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(data), 3000):
        yield data[start : start + 3000]


# --- admission: requests' blocks in hand -----------------------------------------------------


async def test_requests_are_admitted_first_come_first_served_as_memory_comes_back() -> None:
    """A request that does not fit waits; one behind it waits too even if it would fit
    (no starvation of large ones); each is admitted as soon as the memory is back."""
    buffers = BlockBudget(10, depth=4, wait=30)
    order: list[str] = []
    release = {name: asyncio.Event() for name in ("a", "b", "c")}

    async def request(name: str, size: int) -> None:
        async with buffers.admit(size):
            order.append(name)
            await release[name].wait()

    first = asyncio.ensure_future(request("a", 8))
    await eventually(lambda: order == ["a"], timeout=5, what="a admitted")
    large = asyncio.ensure_future(request("b", 6))
    await eventually(lambda: buffers.waited == 1, timeout=5, what="b waiting")
    small = asyncio.ensure_future(request("c", 1))  # fits beside a, but b came first
    await eventually(lambda: buffers.waited == 2, timeout=5, what="c waiting")
    assert not buffers.take(1), "read-ahead yields to requests waiting"
    assert order == ["a"]
    release["a"].set()
    await first
    await eventually(lambda: order == ["a", "b", "c"], timeout=5, what="b then c admitted")
    assert (buffers.held, buffers.admitted) == (7, 7)
    release["b"].set()
    release["c"].set()
    await asyncio.gather(large, small)
    assert (buffers.held, buffers.admitted, buffers.turned_away) == (0, 0, 0)


async def test_a_request_not_admitted_in_time_is_refused_and_leaves_the_queue() -> None:
    buffers = BlockBudget(10, depth=4, wait=0.05)
    async with buffers.admit(10):
        with pytest.raises(Overloaded) as refused:
            async with buffers.admit(4):
                pytest.fail("admitted beyond the budget")
        assert refused.value.retry_after >= 1
        assert "--buffer-memory" in refused.value.message
        assert buffers.turned_away == 1
        assert buffers.held == 10
    assert buffers.take(4), "nobody waits any more: credit is given again"
    buffers.give(4)
    assert buffers.held == 0


async def test_a_request_cancelled_while_waiting_lets_the_one_behind_it_in() -> None:
    """A request cancelled while it waited (the peer stopping; aiohttp does not cancel a
    handler whose client left): its place is given up, and one behind it that fits now is
    admitted at once."""
    buffers = BlockBudget(10, depth=4, wait=30)
    admitted = asyncio.Event()

    async def request(size: int) -> None:
        async with buffers.admit(size):
            admitted.set()
            await asyncio.Event().wait()

    async with buffers.admit(6):
        large = asyncio.ensure_future(request(8))
        await eventually(lambda: buffers.waited == 1, timeout=5, what="large waiting")
        small = asyncio.ensure_future(request(4))
        await eventually(lambda: buffers.waited == 2, timeout=5, what="small waiting")
        large.cancel()
        await asyncio.gather(large, return_exceptions=True)
        await asyncio.wait_for(admitted.wait(), 5)
        assert buffers.held == 10
        small.cancel()
        await asyncio.gather(small, return_exceptions=True)
    assert (buffers.held, buffers.admitted) == (0, 0)


async def test_a_request_larger_than_the_budget_runs_alone_and_no_budget_admits_all() -> None:
    buffers = BlockBudget(10, depth=4, wait=30)
    async with buffers.admit(1 << 30):
        assert buffers.held == 10
    unlimited = BlockBudget(0, depth=4, wait=0)
    async with unlimited.admit(1 << 30), unlimited.admit(1 << 30):
        assert unlimited.held == 0


@pytest.mark.parametrize(
    ("size", "block", "expected"),
    [
        (0, BLOCK, 0),  # an empty range reads nothing
        (100, BLOCK, 2 * 20 + 5 * 20),  # a small file: 20-byte blocks, one frame a chunk
        # 12 stripes and a tail block of 16 bytes: each chunk's range comes in one frame
        (BLOCK * 5 * 12 + 77, BLOCK, 2 * BLOCK + 5 * (12 * BLOCK + 16)),
        (5 * MIB, MIB, 2 * MIB + 5 * MIB),  # one stripe of 1 MiB blocks: one frame a chunk
        (5 * MIB + 5, MIB, 2 * MIB + 5 * CHUNK_STREAM_BUFFERED),  # two stripes: streamed
        (5 * 4 * MIB, 4 * MIB, 2 * 4 * MIB + 5 * CHUNK_STREAM_BUFFERED),  # blocks too big
        (BLOCK * 5 * 2000, BLOCK, 2 * BLOCK + 5 * BLOCK),  # 2,000 stripes: streams buffer a block
    ],
)
def test_a_get_holds_two_blocks_and_its_streams_buffers(
    size: int, block: int, expected: int
) -> None:
    layout = Layout(size, 5, 2, block)
    assert read_in_hand(layout, 0, size) == expected


def test_a_put_holds_two_stripes_at_work_and_a_third_buffer_of_blocks_sized_to_the_body() -> None:
    assert write_in_hand(None, 5, 2, BLOCK) == 19 * BLOCK  # a chunked body: as a large one
    assert write_in_hand(100 * BLOCK, 5, 2, BLOCK) == 19 * BLOCK  # a third stripe's buffer
    assert write_in_hand(10 * BLOCK, 5, 2, BLOCK) == 14 * BLOCK
    assert write_in_hand(5 * BLOCK, 5, 2, BLOCK) == 12 * BLOCK  # one stripe and its frames
    assert write_in_hand(100, 5, 2, BLOCK) == 12 * 20


async def test_a_request_admitted_and_cancelled_in_one_turn_is_cancelled_and_lets_go() -> None:
    """Memory given back grants a waiting request; the request is cancelled before it
    runs again (its client or the peer stopping): it must not go on, nor keep the memory.
    (``asyncio.wait_for`` before Python 3.12 returned the grant and lost the cancel.)"""
    buffers = BlockBudget(10, depth=4, wait=30)
    assert buffers.take(10)
    ran = False

    async def request() -> None:
        nonlocal ran
        async with buffers.admit(5):
            ran = True

    waiting = asyncio.ensure_future(request())
    await eventually(lambda: buffers.waited == 1, timeout=5, what="the request waiting")
    buffers.give(10)  # grants it ...
    waiting.cancel()  # ... and it is cancelled before it resumes
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    assert not ran
    assert (buffers.held, buffers.admitted) == (0, 0)
