"""The peer-call interface's liveness rules for the heartbeat: what counts for a member, and
what against it (exactly once)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.cluster.protocol import GossipMessage, MemberRecord
from node.cluster.transport import Address
from node.errors import CorruptData, NotFound, PeerUnavailable
from ring import Member

ME, THEM = Member("me", "http://me"), Member("them", "http://them")
ANSWER = GossipMessage(sender=MemberRecord.of(THEM), members=[MemberRecord.of(THEM)])


class ScriptedGossip:
    """A transport whose gossip answers follow a script: a message, an error, or a hang."""

    def __init__(self, *script: GossipMessage | Exception | None) -> None:
        self.script = list(script)

    async def exchange(self, to: Address, gossip: GossipMessage) -> GossipMessage:
        step = self.script.pop(0)
        if step is None:
            await asyncio.sleep(3600)
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, GossipMessage)
        return step

    async def get_manifest(self, to: Address, name: str) -> None:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step

    @asynccontextmanager
    async def open_chunk(
        self, to: Address, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[None]:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        yield None


def setup(tmp_path: Path, *script: GossipMessage | Exception | None) -> tuple[Membership, Peers]:
    membership = Membership(ME, tmp_path, vnodes=8, replicas=3)
    membership.merge([THEM])
    membership.report_success(THEM.id)
    transport: Any = ScriptedGossip(*script)
    return membership, Peers(membership, transport)


def refuse(message: GossipMessage) -> None:
    raise ValueError("a member record that cannot be a member")


@pytest.mark.parametrize(
    "failure",
    [
        PeerUnavailable("http://them", "connection refused"),
        NotFound("an old release at that address answers 404"),
        CorruptData("an answer that is not gossip"),
        None,  # no answer at all: the exchange times out
    ],
    ids=["unreachable", "error-answer", "garbage", "silent"],
)
async def test_every_failed_heartbeat_counts_once_against_the_member(
    tmp_path: Path, failure: Exception | None
) -> None:
    membership, peers = setup(tmp_path, failure, failure)
    for expected in (1, 2):
        with pytest.raises(PeerUnavailable):
            await peers.exchange(THEM.url, THEM.id, ANSWER, 0.05, lambda reply: None)
        assert membership.liveness(THEM.id).failures == expected
    assert THEM.id in membership.down_ids()


async def test_an_answer_the_merge_refuses_is_a_failure_not_a_success(tmp_path: Path) -> None:
    membership, peers = setup(tmp_path, ANSWER, ANSWER)
    for _ in range(2):
        with pytest.raises(PeerUnavailable):
            await peers.exchange(THEM.url, THEM.id, ANSWER, 1.0, refuse)
    assert THEM.id in membership.down_ids()


async def test_a_merged_answer_counts_for_the_member(tmp_path: Path) -> None:
    membership, peers = setup(tmp_path, PeerUnavailable("x", "y"), ANSWER)
    merged: list[GossipMessage] = []
    with pytest.raises(PeerUnavailable):
        await peers.exchange(THEM.url, THEM.id, ANSWER, 1.0, merged.append)
    await peers.exchange(THEM.url, THEM.id, ANSWER, 1.0, merged.append)
    assert merged == [ANSWER]
    assert membership.liveness(THEM.id).failures == 0


async def test_a_seed_of_unknown_id_counts_for_nobody(tmp_path: Path) -> None:
    membership, peers = setup(tmp_path, PeerUnavailable("x", "y"))
    with pytest.raises(PeerUnavailable):
        await peers.exchange("http://seed", None, ANSWER, 1.0, lambda reply: None)
    assert membership.liveness(THEM.id).failures == 0


async def test_one_failed_request_counts_once_however_many_calls_it_carried(
    tmp_path: Path,
) -> None:
    """A batch of manifest calls that fails fails each call (``node.cluster.batching``): the
    first one's failure counts against the member, the others' (``counted=False``) do not,
    so one dropped connection cannot mark a member down (``down_after`` is 2)."""
    failed = PeerUnavailable("http://them", "connection reset")
    echoes = [PeerUnavailable("http://them", "reset (a request of several calls)", False)] * 3
    membership, peers = setup(tmp_path, failed, *echoes)
    for _ in range(4):
        with pytest.raises(PeerUnavailable):
            await peers.get_manifest(THEM.id, "a/name")
    assert membership.liveness(THEM.id).failures == 1
    assert THEM.id not in membership.down_ids()


async def test_reads_failed_by_one_closed_channel_count_once(tmp_path: Path) -> None:
    """Chunk reads in flight on a channel that closes all fail at once; only the first
    failure (``counted``) counts against the member, as with a batch."""
    failed = PeerUnavailable("http://them", "no answer within 10s")
    echoes = [PeerUnavailable("http://them", "channel closed: no answer within 10s", False)] * 3
    membership, peers = setup(tmp_path, failed, *echoes)
    for _ in range(4):
        with pytest.raises(PeerUnavailable):
            async with peers.open_chunk(THEM.id, "c-0", 0, 100):
                pass
    assert membership.liveness(THEM.id).failures == 1
    assert THEM.id not in membership.down_ids()
