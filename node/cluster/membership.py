"""Who is in the cluster, and who is up.

Members are an address book: learned from ``--join`` seeds and from every gossip exchange, so a
member known to one peer is soon known to all; persisted in the data directory; never removed.
A member's own record (its gossip ``from`` field) decides its URL and weight; hearsay only
adds members not yet known.

Liveness is separate and local: a member is ``up`` only while this peer's own HTTP exchanges
with it succeed, and ``down`` after ``down_after`` consecutive failures (a failed exchange, or
a failed call the coordinator reports). Down members keep their place on the ring; placement
passes over them for new writes. New members start ``down`` until the first exchange.

Each gossip round sends this peer's member list, storage figures and hybrid clock to every
member and to seeds not yet known, and merges what comes back; clocks observed this way keep
versions issued by different peers in causal order within a heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.cluster.transport import Address, PeerClient
from node.disk.durable import write_atomically
from node.errors import CorruptData, RingstoreError
from node.model.version import HybridClock
from node.model.wire import pack, unpack
from node.waiting import wait_event, within
from ring import Member, Ring

log = logging.getLogger(__name__)


@dataclass
class Liveness:
    """What this peer last heard from one member."""

    up: bool = False
    failures: int = 0
    last_seen: float = 0.0
    down_since: float = field(default_factory=time.monotonic)
    used_bytes: int = 0
    chunks: int = 0
    rebalance: dict[str, Any] = field(default_factory=dict)
    disk_total_bytes: int = 0
    disk_free_bytes: int = 0

    @property
    def state(self) -> str:
        return "up" if self.up else "down"


class Membership:
    """The member list, each member's liveness, and the ring built from the members."""

    def __init__(
        self,
        me: Member,
        data_dir: Path,
        seeds: Iterable[str],
        peers: PeerClient,
        clock: HybridClock,
        stats: Callable[[], dict[str, Any]],
        vnodes: int,
        interval: float = 1.0,
        down_after: int = 2,
    ) -> None:
        self.me = me
        self._path = data_dir / "members.msgpack"
        self._seeds = [s.rstrip("/") for s in seeds if s.rstrip("/") != me.url]
        self._peers = peers
        self._clock = clock
        self._stats = stats  # this peer's used_bytes, chunks and rebalance progress
        self._vnodes = vnodes
        self._interval = interval
        self._down_after = down_after
        self._members: dict[str, Member] = {me.id: me}
        self._liveness: dict[str, Liveness] = {me.id: Liveness(up=True)}
        self._ring = Ring([me], vnodes)
        self._ring_stale = False
        self._unsaved = False  # members learned but not yet written to disk
        self.ring_changed_at = time.monotonic()
        self._wake = asyncio.Event()

    def __repr__(self) -> str:
        up = len(self.up_ids())
        return f"Membership(me={self.me.id[:8]}, members={len(self._members)}, up={up})"

    # --- the views the coordinator uses -------------------------------------------------

    @property
    def ring(self) -> Ring:
        """The ring of every member; rebuilt off the loop shortly after a member is learned."""
        return self._ring

    def member(self, member_id: str) -> Member:
        return self._members[member_id]

    def members(self) -> list[Member]:
        return sorted(self._members.values(), key=lambda m: m.id)

    def liveness(self, member_id: str) -> Liveness:
        return self._liveness[member_id]

    def up_ids(self) -> set[str]:
        return {i for i, live in self._liveness.items() if live.up}

    def down_ids(self) -> set[str]:
        return set(self._members) - self.up_ids()

    def down_for(self, member_id: str) -> float:
        """Seconds ``member_id`` has been down as far as this peer knows (0 when up)."""
        live = self._liveness[member_id]
        return 0.0 if live.up else time.monotonic() - live.down_since

    def url(self, member_id: str) -> str:
        return self._members[member_id].url

    def address(self, member_id: str) -> Address:
        """Where to call ``member_id``, so that only that peer answers."""
        return Address(self._members[member_id].url, member_id)

    # --- learning -----------------------------------------------------------------------

    def load(self) -> None:
        """Read the persisted member list and build the ring (blocking; before serving)."""
        try:
            records = unpack(self._path.read_bytes())
            members = [_member(r) for r in records]
        except FileNotFoundError:
            return
        except (CorruptData, KeyError, TypeError, ValueError) as exc:
            log.error("ignoring unreadable %s (%s); members will be relearned", self._path, exc)
            return
        self._add(members)
        self._ring = Ring(self._members.values(), self._vnodes)
        self._ring_stale = False

    def learn(self, member: Member) -> None:
        """Take a member's own record (from its gossip or its mDNS announcement)."""
        if member.id != self.me.id and self._members.get(member.id) != member:
            self._members.pop(member.id, None)  # its own record beats hearsay
            self.merge([member])

    def merge(self, members: Iterable[Member]) -> bool:
        """Add members not yet known (hearsay never changes a known member)."""
        if not self._add(members):
            return False
        self._unsaved = True
        self._wake.set()
        return True

    def _add(self, members: Iterable[Member]) -> bool:
        changed = False
        for member in members:
            if member.id == self.me.id or member.id in self._members:
                continue
            self._members[member.id] = member
            self._liveness.setdefault(member.id, Liveness())
            self._ring_stale = True
            changed = True
            log.info("member %s at %s (weight %d)", member.id, member.url, member.weight)
        return changed

    async def save(self) -> None:
        """Persist the member list if it changed (fsync: in a thread, it can take a while)."""
        if self._unsaved:
            self._unsaved = False
            records = pack([_record(m) for m in self.members()])
            await asyncio.to_thread(write_atomically, self._path, records)

    async def refresh_ring(self) -> None:
        """Rebuild the ring in a thread if members changed (O(vnodes x members))."""
        if self._ring_stale:
            self._ring_stale = False
            ring = await asyncio.to_thread(Ring, list(self._members.values()), self._vnodes)
            if ring.digest != self._ring.digest:
                self.ring_changed_at = time.monotonic()
            self._ring = ring

    def report_success(self, member_id: str) -> None:
        live = self._liveness.get(member_id)
        if live is None:
            return
        if not live.up:
            log.info("member %s is up", member_id)
        live.up, live.failures, live.last_seen = True, 0, time.monotonic()

    def report_failure(self, member_id: str, reason: str = "") -> None:
        live = self._liveness.get(member_id)
        if live is None or member_id == self.me.id:
            return
        live.failures += 1
        if live.up and live.failures >= self._down_after:
            live.up, live.down_since = False, time.monotonic()
            log.warning("member %s is down: %s", member_id, reason)

    # --- gossip -------------------------------------------------------------------------

    def gossip(self) -> dict[str, Any]:
        return {
            **self._stats(),
            "from": _record(self.me),
            "members": [_record(m) for m in self.members()],
            "clock": self._clock.now().to_wire(),
        }

    def receive(self, payload: dict[str, Any]) -> None:
        """Merge a gossip payload from another peer; the sender is evidently up.

        Raises KeyError, TypeError or ValueError for a malformed payload.
        """
        sender = _member(payload["from"])
        members = [_member(r) for r in payload["members"]]
        used, chunks = int(payload["used_bytes"]), int(payload["chunks"])
        rebalance = dict(payload.get("rebalance", {}))
        disk = int(payload.get("disk_total_bytes", 0)), int(payload.get("disk_free_bytes", 0))
        self.learn(sender)
        self.merge(members)
        if "clock" in payload:
            self._clock.observe_wire(payload["clock"])
        self.report_success(sender.id)
        live = self._liveness[sender.id]
        live.used_bytes, live.chunks, live.rebalance = used, chunks, rebalance
        live.disk_total_bytes, live.disk_free_bytes = disk

    async def _exchange(self, url: str, member_id: str | None) -> None:
        timeout = max(1.0, 2 * self._interval)
        try:
            reply = await within(
                self._peers.exchange(Address(url, member_id), self.gossip()), timeout
            )
            self.receive(reply)
        except (RingstoreError, asyncio.TimeoutError, KeyError, TypeError, ValueError) as exc:
            if member_id is not None:
                self.report_failure(member_id, str(exc) or type(exc).__name__)

    async def gossip_round(self) -> None:
        """Exchange gossip with every member and every seed not yet known."""
        known_urls = {m.url for m in self._members.values()}
        targets: list[tuple[str, str | None]] = [
            (m.url, m.id) for m in self._members.values() if m.id != self.me.id
        ]
        targets += [(seed, None) for seed in self._seeds if seed not in known_urls]
        await asyncio.gather(*(self._exchange(url, mid) for url, mid in targets))
        await self.save()
        await self.refresh_ring()

    async def run(self) -> None:
        """Gossip every ``interval`` seconds, and at once when a member is learned."""
        while True:
            self._wake.clear()
            try:
                await self.gossip_round()
            except Exception:  # a bug here must not end heartbeats for good
                log.exception("gossip round failed")
            await wait_event(self._wake, self._interval)


def _record(member: Member) -> dict[str, Any]:
    return {"id": member.id, "url": member.url, "weight": member.weight}


def _member(record: dict[str, Any]) -> Member:
    return Member(str(record["id"]), str(record["url"]), int(record["weight"]))
