"""The continuum: the sorted hash points of a ring and who owns each one.

Owns the package's only contact with ``uhashring`` (untyped) and the hash
function. Invariants: ``points`` is strictly increasing, each in
``[0, HASH_SPACE)``; ``owners[i]`` is the index (into the id-sorted member list
the continuum was built from) of the member owning ``points[i]``; a member of
weight ``w`` gets ``vnodes * w`` points, named ``f"{id}-{i}"`` and hashed with
``hash_point``, so the same ``(id, weight)`` list and ``vnodes`` give the same
continuum in every process.
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
    nodes = {member_id: {"weight": weight, "vnodes": vnodes} for member_id, weight in weights}
    owner_at: dict[int, str] = HashRing(nodes=nodes, hash_fn=hash_point).ring
    points = tuple(sorted(owner_at))
    index = {member_id: i for i, member_id in enumerate(ids)}
    return Continuum(
        points=points, owners=tuple(map(index.__getitem__, map(owner_at.__getitem__, points)))
    )
