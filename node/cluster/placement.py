"""Who holds a key: one answer for every caller (after Swift's ``get_nodes``/``get_more_nodes``).

A ``PlacementSet`` is computed from a ring and the members seen down: the first ``n`` up
members clockwise from the key, and after them, lazily, the up members that stand in when one
of those fails (handoffs). For a file version the key is its file id and ``n`` is k+m; for a
name's manifest the key is the name's key and ``n`` the replica count. Pure: no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

from ring import Ring


@dataclass(frozen=True)
class PlacementSet:
    """The members that hold ``key`` now, and the handoffs after them, in ring order."""

    key: str
    members: tuple[str, ...]
    ring: Ring = field(repr=False)
    down: frozenset[str] = field(repr=False)

    @property
    def primary(self) -> str | None:
        """The first member of the set: the one that acts for the key (None: nobody is up)."""
        return self.members[0] if self.members else None

    def candidates(self) -> Iterator[str]:
        """Every up member: the set's members (spread over zones, in clockwise order), then
        the handoffs, clockwise from the key."""
        rest = (m for m in self.ring.successors(self.key) if m not in self.down)
        return itertools.chain(self.members, (m for m in rest if m not in self.members))

    def handoffs(self) -> Iterator[str]:
        """The up members after the set, clockwise: who stands in when a member fails."""
        return itertools.islice(self.candidates(), len(self.members), None)


def place(ring: Ring, key: str, n: int, down: Collection[str] = ()) -> PlacementSet:
    """The placement set of ``key``: its first ``n`` members not in ``down`` (fewer if the
    ring has fewer). Raises ``ring.EmptyRing`` on an empty ring."""
    skip = frozenset(down)
    return PlacementSet(key, ring.placement(key, n, skip), ring, skip)


def place_roomy(
    ring: Ring, key: str, n: int, down: Collection[str], crowded: Sequence[str]
) -> PlacementSet:
    """Where new chunks of ``key`` go: its placement set passing over the ``crowded``
    members (most crowded first) as well as ``down``; while that leaves fewer than ``n``,
    the least crowded is let back in, so a write passes over as many as it can.

    With ``crowded`` from ``node.cluster.membership.crowded`` this is consistent hashing
    with bounded loads (Mirrokni, Thorup and Zadimoghaddam, SODA 2018): an overfilled
    member's share moves to the next members of the handoff order.
    """
    skip, passed_over = frozenset(down), list(crowded)
    while passed_over:
        roomy = place(ring, key, n, skip.union(passed_over))
        if len(roomy.members) == n:
            return roomy
        passed_over.pop()
    return place(ring, key, n, skip)
