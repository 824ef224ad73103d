"""The continuum built from members' kept runs of points is the one hashing every point
gives (uhashring's whole ring), and a ring rebuilt after a join hashes only the newcomer."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uhashring import HashRing

from ring import continuum
from ring.continuum import build_continuum, hash_point


def hashed_whole(weights: list[tuple[str, int]], vnodes: int) -> tuple[tuple[int, ...], ...]:
    """Every point hashed in one uhashring ring (the build before runs were kept)."""
    nodes = {member: {"weight": weight, "vnodes": vnodes} for member, weight in weights}
    owner_at = HashRing(nodes=nodes, hash_fn=hash_point).ring
    points = tuple(sorted(owner_at))
    index = {member: i for i, (member, _) in enumerate(weights)}
    return points, tuple(index[owner_at[point]] for point in points)


@settings(max_examples=150, deadline=None)
@given(
    members=st.dictionaries(
        st.text("abcdefgh-0123456789", min_size=1, max_size=6), st.integers(1, 5), max_size=12
    ),
    vnodes=st.sampled_from([1, 2, 7, 64, 160]),
)
def test_kept_runs_build_the_continuum_hashing_gives(members: dict[str, int], vnodes: int) -> None:
    weights = sorted(members.items())
    built = build_continuum(weights, vnodes)  # runs kept from earlier examples, or hashed now
    assert (built.points, built.owners) == hashed_whole(weights, vnodes)


def test_a_join_hashes_only_the_newcomer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(continuum, "_RUNS", continuum._Runs())  # none kept from other tests
    hashed: list[str] = []
    member_points = continuum._member_points

    def counted(member: str, weight: int, vnodes: int) -> tuple[int, ...]:
        hashed.append(member)
        return member_points(member, weight, vnodes)

    monkeypatch.setattr(continuum, "_member_points", counted)
    weights = [(f"join-{i:02d}", 1 + i % 3) for i in range(8)]
    build_continuum(weights, 64)
    assert len(hashed) == 8
    hashed.clear()
    grown = build_continuum([*weights, ("join-99", 2)], 64)
    assert hashed == ["join-99"]
    assert (grown.points, grown.owners) == hashed_whole([*weights, ("join-99", 2)], 64)
    hashed.clear()
    build_continuum([*weights[:-1], (weights[-1][0], 5)], 64)  # a new weight: new points
    assert hashed == [weights[-1][0]]


def test_kept_runs_hold_at_most_twice_the_last_ring_past_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(continuum, "_RUNS", continuum._Runs())
    rng = random.Random(5)
    for round_ in range(40):  # rings of members never seen again, as a test process builds
        weights = sorted((f"gone-{round_}-{i}", rng.randint(1, 3)) for i in range(6))
        last = build_continuum(weights, 1024)
    held = sum(map(len, continuum._RUNS.known.values()))
    assert held <= max(continuum._Runs.FLOOR, 2 * len(last.points))
    assert all(key in continuum._RUNS.known for key in ((m, w, 1024) for m, w in weights))
    assert repr(continuum._RUNS) == f"_Runs({len(continuum._RUNS.known)} runs, {held} points)"
