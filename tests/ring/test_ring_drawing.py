"""The ring's arcs and its drawing: arcs tile the circle and agree with ownership; a
newcomer's shares are exactly what it would own."""

from __future__ import annotations

import itertools

import pytest

from ring import Member, Ring
from ring.continuum import HASH_SPACE
from ring.drawing import newcomer_shares, sectors


def ring_of(count: int, vnodes: int = 64) -> Ring:
    return Ring([Member(f"peer-{i}", f"http://p{i}", 1 + i % 2) for i in range(count)], vnodes)


@pytest.mark.parametrize("count", [1, 2, 7])
def test_arcs_tile_the_circle_and_sum_to_primary_ownership(count: int) -> None:
    ring = ring_of(count)
    arcs = list(ring.arcs())
    assert arcs[0][0] == 0
    assert arcs[-1][1] == HASH_SPACE
    assert all(a[1] == b[0] for a, b in itertools.pairwise(arcs))
    owned: dict[str, int] = {}
    for start, end, member in arcs:
        assert start < end
        owned[member] = owned.get(member, 0) + end - start
    expected = ring.ownership(1)
    for member, length in owned.items():
        assert length / HASH_SPACE == pytest.approx(expected[member], abs=1e-9)


def test_arcs_of_a_key_name_its_primary() -> None:
    ring = ring_of(5)
    arcs = list(ring.arcs())
    from ring.continuum import hash_point

    for i in range(200):
        key = f"ns/file-{i}"
        point = hash_point(key)
        owner = next(member for start, end, member in arcs if start <= point < end)
        assert owner == next(ring.successors(key))


def test_sectors_cover_every_slice_in_order() -> None:
    ring = ring_of(7)
    found = sectors(ring, 90)
    assert found[0].start == 0
    assert found[-1].end == 90
    assert all(a.end == b.start for a, b in itertools.pairwise(found))
    assert {s.member for s in found} <= {m.id for m in ring.members}
    assert sectors(ring_of(1), 12) == sectors(ring_of(1), 12)[:1]


def test_sectors_give_a_member_about_its_weights_share_of_the_slices() -> None:
    ring = Ring([Member(f"peer-{i}", f"http://p{i}", w) for i, w in enumerate([1, 1, 2])], 256)
    slices: dict[str, int] = {}
    for sector in sectors(ring, 360):
        slices[sector.member] = slices.get(sector.member, 0) + sector.end - sector.start
    # Half the weight, about half the slices (a slice goes whole to its largest owner,
    # which favours the heavy member a little).
    assert 150 < slices["peer-2"] < 240
    assert slices["peer-2"] > max(slices["peer-0"], slices["peer-1"])


def test_newcomer_shares_are_what_it_would_own() -> None:
    ring = ring_of(7)
    newcomer = Member("newcomer", "http://new", 1)
    shares = newcomer_shares(ring, newcomer, 360)
    assert len(shares) == 360
    assert all(0.0 <= share <= 1.0 for share in shares)
    grown = Ring([*ring.members, newcomer], ring.vnodes)
    assert sum(shares) / 360 == pytest.approx(grown.ownership(1)["newcomer"], rel=1e-3)
    assert sum(share > 0 for share in shares) >= 64  # its 64 arcs, spread round the circle


def test_newcomer_must_be_new_and_bins_positive() -> None:
    ring = ring_of(3)
    with pytest.raises(ValueError, match="already"):
        newcomer_shares(ring, ring.members[0])
    with pytest.raises(ValueError, match="bins"):
        sectors(ring, 0)
