"""Who is in the cluster, who is up, and where a key lives.

Members are an address book: learned from ``--join`` seeds, mDNS and every gossip exchange
(``node.cluster.gossip``), persisted in the data directory, never removed. A member's own
record (its gossip ``from`` field or its mDNS announcement) decides its URL and weight;
hearsay only adds members not yet known.

Liveness is separate and local: a member is ``up`` only while this peer's own HTTP exchanges
with it succeed, and ``down`` after ``down_after`` consecutive failures. Every call to another
peer reports its outcome here (``node.cluster.peers`` does it for every caller). Down members
keep their place on the ring; placement passes over them for new writes. New members start
``down`` until the first exchange.

**Placement history.** When the placement can move onto members that do not hold a name's
manifest yet (the ring changed, or a member came up: a newcomer, or a home replica back from
an outage), the placement before the change (ring and down set) is kept, newest first, at
most ``HISTORY`` of them. Readers also ask a name's replicas under those earlier placements
(``previous_replicas``) until the hand-over is done: every member up reports, in a gossip
message heard after the newest change, that its rebalancer settled on the current ring
(``PeerFigures.settled_ring``: nothing pending or failed, every manifest it held for another
replica set handed over). Reports count only when heard ``settle_after`` (a few heartbeats)
after the change, and a rebalancer reports "not settled" as soon as it has work again, so a
member that has not noticed the change yet cannot vouch for it. Then the history is dropped.
So growth never hides a manifest; the cost is one more round of manifest reads for names
whose replica set changed, while a hand-over is under way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from node.cluster.epidemic import member_digest
from node.cluster.placement import PlacementSet, place, place_roomy
from node.cluster.protocol import MemberRecord, PeerFigures
from node.cluster.transport import Address
from node.disk.data_dir import MEMBERS_FILE
from node.disk.durable import write_atomically
from node.model.names import name_key
from node.model.version import ClockOffset
from node.waiting import wait_event
from ring import Member, Ring

log = logging.getLogger(__name__)

# Seconds within which a member heard back at an address it left is two processes (and
# the least between two errors saying so, per member).
TWICE_WITHIN = 60.0

FULL_FILL = 0.98  # a member past this fill of its --max-bytes or its disk takes no new chunks
FILL_SLACK = 0.01  # a member this far past the cluster's fill takes no new chunks either
HISTORY = 64  # earlier placements kept at most


@dataclass(frozen=True)
class Placement:
    """A placement this peer used before a change: the ring, who was down, and when (the
    monotonic time the change happened)."""

    ring: Ring
    down: frozenset[str]
    until: float


def is_full(figures: PeerFigures) -> bool:
    """Whether a member's figures say it is out of space: past ``FULL_FILL`` of its
    ``--max-bytes``, or of its disk."""
    if figures.max_bytes and figures.used_bytes >= FULL_FILL * figures.max_bytes:
        return True
    total, free = figures.disk_total_bytes, figures.disk_free_bytes
    return bool(total) and free < (1 - FULL_FILL) * total


def usage(figures: PeerFigures) -> tuple[int, int]:
    """``(used, capacity)`` in bytes: of the member's ``--max-bytes`` when it has one, else
    of its disk; ``(0, 0)`` when it reported neither."""
    if figures.max_bytes:
        return figures.used_bytes, figures.max_bytes
    total = figures.disk_total_bytes
    return total - figures.disk_free_bytes, total


def crowded(figures: dict[str, PeerFigures], slack: float = FILL_SLACK) -> list[str]:
    """Members that take no new chunks while another member has room, most filled first:
    full (``is_full``), or filled more than ``slack`` (a fraction) past the cluster's fill,
    the used bytes of all of ``figures`` over their capacity.

    This is consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam,
    "Consistent Hashing with Bounded Loads", SODA 2018), the bound set on fill fractions so
    that disks of different sizes fill to the same percentage: a write passes over a
    crowded member to the next of the handoff order, as it passes over a down one. The
    ring's weights alone leave fills tens of points apart (``bench/capacity.py``): a
    placement set takes each member at most once, so heavy members are under-picked.
    """
    pairs = {i: usage(f) for i, f in figures.items()}
    capacity = sum(c for _, c in pairs.values())
    bound = sum(u for u, _ in pairs.values()) / capacity + slack if capacity else 1.0
    fill = {i: u / c if c else 0.0 for i, (u, c) in pairs.items()}
    fill.update({i: 2.0 for i, f in figures.items() if is_full(f)})  # full: first, always
    return sorted((i for i, f in fill.items() if f > bound), key=lambda i: (-fill[i], i))


@dataclass
class Liveness:
    """What this peer last heard from one member."""

    up: bool = False
    failures: int = 0
    last_seen: float = 0.0
    down_since: float = field(default_factory=time.monotonic)
    figures: PeerFigures = field(default_factory=PeerFigures)  # from its last gossip
    heard_at: float = 0.0  # monotonic time its last figures arrived
    beat: int = 0  # the newest heartbeat of it heard, directly or through gossip
    beat_at: float = 0.0  # monotonic time that beat arrived
    failed_at: float = float("-inf")  # monotonic time of the last failed direct exchange
    clock: ClockOffset | None = None  # its wall clock against ours, at the last gossip answer

    @property
    def state(self) -> str:
        return "up" if self.up else "down"


class Membership:
    """The member list, each member's liveness, and the ring built from the members."""

    def __init__(
        self,
        me: Member,
        data_dir: Path,
        vnodes: int,
        replicas: int,
        down_after: int = 2,
        settle_after: float = 0.0,
    ) -> None:
        """``settle_after``: seconds after a change before members' reports that they
        settled count for it (time for them to notice the change and start a pass)."""
        self.me = me
        self._settle_after = settle_after
        self._path = data_dir / MEMBERS_FILE
        self._vnodes = vnodes
        self._replicas = replicas
        self._down_after = down_after
        self._members: dict[str, Member] = {me.id: me}
        self._liveness: dict[str, Liveness] = {me.id: Liveness(up=True)}
        self._ring = Ring([me], vnodes)
        self._ring_stale = False
        self._ring_lock = asyncio.Lock()
        self._unsaved = False  # members learned but not yet written to disk
        self.ring_changed_at = time.monotonic()
        self._learned = asyncio.Event()  # set whenever a member is learned
        self._history: collections.deque[Placement] = collections.deque(maxlen=HISTORY)
        self._digest: str | None = None  # of the member list, while it is unchanged
        self._left: dict[str, tuple[str, float]] = {}  # member -> address it left, when
        self._twice_warned: dict[str, float] = {}  # member -> when two addresses were said
        self.settled_ring = ""  # this peer's own: see PeerFigures.settled_ring

    def __repr__(self) -> str:
        up = len(self.up_ids())
        return f"Membership(me={self.me.id[:8]}, members={len(self._members)}, up={up})"

    # --- views ------------------------------------------------------------------------------

    @property
    def ring(self) -> Ring:
        """The ring of every member; rebuilt off the loop shortly after a member is learned."""
        return self._ring

    @property
    def ring_stale(self) -> bool:
        """Whether a member was learned that no rebuild (``refresh_ring``) has yet taken up."""
        return self._ring_stale

    def members(self) -> list[Member]:
        return sorted(self._members.values(), key=lambda m: m.id)

    @property
    def digest(self) -> str:
        """The digest of the member list (``epidemic.member_digest``): what gossip compares
        before sending a whole list."""
        if self._digest is None:
            self._digest = member_digest(
                msgspec.msgpack.encode(MemberRecord.of(m)) for m in self.members()
            )
        return self._digest

    def beats(self) -> list[int]:
        """The newest beat heard of every member, in ``members()`` order (0: none yet)."""
        return [self._liveness[m.id].beat for m in self.members()]

    def beat(self, now_ms: int) -> None:
        """This peer's own heartbeat for this round (its wall clock, milliseconds)."""
        live = self._liveness[self.me.id]  # always moves, even if the clock stepped back
        live.beat, live.beat_at = max(live.beat + 1, now_ms), time.monotonic()

    def hear_beats(self, beats: dict[str, int], silence: float) -> None:
        """Take heartbeats newer than those heard (``epidemic.newer_beats``). A member down
        here whose beat moved is up again, unless a direct exchange with it failed within
        the last ``silence`` seconds (it lives, but not for this peer)."""
        now = time.monotonic()
        for member_id, beat in beats.items():
            live = self._liveness.get(member_id)
            if live is None or member_id == self.me.id or beat <= live.beat:
                continue
            live.beat, live.beat_at = beat, now
            if not live.up and now - live.failed_at > silence:
                log.info("member %s is up (heard through gossip)", member_id)
                self._remember_placement()
                live.up, live.failures, live.last_seen = True, 0, now

    def check_silence(self, silence: float) -> None:
        """Count as down every member up here with no news of it (a beat, or a direct
        exchange) for ``silence`` seconds."""
        now = time.monotonic()
        for member_id, live in self._liveness.items():
            if member_id == self.me.id or not live.up:
                continue
            quiet = now - max(live.beat_at, live.last_seen)
            if quiet > silence:
                live.up, live.down_since = False, now
                log.warning("member %s is down: no news of it for %.1fs", member_id, quiet)

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

    def long_down_ids(self, after: float) -> frozenset[str]:
        """The members down for at least ``after`` seconds (``down_for``)."""
        return frozenset(m for m, _ in self.long_down_spells(after))

    def long_down_spells(self, after: float) -> frozenset[tuple[str, float]]:
        """The members down for at least ``after`` seconds, each with the monotonic time it
        went down: one pair per spell down, so that a member that comes back and goes down
        again makes a new one."""
        return frozenset(
            (m, self._liveness[m].down_since) for m in self.down_ids() if self.down_for(m) >= after
        )

    def address(self, member_id: str) -> Address:
        """Where to call ``member_id``, so that only that peer answers."""
        return Address(self._members[member_id].url, member_id)

    def placement(self, key: str, n: int) -> PlacementSet:
        """The first ``n`` up members clockwise from ``key``, with the handoffs after them."""
        return place(self._ring, key, n, self.down_ids())

    def all_read_packs(self) -> bool:
        """Whether every member, up or down, last said its release reads packed files
        (``PeerFigures.reads_packs``); this peer's does."""
        me = self.me.id
        return all(live.figures.reads_packs for i, live in self._liveness.items() if i != me)

    def all_read_cauchy(self) -> bool:
        """Whether every other member, up or down, last said it codes with ISA-L's Cauchy
        code (``PeerFigures.reads_cauchy``): the coordinator asks for its own."""
        me = self.me.id
        return all(live.figures.reads_cauchy for i, live in self._liveness.items() if i != me)

    def full_ids(self) -> set[str]:
        """Members whose last figures say they are out of space (``is_full``)."""
        return {i for i, live in self._liveness.items() if is_full(live.figures)}

    def crowded_ids(self) -> list[str]:
        """Members that take no new chunks while others have room (``crowded``): full, or
        filled past the cluster's fill by more than ``FILL_SLACK``; most filled first."""
        return crowded({i: live.figures for i, live in self._liveness.items()})

    def write_placement(self, key: str, n: int) -> PlacementSet:
        """Where new chunks of ``key`` go (``place_roomy``): ``placement``, passing over
        crowded members too, the least crowded asked again while fewer than ``n`` remain
        (a full one asked may refuse)."""
        return place_roomy(self._ring, key, n, self.down_ids(), self.crowded_ids())

    def replicas(self, name: str) -> PlacementSet:
        """The members that hold ``name``'s manifest now; the first is its primary."""
        return self.placement(name_key(name), self._replicas)

    def previous_replicas(self, name: str) -> list[str]:
        """Up members that held ``name``'s manifest under the placements kept in the
        history and do not now, newest placement first (empty when no change is under way)."""
        if not self._history:  # (as on most reads: nothing to compute)
            return []
        up = self.up_ids()
        return [member for member in self._earlier_replicas(name) if member in up]

    def handing_over(self, name: str) -> bool:
        """Whether a member, up or down, held ``name``'s manifest under a placement kept in
        the history and does not now: a hand-over of it may be under way, and a replica
        out of reach may hold what no current one does (a write taken by a handoff while
        a home was down). The history lasts until every member up has settled."""
        return next(self._earlier_replicas(name), None) is not None

    def _earlier_replicas(self, name: str) -> Iterator[str]:
        """``previous_replicas``, up or down (each once)."""
        if not self._history:
            return
        key, now = name_key(name), set(self.replicas(name).members)
        seen: set[str] = set()
        for before in self._history:
            for member in place(before.ring, key, self._replicas, before.down).members:
                if member not in now and member not in seen:
                    seen.add(member)
                    yield member

    def home_replicas_since(self, name: str) -> list[str]:
        """``name``'s home replicas under the current ring and under each ring in the
        history, up or down, current first: every member a conditional write of ``name``
        offered since the history began can be on."""
        key, found = name_key(name), list(self.home_replicas(name).members)
        for before in self._history:
            for member in place(before.ring, key, self._replicas).members:
                if member not in found:
                    found.append(member)
        return found

    def history(self) -> Iterator[Placement]:
        """The placements kept, newest first."""
        return iter(self._history)

    def _remember_placement(
        self, ring: Ring | None = None, down: frozenset[str] | None = None
    ) -> None:
        if down is None:
            down = frozenset(self.down_ids())
        before = Placement(ring or self._ring, down, time.monotonic())
        newest = self._history[0] if self._history else None
        if newest is not None and (newest.ring.digest, newest.down) == (
            before.ring.digest,
            before.down,
        ):
            self._history[0] = before  # the same placement again: only its time moves
            return
        self._history.appendleft(before)

    def settle_after(self, seconds: float) -> None:
        """How long after a change members' reports that they settled start to count: as
        long as news takes to reach every member (gossip's silence limit)."""
        self._settle_after = seconds

    def settle(self, ring_digest: str) -> None:
        """This peer's rebalancer ended a pass under ``ring_digest`` with nothing pending
        or failed ("": it has work again): report it, and drop the history if every member
        up has settled on the current ring."""
        self.settled_ring = ring_digest
        self._liveness[self.me.id].heard_at = time.monotonic()
        self._forget_settled_history()

    def _forget_settled_history(self) -> None:
        if not self._history:
            return
        since, digest = self._history[0].until, self._ring.digest
        for member_id in self.up_ids():
            live = self._liveness[member_id]
            settled = self.settled_ring if member_id == self.me.id else live.figures.settled_ring
            if settled != digest or live.heard_at <= since + self._settle_after:
                return
        log.info(
            "replica hand-over done on every member up: %d earlier placement(s) dropped",
            len(self._history),
        )
        self._history.clear()

    def home_replicas(self, name: str) -> PlacementSet:
        """The N members clockwise from ``name``'s key, up or down: the replicas that keep
        its history (a handoff standing in for a down one has not seen it)."""
        return place(self._ring, name_key(name), self._replicas)

    # --- learning -------------------------------------------------------------------------

    def load(self) -> None:
        """Read the persisted member list and build the ring (blocking; before serving)."""
        self._unsaved = True  # until the list holds this peer's record as it is now
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return
        try:
            raw = msgspec.msgpack.decode(data, type=list[msgspec.Raw])
        except msgspec.DecodeError as exc:
            log.error("ignoring unreadable %s (%s); members will be relearned", self._path, exc)
            return
        members = []
        for record in raw:  # one bad record (a weight out of range, a URL with a path) alone
            try:
                members.append(msgspec.msgpack.decode(record, type=MemberRecord).member())
            except (msgspec.DecodeError, ValueError, TypeError) as exc:
                log.warning("skipping a member record in %s: %s", self._path, exc)
        self._unsaved = self.me not in members
        self._add(members)
        self._ring = Ring(self._members.values(), self._vnodes)
        if len({m.zone for m in self._members.values()}) > 1:
            # A release before zones placed without them: until every member settles on
            # this ring, readers also ask the replicas that placement chose.
            plain = Ring(
                (Member(m.id, m.url, m.weight) for m in self._members.values()), self._vnodes
            )
            self._remember_placement(plain, frozenset())
        self._ring_stale = False

    def learn(self, member: Member) -> None:
        """Take a member's own record (from its gossip or its mDNS announcement). A member
        heard at two addresses in turn, or this peer's own id at another address, is two
        processes of one data directory (a copy): said at WARNING, at most once a minute
        (not ERROR: a member's gossip says it, and what a member sends never makes one)."""
        if member.id == self.me.id:
            if member.url != self.me.url:
                self._two_addresses(member.id, self.me.url, member.url)
            return
        known = self._members.get(member.id)
        if known == member:
            return
        if known is not None and known.url != member.url:
            now, left = time.monotonic(), self._left.get(member.id)
            if left is not None and left[0] == member.url and now - left[1] < TWICE_WITHIN:
                self._two_addresses(member.id, known.url, member.url)
            self._left[member.id] = (known.url, now)
        self._members.pop(member.id, None)  # its own record beats hearsay
        self._digest = None
        self.merge([member])

    def _two_addresses(self, member_id: str, one: str, other: str) -> None:
        """Say that ``member_id`` is served at ``one`` and ``other`` at once (rate-limited:
        an attack's copy made peers log 213 lines of the member's moves in 17 s)."""
        now = time.monotonic()
        if now - self._twice_warned.get(member_id, -math.inf) < TWICE_WITHIN:
            return
        self._twice_warned[member_id] = now
        who = "this peer" if member_id == self.me.id else f"member {member_id}"
        log.warning(
            "%s is served at %s and at %s: two processes with one data directory (a copy)? "
            "Stop one: chunks each takes are missing from the other, and are lost with it",
            who,
            one,
            other,
        )

    def merge(self, members: Iterable[Member]) -> bool:
        """Add members not yet known (hearsay never changes a known member)."""
        if not self._add(members):
            return False
        self._unsaved = True
        self._learned.set()
        return True

    def news(self) -> None:
        """Wake ``wait_for_news`` now (an address worth gossiping with was found)."""
        self._learned.set()

    async def wait_for_news(self, timeout: float) -> None:
        """Return once a member has been learned since the last call, or after ``timeout``
        seconds (gossip's pause between rounds: news is passed on at once)."""
        await wait_event(self._learned, timeout)
        self._learned.clear()

    def _add(self, members: Iterable[Member]) -> bool:
        changed = False
        for member in members:
            if member.id == self.me.id or member.id in self._members:
                continue
            self._members[member.id] = member
            self._digest = None
            self._liveness.setdefault(member.id, Liveness())
            self._ring_stale = True
            changed = True
            log.info("member %s at %s (weight %d)", member.id, member.url, member.weight)
        return changed

    async def save(self) -> None:
        """Persist the member list if it changed (fsync: in a thread, it can take a while)."""
        if self._unsaved:
            self._unsaved = False
            records = msgspec.msgpack.encode([MemberRecord.of(m) for m in self.members()])
            await asyncio.to_thread(write_atomically, self._path, records)

    async def refresh_ring(self) -> None:
        """Rebuild the ring in a thread if members changed (O(vnodes x members)).

        One rebuild at a time: two overlapping rebuilds could finish out of order and leave
        the older member list in place with nothing marked stale (a member missing from
        every placement until the next join).
        """
        async with self._ring_lock:
            while self._ring_stale:
                self._ring_stale = False
                members = list(self._members.values())
                ring = await asyncio.to_thread(Ring, members, self._vnodes)
                if ring.digest != self._ring.digest:
                    self.ring_changed_at = time.monotonic()
                    self._remember_placement()
                self._ring = ring

    # --- liveness ---------------------------------------------------------------------------

    def report_success(self, member_id: str) -> None:
        live = self._liveness.get(member_id)
        if live is None:
            return
        if not live.up:
            log.info("member %s is up", member_id)
            self._remember_placement()  # placement may move onto it: it may lack manifests
        live.up, live.failures, live.last_seen = True, 0, time.monotonic()

    def report_heard(self, member_id: str, silence: float) -> None:
        """``member_id`` sent this peer gossip: a success, unless an exchange this peer
        started with it failed within ``silence`` seconds. It reaches this peer, but this
        peer does not reach it (its TLS certificate not valid for its address, a one-way
        partition): counted up by what it sent, it was down again by this peer's next call,
        about once a second for good, and rebalancing started over each time."""
        live = self._liveness.get(member_id)
        if live is None or time.monotonic() - live.failed_at <= silence:
            return
        self.report_success(member_id)

    def report_failure(self, member_id: str, reason: str = "") -> None:
        live = self._liveness.get(member_id)
        if live is None or member_id == self.me.id:
            return
        live.failures += 1
        live.failed_at = time.monotonic()
        if live.up and live.failures >= self._down_after:
            live.up, live.down_since = False, time.monotonic()
            log.warning("member %s is down: %s", member_id, reason)

    def hear(self, member_id: str, figures: PeerFigures) -> None:
        """Keep the storage figures ``member_id`` reported about itself."""
        live = self._liveness.get(member_id)
        if live is not None:
            live.figures = figures
            if member_id != self.me.id:  # this peer's own is fresh only when it settles
                live.heard_at = time.monotonic()
            self._forget_settled_history()

    def hear_clock(self, member_id: str, offset: ClockOffset) -> ClockOffset | None:
        """Keep how far ``member_id``'s clock was just measured from ours; return the
        measurement it replaces (None: the first, or a member not known)."""
        live = self._liveness.get(member_id)
        if live is None or member_id == self.me.id:
            return None
        before, live.clock = live.clock, offset
        return before
