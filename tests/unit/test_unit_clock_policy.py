"""The clock policy as pure functions: measuring a member's offset, the warning threshold
(``MAX_OFFSET_MS``) and the hard limit (``MAX_SKEW_MS``), and the gossip field it needs.

Through real peers: ``tests/node/test_clock_skew.py`` (a member an hour fast, one seconds
fast) and ``tests/node/shared/test_peer_input.py`` (gossip past the hard limit).
"""

from __future__ import annotations

import msgspec
import pytest

from node.cluster.auth import WINDOW
from node.cluster.protocol import GossipMessage, MemberRecord
from node.errors import InvalidRequest
from node.model.version import MAX_OFFSET_MS, MAX_SKEW_MS, ClockOffset, HybridClock, Version

NOW = 1_700_000_000_000
ME = MemberRecord("a", "http://127.0.0.1:8000", 1)


def test_the_limits_are_ordered_and_auth_keeps_the_hard_one() -> None:
    assert 0 < MAX_OFFSET_MS < MAX_SKEW_MS
    assert WINDOW * 1000 == MAX_SKEW_MS  # signed requests and versions: one limit


@pytest.mark.parametrize(
    ("sent", "received", "remote", "offset", "uncertainty"),
    [
        (NOW, NOW, NOW, 0, 0),  # an instant round trip, clocks together
        (NOW, NOW + 100, NOW + 50, 0, 50),  # read at the midpoint: in step
        (NOW, NOW + 100, NOW + 3_600_050, 3_600_000, 50),  # an hour fast
        (NOW, NOW + 100, NOW - 1_000, -1_050, 50),  # a second slow
        (NOW, NOW + 1, NOW, 0, 1),  # odd round trips round the error up, never down
        (NOW, NOW - 5, NOW, 0, 0),  # our clock stepped back mid-way: no negative error
    ],
)
def test_an_offset_is_read_at_the_round_trips_midpoint(
    sent: int, received: int, remote: int, offset: int, uncertainty: int
) -> None:
    assert ClockOffset.measure(sent, received, remote) == ClockOffset(offset, uncertainty)


@pytest.mark.parametrize(
    ("offset", "uncertainty", "skewed"),
    [
        (0, 0, False),
        (MAX_OFFSET_MS, 0, False),
        (MAX_OFFSET_MS + 1, 0, True),
        (-MAX_OFFSET_MS - 1, 0, True),
        (MAX_OFFSET_MS + 200, 300, False),  # could be within: a slow round trip proves nothing
        (MAX_OFFSET_MS + 301, 300, True),
        (3_600_000, 2_000, True),
        (-3_600_000, 2_000, True),
    ],
)
def test_skewed_means_past_the_max_offset_whatever_the_error(
    offset: int, uncertainty: int, skewed: bool
) -> None:
    assert ClockOffset(offset, uncertainty).skewed is skewed


class FakeWall:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.mark.parametrize("off", [0, MAX_OFFSET_MS + 1, MAX_SKEW_MS, -MAX_SKEW_MS])
def test_a_wall_clock_within_the_hard_limit_is_accepted(off: int) -> None:
    assert HybridClock("me", FakeWall()).check_wall(NOW + off) == NOW + off


@pytest.mark.parametrize("off", [MAX_SKEW_MS + 1, -MAX_SKEW_MS - 1, 3_600_000, -3_600_000])
def test_a_wall_clock_past_the_hard_limit_either_way_is_refused(off: int) -> None:
    clock = HybridClock("me", FakeWall())
    with pytest.raises(InvalidRequest, match="clock is"):
        clock.check_wall(NOW + off)
    assert clock.now() == Version(NOW, 0, "me")


def test_versions_between_the_limits_are_followed() -> None:
    # Past the max offset a member is reported skewed, but its versions are still followed:
    # a write after one seen must get a greater version.
    clock = HybridClock("me", FakeWall())
    seen = Version(NOW + MAX_OFFSET_MS * 10, 7, "fast")
    clock.observe(seen)
    assert clock.now() > seen


def test_the_clock_reads_the_wall_it_was_given() -> None:
    wall = FakeWall()
    clock = HybridClock("me", wall)
    wall.now += 5
    assert clock.wall_ms() == NOW + 5


def test_gossip_carries_the_senders_wall_clock_and_old_peers_ignore_it() -> None:
    message = GossipMessage(sender=ME, members=[ME], clock=Version(NOW, 0, "a"), wall_ms=NOW)
    wire = msgspec.msgpack.encode(message)
    assert msgspec.msgpack.decode(wire, type=GossipMessage).wall_ms == NOW

    class OldGossip(msgspec.Struct, kw_only=True, rename={"sender": "from"}):
        sender: MemberRecord
        members: list[MemberRecord]
        clock: Version | None = None

    assert msgspec.msgpack.decode(wire, type=OldGossip).clock == Version(NOW, 0, "a")


@pytest.mark.parametrize("wall_ms", [-1, 2**53 + 1, 2**63])
def test_a_gossip_wall_clock_out_of_range_does_not_decode(wall_ms: int) -> None:
    wire = msgspec.msgpack.encode({"from": ME, "members": [ME], "wall_ms": wall_ms})
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(wire, type=GossipMessage)
