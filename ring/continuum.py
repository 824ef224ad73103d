"""The continuum: the sorted hash points of a ring and who owns each one.

Owns the package's only contact with ``uhashring`` (untyped) and the hash
function. Invariants: ``points`` is strictly increasing, each in
``[0, HASH_SPACE)``; ``owners[i]`` is the index (into the id-sorted member list
the continuum was built from) of the member owning ``points[i]``; a member of
weight ``w`` gets ``vnodes * w`` points, named ``f"{id}-{i}"`` and hashed with
``hash_point``, so the same ``(id, weight)`` list and ``vnodes`` give the same
continuum in every process.

A member's points depend on its own id, weight and ``vnodes`` alone, so each
member's sorted run of points is kept (``_Runs``) and a ring rebuilt after a join
hashes only the newcomer's: 1,024,000 points (one member of weight 1000, or 100 of
weight 10) took 4.3-4.5 s to hash on every rebuild, and a peer rebuilds its ring as
it starts and on each join. Merging the runs gives what hashing every point would:
on the (md5, 2^-128-rare) collision of two members' points, the later id keeps it,
as in uhashring.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from uhashring import HashRing

__all__ = ["HASH_NAME", "HASH_SPACE", "Continuum", "build_continuum", "hash_point"]

HASH_NAME = "md5"
"""Digest that positions keys and virtual nodes: spread, not security (uhashring's default)."""

HASH_SPACE = 1 << 128
"""Size of the circle: an md5 digest read as a big-endian integer."""


def hash_point(key: str) -> int:
    """Return the position of ``key`` on the circle: md5 of its UTF-8 bytes, big-endian.

    Lone surrogates (undecodable file names) are encoded with ``surrogatepass``
    so every str hashes. Raises ``AttributeError`` if ``key`` is not a str.
    """
    data = key.encode("utf-8", "surrogatepass")
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True, repr=False)
class Continuum:
    """Sorted ring points and, in parallel, the index of the member owning each."""

    points: tuple[int, ...]
    owners: tuple[int, ...]

    def __repr__(self) -> str:
        return f"Continuum(points={len(self.points)})"


def build_continuum(weights: Sequence[tuple[str, int]], vnodes: int) -> Continuum:
    """Build the continuum for ``(member id, weight)`` pairs, already sorted by id.

    Raises ``ValueError`` if the pairs are not sorted by id or ids repeat.
    """
    ids = [member_id for member_id, _ in weights]
    if any(a >= b for a, b in pairwise(ids)):
        raise ValueError("member ids must be unique and sorted")
    if not weights:
        return Continuum(points=(), owners=())
    owner_at: dict[int, int] = {}
    known, used = _RUNS.known, {}
    for index, (member_id, weight) in enumerate(weights):  # by id: the later id keeps a point
        key = (member_id, weight, vnodes)
        run = used[key] = known.get(key) or _member_points(member_id, weight, vnodes)
        owner_at.update(dict.fromkeys(run, index))
    points = tuple(sorted(owner_at))  # sorted runs, one after another: merged, not re-sorted
    _RUNS.keep(used, len(points))
    return Continuum(points=points, owners=tuple(map(owner_at.__getitem__, points)))


def _member_points(member_id: str, weight: int, vnodes: int) -> tuple[int, ...]:
    """One member's points, sorted, as uhashring places them."""
    nodes = {member_id: {"weight": weight, "vnodes": vnodes}}
    return tuple(sorted(HashRing(nodes=nodes, hash_fn=hash_point).ring))


_Key = tuple[str, int, int]  # (member id, weight, vnodes)


class _Runs:
    """Members' sorted runs of points by ``(id, weight, vnodes)``: those of the last ring
    built, then the most recently used others while all hold at most twice that ring's
    points (at least ``FLOOR``), so a peer keeps its members' runs and stale ones cost at
    most a ring's worth of memory (56 bytes a point). ``known`` is never changed once
    published, only replaced: rings are built in worker threads too, and a lost update is
    only a run hashed again."""

    FLOOR = 1 << 18

    def __init__(self) -> None:
        self.known: dict[_Key, tuple[int, ...]] = {}

    def __repr__(self) -> str:
        points = sum(map(len, self.known.values()))
        return f"_Runs({len(self.known)} runs, {points} points)"

    def keep(self, used: dict[_Key, tuple[int, ...]], built: int) -> None:
        """Publish ``used`` (the runs of a ring of ``built`` points) first, then the others
        within the budget, most recently used first."""
        budget = max(self.FLOOR, 2 * built) - sum(map(len, used.values()))
        runs = dict(used)
        for key, run in self.known.items():
            if key not in runs and len(run) <= budget:
                runs[key] = run
                budget -= len(run)
        self.known = runs


_RUNS = _Runs()
