"""File versions, ordered by a hybrid logical clock with the peer id as tie-break.

A version is ``(wall_ms, counter, peer)``. The clock never goes backwards on one peer and
moves past every version it has observed, so a version written after another was seen is
always greater, even when wall clocks disagree a little (Kulkarni et al., "Logical Physical
Clocks", OPODIS 2014). On the wire and on disk a version is the msgpack array
``[wall_ms, counter, peer]``.

Bounds on versions from elsewhere: decoding (and ``Version.parse``) refuses ``wall_ms``
outside 0..``MAX_WALL_MS`` (2**53), ``counter`` outside 0..``MAX_COUNTER`` (2**32) and peer ids
over ``MAX_PEER_LENGTH`` characters; ``HybridClock.observe`` refuses a version more than
``MAX_SKEW_MS`` (5 minutes) ahead of this peer's wall clock, and then does not move. So one
peer with a broken clock (or a forged version) cannot drag every later version of the
cluster into the far future: its gossip and its manifests are refused instead.
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
MAX_SKEW_MS = 5 * 60 * 1000  # how far ahead of our wall clock an observed version may be


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


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """Issues increasing versions for one peer."""

    def __init__(self, peer: str, wall_ms: Callable[[], int] = _wall_ms) -> None:
        self._peer = peer
        self._wall_ms = wall_ms
        self._last = (0, 0)

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

    def observe(self, version: Version) -> None:
        """Move past a version seen from another peer; raises InvalidRequest (and stays
        where it is) if ``check`` refuses the version."""
        self.check(version)
        self._last = max(self._last, (version.wall_ms, version.counter))

    def __repr__(self) -> str:
        return f"HybridClock(peer={self._peer!r}, last={self._last})"
