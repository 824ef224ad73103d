"""Anti-entropy: confirm that every chunk a manifest places is on its holder.

Scrub checks the chunks a peer *has*; a chunk that is simply gone (a file deleted by hand, a
sidecar scrub could not read, a disk replaced under a running peer) is noticed only by a read
that needs it, and reads touch parity chunks only when a data chunk fails. So every
``anti_entropy_interval`` each peer takes the names it is primary for (the first up member of
their replica set: one peer per name), reads their manifests from its own disk, and asks
every up holder, in batches of at most ``MAX_INVENTORY`` chunk ids packed 17 bytes each
(``POST /internal/inventory``), which of the chunks placed on it it does not hold. Those are
reported to the repairer, which rebuilds them where they belong (on the same holder: only
the copy was lost). A holder down is left to repair's own rules (``--repair-after``): each
manifest the walk reads is offered to the repairer (``Repairer.consider``), which queues
those placing a chunk on a holder down that long.

The walk offers every manifest it reads to the packer (``node.upkeep.packer``), which packs
cold small files. It also purges tombstones older than ``tombstone_grace`` once all N home
replicas hold exactly that tombstone (``ManifestReplicas.purge_tombstone``); tombstones of
cluster records (revoked keys, removed namespaces) are kept, so a stale replica can never
revive a key.

Cost of a pass, per million chunks placed (measured: ``bench/anti_entropy.py``): one manifest
file read per name on its primary, 17 bytes of request per chunk (17 MB, in requests of up
to 1.1 MB, one per holder per 65536 chunks), one pair of ``stat`` calls per chunk on its
holder. A chunk found missing is checked against the current manifest (a quorum read) before
it is reported, so a version overwritten, moved or deleted since the local manifest was read
costs one manifest read, never a needless rebuild.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.cluster.protocol import MAX_INVENTORY, PACKED_ID
from node.config import PeerConfig
from node.datapath.replicas import ManifestReplicas
from node.datapath.uploads import Uploads
from node.disk.manifest_store import ManifestStore
from node.errors import RingstoreError
from node.model.manifest import Manifest
from node.model.multipart import is_multipart_name, is_upload_record
from node.model.names import RESERVED
from node.model.packs import is_pack_name
from node.upkeep.packer import Packer
from node.upkeep.repairer import Repairer
from node.waiting import wait_event

log = logging.getLogger(__name__)

Placed = dict[str, tuple[str, int]]  # chunk id -> (name, index), on one holder


@dataclass
class AntiEntropyStats:
    passes: int = 0
    last_pass: float = 0.0  # wall-clock end of the last full pass
    last_pass_seconds: float = 0.0
    names_checked: int = 0
    chunks_checked: int = 0
    missing_found: int = 0
    requests: int = 0
    request_bytes: int = 0
    holders_skipped: int = 0  # checks not made: holder down or failing (next pass retries)
    tombstones_purged: int = 0

    def to_json(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


class AntiEntropy:
    """Finds chunks that manifests place on holders that do not have them, for repair."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        manifests: ManifestStore,
        replicas: ManifestReplicas,
        peers: Peers,
        repairer: Repairer,
        uploads: Uploads | None = None,
        packer: Packer | None = None,
    ) -> None:
        """``uploads``: whose unfinished multipart uploads to collect (none: not done);
        ``packer``: what each manifest read is offered to (none: nothing is packed)."""
        self._config = config
        self._membership = membership
        self._manifests = manifests
        self._replicas = replicas
        self._peers = peers
        self._repairer = repairer
        self._uploads = uploads
        self._packer = packer
        self._wake = asyncio.Event()
        self.batch = MAX_INVENTORY  # chunk ids per check (benchmarks compare smaller ones)
        self.stats = AntiEntropyStats()

    def __repr__(self) -> str:
        return f"AntiEntropy(passes={self.stats.passes}, missing={self.stats.missing_found})"

    def wake(self) -> None:
        """Start the next pass now instead of after ``anti_entropy_interval``."""
        self._wake.set()

    async def run(self) -> None:
        """A pass every ``anti_entropy_interval`` seconds, or when woken."""
        while True:
            await wait_event(self._wake, self._config.anti_entropy_interval)
            self._wake.clear()
            try:
                await self.check_pass()
            except Exception:  # the next pass retries; a bug must not stop the loop
                log.exception("anti-entropy pass failed")

    async def check_pass(self) -> None:
        """Check every chunk placed by the manifests this peer is primary for."""
        started, stats = time.monotonic(), self.stats
        membership, me = self._membership, self._membership.me.id
        placed: dict[str, Placed] = {}  # holder -> its chunks to check
        pending = 0
        if self._packer is not None:
            self._packer.walk_started()
        for name in self._manifests.names():
            if membership.replicas(name).primary != me:
                continue
            manifest = await self._manifests.get(name)
            if manifest is not None and manifest.deleted and _purgeable(name):
                await self._purge(manifest)  # never a key's or namespace's: no revival
            if manifest is not None and self._uploads is not None and is_upload_record(name):
                await _collect_upload(self._uploads, manifest)
            if manifest is not None and self._packer is not None:
                await self._packer.offer(manifest)
            if manifest is None or manifest.deleted or manifest.stored_inline:
                continue
            stats.names_checked += 1
            self._repairer.consider(manifest)
            for ref in manifest.chunks:
                placed.setdefault(ref.holder, {})[manifest.chunk_id(ref.index)] = (name, ref.index)
                pending += 1
            if pending >= self.batch:  # memory stays bounded: check what is gathered
                await self._check_all(placed)
                placed, pending = {}, 0
        await self._check_all(placed)
        if self._packer is not None:
            await self._packer.walk_ended()
        stats.passes += 1
        stats.last_pass = time.time()
        stats.last_pass_seconds = time.monotonic() - started

    async def _purge(self, tombstone: Manifest) -> None:
        """Purge a tombstone older than ``tombstone_grace`` that every home replica holds."""
        age = time.time() - tombstone.version.wall_ms / 1000
        if age < self._config.tombstone_grace:
            return
        try:
            purged = await self._replicas.purge_tombstone(tombstone)
        except RingstoreError as exc:
            log.info("tombstone of %r not purged now: %s", tombstone.name, exc)
            return
        if purged:
            self.stats.tombstones_purged += 1
            log.info("purged the tombstone of %r (deleted %.0f s ago)", tombstone.name, age)

    async def _check_all(self, placed: dict[str, Placed]) -> None:
        up = self._membership.up_ids()
        for holder, chunks in sorted(placed.items()):
            if holder not in up:
                self.stats.holders_skipped += 1
                continue
            await self._check(holder, chunks)

    async def _check(self, holder: str, chunks: Placed) -> None:
        """Ask ``holder`` about ``chunks``; report the missing ones for repair."""
        ids = sorted(chunks)
        for start in range(0, len(ids), self.batch):
            batch = ids[start : start + self.batch]
            try:
                missing = await self._peers.missing_chunks(holder, batch)
            except RingstoreError as exc:
                self.stats.holders_skipped += 1
                log.info("anti-entropy check of %s skipped: %s", holder, exc)
                return
            self.stats.requests += 1
            self.stats.request_bytes += PACKED_ID * len(batch)
            self.stats.chunks_checked += len(batch)
            for chunk_id in missing:
                if chunk_id not in chunks:
                    continue  # not asked: a confused or hostile answer
                name, index = chunks[chunk_id]
                if not await self._still_placed(name, index, chunk_id, holder):
                    continue  # overwritten, moved or deleted since the manifest was read
                self.stats.missing_found += 1
                log.warning(
                    "chunk %d of %r is missing from %s; reported for repair", index, name, holder
                )
                self._repairer.report_chunks(name, {(index, holder)})

    async def _still_placed(self, name: str, index: int, chunk_id: str, holder: str) -> bool:
        """Whether the current manifest (a quorum read) still places ``chunk_id`` on
        ``holder``: a report must not make repair rebuild the same index of a newer version
        that happens to sit on that holder."""
        try:
            current = await self._replicas.read(name, decided=True)
        except RingstoreError as exc:
            log.info("anti-entropy: %r not rechecked now: %s", name, exc)
            return False
        return (
            current is not None
            and not current.deleted
            and current.chunk_id(index) == chunk_id
            and current.holders().get(index) == holder
        )


def _purgeable(name: str) -> bool:
    """Whether a tombstone of ``name`` may be purged: a file's, or a multipart upload's
    record or part (one coming back from a stale replica is an unreachable record or part,
    collected as garbage), or a pack's; never a key's or a namespace's, which would revive
    it."""
    return not name.startswith(RESERVED) or is_multipart_name(name) or is_pack_name(name)


async def _collect_upload(uploads: Uploads, record: Manifest) -> None:
    """Abort an upload left unfinished past ``multipart_grace`` (``Uploads``)."""
    try:
        await uploads.collect_stale(record)
    except RingstoreError as exc:
        log.info("stale upload %r not collected now: %s", record.name, exc)
