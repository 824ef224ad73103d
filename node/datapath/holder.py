"""The holder: what a peer does when another peer stores, reads, copies or deletes a chunk on
it, or offers, reads, retracts or lists a manifest replica (Tahoe-LAFS's storage server).

This is the business logic behind the peer-to-peer routes, free of HTTP: ``node.api.peer``
adapts it to requests, and the in-process transport of the tests calls it directly. Every
replica a holder keeps is told to ``on_replica_stored`` (the rebalancer checks whether the
name needs work here).

A holder trusts no peer's input: chunk owners are checked (``chunk_owner``: name, version,
block size), a version more than the clock's skew limit ahead is refused, and a pull copies
only from a member, at the address the membership has for it (never a URL the order names).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from node.cluster.membership import Membership
from node.cluster.protocol import GossipMessage, PullOrder
from node.cluster.transport import Address, ChunkStream, Transport
from node.disk.chunk_store import ChunkRange, ChunkStore
from node.disk.manifest_store import ManifestStore
from node.errors import CorruptData, InvalidRequest, PeerUnavailable, RingstoreError, Unavailable
from node.model.digests import BlockDigests, Buffer, chunk_digest
from node.model.manifest import (
    ChunkMeta,
    Manifest,
    ReplicaRead,
    ReplicaWrite,
    SealedRead,
    chunk_index,
    chunk_owner,
)
from node.model.preconditions import Preconditions
from node.model.version import HybridClock, Version

log = logging.getLogger(__name__)
T = TypeVar("T")


class Holder:
    """The chunks and manifest replicas of this peer, as other peers use them."""

    def __init__(
        self,
        chunks: ChunkStore,
        manifests: ManifestStore,
        clock: HybridClock,
        transport: Transport,
        membership: Membership,
        on_replica_stored: Callable[[Manifest], None],
        on_chunk_stored: Callable[[ChunkMeta], None] = lambda meta: None,
        on_chunk_read: Callable[[int], None] = lambda size: None,
    ) -> None:
        """``on_replica_stored`` hears of each manifest replica kept (the rebalancer and the
        repairer), ``on_chunk_stored`` of each chunk written, over HTTP or by this peer
        itself, and ``on_chunk_read`` of the bytes of each chunk read through
        ``open_chunk`` or ``read_chunk_now``: this peer's own, and those a channel frame
        asked for (the metrics; the chunk route counts those it sends over HTTP)."""
        self.chunks = chunks
        self.manifests = manifests
        self._clock = clock
        self._transport = transport
        self._membership = membership  # pulls go only to members, at their own address
        self._on_replica_stored = on_replica_stored
        self._on_chunk_stored = on_chunk_stored
        self._on_chunk_read = on_chunk_read

    def __repr__(self) -> str:
        return f"Holder({self.chunks!r}, {self.manifests!r})"

    async def write_chunk(
        self, chunk_id: str, pieces: AsyncIterable[Buffer], size: int | None, owner: ChunkMeta
    ) -> ChunkMeta:
        """Store a chunk from a stream; raises InvalidRequest for an owner whose version is
        too far ahead, and see ``ChunkStore.write`` for the rest."""
        self._clock.check(Version.parse(owner.version))
        stored = await self.chunks.write(chunk_id, pieces, size, owner)
        self._on_chunk_stored(stored)
        log.debug("stored chunk %s (%d bytes) of %r", chunk_id, stored.size, owner.name)
        return stored

    @asynccontextmanager
    async def open_chunk(
        self, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[ChunkRange]:
        """Bytes ``[offset, offset+length)`` of a chunk here (0: all of it), as a stream
        this peer reads itself (for its own reads, or a channel frame's); raises what
        ``ChunkStore.open_range`` raises."""
        async with self.chunks.open_range(chunk_id, offset, length) as chunk:
            try:
                yield chunk
            finally:
                self._on_chunk_read(chunk.read_bytes)

    def read_chunk_now(self, chunk_id: str, offset: int, length: int) -> bytearray | None:
        """``open_chunk``'s bytes where the page cache has them at once
        (``ChunkStore.read_now``), counted as read; None otherwise. Raises nothing."""
        data = self.chunks.read_now(chunk_id, offset, length)
        if data is not None:
            self._on_chunk_read(len(data))
        return data

    def chunk_range(self, chunk_id: str) -> AbstractAsyncContextManager[ChunkRange]:
        """A whole chunk here, open to be narrowed to a range and sent by the chunk route
        (which counts what it sends); raises what ``ChunkStore.open_range`` raises."""
        return self.chunks.open_range(chunk_id, 0, 0)

    async def pull_chunk(self, chunk_id: str, order: PullOrder) -> ChunkMeta:
        """Copy a chunk from the peer ``order`` names (a rebalancing move), kept only if its
        block digests hash to ``order.digest``; return its sidecar.

        Raises InvalidRequest for an order that names no chunk, a bad owner, or a source
        that is not a member at that URL (nothing is fetched then), CorruptData on a digest
        mismatch, Unavailable when the source cannot be read (the source's failure: this
        peer did its part), and what the store raises.
        """
        try:
            index = chunk_index(chunk_id)
            owner = chunk_owner(order.name, order.version, index, order.block_size)
            self._clock.check(Version.parse(order.version))
        except ValueError as exc:
            raise InvalidRequest(f"pull of {chunk_id}: {exc}") from exc
        try:
            source = self._membership.address(order.source_id or "")
        except KeyError:
            raise InvalidRequest(
                f"pull of {chunk_id}: the source {order.source_id!r} is not a member"
            ) from None
        if source.url != order.source:
            raise InvalidRequest(
                f"pull of {chunk_id}: member {order.source_id} is at {source.url}, "
                f"not {order.source!r}"
            )
        try:
            async with self._transport.open_chunk(source, chunk_id, 0, order.size) as stream:

                async def verified() -> AsyncIterator[bytes]:
                    digests = BlockDigests(order.block_size)
                    async for piece in stream.iter_any():
                        digests.update(piece)
                        yield piece
                    if chunk_digest(digests.digests()) != order.digest:
                        raise CorruptData(f"chunk {chunk_id} from {order.source} fails its digest")

                return await self.chunks.write(chunk_id, verified(), order.size, owner)
        except PeerUnavailable as exc:
            raise Unavailable(f"cannot read {chunk_id} from its source: {exc}") from exc

    async def delete_chunk(self, chunk_id: str) -> None:
        """Remove a chunk; raises ChunkNotFound if it is not here."""
        await self.chunks.delete(chunk_id)

    async def missing_chunks(self, chunk_ids: list[str]) -> list[str]:
        """The chunks of ``chunk_ids`` this peer does not hold (anti-entropy's question)."""
        return await self.chunks.missing(chunk_ids)

    async def get_manifest(self, name: str) -> ReplicaRead:
        """This peer's replica of ``name``'s manifest (a damaged one reads as none), and
        whether it is provisional (``ManifestStore.read``)."""
        return await self.manifests.read(name)

    def get_manifest_now(self, name: str) -> SealedRead | None:
        """``get_manifest``'s answer, sealed, where it needs no wait, else None
        (``ManifestStore.sealed_now``): for another peer's read."""
        return self.manifests.sealed_now(name)

    async def put_manifest(
        self,
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        """Keep a replica if it takes precedence and ``condition`` holds for the one here
        (see ``ManifestStore.put``)."""
        self._clock.observe(manifest.version)
        written = await self.manifests.put(manifest, expect, condition)
        if written.stored:
            self._on_replica_stored(manifest)
        return written

    async def retract_manifest(
        self, name: str, precedence: tuple[Version, int], restore: Manifest | None = None
    ) -> None:
        """Take back the replica of ``name`` if it is exactly ``precedence``, putting back
        ``restore`` (what that write replaced) when given; raises InvalidRequest for a
        ``restore`` of another name or not older than ``precedence``."""
        if restore is not None and (restore.name != name or restore.precedence >= precedence):
            raise InvalidRequest(
                f"retraction of {name!r}: cannot put back {restore.name!r} at "
                f"{restore.version}/{restore.revision}"
            )
        if await self.manifests.retract(name, precedence, restore):
            put_back = await self.manifests.get(name)  # (not always ``restore``: see retract)
            if put_back is not None:
                self._on_replica_stored(put_back)

    async def confirm_manifest(self, name: str, precedence: tuple[Version, int]) -> None:
        """The conditional write ``precedence`` of ``name`` kept here was committed: its
        replica is no longer provisional (``ManifestStore.confirm``)."""
        await self.manifests.confirm(name, precedence)

    def list_manifests(
        self,
        prefix: str,
        start_after: str,
        limit: int,
        delimiter: str = "",
        base: str | None = None,
    ) -> tuple[list[Manifest], bool]:
        """Up to ``limit`` replicas (without chunks) whose names start with ``prefix`` and
        sort after ``start_after``, tombstones included, and whether more remain; with a
        ``delimiter``, rolled up into folders below ``base`` (see ``ManifestStore.list``)."""
        return self.manifests.list(prefix, start_after, limit, delimiter, base)


class LocalFirst:
    """A ``Transport`` whose manifest calls, chunk writes and chunk reads addressed to this
    peer itself go straight to its ``Holder``, and every other call through ``remote``.

    A coordinator is one of a name's 3 manifest replicas for about 3 names in 7: each of
    those calls over loopback cost a full HTTP request on both sides of this one process
    (signing, parsing, a send and a receive: the loopback send alone was 21-28% of a small
    PUT's or GET's coordinator samples, bench/small.py --profile). The holder is what the
    peer route would have called; the answers and errors are the same, as the in-process
    transport of the tests shows (``tests/datapath/test_transport_contract.py``). Its own
    chunk ranges are read from their files (``ChunkStore.open_range``); chunk copies, deletes
    and everything else stay on ``remote``. Until ``holder`` is set (the wiring
    builds it after the components that call), all calls go to ``remote``.
    """

    def __init__(self, remote: Transport, me: str) -> None:
        self.holder: Holder | None = None
        self._remote = remote
        self._me = me

    def __repr__(self) -> str:
        return f"LocalFirst({self._remote!r}, me={self._me[:8]})"

    def _local(self, to: Address) -> Holder | None:
        return self.holder if to.peer_id == self._me else None

    @staticmethod
    async def _answer(to: Address, call: Awaitable[T]) -> T:
        """``call``'s result, with a failure the holder did not explain (a disk error) raised
        as PeerUnavailable: what the HTTP route's 500 would have become, so the caller
        stands in a handoff or counts one replica fewer, as it does for any peer."""
        try:
            return await call
        except RingstoreError:
            raise
        except Exception as exc:
            log.exception("a call of this peer to itself failed")
            raise PeerUnavailable(to.url, f"failed here: {exc!r}") from exc

    async def put_chunk(
        self,
        to: Address,
        chunk_id: str,
        body: AsyncIterable[Buffer],
        size: int | None,
        owner: ChunkMeta,
    ) -> int:
        if (holder := self._local(to)) is not None:
            # The coordinator holds one chunk of every file on a 7-peer cluster: written
            # here, its blocks (views of stripes ``cut_stripes`` never fills again while
            # viewed) skip a loopback stream.
            return (await self._answer(to, holder.write_chunk(chunk_id, body, size, owner))).size
        return await self._remote.put_chunk(to, chunk_id, body, size, owner)

    def open_chunk(
        self, to: Address, chunk_id: str, offset: int, length: int
    ) -> AbstractAsyncContextManager[ChunkStream]:
        if (holder := self._local(to)) is not None:
            # 5 GETs in 7 on 7 peers read one data chunk from their own coordinator: from
            # its file, in a worker thread, not through a loopback request and sendfile.
            return self._own_chunk(holder, to, chunk_id, offset, length)
        return self._remote.open_chunk(to, chunk_id, offset, length)

    @asynccontextmanager
    async def _own_chunk(
        self, holder: Holder, to: Address, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[ChunkStream]:
        """A chunk of this peer, read from its file; a disk error while opening or reading
        it is raised as PeerUnavailable (logged with its traceback), as ``_answer`` does."""
        try:
            async with holder.open_chunk(chunk_id, offset, length) as chunk:
                yield chunk
        except OSError as exc:
            log.exception("reading chunk %s of this peer failed", chunk_id)
            raise PeerUnavailable(to.url, f"failed here: {exc!r}") from exc

    async def pull_chunk(self, to: Address, chunk_id: str, order: PullOrder) -> int:
        return await self._remote.pull_chunk(to, chunk_id, order)

    async def delete_chunk(self, to: Address, chunk_id: str) -> None:
        await self._remote.delete_chunk(to, chunk_id)

    async def missing_chunks(self, to: Address, chunk_ids: list[str]) -> list[str]:
        return await self._remote.missing_chunks(to, chunk_ids)

    async def get_manifest(self, to: Address, name: str) -> ReplicaRead:
        if (holder := self._local(to)) is not None:
            return await self._answer(to, holder.get_manifest(name))
        return await self._remote.get_manifest(to, name)

    async def put_manifest(
        self,
        to: Address,
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        if (holder := self._local(to)) is not None:
            return await self._answer(to, holder.put_manifest(manifest, expect, condition))
        return await self._remote.put_manifest(to, manifest, expect, condition)

    async def retract_manifest(
        self, to: Address, manifest: Manifest, restore: Manifest | None = None
    ) -> None:
        if (holder := self._local(to)) is not None:
            retraction = holder.retract_manifest(manifest.name, manifest.precedence, restore)
            await self._answer(to, retraction)
        else:
            await self._remote.retract_manifest(to, manifest, restore)

    async def confirm_manifest(self, to: Address, manifest: Manifest) -> None:
        if (holder := self._local(to)) is not None:
            await self._answer(to, holder.confirm_manifest(manifest.name, manifest.precedence))
        else:
            await self._remote.confirm_manifest(to, manifest)

    async def list_manifests(
        self,
        to: Address,
        prefix: str,
        start_after: str,
        limit: int,
        delimiter: str = "",
        base: str | None = None,
    ) -> tuple[list[Manifest], bool]:
        if (holder := self._local(to)) is not None:
            here = holder

            async def listed() -> tuple[list[Manifest], bool]:
                return here.list_manifests(prefix, start_after, limit, delimiter, base)

            return await self._answer(to, listed())
        return await self._remote.list_manifests(to, prefix, start_after, limit, delimiter, base)

    async def exchange(self, to: Address, gossip: GossipMessage) -> GossipMessage:
        return await self._remote.exchange(to, gossip)
