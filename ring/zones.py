"""Failure domains: spread a key's placement over distinct zones first.

``spread`` picks ``n`` members for a key from the members in clockwise order (``order``,
every candidate once) so that as many zones as possible are used, and no zone holds more
members of the set than it must:

* With at least ``n`` zones among the candidates: the first member of each zone, for the
  first ``n`` zones met clockwise. One lost zone then takes one member of the set.
* With fewer zones: each zone gets a *quota*, ``n // zones`` and one more for the
  ``n % zones`` zones that rank first for this key (rank: a hash of key and zone name, so it
  does not depend on who is in the zones); a zone with fewer candidates than its quota
  passes the rest on, in the same rank order, to zones that have more. Each zone's share is
  its first members clockwise. One lost zone then takes at most ``ceil(n / zones)`` members
  of the set (with 4 zones and a 5+2 layout: 2, so it loses no file).

Set-stable on joins within this rule: a newcomer can take the place of a member of its own
zone (it comes first clockwise) or, when its zone is new or had fewer candidates than its
quota, the place of the member its zone's larger share displaces; members already in the
ring never enter a set on a join (a property test checks it). The result keeps clockwise
order, so chunk *i* of a file goes to the *i*-th member.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["spread"]


def _rank(key: str, zone: str) -> bytes:
    data = f"{zone}\0{key}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).digest()


def spread(order: Sequence[str], zone_of: Mapping[str, str], n: int, key: str) -> tuple[str, ...]:
    """Return ``n`` members of ``order`` (fewer if it has fewer), spread over zones.

    ``order`` holds distinct member ids clockwise from ``key``; ``zone_of`` maps each to its
    zone. Raises ``KeyError`` for a member without a zone.
    """
    by_zone: dict[str, list[str]] = {}
    for member in order:
        by_zone.setdefault(zone_of[member], []).append(member)
    if len(by_zone) >= n:
        firsts = {zone: members[0] for zone, members in list(by_zone.items())[:n]}
        chosen = set(firsts.values())
    else:
        ranked = sorted(by_zone, key=lambda zone: _rank(key, zone))
        base, extra = divmod(n, len(ranked))
        quota = {zone: base + (1 if i < extra else 0) for i, zone in enumerate(ranked)}
        share = {zone: min(quota[zone], len(by_zone[zone])) for zone in ranked}
        left = min(n, len(order)) - sum(share.values())
        while left > 0:  # zones short of members pass their quota on, in rank order
            for zone in ranked:
                if left and share[zone] < len(by_zone[zone]):
                    share[zone] += 1
                    left -= 1
        chosen = {member for zone in ranked for member in by_zone[zone][: share[zone]]}
    return tuple(member for member in order if member in chosen)
