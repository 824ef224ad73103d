"""How evenly a ring spreads its hash space: each member's share against its weight's.

A member's *token share* is the fraction of the hash circle it is primary for: the keys
whose first ``successors`` member it is (``Ring.ownership(1)``; the shares sum to 1). Its
*fair share* is its weight over the ring's total weight. Their quotient, the *ratio*, is 1.0
for a member that gets exactly what its weight asks for, 1.05 for one that gets 5% more.

This is the measure OpenStack Swift's ring builder reports as a device's *balance* (its
``get_balance``: the percentage a device's partitions differ from the number its weight
wants, ``100 * (ratio - 1)``), here over continuous arcs instead of partitions. The summary
gives the extremes (``max_ratio`` is the hottest member: it gets that multiple of a fair
load) and the coefficient of variation of the ratios (population standard deviation over
mean; the load-imbalance figure of the consistent-hashing literature, e.g. DeCandia et
al., "Dynamo", SOSP 2007, section 6.2).

``segment_owners`` samples the circle for drawing it: which member is primary for most of
each of ``segments`` equal slices. Pure: arithmetic on the ring's points, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ring.continuum import HASH_SPACE, build_continuum
from ring.errors import EmptyRing
from ring.ring import Ring

__all__ = ["MemberShare", "RingBalance", "ring_balance", "segment_owners"]


@dataclass(frozen=True, slots=True)
class MemberShare:
    """One member's part of the hash circle: ``share`` (of 1), ``fair`` (its weight's part
    of the total weight) and ``ratio`` = share / fair (1.0: exactly its weight's)."""

    id: str
    weight: int
    zone: str
    share: float
    fair: float

    @property
    def ratio(self) -> float:
        return self.share / self.fair


@dataclass(frozen=True, slots=True)
class RingBalance:
    """Every member's share (sorted by id) and the spread of their ratios."""

    members: tuple[MemberShare, ...]
    max_ratio: float
    min_ratio: float
    cv: float  # population standard deviation of the ratios over their mean

    def share(self, member_id: str) -> MemberShare | None:
        """The member's share, or None if the ring does not hold it."""
        return next((m for m in self.members if m.id == member_id), None)


def ring_balance(ring: Ring) -> RingBalance:
    """Each member's token share against its weight's fair share, and their spread.

    Linear in the ring's points (``vnodes`` x total weight): a 100-member ring of the
    default vnodes takes about 0.1 s, so callers cache it per ring (a ring is a value).
    Raises ``EmptyRing`` if the ring has no members.
    """
    shares = ring.ownership(1)  # raises EmptyRing
    total_weight = sum(member.weight for member in ring.members)
    members = tuple(
        MemberShare(
            member.id, member.weight, member.zone, shares[member.id], member.weight / total_weight
        )
        for member in ring.members
    )
    ratios = [member.ratio for member in members]
    mean = sum(ratios) / len(ratios)
    deviation = (sum((r - mean) ** 2 for r in ratios) / len(ratios)) ** 0.5
    return RingBalance(members, max(ratios), min(ratios), deviation / mean)


def segment_owners(ring: Ring, segments: int) -> tuple[str, ...]:
    """For each of ``segments`` equal slices of the circle, clockwise from 0, the member
    primary for the largest part of it (ties: the lower id), to draw the ring with.

    Linear in the ring's points plus ``segments``: about 0.4 s for 100 members of the
    default vnodes, so cache it per ring and keep it off an event loop.
    Raises ``ValueError`` if ``segments`` < 1 and ``EmptyRing`` if the ring has no members.
    """
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    if not ring.members:
        raise EmptyRing("the ring has no members")
    ids = [member.id for member in ring.members]
    continuum = build_continuum([(m.id, m.weight) for m in ring.members], ring.vnodes)
    points, owners = continuum.points, continuum.owners
    # Keys in [points[i-1], points[i]) belong to owners[i]; those past the last point wrap
    # to owners[0]. So the circle is cut at each point, arcs ending there owned by it.
    covered = [dict[int, int]() for _ in range(segments)]
    start = 0
    for end, owner in [*zip(points, owners, strict=True), (HASH_SPACE, owners[0])]:
        while start < end:
            segment = start * segments // HASH_SPACE
            stop = min(end, -(-(segment + 1) * HASH_SPACE // segments))
            covered[segment][owner] = covered[segment].get(owner, 0) + stop - start
            start = stop
    return tuple(ids[max(c, key=lambda owner: (c[owner], -owner))] for c in covered)
