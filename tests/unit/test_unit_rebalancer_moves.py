"""A file's chunk moves, each committed before the next is pulled: a pulled chunk is
collectable on its target until a manifest names it there (``--gc-grace`` after its pull),
and paced moves of big chunks can be further apart than that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.config import PeerConfig
from node.model.layout import Layout
from node.model.manifest import ChunkRef, Manifest
from node.model.version import Version
from node.upkeep.rebalancer import Progress, Rebalancer
from ring import Move


class Cluster:
    """The peer calls and replicas a move makes, in the order it makes them."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    async def pull_chunk(self, target: str, chunk: str, source: str, *_: Any) -> int:
        self.events.append(("pull", chunk[-1], source, target))
        return 0

    async def commit(self, manifest: Manifest, base: Manifest) -> None:
        holders = {ref.index: ref.holder for ref in manifest.chunks}
        self.events.append(("commit", base.revision, manifest.revision, holders[1], holders[4]))


async def test_each_move_is_committed_before_the_next_chunk_is_pulled() -> None:
    cluster = Cluster()
    rebalancer = Rebalancer(
        PeerConfig(Path("."), rebalance_rate=0),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        cluster,  # type: ignore[arg-type]
        cluster,  # type: ignore[arg-type]
        Progress(),
        lambda name, chunks: None,
    )
    manifest = Manifest(
        "b/big",
        Version(1_700_000_000_000, 0, "p"),
        Layout(10 << 20, 5, 2, 1 << 20),
        "e",
        chunks=tuple(ChunkRef(i, f"p{i}", bytes(16 * 2)) for i in range(7)),
    )
    await rebalancer._move(manifest, [Move(1, "p1", "new-a"), Move(4, "p4", "new-b")])
    assert cluster.events == [
        ("pull", "1", "p1", "new-a"),
        ("commit", 0, 1, "new-a", "p4"),
        ("pull", "4", "p4", "new-b"),
        ("commit", 1, 2, "new-a", "new-b"),
    ]
    assert (rebalancer.progress.moves, rebalancer.progress.failed_moves) == (2, 0)
