"""A drawing of the ring: who owns which part of the circle, and what a newcomer would take.

Owns ``Sector``, ``sectors`` and ``newcomer_shares``. A ring of 7 members holds 7,168
points, each arc a few thousandths of a degree: drawn one by one they would blur into
noise, so the circle is cut into ``bins`` equal slices and each slice is given to the member
that is primary (first clockwise) for most of its keys; runs of slices of one member make
one sector. A newcomer's share of each slice is exact (the arcs where it would become
primary, from the ring with it added), so the drawing shows where it takes load: small
pieces spread evenly round the circle, from every member. Pure functions of their inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ring.continuum import HASH_SPACE
from ring.member import Member
from ring.ring import Ring

__all__ = ["DEFAULT_BINS", "Sector", "newcomer_shares", "sectors"]

DEFAULT_BINS = 360  # one slice per degree


@dataclass(frozen=True, slots=True)
class Sector:
    """Slices ``[start, end)`` of the circle (bin indices) where ``member`` is primary for
    most keys."""

    start: int
    end: int
    member: str


def _coverage(arcs: Iterable[tuple[int, int, str]], bins: int) -> list[dict[str, int]]:
    """Per slice, how much of it (in hash units) each member is primary for."""
    width = HASH_SPACE // bins
    cover: list[dict[str, int]] = [{} for _ in range(bins)]
    for start, end, member in arcs:
        position = start
        while position < end:
            index = min(position // width, bins - 1)
            stop = end if index == bins - 1 else min(end, (index + 1) * width)
            slot = cover[index]
            slot[member] = slot.get(member, 0) + stop - position
            position = stop
    return cover


def sectors(ring: Ring, bins: int = DEFAULT_BINS) -> tuple[Sector, ...]:
    """The circle in ``bins`` slices, each given to the member primary for most of it
    (ties: the lower id), with runs of one member merged, in clockwise order from 0.

    Raises ``ValueError`` if ``bins`` < 1 and ``EmptyRing`` if the ring has no members.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    cover = _coverage(ring.arcs(), bins)
    owners = [min(slot, key=lambda member: (-slot[member], member)) for slot in cover]
    found: list[Sector] = []
    start = 0
    for index in range(1, bins + 1):
        if index == bins or owners[index] != owners[start]:
            found.append(Sector(start, index, owners[start]))
            start = index
    return tuple(found)


def newcomer_shares(ring: Ring, newcomer: Member, bins: int = DEFAULT_BINS) -> tuple[float, ...]:
    """Per slice, the fraction of its keys whose primary would be ``newcomer`` once it
    joined ``ring`` (0.0-1.0), exact: from the arcs of the ring with it added.

    Raises ``ValueError`` if ``bins`` < 1 or the ring already holds ``newcomer.id``.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if newcomer.id in ring:
        raise ValueError(f"{newcomer.id!r} is already a member")
    grown = Ring([*ring.members, newcomer], ring.vnodes)
    taken = (arc for arc in grown.arcs() if arc[2] == newcomer.id)
    width = HASH_SPACE / bins
    return tuple(min(1.0, slot.get(newcomer.id, 0) / width) for slot in _coverage(taken, bins))
