"""The peer-call interface: every call from this peer to another member goes through here.

``Peers`` addresses members by id, resolves their current address from the membership, makes
the call over a ``Transport`` (HTTP in production, in-process in tests) and reports the
outcome to liveness as a side effect: a call that fails with PeerUnavailable counts against
the member, one that returns counts for it. Callers never report liveness themselves, except
for what only they can see (a chunk stream that stalls: ``report_failure``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from node.cluster.membership import Membership
from node.cluster.protocol import GossipMessage, PullOrder
from node.cluster.transport import Address, ChunkStream, Transport
from node.errors import PeerUnavailable, RingstoreError
from node.model.digests import Buffer
from node.model.manifest import ChunkMeta, Manifest, ReplicaRead, ReplicaWrite
from node.model.names import is_stored_name
from node.model.preconditions import Preconditions
from node.model.version import Version
from node.waiting import within

T = TypeVar("T")


class Peers:
    """Calls to members by id, with liveness recorded for every outcome.

    Every method raises what its ``Transport`` counterpart raises, and KeyError for a member
    id the membership does not know.
    """

    def __init__(self, membership: Membership, transport: Transport) -> None:
        self._membership = membership
        self._transport = transport

    def __repr__(self) -> str:
        return f"Peers({self._membership!r}, {self._transport!r})"

    def report_failure(self, member: str, reason: str) -> None:
        """Count a failure the caller saw and the transport could not (a stalled stream)."""
        self._membership.report_failure(member, reason)

    async def _call(self, member: str, call: Callable[[Address], Awaitable[T]]) -> T:
        try:
            result = await call(self._membership.address(member))
        except PeerUnavailable as exc:
            if exc.counted:  # one failed request counts once, however many calls it carried
                self._membership.report_failure(member, str(exc))
            raise
        self._membership.report_success(member)
        return result

    async def put_chunk(
        self,
        member: str,
        chunk_id: str,
        body: AsyncIterable[Buffer],
        size: int | None,
        owner: ChunkMeta,
    ) -> int:
        """Stream a chunk to ``member``; return the size it stored."""
        return await self._call(
            member, lambda to: self._transport.put_chunk(to, chunk_id, body, size, owner)
        )

    @asynccontextmanager
    async def open_chunk(
        self, member: str, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[ChunkStream]:
        """Read bytes ``[offset, offset+length)`` of a chunk on ``member`` as a stream.

        A PeerUnavailable raised while opening or reading counts against the member. An
        open stream is not yet a success: a holder that answers headers and then stalls
        must still reach ``down_after``.
        """
        to = self._membership.address(member)
        try:
            async with self._transport.open_chunk(to, chunk_id, offset, length) as stream:
                yield stream
        except PeerUnavailable as exc:
            if exc.counted:  # a closed channel fails its calls in flight, counted once
                self._membership.report_failure(member, str(exc))
            raise

    async def pull_chunk(
        self,
        target: str,
        chunk_id: str,
        source: str,
        owner: ChunkMeta,
        size: int,
        digest: bytes,
    ) -> int:
        """Have ``target`` copy a chunk straight from ``source``, checked against ``digest``.

        Returns the size stored; the copy goes from source to target, not through here.
        """
        where = self._membership.address(source)
        order = PullOrder(
            where.url, where.peer_id, size, owner.block_size, digest, owner.name, owner.version
        )
        return await self._call(target, lambda to: self._transport.pull_chunk(to, chunk_id, order))

    async def delete_chunk(self, member: str, chunk_id: str) -> None:
        """Remove a chunk from ``member``; raises ChunkNotFound if it does not hold it."""
        await self._call(member, lambda to: self._transport.delete_chunk(to, chunk_id))

    async def missing_chunks(self, member: str, chunk_ids: list[str]) -> list[str]:
        """Which of ``chunk_ids`` ``member`` does not hold (at most ``MAX_INVENTORY``)."""
        return await self._call(member, lambda to: self._transport.missing_chunks(to, chunk_ids))

    async def get_manifest(self, member: str, name: str) -> ReplicaRead:
        """``member``'s replica of ``name``'s manifest (None if it has none), and whether
        it is provisional there. A name no manifest may carry (``is_stored_name``: a record
        name made too long from a caller's input) is on no replica, and is not asked for:
        the replica would refuse the call, and the channel carrying it."""
        if not is_stored_name(name):
            return ReplicaRead(None)
        return await self._call(member, lambda to: self._transport.get_manifest(to, name))

    async def put_manifest(
        self,
        member: str,
        manifest: Manifest,
        expect: tuple[Version, int] | None = None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        """Offer a manifest to a replica (only over exactly ``expect``, and only if
        ``condition`` holds there, when given)."""
        return await self._call(
            member, lambda to: self._transport.put_manifest(to, manifest, expect, condition)
        )

    async def retract_manifest(
        self, member: str, manifest: Manifest, restore: Manifest | None = None
    ) -> None:
        """Take back ``member``'s replica of ``manifest`` if it is still exactly that one,
        putting back ``restore`` (what it replaced there) when given."""
        await self._call(member, lambda to: self._transport.retract_manifest(to, manifest, restore))

    async def confirm_manifest(self, member: str, manifest: Manifest) -> None:
        """Tell ``member``, which kept the conditional write ``manifest``, that it was
        committed (no longer provisional there)."""
        await self._call(member, lambda to: self._transport.confirm_manifest(to, manifest))

    async def list_manifests(
        self,
        member: str,
        prefix: str,
        start_after: str,
        limit: int,
        delimiter: str = "",
        base: str | None = None,
    ) -> tuple[list[Manifest], bool]:
        """A page of ``member``'s replicas (without chunks) and whether it had more; with a
        ``delimiter``, rolled up into folders below ``base``."""
        return await self._call(
            member,
            lambda to: self._transport.list_manifests(
                to, prefix, start_after, limit, delimiter, base
            ),
        )

    async def exchange(
        self,
        url: str,
        member: str | None,
        gossip: GossipMessage,
        timeout: float,
        merge: Callable[[GossipMessage], None],
    ) -> None:
        """One gossip exchange with the peer at ``url`` (``member``: its id, when known):
        send ``gossip``, then ``merge`` the answer.

        This is the heartbeat, so any failure counts against the member: no answer within
        ``timeout``, an error answer of any kind, or an answer ``merge`` refuses (ValueError).
        It counts for the member only once the answer is merged. Raises PeerUnavailable.
        """
        to = Address(url, member)
        try:
            reply = await within(self._transport.exchange(to, gossip), timeout)
            merge(reply)
        except (RingstoreError, asyncio.TimeoutError, ValueError) as exc:
            timed_out = isinstance(exc, asyncio.TimeoutError)
            reason = f"no gossip answer within {timeout}s" if timed_out else str(exc)
            if member is not None:
                self._membership.report_failure(member, reason)
            if isinstance(exc, PeerUnavailable):
                raise
            raise PeerUnavailable(url, reason) from exc
        if member is not None:
            self._membership.report_success(member)
