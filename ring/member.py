"""A ring member: one peer as placement sees it.

Owns the ``Member`` value. Invariants: ``id`` is a non-empty string and is the
only identity placement uses (with ``weight``); ``url`` is where to reach the
peer and never affects placement; ``weight`` is an int in ``MIN_WEIGHT`` ..
``MAX_WEIGHT`` (1..1000) and scales the member's share of the hash space (weight 2
gets about twice the points). The upper bound keeps a ring build cheap: a ring holds
vnodes x weight points per member, so one member of weight 10**6 would cost gigabytes.
``zone`` names the member's failure domain (a machine, a rack: what fails as one); placement
spreads a key over distinct zones first. Members without one share the zone "".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_WEIGHT", "MIN_WEIGHT", "Member"]

MIN_WEIGHT = 1
MAX_WEIGHT = 1000


@dataclass(frozen=True, slots=True)
class Member:
    """One peer on the ring.

    Raises ``TypeError`` if a field has the wrong type and ``ValueError`` if
    ``id`` is empty or ``weight`` is outside ``MIN_WEIGHT`` .. ``MAX_WEIGHT``.
    """

    id: str
    url: str
    weight: int = 1
    zone: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"Member.id must be a str, got {type(self.id).__name__}")
        if not self.id:
            raise ValueError("Member.id must not be empty")
        if not isinstance(self.url, str):
            raise TypeError(f"Member.url must be a str, got {type(self.url).__name__}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int):
            raise TypeError(f"Member.weight must be an int, got {type(self.weight).__name__}")
        if not MIN_WEIGHT <= self.weight <= MAX_WEIGHT:
            raise ValueError(f"Member.weight must be {MIN_WEIGHT}..{MAX_WEIGHT}, got {self.weight}")
        if not isinstance(self.zone, str):
            raise TypeError(f"Member.zone must be a str, got {type(self.zone).__name__}")
