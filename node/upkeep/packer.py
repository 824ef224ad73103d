"""The packer: cold small files leave their manifests for erasure-coded packs, and packs
whose files changed are repacked or deleted.

A file kept inside its manifest (``--inline-max``) costs three replicas of its bytes. The
anti-entropy walk (``node.upkeep.anti_entropy``) reads every manifest this peer is primary
for and offers each to the packer, which gathers files kept inline and unchanged for
``--pack-after`` seconds until ``PACK_BYTES`` of them (or ``MAX_MEMBERS``) are in hand, and
at the end of the walk whatever is gathered past ``MIN_PACK_BYTES`` (the rest waits for the
next walk). It then stores them as one pack (``node.model.packs``: members' bytes,
directory, directory length), cut into k + m chunks of ``PACK_BLOCK_SIZE`` blocks like any
file, and commits each member's manifest again: same version, next revision, its bytes
named as a segment of the pack, kept only by replicas that still hold the manifest it was
read as (``ManifestReplicas.commit`` with ``base``). A member changed meanwhile
(overwritten, deleted) keeps its change: its bytes in the pack are dead weight, never wrong
bytes. Rewrites stop ``REWRITE_DEADLINE`` seconds after the pack was stored.

**Reclaim.** A pack is a file whose primary walks it too: once it is ``CHECK_AFTER`` old,
once each ``--pack-check-interval`` (at a moment a hash of its name places), the packer
reads its directory and, for each member, the newest committed manifest
(``ManifestReplicas.read_committed``: every replica answers, a write quorum holds it).
A member is in the pack while that names it. Otherwise the rewrite into the pack is beaten
for good once something above its precedence (recorded in the directory) is committed:
where nothing is, the file's bytes are committed inline one revision above it (a fence,
``_in_pack``), since an uncommitted rewrite may sit on a replica no read looks at (a
handoff, a peer down; its coordinator died before retracting it) and would win over
anything lower. None left in
it: the pack gets a tombstone (its chunks go after ``--delete-grace``, as a replaced
file's). Half or more of its members' bytes gone: the live members' bytes are read from it
and packed again with the files this walk gathers (their manifests rewritten from the
packed one), and at the end of the walk the pack is checked once more and deleted if none
is left in it. A check that cannot decide (a replica not answering, a newest not yet on a
quorum, a conditional write not yet decided) is made again at the next walk. So a pack
holds at most twice its live bytes for longer than a check period, and a pack of deleted
files goes within one.

**No pack less redundant than the copies it replaces.** A file kept inline survives the
loss of any ``manifest_replicas - 1`` peers (two, of three copies); a pack survives as many
only with ``k`` + that many chunks stored (7 of 5 + 2). One stored short (fewer peers up, a
holder that failed or refused its chunk) would hold its members, until repair added the
rest, a lost disk or two from losing them, where they were safe. So nothing is packed or
repacked while fewer peers are up, nor ever under ``--parity`` below that; a pack stored
short anyway is deleted before any member names it (again at the walk's end if that
failed), its members left where they were, and that walk packs nothing more (a member full
of chunks would refuse every pack). Found by killing two of 7 peers while files went cold,
then a third once they were back: 27-45 of 150 files lost for good.

Crash safety: a pack is committed before any member points at it, and a member's bytes
stay where they were (inline replicas, or the old pack) until a quorum of its replicas took
the new revision; a pack goes only once each member's newest names another place and
cannot be beaten by the rewrite into it. A crash between leaves a pack that some members
(maybe none) use, which its checks reclaim.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from node.cluster.membership import Membership
from node.config import PeerConfig
from node.datapath.coordinator import Coordinator
from node.datapath.replicas import ManifestReplicas
from node.errors import RingstoreError, Unavailable
from node.model.manifest import Manifest
from node.model.multipart import Segment
from node.model.names import RESERVED
from node.model.packs import (
    LENGTH_BYTES,
    MAX_MEMBERS,
    PACK_BLOCK_SIZE,
    PACK_BYTES,
    PackEntry,
    is_pack_name,
    pack_name,
    pack_trailer,
    read_directory,
    trailer_length,
)
from node.model.version import HybridClock

log = logging.getLogger(__name__)

MIN_PACK_BYTES = 64 << 10  # members' bytes worth a pack at the end of a walk
PACK_CONTENT_TYPE = "application/vnd.ringstore.pack"
REWRITE_DEADLINE = 600.0  # seconds a pack's members are rewritten into it, at most
CHECK_AFTER = 3600.0  # a pack's age before its first check: its rewrites are long over
DEAD_SHARE = 0.5  # a pack with this share of its members' bytes dead is repacked
MAX_UNDECIDED = 4096  # packs whose check could not decide, kept to check at the next walk


@dataclass
class PackStats:
    packs: int = 0  # packs committed
    files_packed: int = 0  # files whose manifest now names a pack (repacked ones too)
    bytes_packed: int = 0  # their bytes
    files_passed: int = 0  # gathered, not packed: changed, rewrite short of quorum, no pack
    failures: int = 0  # packs not stored, or stored short and deleted unused
    packs_checked: int = 0  # packs whose members were asked about
    packs_deleted: int = 0  # packs none of whose members named them any more
    files_repacked: int = 0  # live members of half-dead packs, packed again
    fences: int = 0  # members committed above a rewrite into a pack that never committed

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Member:
    manifest: Manifest  # as read: what its rewrite replaces (``base``)
    data: bytes


class Packer:
    """Packs cold inline files offered by the anti-entropy walk; checks and reclaims the
    packs this peer is primary for."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        coordinator: Coordinator,
        replicas: ManifestReplicas,
        clock: HybridClock,
    ) -> None:
        self._config = config
        self._membership = membership
        self._coordinator = coordinator
        self._replicas = replicas
        self._clock = clock
        self._gathered: list[_Member] = []
        self._bytes = 0
        self._repacking: dict[str, Manifest] = {}  # packs whose live members are gathered
        self._walk = self._last_walk = 0.0  # wall-clock starts of this walk and the last
        self._undecided: set[str] = set()  # packs to check again at the next walk
        self._short = False  # a pack of this walk was stored short: no more packs in it
        self._unused: set[str] = set()  # packs stored short whose deletion is owed
        self.stats = PackStats()

    def __repr__(self) -> str:
        return f"Packer(gathered={len(self._gathered)}, packs={self.stats.packs})"

    def wants(self, manifest: Manifest, now: float) -> bool:
        """Whether ``manifest`` is a file kept inline, unchanged ``--pack-after`` seconds
        at wall-clock time ``now`` (seconds)."""
        after = self._config.pack_after
        return (
            after > 0
            and bool(manifest.inline)
            and not manifest.deleted
            and not manifest.name.startswith(RESERVED)  # cluster records, parts stay
            and manifest.version.wall_ms / 1000 <= now - after
        )

    def due(self, pack: Manifest) -> bool:
        """Whether this walk checks ``pack`` (a live pack's manifest): once it is
        ``CHECK_AFTER`` old, when a moment of its own in every ``--pack-check-interval``
        (a hash of its name places it) passed since the last walk began, by the wall
        clock (a restart misses none that passed within an anti-entropy interval before
        it), or every walk where the interval is no longer than a walk's; or when its last
        check could not decide."""
        if not is_pack_name(pack.name) or not pack.chunked:
            return False
        if pack.version.wall_ms / 1000 > self._walk - CHECK_AFTER:
            return False
        interval = self._config.pack_check_interval
        if interval <= self._config.anti_entropy_interval or pack.name in self._undecided:
            return True  # (a period no longer than a walk's: every walk)
        shift = zlib.crc32(pack.name.encode()) % int(interval)
        turn = (self._walk + shift) // interval
        return turn != (self._last_walk + shift) // interval

    def walk_started(self) -> None:
        """A walk begins: what an earlier walk that did not end gathered is dropped."""
        now = time.time()
        self._last_walk = self._walk or now - self._config.anti_entropy_interval
        self._walk = now
        self._gathered, self._bytes, self._repacking = [], 0, {}
        self._short = False

    async def offer(self, manifest: Manifest) -> None:
        """Take ``manifest`` if it is to be packed (pack once enough is gathered); check it
        if it is a pack due a check."""
        if self.due(manifest):
            await self._check(manifest, repack=True)
        elif self.wants(manifest, time.time()):
            await self._gather(_Member(manifest, manifest.inline))

    async def walk_ended(self) -> None:
        """Pack what the walk gathered (all of it if it holds a repacked member), then
        delete the packs emptied by repacking."""
        await self.flush(at_least=0 if self._repacking else None)
        repacked, self._repacking = self._repacking, {}
        for pack in repacked.values():
            await self._check(pack, repack=False)
        for name in list(self._unused):
            await self._drop(name)

    async def flush(self, at_least: int | None = None) -> None:
        """Pack what is gathered if it is ``at_least`` bytes (``MIN_PACK_BYTES``); forget
        it either way (the next walk offers what is still inline)."""
        members, size = self._gathered, self._bytes
        self._gathered, self._bytes = [], 0
        if not members or size < (MIN_PACK_BYTES if at_least is None else at_least):
            return
        await self._pack(members)

    async def _gather(self, member: _Member) -> None:
        self._gathered.append(member)
        self._bytes += len(member.data)
        if self._bytes >= PACK_BYTES or len(self._gathered) >= MAX_MEMBERS:
            await self.flush(at_least=0)

    async def _pack(self, gathered: list[_Member]) -> None:
        if not self._membership.all_read_packs():
            self.stats.files_passed += len(gathered)
            log.info("%d files not packed: a member's release cannot read packs", len(gathered))
            return
        if (unsafe := self._unsafe()) is not None:
            self.stats.files_passed += len(gathered)
            log.info("%d files not packed: %s", len(gathered), unsafe)
            return
        members = [member for member in gathered if await self._newest(member.manifest)]
        self.stats.files_passed += len(gathered) - len(members)
        if not members:
            return
        entries, offset = [], 0
        for member in members:
            base = member.manifest  # rewritten at its next revision, recorded in the pack
            entries.append(
                PackEntry(base.name, base.version, offset, len(member.data), base.revision + 1)
            )
            offset += len(member.data)
        body = b"".join(member.data for member in members) + pack_trailer(entries)
        name = pack_name(self._clock.now())
        try:
            pack = await self._coordinator.put(
                name, _once(body), len(body), PACK_CONTENT_TYPE, block_size=PACK_BLOCK_SIZE
            )
        except RingstoreError as exc:
            self.stats.failures += 1
            self.stats.files_passed += len(members)
            log.warning("pack of %d files not stored: %s", len(members), exc)
            return
        del body
        if len(pack.chunks) < self._needed:  # (a holder failed or refused: see the module)
            self.stats.failures += 1
            self.stats.files_passed += len(members)
            self._short = True
            log.warning(
                "pack %s of %d files stored with %d of %d chunks, %d needed: not used",
                name,
                len(members),
                len(pack.chunks),
                pack.layout.n,
                self._needed,
            )
            await self._drop(name)
            return
        self.stats.packs += 1
        deadline = pack.version.wall_ms / 1000 + REWRITE_DEADLINE  # (CHECK_AFTER's clock)
        packed = passed = 0
        for member, entry in zip(members, entries, strict=True):
            base = member.manifest
            segment = Segment(name, pack.version, entry.size, base.etag, entry.offset)
            rewritten = dataclasses.replace(
                base, inline=b"", segments=(segment,), revision=entry.revision
            )
            try:
                if time.time() > deadline:
                    raise TimeoutError("past the rewrite deadline")
                await self._replicas.commit(rewritten, base=base)
            except (RingstoreError, TimeoutError) as exc:
                passed += 1
                self.stats.files_passed += 1
                log.debug("%r stays as it is: %s", base.name, exc)
                continue
            packed += 1
            self.stats.files_packed += 1
            self.stats.bytes_packed += entry.size
        log.info(
            "packed %d files (%d bytes) into %s; %d changed meanwhile or not rewritten",
            packed,
            offset,
            name,
            passed,
        )

    @property
    def _needed(self) -> int:
        """Chunks a pack must have stored for its members to survive as many lost peers as
        their inline copies did (see the module)."""
        return self._config.k + self._config.manifest_replicas - 1

    def _unsafe(self) -> str | None:
        """Why a pack stored now could hold files less safely than their copies, or None."""
        config, needed = self._config, self._needed
        if config.k + config.m < needed:
            return f"--parity {config.m} survives fewer losses than the files' copies"
        if self._short:
            return "a pack of this walk was stored short of chunks"
        if (up := len(self._membership.up_ids())) < needed:
            return f"{up} peers up, a pack needs {needed}"
        return None

    async def _drop(self, name: str) -> None:
        """Delete pack ``name``, which no file names (stored short); owed again at the walk's
        end if that fails (until then nothing reads it; its check would fence its members
        first, an hour on)."""
        try:
            await self._coordinator.delete(name)
        except RingstoreError as exc:
            if len(self._unused) < MAX_UNDECIDED:
                self._unused.add(name)
            log.info("unused pack %s not deleted now: %s", name, exc)
        else:
            self._unused.discard(name)

    async def _newest(self, manifest: Manifest) -> bool:
        """Whether ``manifest`` is its name's newest committed manifest (``read_committed``):
        a version that reached one replica must not be packed (the pack's check could not
        fence above its rewrite)."""
        try:
            newest = await self._replicas.read_committed(manifest.name)
        except RingstoreError as exc:
            log.debug("%r not packed now: %s", manifest.name, exc)
            return False
        return newest == manifest

    async def _check(self, pack: Manifest, repack: bool) -> None:
        """Find which of ``pack``'s members still are in it (``_in_pack``); delete it if
        none is, repack those that are if ``repack`` and half its bytes are dead. A check
        that cannot decide a member is made again at the next walk."""
        self._undecided.discard(pack.name)
        try:
            directory = await self._directory(pack)
            live: list[tuple[Manifest, PackEntry]] = []
            for entry in directory:
                newest = await self._in_pack(entry, pack)
                if newest is not None:
                    live.append((newest, entry))
        except (RingstoreError, ValueError) as exc:
            log.info("pack %s not checked now: %s", pack.name, exc)
            if len(self._undecided) < MAX_UNDECIDED:
                self._undecided.add(pack.name)
            return
        self.stats.packs_checked += 1
        total = sum(entry.size for entry in directory)
        alive = sum(entry.size for _, entry in live)
        if not live:
            await self._delete(pack, len(directory))
        elif repack and total - alive >= DEAD_SHARE * total:
            if (unsafe := self._unsafe()) is None:
                await self._repack(pack, live)
            else:  # its live members stay where they are, safe: the next walk tries again
                log.info("pack %s not repacked now: %s", pack.name, unsafe)
                if len(self._undecided) < MAX_UNDECIDED:
                    self._undecided.add(pack.name)

    async def _in_pack(self, entry: PackEntry, pack: Manifest) -> Manifest | None:
        """The newest committed manifest of member ``entry`` (``read_committed``) if it
        names ``pack``, else None once no manifest naming it can ever win.

        Every manifest naming the pack has the precedence the pack recorded
        (``entry.version``, ``entry.revision``): its rewrite's (copies keep it; nothing else
        names a pack). Where that rewrite did not commit, it may still sit on some replica
        (its coordinator died before retracting it) where no read looks (a handoff, a peer
        down), and it would win over anything of lower precedence. So where the newest
        neither names the pack nor is above that precedence, the file's bytes (that
        version's, read from the pack) are committed inline one revision above it, from the
        replicas that hold the newest (``base``): a *fence*, after which that rewrite never
        wins, and which names no pack. Where the newest is an older version, no fence can
        be above the rewrite: the pack is kept. Raises RingstoreError (Unavailable,
        Undecided) when the newest cannot be known or fenced now."""
        newest = await self._replicas.read_committed(entry.name)
        rewrite = (entry.version, entry.revision)
        if newest is None:  # purged: as after any purge, a stale replica is the rule's case
            return None
        if _names(newest, pack):
            return newest
        if newest.precedence > rewrite:
            return None
        if newest.version != entry.version or newest.size != entry.size:
            raise Unavailable(f"{entry.name!r}: version {newest.version} is the newest committed")
        data = await self._read(pack, entry.offset, entry.offset + entry.size)
        fence = dataclasses.replace(newest, inline=data, segments=(), revision=entry.revision + 1)
        await self._replicas.commit(fence, base=newest)
        self.stats.fences += 1
        return None

    async def _directory(self, pack: Manifest) -> list[PackEntry]:
        """The directory at the end of ``pack`` (two ranged reads)."""
        length = trailer_length(await self._read(pack, pack.size - LENGTH_BYTES, pack.size))
        return read_directory(await self._read(pack, pack.size - length, pack.size))

    async def _read(self, pack: Manifest, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``pack``; raises ValueError where they are not in it."""
        if not 0 <= start <= end <= pack.size:
            raise ValueError(f"bytes {start}-{end} of a {pack.size}-byte pack")
        return b"".join(
            [bytes(piece) async for piece in self._coordinator.stream(pack, start, end)]
        )

    async def _repack(self, pack: Manifest, live: list[tuple[Manifest, PackEntry]]) -> None:
        first = min(entry.offset for _, entry in live)
        past = max(entry.offset + entry.size for _, entry in live)
        try:
            data = await self._read(pack, first, past)
        except (RingstoreError, ValueError) as exc:
            log.info("pack %s not repacked now: %s", pack.name, exc)
            return
        log.info("repacking %d live files of %s", len(live), pack.name)
        self._repacking[pack.name] = pack
        self.stats.files_repacked += len(live)
        for current, entry in live:
            start = entry.offset - first
            await self._gather(_Member(current, data[start : start + entry.size]))

    async def _delete(self, pack: Manifest, members: int) -> None:
        try:
            await self._coordinator.delete(pack.name)
        except RingstoreError as exc:
            log.info("pack %s not deleted now: %s", pack.name, exc)
            return
        self.stats.packs_deleted += 1
        log.info("deleted pack %s: none of its %d files is in it any more", pack.name, members)


def _names(manifest: Manifest, pack: Manifest) -> bool:
    """Whether ``manifest`` is a live file whose bytes are in ``pack``."""
    if manifest.deleted or not manifest.packed:
        return False
    segment = manifest.segments[0]
    return segment.name == pack.name and segment.version == pack.version


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
