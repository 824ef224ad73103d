"""Failure domains: placement spreads over zones first, stays set-stable on joins, and with 4
hosts of 4 peers each losing any one host loses no file (issue 12)."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from ring import Member, Ring
from ring.zones import spread

KEYS = [f"file-{i}" for i in range(2000)]


def zoned(hosts: int, per_host: int, vnodes: int = 64) -> Ring:
    return Ring(
        [
            Member(f"h{h}-p{p}", f"http://10.0.0.{h}:{8000 + p}", zone=f"host-{h}")
            for h in range(hosts)
            for p in range(per_host)
        ],
        vnodes,
    )


def test_four_hosts_of_four_peers_lose_no_file_and_no_manifest_with_one_host() -> None:
    ring = zoned(4, 4)
    for key in KEYS:
        chunks = Counter(ring.zone(m) for m in ring.placement(key, 7))
        assert sum(chunks.values()) == 7
        assert max(chunks.values()) <= 2, (key, chunks)  # any one host down: 5 of 7 left
        replicas = {ring.zone(m) for m in ring.placement(key, 3)}
        assert len(replicas) == 3  # a manifest's 3 replicas on 3 hosts


def test_with_as_many_zones_as_chunks_every_chunk_is_in_its_own_zone() -> None:
    ring = zoned(9, 2)
    for key in KEYS[:500]:
        placed = ring.placement(key, 7)
        assert len({ring.zone(m) for m in placed}) == 7


def test_every_zone_carries_its_share_of_chunks() -> None:
    """With 4 zones, every zone holds 7/4 of each file's chunks on average."""
    ring = zoned(4, 4)
    totals = Counter(ring.zone(m) for key in KEYS for m in ring.placement(key, 7))
    for zone, count in totals.items():
        assert abs(count / len(KEYS) - 7 / 4) < 0.1, (zone, count)


def test_placement_keeps_clockwise_order_and_passes_over_skipped_members() -> None:
    ring = zoned(4, 4)
    key = "file-42"
    placed = ring.placement(key, 7)
    order = list(ring.successors(key))
    assert list(placed) == sorted(placed, key=order.index)
    down = {placed[0], placed[3]}
    again = ring.placement(key, 7, skip=down)
    assert len(again) == 7
    assert not down & set(again)
    assert max(Counter(ring.zone(m) for m in again).values()) <= 2


def test_one_zone_places_as_a_ring_without_zones() -> None:
    plain = Ring([Member(f"p{i}", "http://x") for i in range(10)], 64)
    same = Ring([Member(f"p{i}", "http://x", zone="rack-1") for i in range(10)], 64)
    for key in KEYS[:200]:
        assert plain.placement(key, 7) == same.placement(key, 7)
    assert plain.digest != same.digest  # zones are part of what the digest names


def test_spread_gives_a_short_zone_s_quota_to_the_others() -> None:
    order = ["a1", "b1", "a2", "b2", "a3", "c1", "a4"]
    zone_of = {m: m[0] for m in order}
    placed = spread(order, zone_of, 6, "k")
    assert Counter(m[0] for m in placed) == {"a": 3, "b": 2, "c": 1}
    assert spread(order, zone_of, 10, "k") == tuple(order)  # fewer members than wanted


members = st.lists(
    st.tuples(st.integers(0, 5), st.integers(1, 3)), min_size=3, max_size=14
)  # (zone, weight) of each member


@settings(max_examples=300, deadline=None)
@given(layout=members, newcomer_zone=st.integers(0, 6), n=st.sampled_from([3, 7]))
def test_a_join_brings_only_the_newcomer_into_any_placement(
    layout: list[tuple[int, int]], newcomer_zone: int, n: int
) -> None:
    old = [Member(f"m{i}", "http://x", w, zone=f"z{z}") for i, (z, w) in enumerate(layout)]
    newcomer = Member("new", "http://x", 1, zone=f"z{newcomer_zone}")
    before, after = Ring(old, 16), Ring([*old, newcomer], 16)
    rng = random.Random(len(layout))
    skip = {m.id for m in old if rng.random() < 0.2}
    for key in KEYS[:150]:
        entered = set(after.placement(key, n, skip)) - set(before.placement(key, n, skip))
        assert entered <= {"new"}, (key, entered)
