"""Failure domains: spread a key's placement over distinct zones first.

``spread`` picks ``n`` members for a key from the members in clockwise order (``order``,
every candidate once) so that as many zones as possible are used, and no zone holds more
members of the set than it must:

* With at least ``n`` zones among the candidates: the first member of each zone, for the
  first ``n`` zones met clockwise. One lost zone then takes one member of the set.
* With fewer zones: rounds over the zones in *rank* order (a hash of key and zone name, so
  it does not depend on who is in the zones), each zone taking its next member clockwise,
  until ``n`` are taken; a zone out of members sits the later rounds out. So every zone
  holds ``n // zones`` or one more, unless it has too few members. One lost zone then takes
  at most ``ceil(n / zones)`` members of the set (4 zones, 5+2 layout: 2, no file lost).

Set-stable on joins: the members a placement takes form a sequence (zones met clockwise, or
the rounds), and a join only inserts the newcomer into it (in its zone's place, or as a new
zone's, or as one more round for a zone that had run out), so what falls off the end is an
old member and nothing old comes in; only the newcomer ever enters a set (a property test
checks it). Zones count alike whatever their size in the second case: give zones about
equal capacity. The result keeps clockwise order, so chunk *i* of a file goes to the *i*-th
member.
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
    else:  # rounds over the zones in rank order, each taking its next member clockwise
        ranked = sorted(by_zone, key=lambda zone: _rank(key, zone))
        chosen = set()
        depth = 0
        while len(chosen) < min(n, len(order)):
            for zone in ranked:
                if depth < len(by_zone[zone]) and len(chosen) < n:
                    chosen.add(by_zone[zone][depth])
            depth += 1
    return tuple(member for member in order if member in chosen)
