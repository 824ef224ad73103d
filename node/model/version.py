"""File versions, ordered by a hybrid logical clock with the peer id as tie-break.

A version is ``(wall_ms, counter, peer)``. The clock never goes backwards on one peer and
moves past every version it has observed, so a version written after another was seen is
always greater, even when wall clocks disagree a little (Kulkarni et al., "Logical Physical
Clocks", OPODIS 2014). On the wire and on disk a version is the msgpack array
``[wall_ms, counter, peer]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec


class Version(msgspec.Struct, frozen=True, order=True, array_like=True):
    """One file version: milliseconds since the epoch, a counter within that millisecond, and
    the id of the peer that issued it. Compares in that order."""

    wall_ms: int
    counter: int
    peer: str

    def __str__(self) -> str:
        return f"{self.wall_ms}.{self.counter}.{self.peer}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``str(version)``; raises ValueError if it is not one."""
        wall, counter, peer = text.split(".", 2)
        return cls(int(wall), int(counter), peer)


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
        self._last = (wall, 0) if wall > last_wall else (last_wall, last_counter + 1)
        return Version(*self._last, self._peer)

    def observe(self, version: Version) -> None:
        """Move past a version seen from another peer."""
        self._last = max(self._last, (version.wall_ms, version.counter))

    def __repr__(self) -> str:
        return f"HybridClock(peer={self._peer!r}, last={self._last})"
