"""Versions and the hybrid logical clock: total order, text and wire forms, never backwards."""

from __future__ import annotations

import msgpack
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.model.version import HybridClock, Version

fast = settings(max_examples=150, deadline=None)

peers = st.one_of(st.uuids().map(str), st.text(max_size=20))
versions = st.builds(Version, st.integers(0, 2**53), st.integers(0, 2**32), peers)

nearby_versions = st.builds(Version, st.integers(0, 20_000), st.integers(0, 50), peers)


class FakeWall:
    """A wall clock the test sets by hand, in milliseconds."""

    def __init__(self, now: int = 1_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_versions_order_by_wall_then_counter_then_peer() -> None:
    assert Version(1, 9, "z") < Version(2, 0, "a")
    assert Version(5, 1, "z") < Version(5, 2, "a")
    assert Version(5, 2, "a") < Version(5, 2, "b")
    assert Version(5, 2, "a") == Version(5, 2, "a")
    assert max([Version(5, 2, "a"), Version(5, 2, "b"), Version(4, 99, "c")]) == Version(5, 2, "b")


@fast
@given(first=versions, second=versions)
def test_order_is_total_and_matches_the_tuple(first: Version, second: Version) -> None:
    as_tuple = (first.wall_ms, first.counter, first.peer)
    other = (second.wall_ms, second.counter, second.peer)
    assert (first < second) == (as_tuple < other)
    assert (first == second) == (as_tuple == other)
    assert sum([first < second, first == second, first > second]) == 1


def test_str_form() -> None:
    peer = "0f8e9c3a-1b2c-4d5e-8f90-123456789abc"
    assert str(Version(1700000000123, 4, peer)) == f"1700000000123.4.{peer}"


@fast
@given(version=versions)
def test_str_parse_round_trip(version: Version) -> None:
    assert Version.parse(str(version)) == version


def test_parse_keeps_dots_and_dashes_in_the_peer_id() -> None:
    assert Version.parse("12.3.peer-with-dashes.and.dots") == Version(
        12, 3, "peer-with-dashes.and.dots"
    )


@pytest.mark.parametrize("text", ["", "12", "12.3", "a.3.peer", "12.b.peer", "12..peer"])
def test_parse_refuses_what_is_not_a_version(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        Version.parse(text)


@fast
@given(version=versions)
def test_wire_round_trip_through_msgpack(version: Version) -> None:
    wire = msgspec.msgpack.encode(version)
    assert msgpack.unpackb(wire) == [version.wall_ms, version.counter, version.peer]
    assert msgspec.msgpack.decode(wire, type=Version) == version


def test_same_millisecond_increases_the_counter() -> None:
    wall = FakeWall(1_000)
    clock = HybridClock("p", wall)
    assert [clock.now() for _ in range(3)] == [
        Version(1_000, 0, "p"),
        Version(1_000, 1, "p"),
        Version(1_000, 2, "p"),
    ]
    wall.now = 1_001
    assert clock.now() == Version(1_001, 0, "p")


def test_clock_never_goes_back_with_the_wall_clock() -> None:
    wall = FakeWall(5_000)
    clock = HybridClock("p", wall)
    first = clock.now()
    wall.now = 4_000  # NTP step backwards
    second = clock.now()
    third = clock.now()
    assert first < second < third
    assert second == Version(5_000, 1, "p")
    wall.now = 5_001
    assert clock.now() == Version(5_001, 0, "p")


def test_observe_moves_past_a_remote_version() -> None:
    wall = FakeWall(1_000)
    clock = HybridClock("a", wall)
    remote = Version(9_000, 7, "zzzz")  # a peer whose clock runs ahead
    clock.observe(remote)
    mine = clock.now()
    assert mine > remote
    assert mine == Version(9_000, 8, "a")


def test_observing_an_older_version_changes_nothing() -> None:
    wall = FakeWall(1_000)
    clock = HybridClock("a", wall)
    clock.now()
    clock.observe(Version(10, 99, "b"))
    assert clock.now() == Version(1_000, 1, "a")


@fast
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("tick"), st.integers(0, 10_000)),
            st.tuples(st.just("observe"), nearby_versions),
        ),
        max_size=40,
    )
)
def test_every_version_is_greater_than_all_issued_or_observed_before(
    steps: list[tuple[str, int | Version]],
) -> None:
    wall = FakeWall(0)
    clock = HybridClock("me", wall)
    seen: list[Version] = []
    for kind, value in steps:
        if isinstance(value, Version):
            clock.observe(value)
            seen.append(value)
        else:
            assert kind == "tick"
            wall.now = value  # may jump backwards as well as forwards
            version = clock.now()
            assert all(version > earlier for earlier in seen)
            assert version.peer == "me"
            seen.append(version)


def test_repr_shows_the_state() -> None:
    clock = HybridClock("peer-1", FakeWall(42))
    clock.now()
    assert repr(clock) == "HybridClock(peer='peer-1', last=(42, 0))"
