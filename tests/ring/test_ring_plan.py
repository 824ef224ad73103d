"""plan_moves: hand-written cases and minimality properties."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring import EmptyRing, Member, Move, Ring, plan_moves

KEY = "file-version-42"


def uuid_ids(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


@pytest.fixture(scope="module")
def ring10() -> Ring:
    return Ring([Member(member_id, "http://x") for member_id in uuid_ids(10)], vnodes=32)


def test_move_validates_and_shows_state() -> None:
    assert repr(Move(1, "a", "b")) == "Move(index=1, source='a', target='b')"
    with pytest.raises(ValueError, match="source == target"):
        Move(0, "a", "a")
    with pytest.raises(ValueError, match="index"):
        Move(-1, "a", "b")


def test_nothing_to_move(ring10: Ring) -> None:
    target = ring10.placement(KEY, 7)
    holders = dict(enumerate(reversed(target)))  # any order within the set is fine
    assert plan_moves(holders, ring10, KEY) == ()
    assert plan_moves({}, ring10, KEY) == ()


def test_chunks_outside_the_set_fill_free_members_in_ring_order(ring10: Ring) -> None:
    t = ring10.placement(KEY, 4)
    holders = {0: t[0], 1: "gone-a", 2: t[2], 3: "gone-b"}
    assert plan_moves(holders, ring10, KEY) == (
        Move(1, "gone-a", t[1]),
        Move(3, "gone-b", t[3]),
    )
    # Pairing depends on index and ring order, not on mapping insertion order.
    shuffled = {3: "gone-b", 2: t[2], 1: "gone-a", 0: t[0]}
    assert plan_moves(shuffled, ring10, KEY) == plan_moves(holders, ring10, KEY)


def test_a_degraded_layout_stays_on_any_member_of_its_full_set(ring10: Ring) -> None:
    """6 of 7 chunks placed: none moves while it sits in the 7-member set (the free member
    is where repair puts the 7th); one outside moves to the first free member."""
    t = ring10.placement(KEY, 7)
    holders = {i: t[i + 1] for i in range(6)}  # t[0] was down at write time
    assert plan_moves(holders, ring10, KEY, n=7) == ()
    assert plan_moves(holders, ring10, KEY) == (Move(5, t[6], t[0]),)  # as if 6 were all
    outside = {**holders, 2: "gone"}
    assert plan_moves(outside, ring10, KEY, n=7) == (Move(2, "gone", t[0]),)


def test_duplicate_holder_keeps_only_its_lowest_index(ring10: Ring) -> None:
    t = ring10.placement(KEY, 4)
    holders = {0: t[1], 1: t[1], 2: t[0], 3: t[1]}
    assert plan_moves(holders, ring10, KEY) == (Move(1, t[1], t[2]), Move(3, t[1], t[3]))


def test_down_members_hand_off(ring10: Ring) -> None:
    t = ring10.placement(KEY, 4)
    successors = list(ring10.successors(KEY))
    holders = dict(enumerate(t))
    # t[1] is down: its chunk goes to the first member after the set.
    assert plan_moves(holders, ring10, KEY, skip={t[1]}) == (Move(1, t[1], successors[4]),)
    # A down member outside the set changes nothing.
    assert plan_moves(holders, ring10, KEY, skip={successors[-1]}) == ()


def test_too_few_members_moves_what_it_can() -> None:
    small = Ring([Member(member_id, "http://x") for member_id in uuid_ids(3)], vnodes=8)
    order = list(small.successors(KEY))
    holders = {i: f"old-{i}" for i in range(5)}
    assert plan_moves(holders, small, KEY) == tuple(Move(i, f"old-{i}", order[i]) for i in range(3))


def test_empty_ring_raises() -> None:
    with pytest.raises(EmptyRing):
        plan_moves({0: "a"}, Ring([]), KEY)


@settings(max_examples=80, deadline=None)
@given(
    count=st.integers(1, 15),
    vnodes=st.sampled_from([1, 4, 16]),
    key=st.text(max_size=20),
    data=st.data(),
)
def test_plan_is_minimal_and_lands_on_the_placement_set(
    count: int, vnodes: int, key: str, data: st.DataObject
) -> None:
    ids = uuid_ids(count, seed=count)
    ring = Ring([Member(member_id, "http://x") for member_id in ids], vnodes=vnodes)
    pool = [*ids, "outsider-1", "outsider-2"]
    holders = data.draw(
        st.dictionaries(st.integers(0, 11), st.sampled_from(pool), min_size=1, max_size=9)
    )
    skip = data.draw(st.sets(st.sampled_from(ids)))
    target = ring.placement(key, len(holders), skip)
    moves = plan_moves(holders, ring, key, skip)

    staying = {holders[i] for i in holders if holders[i] in target}
    assert len(moves) == min(len(holders) - len(staying), len(target) - len(staying))
    assert [m.index for m in moves] == sorted(m.index for m in moves)
    assert len({m.target for m in moves}) == len(moves)
    after = dict(holders)
    for move in moves:
        assert holders[move.index] == move.source
        assert move.target in target
        assert move.target not in staying
        after[move.index] = move.target
    if len(target) == len(holders):
        assert set(after.values()) == set(target)
    assert plan_moves(after, ring, key, skip) == ()
