"""Scrub and garbage collection: re-read every stored chunk, slowly, and keep only what counts.

Each pass walks this peer's chunks at ``scrub_rate`` bytes per second. A chunk whose bytes
no longer match the block digests in its sidecar (bit rot, a torn write, a flipped byte) is
deleted and reported to the repairer, which rebuilds it from the file's other chunks.

A chunk older than ``gc_grace`` is garbage when its name's manifest proves it dead: a newer
version or a tombstone replaced it, or the manifest places its index on another peer (moved,
repaired, a returning peer's stale copy). A chunk no manifest knows (its PUT died before the
commit) goes only after ``orphan_grace`` on a ring that stayed the same that long. Every
manifest replica must answer; when the answer is not certain, the chunk is kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

from node.cluster.membership import Membership
from node.config import PeerConfig
from node.datapath.replicas import ManifestReplicas
from node.disk.chunk_store import ChunkStore
from node.errors import ChunkNotFound, CorruptData, RingstoreError
from node.model.manifest import ChunkMeta, Manifest
from node.upkeep.decisions import REPLACED, Verdict, collection_verdict
from node.upkeep.repairer import Repairer
from node.waiting import Pacer, wait_event

log = logging.getLogger(__name__)

# Seconds a manifest read serves other chunks' collection where a newer version replaced
# them (final); "placed on another peer" is judged on a fresh read (a move may have just
# placed the chunk here).
MANIFEST_TTL = 5.0


@dataclass
class ScrubStats:
    passes: int = 0
    last_scrub: float = 0.0  # wall-clock end of the last full pass
    bytes_checked: int = 0
    chunks_checked: int = 0
    errors_found: int = 0
    garbage_removed: int = 0
    garbage_bytes: int = 0
    # The pass under way: chunks it set out to check, and how many it has checked (0, 0:
    # none running).
    pass_chunks: int = 0
    pass_checked: int = 0

    def to_json(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


class Scrubber:
    """Verifies this peer's chunks and removes the ones nothing references."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        chunks: ChunkStore,
        replicas: ManifestReplicas,
        repairer: Repairer,
        stats: ScrubStats | None = None,
    ) -> None:
        """``stats``: where to keep the figures (the wiring reads them for gossip)."""
        self._config = config
        self._membership = membership
        self._chunks = chunks
        self._replicas = replicas
        self._repairer = repairer
        self._pacer = Pacer(config.scrub_rate, time.monotonic)
        self._wake = asyncio.Event()
        self.stats = ScrubStats() if stats is None else stats

    def __repr__(self) -> str:
        s = self.stats
        return f"Scrubber(passes={s.passes}, checked={s.bytes_checked}, errors={s.errors_found})"

    def wake(self) -> None:
        """Start the next pass now instead of after ``scrub_interval``."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.scrub_pass()
            except Exception:  # the next pass retries; a bug must not stop scrubbing
                log.exception("scrub pass failed")
            await wait_event(self._wake, self._config.scrub_interval)
            self._wake.clear()

    async def scrub_pass(self) -> None:
        """Check every chunk once; collect garbage among them."""
        manifests: dict[str, tuple[float, Manifest | None]] = {}
        chunk_ids = await self._chunks.chunk_ids()
        self.stats.pass_chunks, self.stats.pass_checked = len(chunk_ids), 0
        try:
            for chunk_id in chunk_ids:
                try:
                    await self._check(chunk_id, manifests)
                except (ChunkNotFound, FileNotFoundError):
                    pass  # deleted while we walked
                except Exception:  # one bad chunk must not end the pass
                    log.exception("scrubbing chunk %s failed", chunk_id)
                self.stats.pass_checked += 1
        finally:
            self.stats.pass_chunks = self.stats.pass_checked = 0
        self.stats.passes += 1
        self.stats.last_scrub = time.time()

    async def _check(
        self, chunk_id: str, manifests: dict[str, tuple[float, Manifest | None]]
    ) -> None:
        try:
            meta = await self._chunks.meta(chunk_id)
        except CorruptData as exc:
            # Whose chunk it was, where the sidecar still says (proven by the chunk's id):
            # else it is found missing by the anti-entropy pass of its file's primary.
            owner = await self._chunks.salvage_owner(chunk_id)
            log.error(
                "chunk %s: unreadable sidecar (%s); removing it%s",
                chunk_id,
                exc,
                f" for repair (of {owner.name!r})" if owner else " (its file is not known)",
            )
            self.stats.errors_found += 1
            await self._chunks.delete(chunk_id)
            if owner is not None:
                self._repairer.report_chunks(owner.name, {(owner.index, self._membership.me.id)})
            return
        await self._pacer.pace(meta.size)
        intact = await self._chunks.matches(chunk_id, meta)
        self.stats.bytes_checked += meta.size
        self.stats.chunks_checked += 1
        if not intact:
            self.stats.errors_found += 1
            log.error("chunk %s of %r is corrupt; removing it for repair", chunk_id, meta.name)
            await self._chunks.delete(chunk_id)
            self._repairer.report_chunks(meta.name, {(meta.index, self._membership.me.id)})
            return
        if time.time() - meta.stored_at >= self._config.gc_grace:
            await self._collect(chunk_id, meta, manifests)

    def _verdict(self, meta: ChunkMeta, manifest: Manifest | None) -> Verdict:
        return collection_verdict(
            meta,
            manifest,
            self._membership.me.id,
            time.time(),
            time.monotonic() - self._membership.ring_changed_at,
            self._config.orphan_grace,
        )

    async def _collect(
        self, chunk_id: str, meta: ChunkMeta, manifests: dict[str, tuple[float, Manifest | None]]
    ) -> None:
        """Delete the chunk if its name's manifest proves nothing will ever read it here
        (``collection_verdict``); the manifest is read from every replica, or not at all,
        and "none" is no proof while a hand-over of the name is under way. Only a verdict
        that a newer version replaced the chunk rests on a manifest read for another chunk
        (``MANIFEST_TTL``); and only the copy judged is deleted (``stored_at``): a move that
        commits this peer as the chunk's holder pulls it here first, as a new copy."""
        cached = manifests.get(meta.name)
        verdict = None
        if cached is not None and time.monotonic() - cached[0] <= MANIFEST_TTL:
            verdict = self._verdict(meta, cached[1])
            if verdict.collect and verdict != REPLACED:
                verdict = None  # judged again on a fresh read
        if verdict is None:
            try:
                # Every replica must answer: deleting on a partial view could lose data.
                found = await self._replicas.read(meta.name, every_replica=True, decided=True)
            except RingstoreError as exc:
                log.info("not collecting %s: %s", chunk_id, exc)
                return
            manifests[meta.name] = (time.monotonic(), found)
            verdict = self._verdict(meta, found)
        if not verdict.collect or not await self._chunks.delete(chunk_id, meta.stored_at):
            return
        self.stats.garbage_removed += 1
        self.stats.garbage_bytes += meta.size
        log.info("collected %s of %r: %s", chunk_id, meta.name, verdict.reason)
