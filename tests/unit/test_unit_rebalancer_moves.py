"""A file's chunk moves, each committed before the next is pulled: a pulled chunk is
collectable on its target until a manifest names it there (``--gc-grace`` after its pull),
and paced moves of big chunks can be further apart than that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.config import PeerConfig
from node.errors import Unavailable
from node.model.layout import Layout
from node.model.manifest import ChunkRef, Manifest
from node.model.version import Version
from node.upkeep.rebalancer import Progress, Rebalancer
from ring import Move


class Cluster:
    """The peer calls and replicas a move makes, in the order it makes them; commits after
    the first ``commits`` fail (another revision was committed meanwhile)."""

    def __init__(self, commits: int = 10) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.commits = commits

    async def pull_chunk(self, target: str, chunk: str, source: str, *_: Any) -> int:
        self.events.append(("pull", chunk[-1], source, target))
        return 0

    async def commit(self, manifest: Manifest, base: Manifest) -> None:
        if self.commits == 0:
            raise Unavailable("the manifest changed meanwhile")
        self.commits -= 1
        holders = {ref.index: ref.holder for ref in manifest.chunks}
        self.events.append(("commit", base.revision, manifest.revision, holders[1], holders[4]))


MANIFEST = Manifest(
    "b/big",
    Version(1_700_000_000_000, 0, "p"),
    Layout(10 << 20, 5, 2, 1 << 20),
    "e",
    chunks=tuple(ChunkRef(i, f"p{i}", bytes(16 * 2)) for i in range(7)),
)
MOVES = [Move(1, "p1", "new-a"), Move(4, "p4", "new-b")]


def rebalancer(cluster: Cluster) -> Rebalancer:
    return Rebalancer(
        PeerConfig(Path("."), rebalance_rate=0),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        cluster,  # type: ignore[arg-type]
        cluster,  # type: ignore[arg-type]
        Progress(),
        lambda name, chunks: None,
    )


async def test_each_move_is_committed_before_the_next_chunk_is_pulled() -> None:
    cluster = Cluster()
    moving = rebalancer(cluster)
    await moving._move(MANIFEST, MOVES)
    assert cluster.events == [
        ("pull", "1", "p1", "new-a"),
        ("commit", 0, 1, "new-a", "p4"),
        ("pull", "4", "p4", "new-b"),
        ("commit", 1, 2, "new-a", "new-b"),
    ]
    assert (moving.progress.moves, moving.progress.failed_moves) == (2, 0)
    assert moving.progress.remaining_bytes == 0


async def test_a_commit_that_fails_leaves_nothing_counted_as_remaining() -> None:
    """(Counted as remaining, it kept every peer's rebalancing from ever reading as done.)"""
    cluster = Cluster(commits=1)
    moving = rebalancer(cluster)
    with pytest.raises(Unavailable):
        await moving._move(MANIFEST, MOVES)
    assert [event[0] for event in cluster.events] == ["pull", "commit", "pull"]
    assert moving.progress.remaining_bytes == 0
