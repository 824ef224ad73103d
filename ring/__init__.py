"""Placement for ringstore: a pure, immutable consistent-hash ring.

Owns which peers hold which chunks and manifests, and what moves when a peer
joins. Pure: imports only the stdlib (no I/O, no asyncio), ``uhashring`` and
``msgpack``, so every process computes the same placement from the same members.
"""

from ring.balance import MemberShare, RingBalance, ring_balance
from ring.errors import EmptyRing, RingError, UnknownMember
from ring.member import MAX_WEIGHT, MIN_WEIGHT, Member
from ring.plan import Move, plan_moves
from ring.ring import DEFAULT_VNODES, Ring

__all__ = [
    "DEFAULT_VNODES",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "EmptyRing",
    "Member",
    "MemberShare",
    "Move",
    "Ring",
    "RingBalance",
    "RingError",
    "UnknownMember",
    "plan_moves",
    "ring_balance",
]
