"""One contract, three transports: HTTP between real in-process peers (small chunks as
channel frames, or as requests where the peer called takes no chunk frames), the in-process
grid, and a peer's calls to itself (``LocalFirst``: straight to its holder, the rest over
HTTP).

Every peer-to-peer call behaves the same through each (the data-path tests on the grid are
only worth something if it does, and a peer's calls to itself must answer as another peer
would): same results, same error classes, nothing stored on a refused write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.cluster import transport as transport_module
from node.cluster.protocol import PullOrder
from node.cluster.transport import Address, Transport
from node.datapath.holder import Holder, LocalFirst
from node.errors import ChunkNotFound, CorruptData, InvalidRequest, PeerUnavailable
from node.model.digests import BlockDigests, chunk_digest
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, ChunkRef, Manifest, ReplicaRead
from node.model.preconditions import ANY, EntityTag, Preconditions, TagList
from node.model.version import Version
from tests.harness import LocalCluster
from tests.harness.grid import Grid
from tests.harness.peer_api import peer_transport

CHUNK = "0123456789abcdef0123456789abcdef-3"
OWNER = ChunkMeta("ns/file", "5.0.p", 3, 1000)
DATA = bytes(range(256)) * 10  # 2560 bytes: blocks of 1000, 1000 and 560


@dataclass
class Pair:
    """A transport and two peers it can reach, with their holders for looking inside."""

    transport: Transport
    a: Address
    b: Address
    holder_a: Holder
    holder_b: Holder


@pytest.fixture(params=["http", "http-v1", "http-requests", "grid", "local"])
async def pair(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    loop_guard: None,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Pair]:
    if request.param == "http-v1":  # the caller offers the frames of the release before
        monkeypatch.setattr(transport_module, "SUBPROTOCOLS", ("ringstore.chunks.1",))
    if request.param == "http-requests":  # the caller asks for a subprotocol none offers
        monkeypatch.setattr(transport_module, "SUBPROTOCOLS", ("ringstore.no-chunk-frames",))
    if request.param == "grid":
        grid = Grid(tmp_path, 2)
        await grid.start()
        try:
            yield Pair(
                grid.transport,
                Address(grid[0].url, grid[0].id),
                Address(grid[1].url, grid[1].id),
                grid[0].holder,
                grid[1].holder,
            )
        finally:
            await grid.close()
        return
    cluster = LocalCluster(tmp_path)
    try:
        await cluster.start(2)
        async with peer_transport(cluster[0].auth) as http:
            transport: Transport = http
            if request.param == "local":  # peer 0's calls: to itself (a) direct, to b over HTTP
                local = LocalFirst(transport, cluster[0].id)
                local.holder = cluster[0].holder
                transport = local
            yield Pair(
                transport,
                Address(cluster[0].url, cluster[0].id),
                Address(cluster[1].url, cluster[1].id),
                cluster[0].holder,
                cluster[1].holder,
            )
    finally:
        await cluster.stop()


async def pieces(data: bytes, size: int = 700) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read(pair: Pair, to: Address, offset: int = 0, length: int = 0) -> bytes:
    async with pair.transport.open_chunk(to, CHUNK, offset, length) as stream:
        return await stream.readexactly(length or len(DATA))


def manifest(version: Version, revision: int = 0) -> Manifest:
    chunks = (ChunkRef(0, "p", bytes(16)),)
    return Manifest("ns/file", version, Layout(10, 5, 2, 1024), "e", "t", chunks, revision=revision)


def digest_of(data: bytes) -> bytes:
    digests = BlockDigests(OWNER.block_size)
    digests.update(data)
    return chunk_digest(digests.digests())


async def test_a_chunk_goes_in_and_comes_out_in_ranges(pair: Pair) -> None:
    assert await pair.transport.put_chunk(pair.a, CHUNK, pieces(DATA), len(DATA), OWNER) == 2560
    assert await read(pair, pair.a) == DATA
    assert await read(pair, pair.a, 1000, 1000) == DATA[1000:2000]
    meta = await pair.holder_a.chunks.meta(CHUNK)
    assert (meta.name, meta.index, meta.size) == ("ns/file", 3, 2560)
    await pair.transport.delete_chunk(pair.a, CHUNK)
    with pytest.raises(ChunkNotFound):
        await read(pair, pair.a)
    with pytest.raises(ChunkNotFound):
        await pair.transport.delete_chunk(pair.a, CHUNK)


async def test_an_inventory_check_names_exactly_the_chunks_not_held(pair: Pair) -> None:
    other = "ffffffffffffffffffffffffffffffff-255"
    assert await pair.transport.missing_chunks(pair.a, [CHUNK, other]) == [CHUNK, other]
    await pair.transport.put_chunk(pair.a, CHUNK, pieces(DATA), len(DATA), OWNER)
    assert await pair.transport.missing_chunks(pair.a, [CHUNK, other]) == [other]
    assert await pair.transport.missing_chunks(pair.a, []) == []
    pair.holder_a.chunks.path(CHUNK).unlink()  # gone by hand
    assert await pair.transport.missing_chunks(pair.a, [CHUNK]) == [CHUNK]


async def test_a_pull_keeps_only_a_chunk_its_source_holds_that_matches_its_digest(
    pair: Pair,
) -> None:
    order = PullOrder(pair.a.url, pair.a.peer_id, len(DATA), 1000, b"\0" * 16, "ns/file", "5.0.p")
    with pytest.raises(ChunkNotFound):  # the source has no such chunk (a rebalancer reports it)
        await pair.transport.pull_chunk(pair.b, CHUNK, order)
    await pair.transport.put_chunk(pair.a, CHUNK, pieces(DATA), len(DATA), OWNER)
    with pytest.raises(CorruptData):
        await pair.transport.pull_chunk(pair.b, CHUNK, order)
    with pytest.raises(ChunkNotFound):
        pair.holder_b.chunks.path(CHUNK)
    good = PullOrder(
        pair.a.url, pair.a.peer_id, len(DATA), 1000, digest_of(DATA), "ns/file", "5.0.p"
    )
    assert await pair.transport.pull_chunk(pair.b, CHUNK, good) == len(DATA)
    assert await read(pair, pair.b) == DATA


async def test_manifest_replicas_keep_only_what_takes_precedence(pair: Pair) -> None:
    t, a = pair.transport, pair.a
    assert (await t.get_manifest(a, "ns/file")).manifest is None
    first = manifest(Version(5, 0, "p"))
    written = await t.put_manifest(a, first, None)
    assert (written.stored, written.current, written.replaced) == (True, first.version, None)
    assert (await t.get_manifest(a, "ns/file")).manifest == first
    older = await t.put_manifest(a, manifest(Version(4, 0, "p")), None)
    assert (older.stored, older.current) == (False, first.version)
    moved = manifest(first.version, revision=1)
    wrong_base = await t.put_manifest(a, moved, (first.version, 7))
    assert not wrong_base.stored
    on_base = await t.put_manifest(a, moved, first.precedence)
    assert on_base.stored
    assert on_base.replaced == first
    listed, truncated = await t.list_manifests(a, "ns/", "", 10)
    assert [(m.name, m.revision, m.chunks) for m in listed] == [("ns/file", 1, ())]
    assert not truncated
    await t.retract_manifest(a, first)  # no longer exactly that one: kept
    assert (await t.get_manifest(a, "ns/file")).manifest == moved
    await t.retract_manifest(a, moved)
    assert (await t.get_manifest(a, "ns/file")).manifest is None


async def test_a_conditional_manifest_write_is_kept_only_where_its_condition_holds(
    pair: Pair,
) -> None:
    t, a = pair.transport, pair.a
    create = Preconditions(if_none_match=ANY)
    first, second, third = (manifest(Version(wall, 0, "p")) for wall in (5, 6, 7))  # etag "e"
    assert (await t.put_manifest(a, first, None, create)).stored
    refused = await t.put_manifest(a, second, None, create)
    assert (refused.stored, refused.current, refused.replaced) == (False, first.version, None)
    swap = Preconditions(if_match=TagList(False, (EntityTag("e"),)))
    swapped = await t.put_manifest(a, second, None, swap)
    assert (swapped.stored, swapped.replaced) == (True, first)
    # A long list (far more than a header line holds) travels whole, in the body.
    tags = (*(EntityTag(f"tag-{i}") for i in range(5000)), EntityTag("e", weak=True))
    long_list = Preconditions(if_none_match=TagList(False, tags))
    assert not (await t.put_manifest(a, third, None, long_list)).stored
    assert (await t.get_manifest(a, "ns/file")).manifest == second


async def test_a_conditional_write_reads_provisional_until_its_verdict(pair: Pair) -> None:
    t, a = pair.transport, pair.a
    create = Preconditions(if_none_match=ANY)
    first, second, third = (manifest(Version(wall, 0, "p")) for wall in (5, 6, 7))
    await t.put_manifest(a, first, None)  # unconditional: never provisional
    assert await t.get_manifest(a, "ns/file") == ReplicaRead(first, provisional=False)
    await t.retract_manifest(a, first)
    assert (await t.put_manifest(a, second, None, create)).stored
    assert await t.get_manifest(a, "ns/file") == ReplicaRead(second, provisional=True)
    await t.confirm_manifest(a, second)
    assert await t.get_manifest(a, "ns/file") == ReplicaRead(second, provisional=False)
    swap = Preconditions(if_match=TagList(False, (EntityTag("e"),)))
    written = await t.put_manifest(a, third, None, swap)
    assert written.stored
    assert await t.get_manifest(a, "ns/file") == ReplicaRead(third, provisional=True)
    await t.confirm_manifest(a, second)  # another write's verdict: no effect on this one
    assert (await t.get_manifest(a, "ns/file")).provisional
    assert not (await t.put_manifest(a, third, None, swap)).stored  # the offer, again
    assert (await t.get_manifest(a, "ns/file")).provisional, "a refused duplicate: still"
    pair.holder_a.manifests.provisional_for = 0.0  # its verdict is overdue now
    assert await t.get_manifest(a, "ns/file") == ReplicaRead(third, True, overdue=True)
    await t.retract_manifest(a, third)  # the loser's verdict: it puts back what it replaced
    assert await t.get_manifest(a, "ns/file") == ReplicaRead(second, provisional=False)


async def test_a_retraction_puts_back_what_the_write_replaced(pair: Pair) -> None:
    t, a = pair.transport, pair.a
    first, second = manifest(Version(5, 0, "p")), manifest(Version(6, 0, "p"))
    await t.put_manifest(a, first, None)
    replaced = (await t.put_manifest(a, second, None)).replaced
    assert replaced == first
    with pytest.raises(InvalidRequest):  # only an older manifest of the name goes back
        await t.retract_manifest(a, first, second)
    await t.retract_manifest(a, second, replaced)
    assert (await t.get_manifest(a, "ns/file")).manifest == first
    await t.retract_manifest(a, second, replaced)  # no longer exactly that one: nothing
    assert (await t.get_manifest(a, "ns/file")).manifest == first


async def test_a_call_meant_for_another_peer_is_refused(pair: Pair) -> None:
    impostor = Address(pair.a.url, pair.b.peer_id)
    with pytest.raises(PeerUnavailable):
        await pair.transport.get_manifest(impostor, "ns/file")
