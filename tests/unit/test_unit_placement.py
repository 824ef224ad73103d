"""One answer to "who holds this key": members, primary and handoffs, for every caller."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.cluster.membership import Membership
from node.cluster.placement import place
from node.model.names import name_key
from ring import Member, Ring

IDS = [f"member-{i:02d}" for i in range(12)]
RING = Ring([Member(i, f"http://h/{i}") for i in IDS], vnodes=64)


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(min_size=1, max_size=20),
    n=st.integers(0, 12),
    down=st.sets(st.sampled_from(IDS), max_size=8),
)
def test_members_then_handoffs_are_every_up_member_once_in_ring_order(
    key: str, n: int, down: set[str]
) -> None:
    placed = place(RING, key, n, down)
    up_in_order = [m for m in RING.successors(key) if m not in down]
    assert placed.members == tuple(up_in_order[:n])
    assert list(placed.handoffs()) == up_in_order[n:]
    assert list(placed.candidates()) == up_in_order
    assert placed.primary == (up_in_order[0] if n and up_in_order else None)
    assert placed.members == RING.placement(key, n, skip=down)


async def test_a_name_s_replicas_are_the_placement_of_its_key(tmp_path: Path) -> None:
    me = Member(IDS[0], f"http://h/{IDS[0]}")
    membership = Membership(me, tmp_path, vnodes=64, replicas=3)
    membership.merge(Member(i, f"http://h/{i}") for i in IDS[1:])
    await membership.refresh_ring()
    assert membership.ring == RING
    for member in IDS[1:]:
        membership.report_success(member)
    replicas = membership.replicas("photos/a.jpg")
    assert replicas.members == RING.placement(name_key("photos/a.jpg"), 3)
    membership.report_failure(replicas.members[0], "test")
    membership.report_failure(replicas.members[0], "test")  # down_after=2
    moved = membership.replicas("photos/a.jpg")
    assert replicas.members[0] not in moved.members
    assert moved.members == (*replicas.members[1:], next(replicas.handoffs()))
