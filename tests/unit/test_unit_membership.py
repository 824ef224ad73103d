"""Membership: the ring always ends up built from every member it knows."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from node.cluster import membership as membership_module
from node.cluster.membership import Membership
from node.cluster.protocol import PeerFigures
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


async def test_home_replicas_since_a_join_include_the_homes_before_it(tmp_path: Path) -> None:
    """A conditional write offered before a join sits on the homes of the ring of then:
    deciding it later must ask those too (``ManifestReplicas.decide``)."""
    membership = Membership(Member("a", "http://a"), tmp_path, vnodes=8, replicas=3)
    membership.merge([Member(m, f"http://{m}") for m in "bcd"])
    await membership.refresh_ring()
    names = [f"name-{i}" for i in range(200)]
    before = {name: membership.home_replicas(name).members for name in names}
    assert all(membership.home_replicas_since(name)[:3] == list(before[name]) for name in names)
    membership.merge([Member(m, f"http://{m}") for m in "efg"])
    await membership.refresh_ring()
    moved = 0
    for name in names:
        since = membership.home_replicas_since(name)
        now = membership.home_replicas(name).members
        assert since[:3] == list(now), "current homes first"
        assert set(before[name]) <= set(since)
        moved += set(before[name]) != set(now)
    assert moved > 0, "the join moved some names' homes"


@pytest.mark.parametrize("feature", ["reads_packs", "reads_cauchy"])
def test_a_format_waits_until_every_member_says_it_reads_it(tmp_path: Path, feature: str) -> None:
    """A release before packs refuses a packed file's manifest, one before ISA-L (or a peer
    without it) a Cauchy-coded one: neither is written while any member (up or down) has
    not said in gossip that it reads them."""
    membership = Membership(Member("a", "http://a"), tmp_path, vnodes=8, replicas=3)
    all_read = membership.all_read_packs if feature == "reads_packs" else membership.all_read_cauchy
    assert all_read()  # this peer alone: it answers for itself
    membership.merge([Member(m, f"http://{m}") for m in "bc"])
    assert not all_read()  # never heard from
    membership.hear("b", PeerFigures(**{feature: True}))
    assert not all_read()
    membership.hear("c", PeerFigures(**{feature: True}))
    assert all_read()
    membership.hear("c", PeerFigures())  # gone back to a release before
    assert not all_read()


def test_a_member_heard_at_two_addresses_in_turn_is_said_to_be_two_processes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A copied data directory run beside its original: both gossip as one member, and
    chunks each takes are missing from the other. An attack ran one: nothing said so, the
    member's address flipped at every round (213 INFO lines in 17 s)."""
    membership = Membership(Member("a", "http://a:1"), tmp_path, vnodes=8, replicas=3)
    membership.learn(Member("b", "http://b:1"))
    membership.learn(Member("b", "http://b:2"))  # moved once (restarted elsewhere): fine
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    for _ in range(20):  # and back, again and again
        membership.learn(Member("b", "http://b:1"))
        membership.learn(Member("b", "http://b:2"))
    errors = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(errors) == 1, errors  # at most once a minute
    assert "member b is served at http://b:2 and at http://b:1" in errors[0]
    membership.learn(Member("a", "http://a:9"))  # this peer's own id, elsewhere
    errors = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert errors[-1].startswith("this peer is served at http://a:1 and at http://a:9")


def test_gossip_from_a_member_this_peer_cannot_reach_does_not_count_it_up(
    tmp_path: Path,
) -> None:
    """A TLS peer whose certificate names another address reaches the others, which cannot
    reach it: its gossip counted it up, this peer's next call down, about once a second for
    good (an attack: 49 up/down changes in 25 s, rebalancing started over each time)."""
    membership = Membership(Member("a", "http://a"), tmp_path, vnodes=8, replicas=3)
    membership.merge([Member("b", "http://b")])
    membership.report_success("b")
    for _ in range(2):
        membership.report_failure("b", "certificate verify failed")
    assert "b" not in membership.up_ids()
    membership.report_heard("b", silence=60.0)  # it gossips to this peer
    assert "b" not in membership.up_ids()
    membership.report_heard("b", silence=0.0)  # no failed call within the silence: up
    assert "b" in membership.up_ids()
