"""The scrubber's collection on a manifest read for another chunk: only a verdict that a
newer version replaced the chunk rests on it; "placed on another peer" is judged again on a
fresh read, since a move may have just placed the chunk here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from node.config import PeerConfig
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, ChunkRef, Manifest
from node.model.version import Version
from node.upkeep.scrubber import Scrubber

OLD, CURRENT = Version(1, 0, "a"), Version(2, 0, "a")
ME = "me"


def placed(holder_of_6: str) -> Manifest:
    holders = {i: f"p{i}" for i in range(6)} | {6: holder_of_6}
    chunks = tuple(ChunkRef(i, h, bytes(16)) for i, h in sorted(holders.items()))
    return Manifest("f", CURRENT, Layout(5000, 5, 2, 1000), chunks=chunks)


class Chunks:
    """A chunk store holding chunk 6 of an old version and of the current one."""

    def __init__(self) -> None:
        self.metas = {
            "a-old-6": ChunkMeta("f", str(OLD), 6, 1000, 1000, bytes(16), 1.0),
            "b-current-6": ChunkMeta("f", str(CURRENT), 6, 1000, 1000, bytes(16), 1.0),
        }
        self.deleted: list[str] = []

    async def chunk_ids(self) -> list[str]:
        return sorted(self.metas)

    async def meta(self, chunk_id: str) -> ChunkMeta:
        return self.metas[chunk_id]

    async def matches(self, chunk_id: str, meta: ChunkMeta) -> bool:
        return True

    async def delete(self, chunk_id: str, stored_at: float | None = None) -> bool:
        self.deleted.append(chunk_id)
        return True


class Replicas:
    """The name's newest manifest: chunk 6 elsewhere at the first read, here (moved back,
    committed) from the second on."""

    def __init__(self) -> None:
        self.reads = 0

    async def read(self, name: str, every_replica: bool, decided: bool) -> Manifest:
        self.reads += 1
        return placed("elsewhere" if self.reads == 1 else ME)


async def test_a_chunk_moved_back_here_is_kept_though_a_recent_read_placed_it_elsewhere() -> None:
    chunks, replicas = Chunks(), Replicas()
    membership = SimpleNamespace(me=SimpleNamespace(id=ME), ring_changed_at=0.0)
    config = PeerConfig(Path("."), gc_grace=0, scrub_rate=0)
    scrubber = Scrubber(config, membership, chunks, replicas, None)  # type: ignore[arg-type]
    await scrubber.scrub_pass()
    assert chunks.deleted == ["a-old-6"]  # replaced by a newer version: final
    assert replicas.reads == 2  # the current chunk judged on a read of its own
