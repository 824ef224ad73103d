"""Rebalancing plans: which chunks of one file version must move after the ring changes.

Owns ``Move`` and ``plan_moves``. Invariants of a plan: chunks whose holder is
in the key's current placement set stay put; each remaining chunk moves to a
distinct target-set member that holds nothing, so the number of moves is the
number of chunks held outside the target set (plus extra chunks doubled up on
one member); the plan is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ring.ring import Ring

__all__ = ["Move", "plan_moves"]


@dataclass(frozen=True, slots=True)
class Move:
    """Chunk ``index`` must be copied from ``source`` to ``target``.

    Raises ``ValueError`` if ``source == target`` or ``index`` < 0.
    """

    index: int
    source: str
    target: str

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"Move.index must be >= 0, got {self.index}")
        if self.source == self.target:
            raise ValueError(f"Move of chunk {self.index} has source == target {self.source!r}")


def plan_moves(
    holders: Mapping[int, str],
    ring: Ring,
    key: str,
    skip: Collection[str] = (),
    n: int | None = None,
) -> tuple[Move, ...]:
    """Return the minimal moves that put the chunks of ``key`` on its placement set.

    ``holders`` maps chunk index to the member id holding it (from the manifest); ``n``
    is the size of the placement set, the layout's chunk count (default: one per holder).
    A layout with chunks not yet placed (a degraded write) has fewer holders than ``n``:
    its chunks stay on any member of the set, and the members left free are where repair
    places the missing ones. The target set is ``ring.placement(key, n, skip)``. A chunk stays
    if its holder is in the target set and holds no lower-indexed chunk; the
    other chunks, by ascending index, move to the target members holding
    nothing, in ring order. A move's source may be down (in ``skip``): the
    caller then rebuilds the chunk from the others. If the ring has fewer
    unskipped members than chunks, only as many chunks move as there are free
    targets; the rest stay where they are. Moves are ordered by index.
    Raises ``EmptyRing`` if ``holders`` is non-empty and the ring has no members,
    ``ValueError`` if a moving chunk's index is negative.
    """
    if not holders:
        return ()
    target = ring.placement(key, len(holders) if n is None else max(n, len(holders)), skip)
    target_set = frozenset(target)
    kept: set[str] = set()
    leaving: list[int] = []
    for index in sorted(holders):
        holder = holders[index]
        if holder in target_set and holder not in kept:
            kept.add(holder)
        else:
            leaving.append(index)
    entering = [member_id for member_id in target if member_id not in kept]
    # Fewer entering than leaving only when the ring cannot place every chunk.
    pairs = zip(leaving, entering, strict=False)
    return tuple(Move(index, holders[index], member_id) for index, member_id in pairs)
