"""Placement properties: distinct, deterministic everywhere, skip = handoff, join = one swap."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ring
import ring.ring
from ring import Member, Ring
from ring.continuum import hash_point

IMPORT_ROOT = Path(ring.__file__).resolve().parent.parent
K_PLUS_M = 7

member_ids = st.lists(st.uuids().map(str), min_size=1, max_size=24, unique=True)
small_vnodes = st.sampled_from([1, 2, 8, 32])
keys = st.text(max_size=40)
fast = settings(max_examples=60, deadline=None)


def uuid_ids(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def build(ids: list[str], vnodes: int) -> Ring:
    return Ring([Member(member_id, f"http://{member_id}") for member_id in ids], vnodes=vnodes)


@fast
@given(ids=member_ids, vnodes=small_vnodes, key=keys, n=st.integers(0, 30))
def test_placement_is_distinct_members_in_successor_order(
    ids: list[str], vnodes: int, key: str, n: int
) -> None:
    built = build(ids, vnodes)
    order = list(built.successors(key))
    assert sorted(order) == sorted(ids)
    placed = built.placement(key, n)
    assert len(set(placed)) == len(placed) == min(n, len(ids))
    assert list(placed) == order[:n]


@fast
@given(ids=member_ids, vnodes=small_vnodes, key=keys, n=st.integers(1, 10), data=st.data())
def test_skip_only_passes_over_skipped_members(
    ids: list[str], vnodes: int, key: str, n: int, data: st.DataObject
) -> None:
    built = build(ids, vnodes)
    skip = data.draw(st.sets(st.sampled_from([*ids, "not-a-member"])))
    placed = built.placement(key, n, skip)
    expected = [member_id for member_id in built.successors(key) if member_id not in skip]
    assert list(placed) == expected[:n]
    assert built.placement(key, n, list(skip)) == placed  # any Collection works


@fast
@given(ids=member_ids, vnodes=small_vnodes, key_list=st.lists(keys, max_size=8), seed=st.integers())
def test_placement_ignores_member_order(
    ids: list[str], vnodes: int, key_list: list[str], seed: int
) -> None:
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    a, b = build(ids, vnodes), build(shuffled, vnodes)
    assert a.digest == b.digest
    for key in key_list:
        assert a.placement(key, K_PLUS_M) == b.placement(key, K_PLUS_M)
        assert list(a.successors(key)) == list(b.successors(key))


@fast
@given(
    ids=st.lists(st.uuids().map(str), min_size=2, max_size=30, unique=True),
    vnodes=small_vnodes,
    key_list=st.lists(keys, min_size=1, max_size=10),
    n=st.integers(1, 10),
    data=st.data(),
)
def test_join_swaps_at_most_one_member_for_the_newcomer(
    ids: list[str], vnodes: int, key_list: list[str], n: int, data: st.DataObject
) -> None:
    *old_ids, newcomer = ids
    old, new = build(old_ids, vnodes), build(ids, vnodes)
    skip = data.draw(st.sets(st.sampled_from(old_ids)))
    for key in key_list:
        before, after = old.placement(key, n, skip), new.placement(key, n, skip)
        if newcomer not in after:
            assert after == before
            continue
        # The newcomer enters; the old members keep their order; at most the last one leaves.
        rest = [member_id for member_id in after if member_id != newcomer]
        assert rest == list(before[: len(after) - 1])
        assert len(set(before) - set(after)) <= 1
        if len(before) < n:
            assert set(before) <= set(after)


def test_placement_handles_any_string_key() -> None:
    built = build(uuid_ids(9), vnodes=16)
    for key in ("", "é", "\udcff", "a" * 10_000, "name\x00with nul"):
        assert len(built.placement(key, K_PLUS_M)) == K_PLUS_M


def test_placement_is_identical_in_another_process() -> None:
    ids = uuid_ids(12, seed=3)
    key_list = [f"file-{i}" for i in range(200)] + ["", "é", "photos/2024/cat.jpg"]
    here = {key: list(build(ids, 64).placement(key, K_PLUS_M)) for key in key_list}
    script = (
        "import json, sys\n"
        "from ring import Member, Ring\n"
        "ids, keys = json.load(sys.stdin)\n"
        "r = Ring([Member(i, 'http://other/' + i) for i in reversed(ids)], vnodes=64)\n"
        "print(json.dumps({k: list(r.placement(k, 7)) for k in keys}))\n"
    )
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONPATH": str(IMPORT_ROOT), "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps([ids, key_list]),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out) == here


def test_placements_remembered_by_gap_match_the_walk_and_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys sharing a gap between ring points share a remembered placement, for every ring
    of the process; each answer is still the walk's, whatever was asked before it, of this
    ring or another; the memo forgets everything past ``PLACEMENTS_KEPT``."""
    remembered = ring.ring._Placements()
    monkeypatch.setattr(ring.ring, "_PLACEMENTS", remembered)
    monkeypatch.setattr(ring.ring, "PLACEMENTS_KEPT", 64)
    ids = uuid_ids(10)
    rings = [build(ids[:9], vnodes=4), build(ids[1:], vnodes=4)]  # 36 gaps each: cleared often
    rng = random.Random(7)
    asked = [
        (
            rng.choice(rings),
            f"name-{i}",
            rng.randint(1, 9),
            frozenset(rng.sample(ids, rng.randint(0, 3))),
        )
        for i in range(3000)
    ]
    for built, key, n, skip in asked + asked[::-1]:
        expected = [member_id for member_id in built.successors(key) if member_id not in skip]
        assert built.placement(key, n, skip) == tuple(expected[:n])
        assert built.placement(key, n, set(skip)) == tuple(expected[:n])
        assert remembered.count <= 64
        assert sum(map(len, remembered.groups.values())) == remembered.count


def test_keys_in_one_gap_get_the_same_remembered_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the last point a key's gap is the first one's (the walk starts over at 0)."""
    remembered = ring.ring._Placements()
    monkeypatch.setattr(ring.ring, "_PLACEMENTS", remembered)
    built = build(uuid_ids(5), vnodes=2)
    points = built._points
    keys = (f"key-{i}" for i in range(100_000))
    below = next(key for key in keys if hash_point(key) < points[0])
    above = next(key for key in keys if hash_point(key) >= points[-1])
    inside = [
        key for key in (f"in-{i}" for i in range(2000)) if points[3] <= hash_point(key) < points[4]
    ]
    assert len(inside) >= 2
    assert built.placement(below, 3) is built.placement(above, 3)
    assert built.placement(inside[0], 3) is built.placement(inside[1], 3)
    assert remembered.count == 2


def test_rings_with_zones_or_many_points_are_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remembered = ring.ring._Placements()
    monkeypatch.setattr(ring.ring, "_PLACEMENTS", remembered)
    zoned = Ring(
        [
            Member(member_id, f"http://{member_id}", zone=f"z{i % 3}")
            for i, member_id in enumerate(uuid_ids(9))
        ],
        vnodes=4,
    )
    large = build(uuid_ids(3), vnodes=ring.ring.PLACEMENTS_KEPT // 2)  # 1.5x half the memo
    for i in range(50):
        zoned.placement(f"name-{i}", 3)
        large.placement(f"name-{i}", 3)
    assert remembered.count == 0
