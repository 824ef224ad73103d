"""The rules of gossip at scale, as pure functions (simulated by ``bench/gossip.py``).

All-to-all gossip costs every peer N-1 exchanges a round: O(N^2) messages in the cluster.
Instead each round a peer exchanges with ``fanout(N)`` members picked at random
(``pick``), and what a member is doing travels from peer to peer (an epidemic: everyone has
heard in O(log N) rounds; Demers et al., "Epidemic algorithms for replicated database
maintenance", PODC 1987; van Renesse et al.'s Scuttlebutt, 2008):

* **Heartbeats.** Every peer stamps each round with its wall clock in milliseconds (its
  *beat*); a message carries the beats its sender has heard of every member, aligned to the
  sender's member list. A member whose beat has not moved for ``silence_limit`` seconds is
  down, whoever the news came through; a direct exchange that fails still counts against
  it at once, as before.
* **Member-list digests.** A message carries the digest of its sender's member list
  (``member_digest``) and the full list only when the receiver's digest is not known to be
  the same (the first exchange, and after either side learned a member), so a round costs
  O(fanout) small messages, not O(N) lists.

With N - 1 <= ``fanout(N)`` (small clusters: 7 peers) every member is still asked every
round, as all-to-all gossip did.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")

FANOUT_BASE = 3  # members asked per round besides log2(N)


def fanout(members: int) -> int:
    """Members a peer exchanges with each round, in a cluster of ``members`` (itself
    included): ``FANOUT_BASE + ceil(log2 N)``, and never more than the N - 1 others."""
    if members <= 1:
        return 0
    return min(members - 1, FANOUT_BASE + math.ceil(math.log2(members)))


def pick(others: Sequence[T], count: int, rng: random.Random) -> list[T]:
    """``count`` of ``others`` at random (all of them when there are no more)."""
    if count >= len(others):
        return list(others)
    return rng.sample(list(others), count)


def silence_limit(members: int, interval: float, down_after: int, slack: float = 0.0) -> float:
    """Seconds without news of a member's beat before it counts as down: ``down_after``
    rounds, times the rounds an epidemic takes to reach everyone (about log2 N, at least 1),
    plus ``slack`` (how long one round may take beyond its interval: an exchange timeout).
    """
    return down_after * interval * max(1.0, math.log2(max(members, 2))) + slack


def member_digest(records: Iterable[bytes]) -> str:
    """A digest of a member list (its members' encoded records, in id order): equal lists,
    equal digests."""
    digest = hashlib.blake2b(digest_size=16)
    for record in records:
        digest.update(len(record).to_bytes(4, "big"))
        digest.update(record)
    return digest.hexdigest()


def newer_beats(
    heard: Mapping[str, int], ids: Sequence[str], beats: Sequence[int]
) -> dict[str, int]:
    """The beats of a message (``beats[i]`` is member ``ids[i]``'s; 0: not heard) that are
    newer than those already ``heard``, by member id. Raises ValueError when the two lists
    are not aligned."""
    if len(ids) != len(beats):
        raise ValueError(f"{len(beats)} beats for {len(ids)} members")
    return {
        member: beat for member, beat in zip(ids, beats, strict=True) if beat > heard.get(member, 0)
    }
