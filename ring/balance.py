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

Drawing the circle is ``ring.drawing``'s. Pure: arithmetic on the ring's points, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ring.ring import Ring

__all__ = ["MemberShare", "RingBalance", "ring_balance"]


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
