"""Ring and Member as values: validation, errors, digest, repr, equality."""

from __future__ import annotations

import pickle
import random
import re
import uuid

import pytest

import ring
from ring import (
    DEFAULT_VNODES,
    EmptyRing,
    Member,
    Ring,
    RingError,
    UnknownMember,
)


def uuid_ids(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def make_members(count: int, seed: int = 0) -> list[Member]:
    return [
        Member(member_id, f"http://127.0.0.1:{8000 + i}")
        for i, member_id in enumerate(uuid_ids(count, seed))
    ]


def test_public_api_is_reexported() -> None:
    assert set(ring.__all__) == {
        "DEFAULT_VNODES",
        "EmptyRing",
        "MAX_WEIGHT",
        "MIN_WEIGHT",
        "Member",
        "MemberShare",
        "Move",
        "Ring",
        "RingBalance",
        "RingError",
        "UnknownMember",
        "plan_moves",
        "ring_balance",
    }
    assert isinstance(DEFAULT_VNODES, int)
    assert DEFAULT_VNODES >= 1


def test_member_defaults_and_repr() -> None:
    member = Member("a", "http://127.0.0.1:8000")
    assert member.weight == 1
    assert repr(member) == "Member(id='a', url='http://127.0.0.1:8000', weight=1, zone='')"
    with pytest.raises(AttributeError):
        member.weight = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"id": "a", "url": "u", "weight": 0}, ValueError),
        ({"id": "a", "url": "u", "weight": -3}, ValueError),
        ({"id": "a", "url": "u", "weight": 1001}, ValueError),
        ({"id": "a", "url": "u", "weight": 10**6}, ValueError),
        ({"id": "", "url": "u"}, ValueError),
        ({"id": "a", "url": "u", "weight": True}, TypeError),
        ({"id": "a", "url": "u", "weight": 1.5}, TypeError),
        ({"id": 7, "url": "u"}, TypeError),
        ({"id": "a", "url": None}, TypeError),
    ],
)
def test_member_rejects_bad_fields(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Member(**kwargs)  # type: ignore[arg-type]


def test_error_tree() -> None:
    assert issubclass(EmptyRing, RingError)
    assert issubclass(EmptyRing, LookupError)
    assert issubclass(UnknownMember, RingError)
    assert issubclass(UnknownMember, KeyError)
    err = UnknownMember("peer-1")
    assert err.member_id == "peer-1"
    assert "peer-1" in str(err)


def test_ring_sorts_members_and_looks_them_up() -> None:
    members = make_members(5)
    built = Ring(reversed(members))
    assert built.members == tuple(sorted(members, key=lambda m: m.id))
    assert len(built) == 5
    assert built.vnodes == DEFAULT_VNODES
    for member in members:
        assert member.id in built
        assert built.member(member.id) is member
    assert "nope" not in built
    assert 42 not in built
    with pytest.raises(UnknownMember):
        built.member("nope")


def test_ring_rejects_bad_construction() -> None:
    members = make_members(3)
    with pytest.raises(ValueError, match="duplicate"):
        Ring([*members, Member(members[0].id, "http://elsewhere")])
    with pytest.raises(ValueError, match="vnodes"):
        Ring(members, vnodes=0)
    with pytest.raises(TypeError):
        Ring(members, vnodes=True)
    with pytest.raises(TypeError):
        Ring(["not-a-member"])  # type: ignore[list-item]


def test_empty_ring_raises_on_lookups() -> None:
    empty = Ring([])
    assert len(empty) == 0
    with pytest.raises(EmptyRing):
        empty.successors("key")  # raised at the call, not at the first next()
    with pytest.raises(EmptyRing):
        empty.placement("key", 3)
    with pytest.raises(EmptyRing):
        empty.ownership(1)
    with pytest.raises(EmptyRing):
        empty.evenness(1)


def test_bad_n_is_rejected() -> None:
    built = Ring(make_members(3), vnodes=8)
    with pytest.raises(ValueError, match="n must be"):
        built.placement("key", -1)
    with pytest.raises(ValueError, match="n must be"):
        built.ownership(0)
    assert built.placement("key", 0) == ()


def test_repr_shows_state() -> None:
    built = Ring(make_members(7), vnodes=64)
    assert re.fullmatch(r"Ring\(members=7, vnodes=64, digest=[0-9a-f]{8}\)", repr(built))
    assert built.digest.startswith(repr(built)[-9:-1])


def test_digest_ignores_order_and_urls() -> None:
    members = make_members(8)
    shuffled = members[:]
    random.Random(1).shuffle(shuffled)
    moved_urls = [Member(m.id, m.url.replace("127.0.0.1", "10.0.0.9"), m.weight) for m in members]
    base = Ring(members)
    assert re.fullmatch(r"[0-9a-f]{64}", base.digest)
    assert Ring(shuffled).digest == base.digest
    assert Ring(moved_urls).digest == base.digest
    # Equal digests mean equal placement.
    for key in ("a", "b", "file-version-1"):
        assert Ring(moved_urls).placement(key, 7) == base.placement(key, 7)


def test_digest_changes_with_placement_inputs() -> None:
    members = make_members(8)
    base = Ring(members).digest
    heavier = [Member(members[0].id, members[0].url, 2), *members[1:]]
    assert Ring(heavier).digest != base
    assert Ring(members, vnodes=DEFAULT_VNODES + 1).digest != base
    assert Ring(members[:-1]).digest != base
    assert Ring([*members, *make_members(1, seed=99)]).digest != base


def test_equality_hash_and_pickle() -> None:
    members = make_members(6)
    a, b = Ring(members, vnodes=32), Ring(list(reversed(members)), vnodes=32)
    assert a == b
    assert hash(a) == hash(b)
    assert a != Ring(members, vnodes=33)
    assert a != "ring"
    clone = pickle.loads(pickle.dumps(a))
    assert clone == a
    assert clone.digest == a.digest
    assert clone.placement("k", 4) == a.placement("k", 4)


def test_ring_is_immutable() -> None:
    built = Ring(make_members(3), vnodes=8)
    with pytest.raises(AttributeError):
        built.members = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        built.extra = 1  # type: ignore[attr-defined]
