"""File versions, ordered by a hybrid logical clock with the peer id as tie-break.

A version is ``(wall_ms, counter, peer)``. The clock never goes backwards on one peer and
moves past every version it has observed, so a version written after another was seen is
always greater, even when wall clocks disagree a little (Kulkarni et al., "Logical Physical
Clocks", OPODIS 2014). On the wire and on disk a version is the msgpack array
``[wall_ms, counter, peer]``.

Bounds on versions from elsewhere: decoding (and ``Version.parse``) refuses ``wall_ms``
outside 0..``MAX_WALL_MS`` (2**53), ``counter`` outside 0..``MAX_COUNTER`` (2**32) and peer ids
over ``MAX_PEER_LENGTH`` characters.

Clock policy: how far members' wall clocks may disagree, and what happens past that (as
CockroachDB's ``--max-offset``, in two steps):

* Up to ``MAX_OFFSET_MS`` (500 ms): normal. NTP keeps clocks far closer.
* Past ``MAX_OFFSET_MS``: a warning. Every gossip round measures each member's wall clock
  against this peer's over the round trip (``ClockOffset``); a member off by more than
  ``MAX_OFFSET_MS`` beyond the measurement's uncertainty is logged once (when it becomes
  so) and shown ``skewed`` in ``GET /cluster``. Its versions are still followed, so writes
  stay in causal order: the hybrid clock moves past every version it observes up to...
* ``MAX_SKEW_MS`` (30 s) ahead of this peer's wall clock: the hard limit. A version further
  ahead is refused and not followed (``check`` and ``observe`` raise InvalidRequest and the
  clock does not move): a manifest or chunk carrying it is refused, a replica read that
  finds one does not follow it, a member whose wall clock is that far off either way is
  heard in gossip but neither followed nor counted up (it is down to this peer, and this
  peer to it), and a signed peer request dated further off is refused
  (``node.cluster.auth.WINDOW`` is this limit).

So one peer with a broken clock (or a forged version) can pull the versions of the others,
and the ``Last-Modified`` dates derived from them, at most ``MAX_SKEW_MS`` into the future,
and then only while it is within the limit; responses never date ``Last-Modified`` after
their own ``Date`` (``node.api.dates``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import msgspec

from node.errors import InvalidRequest

MAX_WALL_MS = 1 << 53
MAX_COUNTER = 1 << 32
MAX_PEER_LENGTH = 128
MAX_OFFSET_MS = 500  # members' clocks further apart than this are reported skewed
MAX_SKEW_MS = 30 * 1000  # the hard limit: versions further ahead are refused, not followed


class Version(msgspec.Struct, frozen=True, order=True, array_like=True):
    """One file version: milliseconds since the epoch, a counter within that millisecond, and
    the id of the peer that issued it. Compares in that order."""

    wall_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_WALL_MS)]
    counter: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
    peer: Annotated[str, msgspec.Meta(max_length=MAX_PEER_LENGTH)]

    def __str__(self) -> str:
        return f"{self.wall_ms}.{self.counter}.{self.peer}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``str(version)``; raises ValueError if it is not one (or out of bounds)."""
        wall, counter, peer = text.split(".", 2)
        # convert applies the fields' bounds, as decoding does; int() alone takes "+1" or "1_0".
        if not (wall.isdigit() and counter.isdigit()):
            raise ValueError(f"not a version: {text!r}")
        return msgspec.convert([int(wall), int(counter), peer], cls)


def system_wall_ms() -> int:
    """The system's wall clock in milliseconds since the epoch (what peers run on)."""
    return time.time_ns() // 1_000_000


class ClockOffset(msgspec.Struct, frozen=True):
    """How far a member's wall clock is from this peer's, as measured over one exchange:
    ``offset_ms`` (positive: the member is ahead) give or take ``uncertainty_ms``."""

    offset_ms: int
    uncertainty_ms: int

    @classmethod
    def measure(cls, sent_ms: int, received_ms: int, remote_ms: int) -> ClockOffset:
        """The offset of a member that read ``remote_ms`` on its clock while this peer's
        went from ``sent_ms`` (the request left) to ``received_ms`` (its answer came): the
        remote reading is taken at the round trip's midpoint, so the error is at most half
        the round trip (Cristian's algorithm, as NTP's offset estimate)."""
        round_trip = max(0, received_ms - sent_ms)
        return cls(remote_ms - (sent_ms + round_trip // 2), (round_trip + 1) // 2)

    @property
    def skewed(self) -> bool:
        """Off by more than ``MAX_OFFSET_MS`` whatever the measurement's error."""
        return abs(self.offset_ms) - self.uncertainty_ms > MAX_OFFSET_MS


class HybridClock:
    """Issues increasing versions for one peer, reading ``wall_ms`` (tests give a skewed one)."""

    def __init__(self, peer: str, wall_ms: Callable[[], int] = system_wall_ms) -> None:
        self._peer = peer
        self._wall_ms = wall_ms
        self._last = (0, 0)

    def wall_ms(self) -> int:
        """This peer's wall clock now, in milliseconds (not a version: it may go back)."""
        return self._wall_ms()

    def now(self) -> Version:
        wall = self._wall_ms()
        last_wall, last_counter = self._last
        if wall > last_wall:
            self._last = (wall, 0)
        elif last_counter < MAX_COUNTER:
            self._last = (last_wall, last_counter + 1)
        else:  # the counter is full (only an observed version gets it there): carry
            self._last = (last_wall + 1, 0)
        return Version(*self._last, self._peer)

    def check(self, version: Version) -> Version:
        """Return ``version`` if this clock may observe it; raise InvalidRequest if it is out
        of bounds or more than ``MAX_SKEW_MS`` ahead of this peer's wall clock."""
        if not (0 <= version.wall_ms <= MAX_WALL_MS and 0 <= version.counter <= MAX_COUNTER):
            raise InvalidRequest(f"version {version} is out of bounds")
        ahead = version.wall_ms - self._wall_ms()
        if ahead > MAX_SKEW_MS:
            raise InvalidRequest(
                f"version {version} is {ahead / 1000:.0f}s ahead of this peer's clock "
                f"(at most {MAX_SKEW_MS / 1000:.0f}s)"
            )
        return version

    def check_wall(self, wall_ms: int) -> int:
        """Return another peer's wall clock reading ``wall_ms`` if it is within
        ``MAX_SKEW_MS`` of this peer's, either way; raise InvalidRequest otherwise."""
        off = wall_ms - self._wall_ms()
        if abs(off) > MAX_SKEW_MS:
            raise InvalidRequest(
                f"its clock is {off / 1000:+.0f}s from this peer's "
                f"(at most {MAX_SKEW_MS / 1000:.0f}s either way)"
            )
        return wall_ms

    def observe(self, version: Version) -> None:
        """Move past a version seen from another peer; raises InvalidRequest (and stays
        where it is) if ``check`` refuses the version."""
        self.check(version)
        self._last = max(self._last, (version.wall_ms, version.counter))

    def __repr__(self) -> str:
        return f"HybridClock(peer={self._peer!r}, last={self._last})"
