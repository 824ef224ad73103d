"""Membership: the ring always ends up built from every member it knows."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from node.cluster import membership as membership_module
from node.cluster.membership import Membership
from ring import Member, Ring


async def test_overlapping_ring_rebuilds_never_leave_a_member_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild that started before a member was learned must not finish last and win.

    Seen in the in-process suite once the loop ran at full speed: a PUT placed 6 chunks on a
    converged 7-peer cluster because its coordinator's ring had lost the seventh member.
    """
    first_build = threading.Event()
    release = threading.Event()
    builds: list[int] = []

    def slow_first_ring(members: list[Member], vnodes: int) -> Ring:
        builds.append(len(members))
        if len(builds) == 1:
            first_build.set()
            release.wait(10)
        return Ring(members, vnodes)

    membership = Membership(Member("a", "http://a"), tmp_path, vnodes=8, replicas=3)
    monkeypatch.setattr(membership_module, "Ring", slow_first_ring)
    membership.merge([Member("b", "http://b")])
    older = asyncio.ensure_future(membership.refresh_ring())
    await asyncio.to_thread(first_build.wait, 10)
    membership.merge([Member("c", "http://c")])
    newer = asyncio.ensure_future(membership.refresh_ring())
    await asyncio.sleep(0.05)  # let the newer rebuild run if nothing holds it back
    release.set()
    await asyncio.gather(older, newer)
    assert sorted(m.id for m in membership.ring.members) == ["a", "b", "c"]
    assert builds[-1] == 3
