"""Rebalancing after joins: each file's displaced chunk goes to the newcomer, nothing else moves.

The ring decides where a file version's chunks *should* be; its manifest says where they
*are*. When a member joins, a file's placement set changes by at most one swap, and
``ring.plan_moves`` names the one chunk to copy (from the member that left the set to the
newcomer). Per name, exactly one peer acts: the first up member of the name's manifest
replica set, the *primary*. It has the target pull the chunk straight from the source
(verified against the manifest before it is kept), commits the manifest at the next
revision, and the old copy is deleted after the delete grace, so GETs already streaming it
finish. A source that does not have the chunk, or whose copy fails its digest, is reported
to the repairer (which rebuilds it from the others) and the name is tried again later: a
move never waits forever on a copy that is gone. A replica that is no longer in its name's
replica set hands the manifest to the members that now are, then drops its copy.

Everything here is idempotent: a crash at any point leaves the manifest pointing at the old
copy, and the next pass redoes the move. A pass over every local manifest runs only when the
ring or the set of up members changes (then any name's placement may have); single names
are queued when their manifest arrives needing work. A pass reads a name's manifest only
where this peer must act on it: where it is the primary of a version with chunks (the index
says which, so a file kept in its manifest costs a pass no read), or has left the replica
set (to hand the manifest over). Every ``rebalance_interval`` the names
left over are queued again: those that failed, and those with a move waiting for a crowded
target (``Membership.crowded_ids``). So an idle peer's rebalancing costs nothing
however many files it holds. Moves are paced to ``rebalance_rate`` bytes per second per
peer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.config import PeerConfig
from node.datapath.coordinator import BrokenChunks
from node.datapath.replicas import ManifestReplicas
from node.disk.manifest_store import ManifestStore
from node.errors import ChunkNotFound, CorruptData, RingstoreError, Unavailable
from node.model.manifest import ChunkRef, Manifest
from node.waiting import Pacer, wait_event
from ring import Move, plan_moves

log = logging.getLogger(__name__)
YIELD_EVERY = 64  # names a pass looks at between two turns of the event loop, at most


@dataclass
class Progress:
    """What this peer's rebalancing has planned and done since it started."""

    planned_bytes: int = 0
    moved_bytes: int = 0
    moves: int = 0
    failed_moves: int = 0
    passes: int = 0
    last_pass: float = 0.0  # wall-clock time of the last finished pass
    pending: int = 0  # names queued for the next pass

    @property
    def remaining_bytes(self) -> int:
        return self.planned_bytes - self.moved_bytes

    def to_json(self) -> dict[str, float | int]:
        return {**dataclasses.asdict(self), "remaining_bytes": self.remaining_bytes}


