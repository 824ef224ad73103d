"""The ring: an immutable consistent-hash ring over a set of members.

Owns placement: which members hold a key's chunks or replicas. Invariants:

* A ring is a value. It is built once from members and ``vnodes`` and never
  changes; the same members (in any order) and ``vnodes`` give the same
  placement in every process, and ``digest`` names that placement.
* Only member ids, weights and zones place keys; URLs never do.
* ``successors(key)`` is every member exactly once, clockwise from the key's
  hash. Without zones (or with one), ``placement`` is a prefix of it (minus
  skipped ids), so adding a member changes any key's placement set by at most
  one swap: the newcomer in, the last old member out. With several zones it is
  spread over them (``ring.zones``), and still only a newcomer ever enters a set.
* Without zones, placements are remembered by the gap between ring points a key's hash
  falls in, for all rings of the process together (``PLACEMENTS_KEPT``, bounded): a
  remembered answer is always the one the walk gives.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator

import msgpack

from ring.continuum import HASH_NAME, HASH_SPACE, build_continuum, hash_point
from ring.errors import EmptyRing, UnknownMember
from ring.member import Member
from ring.zones import spread

__all__ = ["DEFAULT_VNODES", "Ring"]

DEFAULT_VNODES = 1024
"""Virtual nodes per unit of weight.

Chosen by measurement over equal-weight clusters of 6..100 uuid4 members
(10 seeds each): ``evenness(7)`` worst 1.043 at 1024 (1.055 at 768, 1.074 at
256), while a 100-member ring still builds in about 0.2 s.
"""

_DIGEST_SCHEME = "ringstore.ring/1"

PLACEMENTS_KEPT = 1 << 15
"""Placements this process remembers, for all its rings together, before it forgets them all.

