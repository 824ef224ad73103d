"""The data path with no network at all: peers wired to each other in-process.

After Tahoe-LAFS's NoNetworkGrid: each ``GridPeer`` has real stores on disk, a ``Holder``, a
``Membership`` that knows every other grid peer, and the data path (``Peers``,
``ManifestReplicas``, ``Coordinator``, ``Rebuilder``) over ``GridTransport``, which calls the
target's ``Holder`` directly instead of sending HTTP. Every manifest crosses it as bytes, as
on the wire. ``break_peer`` makes every call to a peer fail as an unreachable peer would;
``fail_midway`` makes transfers to and from it break off part way; ``hang_peer`` makes calls
wait until ``unhang_peer`` or, like an HTTP read timeout, fail after the peer timeout.
``calls`` counts calls by kind and peer.

Use it to test data-path logic (quorums, degraded writes, decoding, rebuilds, liveness)
without sockets; use ``LocalCluster`` when HTTP itself is under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec

from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.cluster.protocol import GossipMessage, PeerFigures, PullOrder
from node.cluster.transport import Address
from node.config import PeerConfig
from node.datapath.chunk_streams import BlockBudget
from node.datapath.coordinator import Coordinator
from node.datapath.holder import Holder
from node.datapath.rebuild import Rebuilder
from node.datapath.replicas import ManifestReplicas
from node.disk.chunk_store import ChunkStore
from node.disk.manifest_store import ManifestStore
from node.errors import PeerUnavailable
from node.model.digests import Buffer
from node.model.manifest import ChunkMeta, Manifest, ReplicaRead, ReplicaWrite
from node.model.preconditions import Preconditions
from node.model.version import HybridClock, Version
from node.waiting import within
from ring import Member

GRID_VNODES = 64  # a small ring builds in microseconds; placement logic is the same


class BytesStream:
    """A chunk range read into memory, offered like aiohttp's StreamReader. With ``cut_at``,
    reading past that many bytes fails as a connection dropped mid-answer would."""

    def __init__(self, data: bytes, url: str, cut_at: int | None = None) -> None:
        self._data = memoryview(data)
        self._url = url
        self._left = len(data) if cut_at is None else cut_at

    async def readexactly(self, n: int) -> bytes:
        if n > self._left:
            raise PeerUnavailable(self._url, "connection reset mid-answer (grid)")
        if len(self._data) < n:
            raise asyncio.IncompleteReadError(bytes(self._data), n)
        piece, self._data = bytes(self._data[:n]), self._data[n:]
        self._left -= n
        return piece

    async def iter_any(self) -> AsyncIterator[bytes]:
        while self._data:
            yield await self.readexactly(min(len(self._data), 1 << 16))


class GridTransport:
    """The peer-to-peer calls, made by calling the target's ``Holder`` in-process."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout  # what a call to a hung peer waits before it fails
        self.holders: dict[str, tuple[str, Holder]] = {}  # url -> (peer id, holder)
        self.broken: set[str] = set()
        self.failing_midway: set[str] = set()
        self.hung: dict[str, asyncio.Event] = {}
        self.calls: Counter[tuple[str, str]] = Counter()  # (call, url)
        self.chunk_ranges: list[tuple[str, int, int]] = []  # (chunk id, offset, length) read

    def __repr__(self) -> str:
        return f"GridTransport(peers={len(self.holders)}, broken={len(self.broken)})"

    async def _holder(self, call: str, to: Address) -> Holder:
        self.calls[call, to.url] += 1
        if to.url in self.hung:
            try:
                await within(self.hung[to.url].wait(), self.timeout)
            except asyncio.TimeoutError:
                raise PeerUnavailable(to.url, f"no answer in {self.timeout}s (grid)") from None
        if to.url in self.broken or to.url not in self.holders:
            raise PeerUnavailable(to.url, "connection refused (grid)")
        peer_id, holder = self.holders[to.url]
        if to.peer_id is not None and to.peer_id != peer_id:
            raise PeerUnavailable(to.url, f"another peer answers here: not {to.peer_id}")
        return holder

    async def put_chunk(
        self,
        to: Address,
        chunk_id: str,
        body: AsyncIterable[Buffer],
        size: int | None,
        owner: ChunkMeta,
    ) -> int:
        holder = await self._holder("put_chunk", to)
        midway = to.url in self.failing_midway

        async def pieces() -> AsyncIterator[bytes]:
            async for piece in body:
                yield bytes(piece)
                if midway:
                    raise PeerUnavailable(to.url, "connection reset mid-upload (grid)")

        return (await holder.write_chunk(chunk_id, pieces(), size, owner)).size

    @asynccontextmanager
    async def open_chunk(
        self, to: Address, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[BytesStream]:
        holder = await self._holder("open_chunk", to)
        self.chunk_ranges.append((chunk_id, offset, length))
        async with holder.chunk_range(chunk_id) as chunk:
            if length:
                chunk.narrow(offset, offset + length)
            data = b"".join([piece async for piece in chunk.iter_any()])
        cut_at = len(data) // 2 if to.url in self.failing_midway else None
        yield BytesStream(data, to.url, cut_at)

    async def pull_chunk(self, to: Address, chunk_id: str, order: PullOrder) -> int:
        holder = await self._holder("pull_chunk", to)
        return (await holder.pull_chunk(chunk_id, order)).size

    async def delete_chunk(self, to: Address, chunk_id: str) -> None:
        await (await self._holder("delete_chunk", to)).delete_chunk(chunk_id)

    async def missing_chunks(self, to: Address, chunk_ids: list[str]) -> list[str]:
        return await (await self._holder("missing_chunks", to)).missing_chunks(chunk_ids)

    async def get_manifest(self, to: Address, name: str) -> ReplicaRead:
        found = await (await self._holder("get_manifest", to)).get_manifest(name)
        if found.manifest is None:
            return found
        sent = Manifest.from_bytes(found.manifest.to_bytes())  # as on the wire
        return dataclasses.replace(found, manifest=sent)

    async def put_manifest(
        self,
        to: Address,
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        holder = await self._holder("put_manifest", to)
        sent = Manifest.from_bytes(manifest.to_bytes())
        if condition is not None:  # as on the wire
            condition = msgspec.msgpack.decode(
                msgspec.msgpack.encode(condition), type=Preconditions
            )
        return await holder.put_manifest(sent, expect, condition)

    async def retract_manifest(
        self, to: Address, manifest: Manifest, restore: Manifest | None = None
    ) -> None:
        holder = await self._holder("retract_manifest", to)
        if restore is not None:  # as on the wire
            restore = Manifest.from_bytes(restore.to_bytes())
        await holder.retract_manifest(manifest.name, manifest.precedence, restore)

    async def confirm_manifest(self, to: Address, manifest: Manifest) -> None:
        holder = await self._holder("confirm_manifest", to)
        await holder.confirm_manifest(manifest.name, manifest.precedence)

    async def list_manifests(
        self,
        to: Address,
        prefix: str,
        start_after: str,
        limit: int,
        delimiter: str = "",
        base: str | None = None,
    ) -> tuple[list[Manifest], bool]:
        holder = await self._holder("list_manifests", to)
        return holder.list_manifests(prefix, start_after, limit, delimiter, base)

    async def exchange(self, to: Address, gossip: GossipMessage) -> GossipMessage:
        raise PeerUnavailable(to.url, "the grid has no gossip: membership is fixed")


@dataclasses.dataclass
class GridPeer:
    """One grid peer: its stores, holder, view of the cluster and data path."""

    url: str
    config: PeerConfig
    chunks: ChunkStore
    manifests: ManifestStore
    holder: Holder
    membership: Membership
    peers: Peers
    replicas: ManifestReplicas
    coordinator: Coordinator
    rebuilder: Rebuilder
    buffers: BlockBudget  # the read-ahead budget its GETs and rebuilds share
    broken_reports: list[tuple[str, set[int]]]  # (name, indexes) a read found broken

    @property
    def id(self) -> str:
        return self.membership.me.id


class Grid:
    """``count`` peers wired in-process; every peer sees every other up from the start."""

    def __init__(self, root: Path, count: int, **overrides: Any) -> None:
        self.root = root
        self.count = count
        # Chunks as files, every file cut into chunks (as tests.harness.local's FAST).
        self.overrides = {
            "discovery": "none",
            "delete_grace": 0.0,
            "inline_max": 0,
            "pack_max": 0,
            **overrides,
        }
        timeout = PeerConfig(data_dir=root, **self.overrides).peer_timeout
        self.transport = GridTransport(timeout)
        self.peers: list[GridPeer] = []

    def __repr__(self) -> str:
        return f"Grid({self.count} peers, {self.transport!r})"

    def __getitem__(self, index: int) -> GridPeer:
        return self.peers[index]

    async def start(self) -> None:
        members = [Member(f"grid-peer-{i:02d}", f"grid://peer-{i}") for i in range(self.count)]
        for i, me in enumerate(members):
            self.peers.append(await self._peer(me, self.root / f"peer-{i}"))
        for peer in self.peers:
            peer.membership.merge(members)
            await peer.membership.refresh_ring()
            for member in members:
                peer.membership.report_success(member.id)

    async def _peer(self, me: Member, data_dir: Path) -> GridPeer:
        config = PeerConfig(data_dir=data_dir, vnodes=GRID_VNODES, **self.overrides)
        chunks = ChunkStore(data_dir, config.max_bytes, config.pack_max, config.reserve_bytes)
        manifests = ManifestStore(data_dir, config.m)
        await chunks.open()
        await manifests.open()
        clock = HybridClock(me.id)
        membership = Membership(
            me, data_dir, GRID_VNODES, config.manifest_replicas, config.down_after
        )
        holder = Holder(chunks, manifests, clock, self.transport, membership, lambda manifest: None)
        self.transport.holders[me.url] = (me.id, holder)
        peers = Peers(membership, self.transport)
        replicas = ManifestReplicas(config, membership, peers, clock, own=manifests.read_now)
        reports: list[tuple[str, set[int]]] = []
        buffers = BlockBudget(config.buffer_memory, config.queue_depth, config.admission_wait)
        coordinator = Coordinator(
            config,
            membership,
            peers,
            clock,
            replicas,
            lambda manifest, broken: reports.append((manifest.name, set(broken))),
            buffers,
        )
        rebuilder = Rebuilder(config, membership, peers, replicas, buffers)
        return GridPeer(
            me.url,
            config,
            chunks,
            manifests,
            holder,
            membership,
            peers,
            replicas,
            coordinator,
            rebuilder,
            buffers,
            reports,
        )

    def settle(self) -> None:
        """Each peer forgets the placements it went through while the grid started (every
        member it saw come up made one), as it does once gossip says every member has
        handed its replicas over, so reads no longer look for replicas under them. Only for
        a grid nothing was written to: no rebalancer runs here, so there must be nothing to
        hand over. The figures each peer hears are the defaults with ``settled_ring`` (a
        grid hears none otherwise)."""
        for peer in self.peers:
            assert not peer.manifests.names(), "settle() is for a grid nothing was written to"
        for peer in self.peers:
            membership = peer.membership
            membership.settle_after(0.0)
            digest = membership.ring.digest
            for other in self.peers:
                if other is not peer:
                    membership.hear(other.id, PeerFigures(settled_ring=digest))
            membership.settle(digest)
            assert not list(membership.history()), "placements kept"

    def peer_of(self, member_id: str) -> GridPeer:
        return next(p for p in self.peers if p.id == member_id)

    def break_peer(self, peer: GridPeer) -> None:
        """Every call to ``peer`` fails from now on, like a refused connection."""
        self.transport.broken.add(peer.url)

    def fail_midway(self, peer: GridPeer) -> None:
        """Calls to ``peer`` start well but break off: uploads after their first piece,
        chunk reads halfway through, like a peer that dies mid-transfer."""
        self.transport.failing_midway.add(peer.url)

    def mend_peer(self, peer: GridPeer) -> None:
        self.transport.broken.discard(peer.url)
        self.transport.failing_midway.discard(peer.url)

    def hang_peer(self, peer: GridPeer) -> None:
        """Calls to ``peer`` get no answer until ``unhang_peer`` (or the peer timeout)."""
        self.transport.hung[peer.url] = asyncio.Event()

    def unhang_peer(self, peer: GridPeer) -> None:
        self.transport.hung.pop(peer.url).set()

    async def close(self) -> None:
        for event in self.transport.hung.values():
            event.set()
        for peer in self.peers:
            await peer.replicas.close()
            await peer.manifests.close()
            await peer.chunks.close()


@asynccontextmanager
async def settled_grid(root: Path, **overrides: Any) -> AsyncIterator[Grid]:
    """Eight started grid peers (``overrides``: their configuration) that have forgotten the
    placements of their start (``Grid.settle``): no hand-over under way; closed after."""
    grid = Grid(root, 8, **overrides)
    await grid.start()
    grid.settle()
    try:
        yield grid
    finally:
        await grid.close()


async def store(peer: GridPeer, name: str, data: bytes) -> Manifest:
    """PUT ``data`` (one piece, text/plain) as ``name`` through ``peer``."""

    async def body() -> AsyncIterator[bytes]:
        yield data

    return await peer.coordinator.put(name, body(), len(data), "text/plain")


def home(grid: Grid, name: str) -> list[GridPeer]:
    """``name``'s home replicas (its placement set, up or down), in ring order."""
    return [grid.peer_of(m) for m in grid[0].membership.home_replicas(name).members]


def outside(grid: Grid, name: str) -> GridPeer:
    """A peer that is not one of ``name``'s home replicas (it coordinates the reads)."""
    homes = home(grid, name)
    return next(peer for peer in grid.peers if peer not in homes)
