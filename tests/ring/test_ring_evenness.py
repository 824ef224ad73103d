"""Token shares against weight-fair shares (``ring.balance``), and the circle drawn in slices."""

from __future__ import annotations

from collections import Counter

import pytest

from ring import EmptyRing, Member, Ring, ring_balance
from ring.continuum import HASH_SPACE, build_continuum


def members(weights: list[int], zones: int = 1) -> list[Member]:
    return [
        Member(f"peer-{i:02d}", "http://x", weight=w, zone=f"z{i % zones}")
        for i, w in enumerate(weights)
    ]


def primary_arcs(ring: Ring) -> dict[str, int]:
    """Arc lengths by primary owner, walked point by point (independent of ownership)."""
    continuum = build_continuum([(m.id, m.weight) for m in ring.members], ring.vnodes)
    ids = [m.id for m in ring.members]
    owned: Counter[str] = Counter()
    for i, point in enumerate(continuum.points):
        owned[ids[continuum.owners[i]]] += (point - continuum.points[i - 1]) % HASH_SPACE
    return owned


@pytest.mark.parametrize("weights", [[1] * 7, [1, 2, 3, 4], [5, 1, 1], [1]])
def test_shares_are_exact_arcs_against_weight_fair_shares(weights: list[int]) -> None:
    ring = Ring(members(weights, zones=2), vnodes=16)
    balance = ring_balance(ring)
    arcs = primary_arcs(ring)
    assert [m.id for m in balance.members] == [m.id for m in ring.members]
    assert sum(m.share for m in balance.members) == pytest.approx(1.0, abs=1e-12)
    assert sum(m.fair for m in balance.members) == pytest.approx(1.0, abs=1e-12)
    for share, member in zip(balance.members, ring.members, strict=True):
        assert share.share == pytest.approx(arcs[member.id] / HASH_SPACE, abs=1e-12)
        assert share.fair == member.weight / sum(weights)
        assert share.ratio == share.share / share.fair
        assert (share.weight, share.zone) == (member.weight, member.zone)
    ratios = [m.ratio for m in balance.members]
    mean = sum(ratios) / len(ratios)
    assert balance.max_ratio == max(ratios)
    assert balance.min_ratio == min(ratios)
    std = (sum((r - mean) ** 2 for r in ratios) / len(ratios)) ** 0.5
    assert balance.cv == pytest.approx(std / mean)
    assert balance.share(ring.members[0].id) == balance.members[0]
    assert balance.share("absent") is None


def test_the_default_ring_is_close_to_fair() -> None:
    balance = ring_balance(Ring(members([1] * 7)))
    assert 1.0 < balance.max_ratio < 1.1
    assert 0.9 < balance.min_ratio < 1.0
    assert 0 < balance.cv < 0.05
    weighted = ring_balance(Ring(members([1, 2, 4])))
    assert weighted.max_ratio < 1.1  # a heavy member gets its weight's part, not more
    assert weighted.min_ratio > 0.9


def test_a_single_member_owns_everything() -> None:
    balance = ring_balance(Ring(members([3])))
    assert (balance.max_ratio, balance.min_ratio, balance.cv) == (1.0, 1.0, 0.0)


def test_bad_arguments() -> None:
    with pytest.raises(EmptyRing):
        ring_balance(Ring([]))
