"""Gossip with a fan-out smaller than the cluster: 12 in-process peers each ask 7 members a
round, yet every peer sees every other up, and a stopped peer down, through beats heard from
the others (issue 12)."""

from __future__ import annotations

from pathlib import Path

from node.cluster.epidemic import fanout
from tests.harness import LocalCluster, eventually


async def test_twelve_peers_converge_and_see_a_stopped_one_down_through_others(
    tmp_path: Path, loop_guard: None
) -> None:
    assert fanout(12) < 11  # not everyone is asked each round
    cluster = LocalCluster(tmp_path, block_size=4096)
    try:
        await cluster.start(12)  # waits until every peer sees every other up
        victim = cluster[5]
        await victim.stop()
        others = [p for p in cluster.peers if p is not victim]

        def all_see_it_down() -> bool:
            return all(victim.id not in p.membership.up_ids() for p in others)

        await eventually(all_see_it_down, timeout=20, what="every peer to see the stopped one down")
        await victim.start()
        await cluster.wait_converged(timeout=20)
    finally:
        await cluster.stop()