class Rebalancer:
    """Carries out the moves a ring change asks for, for the names this peer is primary of."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        manifests: ManifestStore,
        replicas: ManifestReplicas,
        peers: Peers,
        progress: Progress,
        report_broken: BrokenChunks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``report_broken``: told of chunks a move found missing or corrupt at their
        source (the repairer's ``report``)."""
        self._config = config
        self._report_broken = report_broken
        self._membership = membership
        self._manifests = manifests
        self._replicas = replicas
        self._peers = peers
        self._clock = clock
        self._pending: set[str] = set()
        self._retry: set[str] = set()  # names that failed: queued again every interval
        self._deferred: set[str] = set()  # names with a move waiting for a crowded target
        self._wake = asyncio.Event()
        self._pacer = Pacer(config.rebalance_rate, clock)
        self.progress = progress  # shared with gossip, which reports it to other peers

    def __repr__(self) -> str:
        p = self.progress
        return (
            f"Rebalancer(pending={len(self._pending)}, moved={p.moved_bytes}/"
            f"{p.planned_bytes}, passes={p.passes})"
        )

    # --- deciding what to look at ---------------------------------------------------------

    def _feasible(self, moves: tuple[Move, ...]) -> list[Move]:
        """Moves whose source and target are both up (a down source is repair's business)
        and whose target is not crowded (full, or past the cluster's fill: the move waits
        until it has room, as a write passes over it)."""
        up, crowded = self._membership.up_ids(), set(self._membership.crowded_ids())
        return [m for m in moves if m.source in up and m.target in up and m.target not in crowded]

    def _moves(self, manifest: Manifest) -> list[Move]:
        """The moves ``manifest``'s chunks can make now. A name with a move whose target is
        crowded is remembered, to be looked at again every interval (a member coming up
        changes the up set, which starts a full pass anyway)."""
        if manifest.deleted or not manifest.chunks:
            return []
        ring, down = self._membership.ring, self._membership.down_ids()
        holders, key, n = manifest.holders(), manifest.file_id, manifest.layout.n
        planned = plan_moves(holders, ring, key, skip=down, n=n)
        feasible = self._feasible(planned)
        up = self._membership.up_ids()
        if any(m.source in up and m.target in up and m not in feasible for m in planned):
            self._deferred.add(manifest.name)
        return feasible

    def needs_work(self, manifest: Manifest) -> bool:
        """Whether this peer has something to do for ``manifest`` under the current ring:
        hand its replica over (it left the replica set), or move chunks (it is primary)."""
        role = self._role(manifest.name)
        return role == "left" or (role == "primary" and bool(self._moves(manifest)))

    def _role(self, name: str) -> Literal["primary", "secondary", "left"]:
        """This peer's place in ``name``'s replica set under the current ring: the primary
        (which alone moves chunks), another replica (nothing to do, whatever the manifest
        says), or none (it left the set: its copy is handed over)."""
        replicas = self._membership.replicas(name)
        me = self._membership.me.id
        if me not in replicas.members:
            return "left"
        return "primary" if replicas.primary == me else "secondary"

    def consider(self, manifest: Manifest) -> None:
        """Queue one name whose manifest just arrived, if it needs work here."""
        if self.needs_work(manifest):
            self._pending.add(manifest.name)
            self.progress.pending += 1
            self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Pass over every local manifest when the ring or liveness changes; every
        ``rebalance_interval``, over the names that failed or wait for a crowded target."""
        seen: tuple[str, frozenset[str]] | None = None
        last_retry = self._clock()
        while True:
            await wait_event(self._wake, self._config.heartbeat_interval)
            self._wake.clear()
            try:
                await self._membership.refresh_ring()
                state = self._state()
                if state != seen:
                    self._membership.settle("")  # until this pass is done
                    seen, last_retry = state, self._clock()
                    self._pending.update(self._manifests.names())
                    self._retry.clear()
                    self._deferred.clear()
                elif self._clock() - last_retry >= self._config.rebalance_interval:
                    last_retry = self._clock()
                    self._pending |= self._retry | self._deferred
                    self._retry.clear()
                    self._deferred.clear()
                if self._pending:
                    state = seen = await self.rebalance_pass(state)
                if not self._pending and not self._retry:
                    self._membership.settle(state[0])
            except Exception:  # the next pass retries; a bug must not stop rebalancing
                log.exception("rebalance pass failed")

    def _state(self) -> tuple[str, frozenset[str]]:
        """What a pass's decisions rest on: the ring, and which members are up."""
        return self._membership.ring.digest, frozenset(self._membership.up_ids())

    async def rebalance_pass(
        self, under: tuple[str, frozenset[str]] | None = None
    ) -> tuple[str, frozenset[str]]:
        """Work through the queued names once; returns the ``_state`` it ended under.

        Each name is judged under the ring and members up as they are when it comes. When
        they change during the pass (``under``: the state it started under; a member
        learned, or one going down or up, as when peers find each other at start), every
        name held here that the pass will not come to is queued again (those it judged,
        those it never had: it may be over a few names only) and the pass goes on: so a
        change costs at most one pass over every name, never the rest of a stale pass and
        then a whole new one, and a member that keeps going down and up cannot keep a pass
        from ending. (A change undone within ``YIELD_EVERY`` names goes unseen.)
        """
        names, self._pending = sorted(self._pending), set()
        self.progress.pending = len(names)
        state = self._state() if under is None else under
        for number, name in enumerate(names):
            if number % YIELD_EVERY == YIELD_EVERY - 1:  # most names need no read, no await
                await asyncio.sleep(0)
                if self._membership.ring_stale or self._state() != state:
                    state = await self._changed_during_pass(names, number)
            self._deferred.discard(name)  # judged now: _moves defers it again if it must
            try:
                await self._rebalance(name)
            except Exception as exc:  # anything: retry the name after the interval
                if isinstance(exc, RingstoreError):
                    log.warning("rebalancing %r: %s; will retry", name, exc)
                else:
                    log.exception("rebalancing %r failed; will retry", name)
                self._retry.add(name)
            else:  # it may have failed earlier and come again with a change of state
                self._retry.discard(name)
            self.progress.pending -= 1
        self.progress.pending = len(self._pending) + len(self._retry)
        self.progress.passes += 1
        self.progress.last_pass = time.time()
        return state

    async def _changed_during_pass(
        self, names: list[str], number: int
    ) -> tuple[str, frozenset[str]]:
        """The state changed before ``names[number]`` of a pass: rebuild the ring, queue
        again every name held that the pass will not come to, and return the new state."""
        ahead = names[number:]
        try:
            await self._membership.refresh_ring()
        except BaseException:
            self._pending.update(ahead)  # not judged: not lost either
            raise
        self._pending.update(self._manifests.names())
        self._pending.difference_update(ahead)  # judged under the new state, in this pass
        self.progress.pending = len(ahead) + len(self._pending)
        self._wake.set()
        log.info(
            "rebalance pass: the ring or the members up changed after %d of %d names; "
            "%d names queued again",
            number,
            len(names),
            len(self._pending),
        )
        return self._state()

    async def _rebalance(self, name: str) -> None:
        role = self._role(name)
        if role == "secondary" or (role == "primary" and not self._manifests.has_chunks(name)):
            # decided from the name and the index (nothing to move): no manifest read, so
            # no damage found here either (reads and anti-entropy find it)
            return
        found = await self._manifests.read(name)
        local = found.manifest
        if local is None or not self.needs_work(local):
            return
        replicas = self._membership.replicas(name).members
        if self._membership.me.id not in replicas:
            if found.provisional:  # a losing write handed over would outlive its retraction
                if found.overdue:
                    await self._replicas.decide(name, local)
                found = await self._manifests.read(name)
                local = found.manifest
                if local is None or found.provisional:
                    raise Unavailable(f"the replica of {name!r} here is not yet decided")
            await self._hand_over(local, replicas)
            return
        current = await self._replicas.read(name, decided=True)
        if current is None:
            return
        moves = self._moves(current)
        if moves:
            await self._move(current, moves)

    async def _hand_over(self, local: Manifest, replicas: tuple[str, ...]) -> None:
        """Give this replica's manifest to the members now in its replica set, then drop it."""
        for member in replicas:  # any failure raises: the copy stays until all confirm
            held = (await self._peers.get_manifest(member, local.name)).manifest
            if held is None or held.precedence < local.precedence:
                await self._peers.put_manifest(member, local)
        await self._manifests.retract(local.name, local.precedence)
        log.info("handed the manifest of %r over to %s", local.name, ", ".join(replicas))

    async def _move(self, manifest: Manifest, moves: list[Move]) -> None:
        """Copy each move's chunk to its target and commit the new holder, one move at a
        time: a chunk pulled onto its target is collectable there (``--gc-grace`` after it
        was stored) until a committed manifest names it there, and paced moves of big
        chunks can take longer than that apart (a whole file's commit after its last pull
        let a scrubber collect the first pulled chunk while its source's copy was retired:
        the chunk was then nowhere)."""
        layout = manifest.layout
        for move in moves:
            ref = next(ref for ref in manifest.chunks if ref.index == move.index)
            self.progress.planned_bytes += layout.chunk_size
            await self._pacer.pace(layout.chunk_size)
            chunk = manifest.chunk_id(move.index)
            try:
                await self._peers.pull_chunk(
                    move.target,
                    chunk,
                    move.source,
                    manifest.chunk_owner(move.index),
                    layout.chunk_size,
                    ref.digest,
                )
            except RingstoreError as exc:
                self.progress.failed_moves += 1
                self.progress.planned_bytes -= layout.chunk_size
                log.warning("moving %s to %s failed: %s", chunk, move.target, exc)
                if isinstance(exc, (ChunkNotFound, CorruptData)):  # the source's copy is bad
                    self._report_broken(manifest, {move.index})
                raise
            self.progress.moved_bytes += layout.chunk_size  # (copied, whatever the commit does)
            self.progress.moves += 1
            chunks = tuple(
                ChunkRef(ref.index, move.target, ref.block_digests)
                if ref.index == move.index
                else ref
                for ref in manifest.chunks
            )
            updated = dataclasses.replace(manifest, chunks=chunks, revision=manifest.revision + 1)
            await self._replicas.commit(updated, base=manifest)
            manifest = updated  # the next move's base
            log.info(
                "moved chunk %d of %r (%d bytes) to %s",
                move.index,
                manifest.name,
                layout.chunk_size,
                move.target,
            )