Without zones a key's placement depends only on the gap between ring points its hash falls
in (7 members x 1024 vnodes: 7,168 gaps), so keys sharing a gap share one answer, and a
pass over a million names walks the ring once per gap, not once per name. Kept per (ring
digest, n, skipped ids), so rings kept in a peer's history and the current one share one
bound: 32,768 entries, each an int and a dict slot, its tuple shared with the entries that
have the same (tracemalloc, 7 members, n of 3 and 7 over 300,000 keys: 13,936 entries, 3,647
tuples, 108 bytes an entry in all; more for each other n and set of skipped ids). A ring
with more points than half of it (17 members or more at 1024 vnodes) is not remembered:
a pass over it would only fill and clear the memo."""


class _Placements:
    """The placements remembered (``PLACEMENTS_KEPT``): (ring digest, n, skipped ids) ->
    gap -> member ids, each tuple kept once. An answer is always the walk's (each is
    computed by walking the ring); from threads, the count may drift a little."""

    __slots__ = ("count", "groups", "tuples")

    def __init__(self) -> None:
        self.groups: dict[tuple[str, int, frozenset[str]], dict[int, tuple[str, ...]]] = {}
        self.tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.count = 0

    def __repr__(self) -> str:
        return f"_Placements(count={self.count}, groups={len(self.groups)})"

    def get(self, group: tuple[str, int, frozenset[str]], gap: int) -> tuple[str, ...] | None:
        gaps = self.groups.get(group)
        return None if gaps is None else gaps.get(gap)

    def keep(
        self, group: tuple[str, int, frozenset[str]], gap: int, found: tuple[str, ...]
    ) -> tuple[str, ...]:
        if self.count >= PLACEMENTS_KEPT:
            self.groups.clear()
            self.tuples.clear()
            self.count = 0
        gaps = self.groups.get(group)
        if gaps is None:
            gaps = self.groups[group] = {}
        kept = gaps[gap] = self.tuples.setdefault(found, found)
        self.count += 1
        return kept


_PLACEMENTS = _Placements()


class Ring:
    """An immutable consistent-hash ring over ``members``.

    Raises ``ValueError`` if two members share an id or ``vnodes`` < 1, and
    ``TypeError`` if a member is not a ``Member`` or ``vnodes`` is not an int.
    """

    __slots__ = (
        "_by_id",
        "_digest",
        "_ids",
        "_members",
        "_owners",
        "_points",
        "_vnodes",
        "_zone_of",
        "_zoned",
    )

    def __init__(self, members: Iterable[Member], vnodes: int = DEFAULT_VNODES) -> None:
        if isinstance(vnodes, bool) or not isinstance(vnodes, int):
            raise TypeError(f"vnodes must be an int, got {type(vnodes).__name__}")
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {vnodes}")
        ordered = sorted(members, key=_member_id)
        by_id: dict[str, Member] = {}
        for member in ordered:
            if member.id in by_id:
                raise ValueError(f"duplicate member id {member.id!r}")
            by_id[member.id] = member
        weights = [(member.id, member.weight) for member in ordered]
        continuum = build_continuum(weights, vnodes)
        self._members = tuple(ordered)
        self._by_id = by_id
        self._ids = tuple(by_id)
        self._vnodes = vnodes
        self._points = continuum.points
        self._owners = continuum.owners
        self._zone_of = {member.id: member.zone for member in ordered}
        self._zoned = len(set(self._zone_of.values())) > 1
        self._digest = _digest(weights, vnodes, [member.zone for member in ordered])

    @property
    def members(self) -> tuple[Member, ...]:
        """The members, sorted by id."""
        return self._members

    @property
    def vnodes(self) -> int:
        """Virtual nodes per unit of member weight."""
        return self._vnodes

    @property
    def digest(self) -> str:
        """Hex sha256 naming the placement: equal digests place every key alike."""
        return self._digest

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member_id: object) -> bool:
        return isinstance(member_id, str) and member_id in self._by_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return self._vnodes == other._vnodes and self._members == other._members

    def __hash__(self) -> int:
        return hash((self._digest, self._members))

    def __reduce__(self) -> tuple[type[Ring], tuple[tuple[Member, ...], int]]:
        return (Ring, (self._members, self._vnodes))

    def __repr__(self) -> str:
        return f"Ring(members={len(self)}, vnodes={self._vnodes}, digest={self._digest[:8]})"

    def member(self, member_id: str) -> Member:
        """Return the member with ``member_id``.

        Raises ``UnknownMember`` if the ring does not hold it.
        """
        try:
            return self._by_id[member_id]
        except KeyError:
            raise UnknownMember(member_id) from None

    def successors(self, key: str) -> Iterator[str]:
        """Yield every member id exactly once, clockwise from the hash of ``key``.

        Raises ``EmptyRing`` (at the call, not at the first ``next``) if the
        ring has no members.
        """
        if not self._points:
            raise EmptyRing("the ring has no members")
        return self._walk(bisect_right(self._points, hash_point(key)))

    def placement(self, key: str, n: int, skip: Collection[str] = ()) -> tuple[str, ...]:
        """Return the first ``n`` distinct member ids clockwise from ``key``, passing over ``skip``.

        Skipped ids (e.g. members that are down) are handed off to the next
        members in successor order. With members in more than one zone, the set is spread
        over zones first (``ring.zones.spread``), in clockwise order. Returns fewer than
        ``n`` ids if the ring has too few unskipped members. Raises ``ValueError`` if
        ``n`` < 0 and ``EmptyRing`` if the ring has no members.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not self._points:
            raise EmptyRing("the ring has no members")
        if n == 0:
            return ()
        start = bisect_right(self._points, hash_point(key))
        skipped = skip if isinstance(skip, frozenset) else frozenset(skip)
        if self._zoned:  # the spread over zones depends on the key, not only its gap
            return self._zoned_placement(self._walk(start), key, n, skipped)
        points = len(self._points)
        if points > PLACEMENTS_KEPT // 2:
            return self._first(start, n, skipped)
        group, gap = (self._digest, n, skipped), start % points  # (past the last: the first)
        chosen = _PLACEMENTS.get(group, gap)
        if chosen is None:
            chosen = _PLACEMENTS.keep(group, gap, self._first(start, n, skipped))
        return chosen

    def _first(self, start: int, n: int, skipped: frozenset[str]) -> tuple[str, ...]:
        chosen: list[str] = []
        for member_id in self._walk(start):
            if member_id in skipped:
                continue
            chosen.append(member_id)
            if len(chosen) == n:
                break
        return tuple(chosen)

    def zone(self, member_id: str) -> str:
        """The zone of ``member_id``; raises ``UnknownMember``."""
        return self.member(member_id).zone

    def _zoned_placement(
        self, successors: Iterator[str], key: str, n: int, skipped: Collection[str]
    ) -> tuple[str, ...]:
        # Walk only as far as spread needs: n zones met, or every zone's first n members.
        zone_of = self._zone_of
        wanted: dict[str, int] = {}
        for member_id in self._ids:
            if member_id not in skipped:
                zone = zone_of[member_id]
                wanted[zone] = min(n, wanted.get(zone, 0) + 1)
        seen: dict[str, int] = {}
        met = 0  # zones whose wanted members have all been met
        order: list[str] = []
        for member_id in successors:
            if member_id in skipped:
                continue
            order.append(member_id)
            zone = zone_of[member_id]
            seen[zone] = seen.get(zone, 0) + 1
            met += seen[zone] == wanted[zone]
            if len(seen) >= n or met == len(wanted):
                break
        return spread(order, zone_of, n, key)

    def ownership(self, n: int) -> dict[str, float]:
        """Return, per member id, the exact fraction of keys whose ``placement(key, n)`` holds it.

        Computed from the ring's arcs, not by sampling (for placement without zones: with
        zones, sample ``placement`` instead); the values sum to
        ``min(n, len(self))``. Raises ``ValueError`` if ``n`` < 1 and
        ``EmptyRing`` if the ring has no members.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not self._points:
            raise EmptyRing("the ring has no members")
        if n >= len(self._ids):
            return dict.fromkeys(self._ids, 1.0)
        owned = _owned_arcs(self._points, self._owners, len(self._ids), n)
        return {member_id: owned[i] / HASH_SPACE for i, member_id in enumerate(self._ids)}

    def evenness(self, n: int) -> float:
        """Return max/mean of ``ownership(n)`` per unit of weight; 1.0 is perfectly even.

        Raises ``ValueError`` if ``n`` < 1 and ``EmptyRing`` if the ring has no members.
        """
        owned = self.ownership(n)
        shares = [owned[member.id] / member.weight for member in self._members]
        return max(shares) / (sum(shares) / len(shares))

    def arcs(self) -> Iterator[tuple[int, int, str]]:
        """Yield ``(start, end, member id)`` for every arc of the circle, in clockwise order
        from 0: keys hashing into ``[start, end)`` have that member first in ``successors``
        (their primary). Adjacent points of one member make one arc; the arc that wraps
        past the top of the circle is yielded as its two halves, first and last. The arcs
        tile ``[0, HASH_SPACE)``. Raises ``EmptyRing`` if the ring has no members.
        """
        if not self._points:
            raise EmptyRing("the ring has no members")
        points, owners, ids = self._points, self._owners, self._ids
        start, owner = 0, owners[0]  # keys past the last point wrap to the first
        for i in range(1, len(points)):
            if owners[i] != owner:
                yield start, points[i - 1], ids[owner]
                start, owner = points[i - 1], owners[i]
        if owner == owners[0] and start == 0:  # one member: the whole circle
            yield 0, HASH_SPACE, ids[owner]
            return
        yield start, points[-1], ids[owner]
        yield points[-1], HASH_SPACE, ids[owners[0]]

    def _walk(self, start: int) -> Iterator[str]:
        ids, owners = self._ids, self._owners
        total = len(owners)
        seen = bytearray(len(ids))
        remaining = len(ids)
        for i in range(start, start + total):
            owner = owners[i - total if i >= total else i]
            if not seen[owner]:
                seen[owner] = 1
                yield ids[owner]
                remaining -= 1
                if remaining == 0:
                    return


def _member_id(member: Member) -> str:
    if not isinstance(member, Member):
        raise TypeError(f"ring members must be Member, got {type(member).__name__}")
    return member.id


def _digest(weights: list[tuple[str, int]], vnodes: int, zones: list[str]) -> str:
    # A member's zone is in the digest only when it has one: rings of members without zones
    # (pure ring uses) keep the digests they always had. Peers always have one (by default
    # their host), so their ring digests changed with the release that brought zones.
    members = [
        [member_id, w, zone] if zone else [member_id, w]
        for (member_id, w), zone in zip(weights, zones, strict=True)
    ]
    payload = [_DIGEST_SCHEME, HASH_NAME, vnodes, members]
    packed: bytes = msgpack.packb(payload, use_bin_type=True)
    return hashlib.sha256(packed).hexdigest()


def _owned_arcs(points: tuple[int, ...], owners: tuple[int, ...], size: int, n: int) -> list[int]:
    """Sum, per member index, the length of the arcs whose n-member placement holds it.

    Keys hashing into ``[points[i-1], points[i])`` start their walk at point
    ``i``. A sliding window ``[i, j)`` over the doubled point list holds exactly
    the first ``n`` distinct owners from ``i``; each member accumulates the
    arcs between entering and leaving the window. Linear in the number of points.
    """
    total = len(points)
    arcs = [points[0] + HASH_SPACE - points[-1]]
    arcs.extend(points[i] - points[i - 1] for i in range(1, total))
    prefix = [0]
    for arc in arcs:
        prefix.append(prefix[-1] + arc)
    owned = [0] * size
    count = [0] * size
    entered = [0] * size
    distinct = 0
    j = 0
    for i in range(total):
        while distinct < n:
            owner = owners[j - total if j >= total else j]
            if count[owner] == 0:
                distinct += 1
                entered[owner] = i
            count[owner] += 1
            j += 1
        owner = owners[i]
        count[owner] -= 1
        if count[owner] == 0:
            distinct -= 1
            owned[owner] += prefix[i + 1] - prefix[entered[owner]]
    for owner in range(size):
        if count[owner]:
            owned[owner] += prefix[total] - prefix[entered[owner]]
    return owned
