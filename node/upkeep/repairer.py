"""Repair: bring every file back to its full k+m chunks after losses.

A chunk needs rebuilding when a read or the scrubber found it missing or corrupt, when its
holder has been down longer than ``repair_after`` (a crash that lasts, a lost disk: a peer
whose data directory was wiped comes back as a new member and the old one stays down), or
when the file was written degraded and a chunk was never stored. The repairer rebuilds such
chunks from any k others (``Rebuilder.rebuild``), onto the same holder when it is up and
only the copy was bad, otherwise onto a handoff: the next up member clockwise that holds no
chunk of the file. The manifest is committed at the next revision; a returning holder's
stale copy is then unreferenced and garbage-collected, never counted twice.

Reports arrive from reads (read repair), the scrubber and anti-entropy; every
``repair_interval`` the repairer also sweeps the manifests it is primary for that were
written degraded. While a member is down past ``repair_after`` it looks for chunks on it:
every name it is primary for whose replica here places a chunk on such a member is read
from a quorum and repaired (``_places_on``). That look is taken once per spell down of such
a member and again when the ring changes (a member joins) (``look_owed``): a member that
never comes back (members are never removed) costs one look, not one every
``repair_interval`` for as long as the cluster runs, and a member that misses heartbeats
and is back (a flap) costs none. Where a repair since the look found no room for a lost
chunk (no member up that holds none of the file), the look is taken again when a member
comes up that was down at one or more such repairs: it may be the room. A manifest that
places a chunk on a long-down holder and arrives after the look (a write that placed it
before the holder went down, committed after; a replica handed over to a newcomer that is
now its primary; a write this peer's replica missed) is queued when this peer stores it,
and anti-entropy's walk offers every manifest again (``consider``).

Names whose repair failed (a holder that stalled, too few chunks readable for a moment) are
tried again after ``RETRY_FIRST`` seconds, doubling while they keep failing, up to
``repair_interval``: a transient failure costs seconds, not a whole interval, and a lasting
one costs no more than the sweeps did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

from node.cluster.membership import Membership
from node.config import PeerConfig
from node.datapath.rebuild import Rebuilder
from node.datapath.replicas import ManifestReplicas
from node.disk.manifest_store import ManifestStore
from node.errors import RingstoreError
from node.model.manifest import Manifest
from node.upkeep.decisions import Look, look_owed, repair_targets
from node.waiting import Pacer, wait_event

log = logging.getLogger(__name__)

RETRY_FIRST = 2.0  # seconds before failed repairs are tried again, doubling while they fail


@dataclass
class RepairStats:
    chunks_repaired: int = 0
    bytes_repaired: int = 0
    failures: int = 0
    last_repair: float = 0.0  # wall-clock time
    queued: int = 0
    sweeps: int = 0  # finished sweeps, woken by reports or every repair_interval
    names_checked: int = 0  # names the sweeps read (a quorum read each)

    def to_json(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


class Repairer:
    """Rebuilds lost and corrupt chunks and commits where they now live."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        manifests: ManifestStore,
        replicas: ManifestReplicas,
        rebuilder: Rebuilder,
        stats: RepairStats | None = None,
    ) -> None:
        """``stats``: where to keep the figures (the wiring reads them for gossip)."""
        self._config = config
        self._membership = membership
        self._manifests = manifests
        self._replicas = replicas
        self._rebuilder = rebuilder
        self._reports: dict[str, set[tuple[int, str]]] = {}  # name -> {(index, holder)}
        self._wake = asyncio.Event()
        self._pacer = Pacer(config.repair_rate)  # rebuilt bytes, like the rebalancer's moves
        self._retry_in = RETRY_FIRST  # seconds from a sweep with failures to their retry
        self._retry_at: float | None = None  # monotonic time of that retry
        self._looked: Look | None = None  # what the last whole look was under
        # The members up at every repair since that look began that had nowhere to put a
        # lost chunk (None: none lacked room): one up outside them may be the room lacked.
        self._room_wanted: frozenset[str] | None = None
        self.stats = RepairStats() if stats is None else stats

    def __repr__(self) -> str:
        wanting = "" if self._room_wanted is None else ", wanting room"
        return (
            f"Repairer(queued={len(self._reports)}, repaired={self.stats.chunks_repaired}{wanting})"
        )

    def report(self, manifest: Manifest, indexes: set[int]) -> None:
        """Queue chunks of ``manifest`` that were found missing or corrupt."""
        holders = manifest.holders()
        found = {(i, holders[i]) for i in indexes if i in holders}
        self.report_chunks(manifest.name, found)

    def consider(self, manifest: Manifest) -> None:
        """Queue ``manifest``'s name where it places a chunk on a holder down past
        ``repair_after``, this peer is its primary and the ring may have room to rebuild it
        elsewhere (more members not down that long than the file has chunks); for each
        manifest replica this peer keeps and each one anti-entropy reads. The name is
        queued with no chunk reported missing: the repair judges the holder as it stands
        then, so one back by then is not rebuilt over in place."""
        if manifest.deleted or not manifest.chunked:
            return
        membership = self._membership
        long_down = membership.long_down_ids(self._config.repair_after)
        if (
            any(ref.holder in long_down for ref in manifest.chunks)
            and len(membership.ring.members) - len(long_down) >= manifest.layout.n
            and membership.replicas(manifest.name).primary == membership.me.id
        ):
            self.report_chunks(manifest.name, set())

    def report_chunks(self, name: str, chunks: set[tuple[int, str]]) -> None:
        """Queue ``(index, holder)`` chunks of ``name`` found missing or corrupt."""
        self._reports.setdefault(name, set()).update(chunks)
        self.stats.queued = len(self._reports)
        self._wake.set()

    async def run(self) -> None:
        """Sweep when reports arrive, when a member comes up or joins while files are
        degraded (it may be where their missing chunks belong), and every
        ``repair_interval``."""
        config, membership = self._config, self._membership
        seen, last = membership.up_ids(), time.monotonic()
        while True:
            await wait_event(self._wake, min(config.heartbeat_interval, config.repair_interval))
            reported = self._wake.is_set()
            self._wake.clear()
            up = membership.up_ids()
            wanted = self._room_wanted is not None or bool(self._manifests.degraded())
            arrived, seen = bool(up - seen) and wanted, up
            now = time.monotonic()
            full = reported or arrived or now - last >= config.repair_interval
            if not (full or (self._retry_at is not None and now >= self._retry_at)):
                continue
            if full:
                last = now
            try:
                await self.sweep(scan=full)  # else a retry: the failed names only
            except Exception:  # the next sweep retries; a bug must not stop repairs
                log.exception("repair sweep failed")

    async def sweep(self, scan: bool = True) -> None:
        """Repair everything reported, then (``scan``) the primary names with long-down
        holders or missing chunks. Schedules a retry of the names that failed."""
        reports, self._reports = self._reports, {}
        names, looking, swept = set(reports), set[str](), None
        membership = self._membership
        if scan:
            await membership.refresh_ring()  # (a member learned: the state takes its ring)
            found, looking, swept = self._primary_names_needing_repair()
            names.update(found)
            looking -= names
        lost = membership.long_down_ids(self._config.repair_after)
        failed: dict[str, str] = {}  # name -> why, of the names that failed (RingstoreError)
        for name in sorted(names | looking):
            if name in looking and not await self._places_on(name, lost):
                continue  # (its replica here places no chunk on a member lost)
            self.stats.names_checked += 1
            try:
                await self.repair(name, reports.get(name, set()))
            except Exception as exc:  # anything: keep the reports for the next sweep
                self.stats.failures += 1
                if isinstance(exc, RingstoreError):
                    failed[name] = str(exc)
                    log.debug("repairing %r failed: %s; will retry", name, exc)
                else:
                    failed[name] = repr(exc)
                    log.exception("repairing %r failed; will retry", name)
                self._reports.setdefault(name, set()).update(reports.get(name, set()))
        if failed:
            # One line a sweep: one per name flooded the log of a peer cut off from the
            # others (1,680 lines in 44 s for 136 names in an attack; thousands a second
            # at a million names).
            first = min(failed)
            log.warning(
                "repairing %d name(s) failed, to be retried: %r (%s)%s",
                len(failed),
                first,
                failed[first],
                f" and {len(failed) - 1} more" if len(failed) > 1 else "",
            )
            self._retry_at = time.monotonic() + self._retry_in
            self._retry_in = min(self._retry_in * 2, self._config.repair_interval)
        else:
            self._retry_at, self._retry_in = None, RETRY_FIRST
        # Kept unless the ring changed meanwhile (names this peer is primary for moved).
        # A member down during the look that was the only room for a repair is in no
        # ``_room_wanted``: its return takes the look again. (Names that failed are
        # retried from the reports either way.)
        if swept is not None and membership.ring.digest == swept[0]:
            self._looked = swept
        self.stats.queued = len(self._reports)
        self.stats.sweeps += 1

    async def _places_on(self, name: str, lost: frozenset[str]) -> bool:
        """Whether this peer's replica of ``name`` places a chunk on a member in ``lost``. A
        look reads the other replicas (a quorum read) only then: where the replica here is
        behind one that does (a write it missed), reads and anti-entropy bring it up to date
        and ``consider`` queues it as it is stored."""
        manifest = await self._manifests.get(name)
        return manifest is not None and any(ref.holder in lost for ref in manifest.chunks)

    def _primary_names_needing_repair(self) -> tuple[list[str], set[str], Look | None]:
        """Names this peer is primary for that may miss chunks: the degraded ones (short of
        the cluster's layout) that the ring has room for: more members than chunks stored
        (so a 6-peer cluster does not re-read every 5+2 file each sweep until a 7th peer
        joins); and, while a member has been down past ``repair_after`` and a look is owed
        (``look_owed``), those whose replica here names chunks, for the sweep to look at
        (``_places_on``), with what the look is under (the sweep keeps it once done)."""
        membership = self._membership
        spells = membership.long_down_spells(self._config.repair_after)
        if not spells:  # (no member lost: no room wanted for one)
            self._room_wanted = None
        members, manifests = len(membership.ring.members), self._manifests
        degraded = [n for n, stored in manifests.degraded().items() if stored < members]
        looking: list[str] = []
        now, up, swept = (membership.ring.digest, spells), membership.up_ids(), None
        if look_owed(now, self._looked, up, self._room_wanted):
            looking, swept = [n for n in manifests.names() if manifests.has_chunks(n)], now
            log.info(
                "looking for chunks on %d member(s) down past --repair-after (%s) in every "
                "primary name%s",
                len(spells),
                ", ".join(sorted(m[:8] for m, _ in spells)),
                "; a member is up that may give the room a repair lacked"
                if self._room_wanted is not None
                else "",
            )
            self._room_wanted = None
        me = membership.me.id
        degraded = [n for n in degraded if membership.replicas(n).primary == me]
        return degraded, {n for n in looking if membership.replicas(n).primary == me}, swept

    async def repair(self, name: str, reported: set[tuple[int, str]]) -> None:
        """Rebuild what ``name`` is missing; raises RingstoreError if it cannot yet."""
        base = await self._replicas.read(name, decided=True)
        if base is None or not base.chunked:
            return  # gone, kept in its manifest, or in other files (parts, a pack): no chunks
        manifest = base
        if base.layout.m < self._config.m:  # written with less parity (an older release)
            manifest = base.with_parity(self._config.m)
        membership = self._membership
        up = membership.up_ids()
        plan = repair_targets(
            manifest,
            reported,
            up,
            {m: membership.down_for(m) for m in membership.down_ids()},
            self._config.repair_after,
            membership.write_placement(manifest.file_id, manifest.layout.n).candidates(),
        )
        if plan.lost_unplaced:
            wanted = self._room_wanted
            self._room_wanted = frozenset(up) if wanted is None else wanted & up
        targets = plan.targets
        if not targets:
            return
        await self._pacer.pace(len(targets) * manifest.layout.chunk_size)
        await self._rebuilder.rebuild(manifest, targets, base)
        count = len(targets)
        self.stats.chunks_repaired += count
        self.stats.bytes_repaired += count * manifest.layout.chunk_size
        self.stats.last_repair = time.time()
        log.info(
            "repaired %d chunk(s) of %r%s: %s",
            count,
            name,
            f" (parity {base.layout.m} -> {manifest.layout.m})" if manifest is not base else "",
            ", ".join(f"{i}->{h[:8]}" for i, h in sorted(targets.items())),
        )
