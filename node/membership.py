"""Who is in the cluster, and who is up.

Members are an address book: learned from ``--join`` seeds and from every gossip exchange, so a
member known to one peer is soon known to all; persisted in the data directory; never removed.
Liveness is separate: a member is ``up`` only while this peer's own HTTP exchanges with it
succeed, and ``down`` after ``down_after`` consecutive failures (a failed exchange, or a failed
call the coordinator reports). Down members keep their place on the ring; placement passes
over them for new writes.

Each gossip round sends this peer's member list and storage figures to every member and to
seeds not yet known, and merges what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from node.errors import RingstoreError
from node.peer_client import PeerClient
from ring import Member, Ring

log = logging.getLogger(__name__)


@dataclass
class Liveness:
    """What this peer last heard from one member."""

    up: bool = False
    failures: int = 0
    last_seen: float = 0.0
    used_bytes: int = 0
    chunks: int = 0

    @property
    def state(self) -> str:
        return "up" if self.up else "down"


class Membership:
    def __init__(
        self,
        me: Member,
        data_dir: Path,
        seeds: Iterable[str],
        peers: PeerClient,
        stats: Callable[[], tuple[int, int]],
        vnodes: int,
        interval: float = 1.0,
        down_after: int = 2,
    ) -> None:
        self.me = me
        self._path = data_dir / "members.msgpack"
        self._seeds = [s.rstrip("/") for s in seeds if s.rstrip("/") != me.url]
        self._peers = peers
        self._vnodes = vnodes
        self._interval = interval
        self._down_after = down_after
        self._members: dict[str, Member] = {me.id: me}
        self._liveness: dict[str, Liveness] = {me.id: Liveness(up=True)}
        self._ring = Ring([me], vnodes)
        self._wake = asyncio.Event()
        self._stats = stats  # this peer's (used_bytes, chunks)

    def __repr__(self) -> str:
        up = len(self.up_ids())
        return f"Membership(me={self.me.id[:8]}, members={len(self._members)}, up={up})"

    # --- the views the coordinator uses -------------------------------------------------

    @property
    def ring(self) -> Ring:
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

    def url(self, member_id: str) -> str:
        return self._members[member_id].url

    # --- learning -----------------------------------------------------------------------

    def load(self) -> None:
        """Read the persisted member list (blocking; call before serving)."""
        try:
            records = msgpack.unpackb(self._path.read_bytes(), raw=False)
        except FileNotFoundError:
            return
        self.merge([_member(r) for r in records], persist=False)

    def merge(self, members: Iterable[Member], persist: bool = True) -> bool:
        """Add members not yet known (hearsay never changes a known member)."""
        changed = False
        for member in members:
            if member.id == self.me.id or member.id in self._members:
                continue
            self._members[member.id] = member
            self._liveness.setdefault(member.id, Liveness())
            changed = True
            log.info("member %s at %s (weight %d)", member.id, member.url, member.weight)
        if changed:
            self._ring = Ring(self._members.values(), self._vnodes)
            self._wake.set()
            if persist:
                self._persist()
        return changed

    def _persist(self) -> None:
        # A few hundred bytes per member: small enough to write on the loop.
        temp = self._path.with_suffix(".tmp")
        temp.write_bytes(msgpack.packb([_record(m) for m in self.members()]))
        os.replace(temp, self._path)

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
            live.up = False
            log.warning("member %s is down: %s", member_id, reason)

    # --- gossip -------------------------------------------------------------------------

    def gossip(self) -> dict[str, Any]:
        used, chunks = self._stats()
        return {
            "from": _record(self.me),
            "members": [_record(m) for m in self.members()],
            "used_bytes": used,
            "chunks": chunks,
        }

    def receive(self, payload: dict[str, Any]) -> None:
        """Merge a gossip payload from another peer; the sender is evidently up."""
        sender = _member(payload["from"])
        if sender.id != self.me.id and self._members.get(sender.id) != sender:
            self._members.pop(sender.id, None)  # its own record beats hearsay
            self.merge([sender])
        self.merge(_member(r) for r in payload["members"])
        self.report_success(sender.id)
        live = self._liveness[sender.id]
        live.used_bytes, live.chunks = payload["used_bytes"], payload["chunks"]

    async def _exchange(self, url: str, member_id: str | None) -> None:
        try:
            reply = await asyncio.wait_for(
                self._peers.exchange(url, self.gossip()), max(1.0, 2 * self._interval)
            )
        except (RingstoreError, asyncio.TimeoutError) as exc:
            if member_id is not None:
                self.report_failure(member_id, str(exc) or "no answer in time")
            return
        self.receive(reply)

    async def gossip_round(self) -> None:
        """Exchange gossip with every member and every seed not yet known."""
        known_urls = {m.url for m in self._members.values()}
        targets: list[tuple[str, str | None]] = [
            (m.url, m.id) for m in self._members.values() if m.id != self.me.id
        ]
        targets += [(seed, None) for seed in self._seeds if seed not in known_urls]
        await asyncio.gather(*(self._exchange(url, mid) for url, mid in targets))

    async def run(self) -> None:
        """Gossip every ``interval`` seconds, and at once when a member is learned."""
        while True:
            self._wake.clear()
            await self.gossip_round()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)


def _record(member: Member) -> dict[str, Any]:
    return {"id": member.id, "url": member.url, "weight": member.weight}


def _member(record: dict[str, Any]) -> Member:
    return Member(str(record["id"]), str(record["url"]), int(record["weight"]))
