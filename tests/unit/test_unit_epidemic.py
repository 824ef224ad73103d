"""Gossip at scale: fan-out, heartbeats heard through others, silence, member-list digests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import pytest

from node.cluster.epidemic import fanout, member_digest, newer_beats, pick, silence_limit
from node.cluster.gossip import Gossip
from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.cluster.protocol import GossipMessage, MemberRecord, PeerFigures
from node.cluster.transport import Transport
from node.model.version import MAX_SKEW_MS, HybridClock
from ring import Member

ME = Member("me", "http://127.0.0.1:8000")
OTHERS = [Member(f"m{i}", f"http://127.0.0.1:{8001 + i}") for i in range(5)]


def test_small_clusters_ask_everyone_and_large_ones_log_n_more_than_three() -> None:
    assert [fanout(n) for n in (1, 2, 7, 8)] == [0, 1, 6, 6]
    assert (fanout(100), fanout(1000)) == (10, 13)


def test_pick_takes_all_when_there_are_no_more_and_a_sample_otherwise() -> None:
    rng = random.Random(1)
    assert pick(["a", "b"], 3, rng) == ["a", "b"]
    chosen = pick([str(i) for i in range(100)], 10, rng)
    assert len(set(chosen)) == 10


def test_silence_grows_with_log_n_and_has_a_floor_of_one_round() -> None:
    assert silence_limit(2, 1.0, 2) == 2.0
    assert silence_limit(1024, 1.0, 2, slack=2.0) == 22.0


def test_digests_name_member_lists() -> None:
    assert member_digest([b"a", b"b"]) == member_digest([b"a", b"b"])
    assert member_digest([b"a", b"b"]) != member_digest([b"ab"])


def test_newer_beats_are_aligned_or_refused() -> None:
    assert newer_beats({"a": 5}, ["a", "b"], [4, 7]) == {"b": 7}
    with pytest.raises(ValueError, match="2 beats for 3 members"):
        newer_beats({}, ["a", "b", "c"], [1, 2])


def membership(tmp_path: Path) -> Membership:
    found = Membership(ME, tmp_path, vnodes=8, replicas=3, down_after=2)
    found.merge(OTHERS)
    return found


def test_a_beat_heard_through_gossip_brings_a_member_up_and_silence_takes_it_down(
    tmp_path: Path,
) -> None:
    view = membership(tmp_path)
    assert "m0" not in view.up_ids()  # new members start down
    view.hear_beats({"m0": 10}, silence=5.0)
    assert "m0" in view.up_ids()
    view.hear_beats({"m0": 9}, silence=5.0)  # older: ignored
    assert view.liveness("m0").beat == 10
    view.check_silence(silence=60.0)
    assert "m0" in view.up_ids()
    view.check_silence(silence=-1.0)  # nothing heard "for longer than" that
    assert "m0" not in view.up_ids()


def test_a_member_this_peer_cannot_reach_is_not_brought_up_by_others_news(
    tmp_path: Path,
) -> None:
    view = membership(tmp_path)
    view.report_success("m1")
    view.report_failure("m1", "refused")
    view.report_failure("m1", "refused")
    assert "m1" not in view.up_ids()
    view.hear_beats({"m1": 50}, silence=60.0)  # it lives, but not for this peer
    assert "m1" not in view.up_ids()
    view.hear_beats({"m1": 51}, silence=-1.0)  # the failure is older than the silence
    assert "m1" in view.up_ids()


def test_a_peers_own_beat_always_moves_even_when_its_clock_steps_back(tmp_path: Path) -> None:
    view = membership(tmp_path)
    view.beat(1_000)
    view.beat(500)  # NTP stepped the clock back
    assert view.liveness("me").beat == 1_001


def test_the_member_digest_changes_when_a_member_is_learned(tmp_path: Path) -> None:
    view = membership(tmp_path)
    before = view.digest
    assert len(view.beats()) == len(view.members()) == 6
    view.merge([Member("m9", "http://127.0.0.1:9000")])
    assert view.digest != before


OTHER = MemberRecord("other", "http://127.0.0.1:8001", 1)


def gossip_of(tmp_path: Path) -> tuple[Gossip, Membership, HybridClock]:
    view = Membership(ME, tmp_path, vnodes=8, replicas=3, down_after=2)
    clock = HybridClock(ME.id)
    peers = Peers(view, cast(Transport, None))  # receive() calls no peer
    return Gossip(view, peers, clock, [], PeerFigures), view, clock


def message(clock: HybridClock, **fields: Any) -> GossipMessage:
    return GossipMessage(sender=OTHER, clock=clock.now(), wall_ms=clock.wall_ms(), **fields)


def test_a_misaligned_beats_list_is_refused_before_anything_changes(tmp_path: Path) -> None:
    gossip, view, clock = gossip_of(tmp_path)
    with pytest.raises(ValueError, match="beats for"):
        gossip.receive(message(clock, digest=view.digest, beats=[1, 2, 3]))
    assert [m.id for m in view.members()] == ["me"]  # the sender was not learned


def test_a_beat_past_the_skew_limit_is_not_taken(tmp_path: Path) -> None:
    gossip, view, clock = gossip_of(tmp_path)
    future = clock.wall_ms() + MAX_SKEW_MS + 60_000
    gossip.receive(message(clock, beat=future))
    assert view.liveness("other").beat == 0  # else no real beat of it would count again
    now = clock.wall_ms()
    gossip.receive(message(clock, beat=now))
    assert view.liveness("other").beat == now
