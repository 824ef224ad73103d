"""Balance: exact ownership, evenness of the default ring, weights, and data moved on a join."""

from __future__ import annotations

import random
import uuid
from bisect import bisect_right

import pytest

from ring import Member, Ring, plan_moves
from ring.continuum import HASH_SPACE, build_continuum, hash_point

K_PLUS_M = 7
SWEEP = [6, 7, 8, 10, 12, 16, 20, 30, 50, 75, 100]


def uuid_ids(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def make_ring(count: int, seed: int = 0, vnodes: int | None = None) -> Ring:
    members = [Member(member_id, "http://x") for member_id in uuid_ids(count, seed)]
    return Ring(members) if vnodes is None else Ring(members, vnodes=vnodes)


def naive_ownership(ring: Ring, n: int) -> dict[str, float]:
    """Walk every arc of the continuum independently of Ring.ownership."""
    ids = [member.id for member in ring.members]
    continuum = build_continuum([(m.id, m.weight) for m in ring.members], ring.vnodes)
    points, owners = continuum.points, continuum.owners
    owned = dict.fromkeys(ids, 0)
    for i, point in enumerate(points):
        arc = (point - points[i - 1]) % HASH_SPACE or HASH_SPACE
        placed: list[str] = []
        j = i
        while len(placed) < min(n, len(ids)):
            member_id = ids[owners[j % len(points)]]
            if member_id not in placed:
                placed.append(member_id)
            j += 1
        for member_id in placed:
            owned[member_id] += arc
    return {member_id: arc / HASH_SPACE for member_id, arc in owned.items()}


@pytest.mark.parametrize(("count", "vnodes"), [(1, 1), (2, 3), (5, 7), (9, 16), (23, 4)])
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_ownership_is_exact(count: int, vnodes: int, n: int) -> None:
    members = [
        Member(member_id, "http://x", weight=1 + i % 3)
        for i, member_id in enumerate(uuid_ids(count, seed=count))
    ]
    ring = Ring(members, vnodes=vnodes)
    owned = ring.ownership(n)
    assert list(owned) == [member.id for member in ring.members]
    assert sum(owned.values()) == pytest.approx(min(n, count), abs=1e-12)
    expected = naive_ownership(ring, n)
    for member_id, share in owned.items():
        assert share == pytest.approx(expected[member_id], abs=1e-12)


def test_ownership_matches_sampled_placements() -> None:
    ring = make_ring(10, vnodes=64)
    owned = ring.ownership(3)
    hits = dict.fromkeys(owned, 0)
    samples = 20_000
    for i in range(samples):
        for member_id in ring.placement(f"sample-{i}", 3):
            hits[member_id] += 1
    for member_id, share in owned.items():
        assert hits[member_id] / samples == pytest.approx(share, abs=0.02)


def test_placement_starts_at_the_keys_arc() -> None:
    # Keys whose hash lands on the arc before point i are placed from point i onwards.
    ring = make_ring(6, vnodes=4)
    continuum = build_continuum([(m.id, m.weight) for m in ring.members], ring.vnodes)
    ids = [member.id for member in ring.members]
    for i in range(50):
        key = f"arc-{i}"
        start = bisect_right(continuum.points, hash_point(key)) % len(continuum.points)
        assert ring.placement(key, 1) == (ids[continuum.owners[start]],)


@pytest.mark.parametrize("count", SWEEP)
def test_default_ring_is_even(count: int) -> None:
    ring = make_ring(count)
    assert ring.evenness(K_PLUS_M) <= 1.05
    # Regression guards for manifest replicas (n=3) and primaries (n=1); seeded, so exact.
    assert ring.evenness(3) <= 1.10
    assert ring.evenness(1) <= 1.15


@pytest.mark.parametrize("n", [1, 3])
def test_weight_two_owns_twice_as_much(n: int) -> None:
    members = [
        Member(member_id, "http://x", weight=2 if i < 3 else 1)
        for i, member_id in enumerate(uuid_ids(30, seed=7))
    ]
    ring = Ring(members)
    owned = ring.ownership(n)
    heavy = [owned[m.id] for m in members if m.weight == 2]
    light = [owned[m.id] for m in members if m.weight == 1]
    mean_light = sum(light) / len(light)
    for share in heavy:
        assert share / mean_light == pytest.approx(2.0, rel=0.10)
    assert ring.evenness(n) <= 1.15


@pytest.mark.parametrize("count", [6, 7, 10, 16, 30])
def test_join_moves_only_the_newcomers_share(count: int) -> None:
    *old_ids, newcomer = uuid_ids(count + 1, seed=count)
    old = Ring([Member(member_id, "http://x") for member_id in old_ids])
    new = Ring([*old.members, Member(newcomer, "http://new")])
    moved = total = 0
    for i in range(20_000):
        key = f"version-{i}"
        placed = old.placement(key, K_PLUS_M)
        # With 6 peers the 7th chunk shares a peer: it is the one to move on a join.
        holders = {index: placed[index % len(placed)] for index in range(K_PLUS_M)}
        moves = plan_moves(holders, new, key)
        assert all(move.target == newcomer for move in moves)
        assert len(moves) <= 1
        after = dict(holders)
        for move in moves:
            assert after[move.index] == move.source
            after[move.index] = move.target
        assert set(after.values()) == set(new.placement(key, K_PLUS_M))
        moved += len(moves)
        total += K_PLUS_M
    share = new.ownership(K_PLUS_M)[newcomer] / K_PLUS_M
    assert 0.8 <= (moved / total) / share <= 1.25
    assert 0.8 <= (moved / total) * (count + 1) <= 1.25
