"""The manifest replicas one peer keeps: the newest version of each name it was sent.

Layout under the data directory::

    manifests/log/<seq>.log   the manifest log (``node.disk.manifest_log``): segments of
                              checksummed records, each a manifest kept or a name removed

A write is kept only if it takes precedence over the stored one (a newer version, or a newer
revision of the same version), so replicas converge whatever order writes arrive in; a
conditional write (If-Match...) only if its condition also holds for the stored one. The
check and the write happen under the name's lock, held until the write is durable.

**Group commit.** Writes of any names queue for one writer: each batch is one write and one
fdatasync in the store's own thread (``node.disk.serial``), however many records it holds,
and a write is acknowledged (``put`` returns) only after its batch's sync. The in-memory
index (name -> summary and the record's location) changes only then, so no reader ever
sees a replica that is not durable.
A write whose caller is cancelled still completes, with its index change.

**Provisional replicas.** A conditional write kept here is provisional until its coordinator
tells the verdict: confirmed (``confirm``) or retracted (``retract``, which then puts back
what it replaced here, remembered with the mark). Reads say so (``read``: ``ReplicaRead``),
and ``node.datapath.replicas`` never copies a provisional manifest to other replicas. Past
``provisional_for`` seconds without a verdict the mark is *overdue* and readers decide it
from the home replicas. A name's marks cover every undecided write kept, not only the one
held: a write over it (on its etag, or a repair) may be retracted and put it back, and it
must come back provisional, or, if its own retraction came meanwhile, not at all. The held
write's mark is in its log record, with what its retraction puts back (appended again when
a write under it is retracted), and a confirmation appends the record again without it
(first in the next batch, never synced alone: lost in a crash, the mark comes back), so a
restart brings back a mark still undecided (overdue ``provisional_for`` seconds after the
start); the marks under the held one live in memory.

**Compaction.** Each segment's live bytes are counted (records still the current one of
their name); when a closed segment is at least ``compact_ratio`` dead and ``compact_bytes``
of it are, its live records are appended again through the same group commit (under their
names' locks), a bounded slice per pass, then the segment is deleted (a name whose current
record there does not read is written off first, as a read of a damaged replica does). The
active segment is closed early once it is that dead, so that it is compacted too.

**Recovery** replays the segments at ``open`` (``ManifestLog.replay_segment``), each closed
one from its hint file where that describes it (``node.disk.manifest_hints``; a closed
segment read whole gets one then, one closed while the peer runs gets one in the compaction
task): a torn tail of the newest segment is cut off (never acknowledged); a damaged record
elsewhere is skipped and its name, when it still decodes, is written off here with a removal
record, so an older
record of the name cannot come back: read repair puts the replica back, as for any replica
a peer lacks. A data directory of the previous layout (a file per replica,
``manifests/<2 hex>/<key>``) is moved into the log at ``open``: the files' manifests are
appended and synced, then the files deleted; a crash midway repeats it, and precedence
drops what was already moved.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgspec

from node.disk.locks import KeyedLocks
from node.disk.manifest_hints import Hint, HintWriter
from node.disk.manifest_index import ManifestIndex, portable
from node.disk.manifest_log import (
    KEEP,
    REMOVE,
    Damage,
    Location,
    LogRecord,
    ManifestLog,
    SegmentGone,
    SegmentIO,
    frame,
)
from node.disk.serial import SerialThread
from node.errors import CorruptData, InsufficientStorage, Unavailable
from node.model.folders import replica_page
from node.model.layout import DEFAULT_M
from node.model.manifest import Manifest, ReplicaRead, ReplicaWrite, SealedRead, missing_chunks
from node.model.preconditions import Preconditions, representation
from node.model.version import Version

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 << 20  # a new segment past this size
COMPACT_RATIO = 0.5  # a closed segment this much dead is compacted...
COMPACT_BYTES = 8 << 20  # ...once this many of its bytes are dead
COMPACT_SLICE = 1 << 20  # bytes of a segment read per compaction pass
BATCH_BYTES = 8 << 20  # at most this much written per group commit (one record may exceed)
MIGRATION_BATCH = 4096  # old-layout files moved per sync
PROVISIONAL_FOR = 30.0  # seconds before a conditional write's missing verdict is overdue
MARKS_KEPT = 3600.0  # seconds a mark nothing reaches is kept (an unconditional write over it)
# Bytes of a record read and decoded on the event loop when cached (ManifestLog.read_cached):
# a file's manifest of 7 chunks is ~1 KB, an inline one up to 64 KiB; a multipart upload's of
# 10,000 parts (~1 MB) takes ~80 ms to decode, which goes to a worker thread.
READ_ON_LOOP = 80 << 10

__all__ = ["KeyedLocks", "ManifestStore"]


@dataclass
class _Append:
    """One record waiting for the group commit; ``apply`` updates the index once durable."""

    frame: bytes
    apply: Callable[[Location], None]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # A confirmation's unmarked record: the marked record it follows. It rides first in
    # the next batch, never alone, and nobody waits for it.
    rider: Location | None = None


@dataclass(frozen=True)
class _Mark:
    """A conditional write kept here, awaiting its verdict: its precedence, what it replaced
    (put back if it is retracted) and when it was kept (``clock`` seconds). ``retracted``:
    its retraction came while a later write was held over it; should a retraction of that
    one put it back, what it replaced goes back instead."""

    precedence: tuple[Version, int]
    replaced: Manifest | None
    kept_at: float
    retracted: bool = False


def _restorable(marks: tuple[_Mark, ...], manifest: Manifest | None) -> Manifest | None:
    """``manifest``, or, if its write's retraction came while it was held under another,
    what that write replaced (and so on down)."""
    while manifest is not None:
        under = _marked(marks, manifest.precedence)
        if under is None or not under.retracted:
            return manifest
        manifest = under.replaced
    return None


def _without(marks: tuple[_Mark, ...], precedence: tuple[Version, int]) -> tuple[_Mark, ...]:
    return tuple(mark for mark in marks if mark.precedence != precedence)


def _marked(marks: tuple[_Mark, ...], precedence: tuple[Version, int]) -> _Mark | None:
    return next((mark for mark in marks if mark.precedence == precedence), None)


class ManifestStore:
    """The manifest replicas on this peer's disk, with an in-memory index for listings."""

    def __init__(
        self,
        root: Path,
        parity: int = DEFAULT_M,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        compact_ratio: float = COMPACT_RATIO,
        compact_bytes: int = COMPACT_BYTES,
        io: SegmentIO | None = None,
        provisional_for: float = PROVISIONAL_FOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``provisional_for``: seconds after which a provisional replica's verdict is
        overdue (``clock`` tells them)."""
        self._root = root / "manifests"
        self._log = ManifestLog(self._root / "log", segment_bytes, io or SegmentIO())
        self._index = ManifestIndex()  # name -> its summary and where its record lies
        self._removed: dict[str, Location] = {}  # name -> a removal record still needed
        self._live: dict[int, int] = {}  # segment -> bytes of its records still current
        self._parity = parity  # the cluster's m: versions with fewer chunks are degraded
        self._degraded: dict[str, int] = {}  # degraded live versions: chunks they have
        self._locks = KeyedLocks()
        self._queue: list[_Append] = []
        self._riders: dict[Location, _Append] = {}  # by the marked record each follows
        self._riding: dict[Location, _Append] = {}  # riders in the batch being written
        self._writer: asyncio.Task[None] | None = None
        self._writes = SerialThread("manifest-log")  # where batches are written and synced
        self._compactor: asyncio.Task[None] | None = None  # compaction, and hint files
        self._hinting: asyncio.Future[bool] | None = None  # a hint file being written
        self._unhintable: set[int] = set()  # closed segments that failed to get one
        self._uncompactable: set[int] = set()  # closed segments found to keep current records
        self._closing = False
        self._compact_ratio, self._compact_bytes = compact_ratio, compact_bytes
        self.compacted_segments = 0
        # name -> its conditional writes kept here and not yet decided, newest first: the
        # held one, and those under it that a retraction may put back (still undecided).
        self._marks: dict[str, tuple[_Mark, ...]] = {}
        self.provisional_for = provisional_for
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"ManifestStore({self._root}, names={len(self._index)}, "
            f"segments={len(self._log.sizes)}, live_bytes={self.live_bytes}, "
            f"provisional={sum(map(len, self._marks.values()))}, "
            f"syncs={self._log.syncs}, batches={self._log.batches})"
        )

    def __len__(self) -> int:
        return len(self._index)

    def names(self) -> list[str]:
        """Every name this peer holds a replica of, in order."""
        return list(self._index.names)

    def live_names(self) -> list[str]:
        """Names whose replica here is a live version (not a tombstone), in order."""
        return [name for name in self._index.names if not self._index.deleted(name)]

    @property
    def log_bytes(self) -> int:
        """Bytes of the manifest log's segments, dead records included."""
        return sum(self._log.sizes.values())

    @property
    def live_bytes(self) -> int:
        """Bytes of the records that are current replicas (the rest is compaction's)."""
        return sum(self._live.values())

    def has_chunks(self, name: str) -> bool:
        """Whether ``name``'s replica here names chunks on peers (from the index: no
        record read). False for a tombstone, a file kept in its manifest, a name not here."""
        return self._index.has_chunks(name)

    def degraded(self) -> dict[str, int]:
        """Chunks stored, by name, of the live versions that lack chunks of the cluster's
        layout (k + ``parity``; repair's work): written degraded, or by a release that
        wrote fewer parity chunks."""
        return dict(self._degraded)

    def _note_degraded(self, name: str, missing: int, stored: int) -> None:
        if missing > 0:
            self._degraded[name] = stored
        else:
            self._degraded.pop(name, None)

    # --- the index: changed only by durable records ------------------------------------

    def _count(self, where: Location | None, sign: int) -> None:
        if where is not None:
            self._live[where.segment] = self._live.get(where.segment, 0) + sign * where.length

    def _kept(self, manifest: Manifest, where: Location) -> None:
        self._indexed(manifest.name, where, self._index.keep(manifest, where))
        self._note_degraded(manifest.name, manifest.missing(self._parity), len(manifest.chunks))

    def _restored(self, hint: Hint, where: Location) -> None:
        """``_kept`` from a hint file (no manifest decoded)."""
        self._indexed(
            hint.name, where, self._index.restore(hint.name, where, hint.flags, hint.summary)
        )
        if hint.repair is None:
            self._degraded.pop(hint.name, None)
        else:
            k, m, stored = hint.repair
            self._note_degraded(hint.name, missing_chunks(k, m, stored, self._parity), stored)

    def _indexed(self, name: str, where: Location, replaced: Location | None) -> None:
        self._count(replaced, -1)
        self._count(self._removed.pop(name, None), -1)
        self._count(where, +1)

    def _dropped(self, name: str, where: Location) -> None:
        """``name`` removed by the record at ``where``: kept while an older record of the
        name may lie in an older segment."""
        if name not in self._index:
            return  # nothing to remove: the record is dead at once
        self._forget(name)
        self._removed[name] = where
        self._count(where, +1)

    def _forget(self, name: str) -> None:
        self._degraded.pop(name, None)
        self._count(self._index.forget(name), -1)

    def _moved(self, name: str, old: Location, where: Location) -> None:
        if self._index.where(name) == old:
            self._index.move(name, where)
        elif self._removed.get(name) == old:
            self._removed[name] = where
        else:
            return  # superseded meanwhile (only after a cancelled compaction): a dead copy
        self._count(old, -1)
        self._count(where, +1)

    # --- open, close -------------------------------------------------------------------

    async def open(self) -> None:
        await asyncio.to_thread(self._load)
        self._consider_compaction()  # what was due at the stop, not at the first write

    def _load(self) -> None:
        damaged: set[str] = set()
        undecided: dict[str, Location] = {}  # name -> its record, when that is provisional
        for segment in self._log.open_segments():
            if not self._load_hinted(segment, damaged, undecided):
                self._load_segment(segment, damaged, undecided)
        # Sorted once: inserting each name in log order (a random one) moved half the list
        # per name, quadratic (400,000 names in random order: 41 s of CPU to load, now 13 s).
        self._index.sort()
        damaged |= self._restore_marks({n: w for n, w in undecided.items() if n not in damaged})
        if damaged:  # written off: their older records must not come back after a restart
            lost = sorted(damaged & set(self._index))
            frames = [frame(LogRecord(REMOVE, name)) for name in lost]
            for name, where in zip(lost, self._log.append(frames) if frames else [], strict=True):
                self._dropped(name, where)
            log.error("manifest replicas lost to damage here, left to read repair: %s", lost)
        self._migrate()

    def _load_hinted(self, segment: int, damaged: set[str], undecided: dict[str, Location]) -> bool:
        """Apply closed ``segment``'s records from its hint file; False where it has none
        that describes it, or one that does not apply (then reading the segment applies
        each of its records again, over those applied: the same state, as each record's
        change only moves its name's current record)."""
        hints = self._log.read_hints(segment)
        if hints is None:
            return False
        try:
            for hint in hints:
                where = Location(segment, hint.offset, hint.length)
                damaged.discard(hint.name)
                undecided.pop(hint.name, None)
                if hint.kind == REMOVE:
                    self._dropped(hint.name, where)
                    continue
                if hint.kind != KEEP:
                    raise ValueError(f"a hint of kind {hint.kind}")
                self._restored(hint, where)
                if hint.provisional:
                    undecided[hint.name] = where
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning(
                "hint file of manifest log segment %d does not apply (%s): the segment is read",
                segment,
                exc,
            )
            self._log.drop_hints(segment)
            return False
        return True

    def _load_segment(
        self, segment: int, damaged: set[str], undecided: dict[str, Location]
    ) -> None:
        """Apply ``segment``'s records, read whole; a closed one gets its hint file as they
        are read (unless damaged: then it is read, and its damage reported, at each start)."""
        closed = segment < self._log.active  # (the newest's torn tail is cut: it is sound)
        writer = self._log.hint_writer(segment) if closed else None
        for event in self._log.replay_segment(segment):
            if isinstance(event, Damage):
                if event.name is not None and not (event.tail and not closed):
                    damaged.add(event.name)
                self._unsound(segment, writer)
                writer = None
                continue
            where, record = event
            damaged.discard(record.name)
            undecided.pop(record.name, None)
            if record.kind == REMOVE:
                self._dropped(record.name, where)
                if writer is not None:
                    writer.add(_hint_of(where, record, None))
                continue
            try:
                manifest = Manifest.from_bytes(record.manifest or b"")
            except CorruptData as exc:  # checksummed twice: a bug, not bit rot
                log.error("unreadable manifest of %r at %s: %s", record.name, where, exc)
                damaged.add(record.name)
                self._unsound(segment, writer)
                writer = None
                continue
            self._kept(manifest, where)
            if writer is not None:
                writer.add(_hint_of(where, record, manifest))
            if record.provisional:
                undecided[record.name] = where
        if writer is not None and writer.commit():
            self._log.hinted(segment)

    def _unsound(self, segment: int, writer: HintWriter | None) -> None:
        """``segment`` holds damage: no hint file for it (the writer's is abandoned), so
        that each start reads it and reports the damage."""
        _abandoned(writer)
        if segment < self._log.active:
            self._unhintable.add(segment)

    def _restore_marks(self, undecided: dict[str, Location]) -> set[str]:
        """Mark again the conditional writes whose record says they await their verdict:
        kept now, as far as ``provisional_for`` is concerned (their coordinator may still
        be telling it). Returns the names whose record no longer reads (bit rot since a
        hint file was written): damaged, to be written off."""
        now = self._clock()
        unreadable = set()
        for name, where in undecided.items():
            current = self._index[name]
            try:
                record = self._log.read(where)
            except (CorruptData, OSError) as exc:  # rot since its hint file was written
                log.error("conditional write of %r kept here no longer reads: %s", name, exc)
                unreadable.add(name)
                continue
            try:
                replaced = None if record.replaced is None else Manifest.from_bytes(record.replaced)
            except CorruptData as exc:  # checksummed with the record: a bug, not bit rot
                log.error("unreadable replaced manifest in %r's record: %s", name, exc)
                replaced = None
            self._marks[name] = (_Mark(current.precedence, replaced, now),)
        if undecided:
            log.info("%d conditional writes kept here await their verdict", len(undecided))
        return unreadable

    def _migrate(self) -> None:
        """Move replicas of the previous layout (``manifests/<2 hex>/<key>``) into the log."""
        shards = [p for p in self._root.iterdir() if p.is_dir() and len(p.name) == 2]
        moved = 0
        for shard in shards:
            files = sorted(shard.iterdir())
            for start in range(0, len(files), MIGRATION_BATCH):
                batch = files[start : start + MIGRATION_BATCH]
                manifests = []
                for path in batch:
                    if path.suffix in (".tmp", ".corrupt"):
                        continue
                    try:
                        manifest = Manifest.from_bytes(path.read_bytes())
                    except CorruptData as exc:
                        log.error("unreadable manifest %s: %s; set aside", path, exc)
                        path.replace(path.with_suffix(".corrupt"))
                        continue
                    current = self._index.get(manifest.name)
                    if current is None or current.precedence < manifest.precedence:
                        manifests.append(manifest)
                frames = [frame(LogRecord(KEEP, m.name, m.to_bytes())) for m in manifests]
                if frames:
                    for manifest, where in zip(manifests, self._log.append(frames), strict=True):
                        self._kept(manifest, where)
                for path in batch:  # durable in the log: the files can go
                    if path.suffix != ".corrupt":
                        path.unlink(missing_ok=True)
                moved += len(manifests)
            with contextlib.suppress(OSError):
                shard.rmdir()  # left if .corrupt files remain
        if shards:
            log.info("moved %d manifest replicas of the previous layout into the log", moved)

    async def close(self) -> None:
        """Finish the writes under way, stop compacting and close the log."""
        self._closing = True  # no compaction, nor hint file, starts from here on
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        if self._hinting is not None:
            await asyncio.wait({self._hinting})
        while self._writer is not None:
            await asyncio.wait({self._writer})
        if self._riders:  # written now, once, rather than lost (failing, they are dropped)
            self._queue[:0] = self._riders.values()
            self._riders = {}
            self._writer = asyncio.ensure_future(self._write_batches())
            await asyncio.wait({self._writer})
        await self._writes.run(self._log.close)
        await self._writes.stop()

    # --- group commit ------------------------------------------------------------------

    async def _commit(self, data: bytes, apply: Callable[[Location], None]) -> None:
        """Append one record in the next batch; returns once it is durable and applied."""
        pending = _Append(data, apply)
        self._queue.append(pending)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_batches())
        await pending.done

    async def _write_batches(self) -> None:
        try:
            while self._queue:
                size, count = 0, 0
                for pending in self._queue:
                    if count and size + len(pending.frame) > BATCH_BYTES:
                        break
                    size, count = size + len(pending.frame), count + 1
                batch, self._queue = self._queue[:count], self._queue[count:]
                batch[:0] = self._riders.values()
                self._riding, self._riders = self._riders, {}
                try:
                    frames = [p.frame for p in batch]
                    where = await self._writes.run(self._log.append, frames, self._due(None))
                except OSError as exc:
                    log.error("manifest log write of %d records failed: %s", len(batch), exc)
                    for pending in batch:
                        if pending.rider is not None:  # with the next batch, if any
                            self._riders[pending.rider] = pending
                        elif not pending.done.done():
                            pending.done.set_exception(_storage_error(exc))
                    continue
                finally:
                    self._riding = {}
                for pending, location in zip(batch, where, strict=True):
                    pending.apply(location)  # whether or not its caller still waits
                    if not pending.done.done():
                        pending.done.set_result(None)
                self._consider_compaction()
        finally:
            self._writer = None

    # --- reads and writes --------------------------------------------------------------

    async def get(self, name: str) -> Manifest | None:
        """The stored manifest of ``name``, or None (``read`` without the mark)."""
        return (await self.read(name)).manifest

    async def read(self, name: str) -> ReplicaRead:
        """The stored manifest of ``name`` (None: none), and whether it is provisional here
        (and overdue), as it stood when its record was looked up.

        A damaged replica is written off (a removal record) and forgotten, so that this
        peer answers "none" and read repair or the next write puts a good copy back.
        """
        found, marks = await self._read(name)
        if isinstance(found, Location):
            log.error("manifest replica of %r is damaged; written off for repair", name)
            async with self._locks.hold(name):
                if self._index.where(name) == found:
                    await self._commit(
                        frame(LogRecord(REMOVE, name)), lambda at: self._dropped(name, at)
                    )
            return ReplicaRead(None)
        return self._marked_read(found, marks)

    def read_now(self, name: str) -> ReplicaRead | None:
        """``read``'s answer where it needs no wait: ``name`` has no record here, or its
        record (at most ``READ_ON_LOOP`` bytes) is all in the page cache and sound. None
        otherwise: ``read`` it (a read from the disk in a worker thread, a damaged record
        to write off, a segment compacted meanwhile, a disk error to report). Raises
        nothing: whatever failed, ``read`` meets it again and reports it. For a peer's own
        replica in a quorum read (another peer's reads, at most ``MAX_MANIFEST_CALLS`` a
        batch: ``sealed_now``), not a pass over many names: ``read`` lets the event loop in
        once per read, this does not (~12 us a 4 KiB file's manifest)."""
        where = self._index.where(name)
        if where is None:
            return ReplicaRead(None)
        if where.length > READ_ON_LOOP:
            return None
        marks = self._marks.get(name, ())
        try:
            record = self._log.read_cached(where)
            found = None if record is None else _decode(record, where, name)
        except Exception:  # (CorruptData, SegmentGone, OSError...: ``read`` handles each)
            return None
        return None if found is None else self._marked_read(found, marks)

    def sealed_now(self, name: str) -> SealedRead | None:
        """``read_now``'s answer as its manifest's sealed bytes, for the replica's answer to
        another peer's read: the record's own checksum checks them, and the reader decodes
        them whole, so they are not decoded here too (~20 of ~150 us of CPU per read, both
        peers in one process). A name with marks is read whole (``read_now``): which of them
        holds is decided by the manifest's precedence. None where ``read_now`` would be,
        but for a record that passes its checksum and holds a manifest that does not decode
        (or names another file): a writer's bug. That one is sent as stored, the reader
        refuses it (``HttpTransport._replica_read``), and this peer's own reads write it
        off, not another peer's."""
        if self._marks.get(name):
            found = self.read_now(name)
            if found is None:
                return None
            sealed = None if found.manifest is None else found.manifest.to_bytes()
            return SealedRead(sealed, found.provisional, found.overdue)
        where = self._index.where(name)
        if where is None:
            return SealedRead(None)
        if where.length > READ_ON_LOOP:
            return None
        try:
            record = self._log.read_cached(where)
        except Exception:  # (as ``read_now``: ``read`` meets it again and reports it)
            return None
        if record is None or record.kind != KEEP or record.name != name or not record.manifest:
            return None  # (not its manifest: ``read`` writes the record off)
        return SealedRead(record.manifest)

    def _marked_read(self, found: Manifest | None, marks: tuple[_Mark, ...]) -> ReplicaRead:
        """A read of ``found`` with the name's ``marks`` as they were when it was looked
        up: provisional (and maybe overdue) if one marks its precedence."""
        mark = None if found is None else _marked(marks, found.precedence)
        if mark is None:
            return ReplicaRead(found)
        overdue = self._clock() - mark.kept_at >= self.provisional_for
        return ReplicaRead(found, provisional=True, overdue=overdue)

    async def _read(self, name: str) -> tuple[Manifest | Location | None, tuple[_Mark, ...]]:
        """The manifest of ``name``, None, or the location of its damaged record; with the
        name's marks as they were when the record was looked up (a verdict may land while
        the record is read: the answer must not pair the old record with the new marks)."""
        for _ in range(3):  # a segment compacted meanwhile: the record moved
            where = self._index.where(name)
            if where is None:
                return None, ()
            marks = self._marks.get(name, ())
            try:
                record = self._log.read_cached(where) if where.length <= READ_ON_LOOP else None
                if record is None:  # read and decoded in a worker thread
                    return await asyncio.to_thread(_read_and_decode, self._log, where, name), marks
                await asyncio.sleep(0)  # a suspension point still, as the hop was: a pass
                return _decode(record, where, name), marks  # over every name lets the loop in
            except SegmentGone:
                continue
            except CorruptData as exc:
                log.error("manifest record of %r at %s: %s", name, where, exc)
                return where, ()
        # Never "none" for a name the index holds: a decision may rest on it (a pack's
        # member with no manifest). Three compactions within one read are a bug's doing.
        raise Unavailable(f"the manifest record of {name!r} moved three times while read")

    async def put(
        self,
        manifest: Manifest,
        expect: tuple[Version, int] | None = None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        """Keep ``manifest`` if it takes precedence over the stored one of its name.

        With ``expect`` (a move or repair: a new revision of one version), keep it only if
        the stored manifest is exactly ``expect`` or there is none: of two revisions built
        on the same base, each replica keeps the first, and only one can reach a quorum.
        With ``condition`` (a conditional PUT or DELETE), keep it only if the condition
        holds for the stored live version (or for none, when there is none or a tombstone):
        checked under the name's lock, so of two writes conditional on the same state each
        replica keeps the first, and only one can reach a quorum; kept, it is provisional
        until ``confirm`` or ``retract``. A refusal answers the version held (the offered
        one when there is none). Returns once the write is durable; raises
        InsufficientStorage (disk full) or OSError.
        """
        # Shielded: a cancelled caller must not release the lock before the index changes.
        return await asyncio.shield(self._put(manifest, expect, condition))

    async def _put(
        self,
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None,
    ) -> ReplicaWrite:
        async with self._locks.hold(manifest.name):
            current = self._index.get(manifest.name)
            if condition is not None and not condition.allows_write(representation(current)):
                held = manifest.version if current is None else current.version
                return ReplicaWrite(False, held, None)
            if current is not None and (
                current.precedence >= manifest.precedence
                or (expect is not None and current.precedence != expect)
            ):
                return ReplicaWrite(False, current.version, None)
            # A damaged stored replica reads as none: it is just replaced.
            found = (await self._read(manifest.name))[0] if current is not None else None
            replaced = _manifest_or_none(found)
            marks = self._marks.get(manifest.name)
            if condition is not None:
                self._mark(manifest.name, _Mark(manifest.precedence, replaced, self._clock()))
            try:
                await self._keep(manifest)
            except Exception:  # not kept: its mark must not mark a later copy of it
                if marks is None:
                    self._marks.pop(manifest.name, None)
                else:
                    self._marks[manifest.name] = marks
                raise
            return ReplicaWrite(True, manifest.version, replaced)

    def _mark(self, name: str, mark: _Mark) -> None:
        """Add ``mark`` to ``name``'s, before the index changes (so that no read meets the
        write kept and unmarked), and prune the others (``_pruned``)."""
        self._marks[name] = self._pruned((mark, *self._marks.get(name, ())), mark.precedence)

    def _pruned(
        self, marks: tuple[_Mark, ...], held: tuple[Version, int] | None
    ) -> tuple[_Mark, ...]:
        """``marks`` less those nothing can put back any more: older than ``MARKS_KEPT``
        and neither the held write's (``held``) nor one a kept mark replaced (a retraction
        of it, overdue or not, puts that back). An unconditional write over a marked one is
        retracted, if ever, within its own calls: well inside ``MARKS_KEPT``."""
        now = self._clock()
        kept = {m.precedence for m in marks if now - m.kept_at < MARKS_KEPT}
        if held is not None:
            kept.add(held)
        by_precedence = {m.precedence: m for m in marks}
        reach = list(kept)
        while reach:  # what the kept ones replaced, transitively
            mark = by_precedence.get(reach.pop())
            if mark is not None and mark.replaced is not None:
                under = mark.replaced.precedence
                if under not in kept:
                    kept.add(under)
                    reach.append(under)
        return tuple(m for m in marks if m.precedence in kept)

    async def _keep(self, manifest: Manifest) -> None:
        """Append ``manifest`` as its name's replica, marked in its record when it is a
        write awaiting its verdict (so that a restart does not forget it)."""
        name = manifest.name
        marks = self._marks.get(name, ())
        mark = _marked(marks, manifest.precedence)
        if mark is None:
            record = LogRecord(KEEP, name, manifest.to_bytes())
        else:  # what its retraction puts back (never a write whose own came meanwhile)
            restore = _restorable(marks, mark.replaced)
            replaced = None if restore is None else restore.to_bytes()
            record = LogRecord(KEEP, name, manifest.to_bytes(), True, replaced)
        await self._commit(frame(record), lambda where: self._kept(manifest, where))

    async def retract(
        self, name: str, precedence: tuple[Version, int], restore: Manifest | None = None
    ) -> bool:
        """Take back this replica of ``name`` if it is exactly ``precedence`` (a failed
        write's): put ``restore`` back in its place (what that write replaced here; for a
        provisional replica, what it replaced by default; never a write whose own
        retraction came meanwhile, but what that one replaced), or drop it when there is
        nothing to restore. True if it was taken back; a provisional write held under
        another is marked retracted instead. Raises InsufficientStorage or OSError."""
        return await asyncio.shield(self._retract(name, precedence, restore))

    async def _retract(
        self, name: str, precedence: tuple[Version, int], restore: Manifest | None
    ) -> bool:
        async with self._locks.hold(name):
            current = self._index.get(name)
            marks = self._marks.get(name, ())
            mark = _marked(marks, precedence)
            if current is None or current.precedence != precedence:
                if mark is not None:  # its verdict, held under another write: kept for it
                    self._marks[name] = tuple(
                        replace(m, retracted=True) if m is mark else m for m in marks
                    )
                    # (Should that append fail, the retraction fails too, and the record
                    # still names this write until the name's next record.)
                    await self._record_restorable(name)
                return False
            if mark is not None:  # what it replaced here, as its record says after a restart
                restore = mark.replaced
            decided = [precedence]
            while restore is not None:  # never a write retracted meanwhile: what it replaced
                under = _marked(marks, restore.precedence)
                if under is None or not under.retracted:
                    break
                decided.append(under.precedence)
                restore = under.replaced
            # Its mark goes only once the index changed: until then it is still held. What
            # goes back is provisional if its own mark is still there (a write on its etag).
            if restore is not None:
                await self._keep(restore)
            else:
                removal = frame(LogRecord(REMOVE, name))
                await self._commit(removal, lambda at: self._dropped(name, at))
            for gone in decided:
                self._decided(name, gone)
            return True

    async def _record_restorable(self, name: str) -> None:
        """Append the held write of ``name`` again if it is marked: its record must name
        what its retraction would put back now that a write under it was retracted (the
        retracted mark lives in memory only)."""
        current = self._index.get(name)
        if current is None or _marked(self._marks.get(name, ()), current.precedence) is None:
            return
        if (held := await self._held(name, current.precedence)) is not None:
            await self._keep(held)

    async def _held(self, name: str, precedence: tuple[Version, int]) -> Manifest | None:
        """The whole manifest of ``name`` held here if it is ``precedence`` (under the
        name's lock: the index summary has no chunks), else None."""
        current = self._index.get(name)
        if current is None or current.precedence != precedence:
            return None
        found = (await self._read(name))[0]
        return found if isinstance(found, Manifest) and found.precedence == precedence else None

    async def confirm(self, name: str, precedence: tuple[Version, int]) -> None:
        """The conditional write ``precedence`` of ``name`` kept here was committed: this
        replica is no longer provisional (reads may copy it to other replicas). Held here,
        its record is appended again without its mark, first in the next batch of writes
        (never synced on its own: a crash before it is durable brings the mark back, and a
        read decides the write again; a failed batch leaves it for the next). Queued under
        the name's lock, it precedes any later record of the name, and compaction carries
        it in place of the marked record."""
        await asyncio.shield(self._confirm(name, precedence))

    async def _confirm(self, name: str, precedence: tuple[Version, int]) -> None:
        async with self._locks.hold(name):
            marked = _marked(self._marks.get(name, ()), precedence) is not None
            self._decided(name, precedence)
            if not marked or (held := await self._held(name, precedence)) is None:
                return  # not held here, or never marked: its mark is in no record
            where = self._index.where(name)
            if where is None:  # cannot be: held under the name's lock, so indexed
                return
            unmarked = frame(LogRecord(KEEP, name, held.to_bytes()))
            self._riders[where] = _Append(unmarked, self._mover(name, where), rider=where)

    def _decided(self, name: str, precedence: tuple[Version, int]) -> None:
        """Drop the mark of ``precedence``: its verdict came (and prune the others)."""
        current = self._index.get(name)
        held = None if current is None else current.precedence
        marks = self._pruned(_without(self._marks.get(name, ()), precedence), held)
        if marks:
            self._marks[name] = marks
        else:
            self._marks.pop(name, None)

    def list(
        self,
        prefix: str,
        start_after: str,
        limit: int,
        delimiter: str = "",
        base: str | None = None,
    ) -> tuple[list[Manifest], bool]:
        """Summaries of names with ``prefix`` after ``start_after``, tombstones included,
        at most ``limit``, and whether more remain; with a ``delimiter``, rolled up into
        folders below ``base`` (``node.model.folders.replica_page`` has the rules)."""
        return replica_page(
            self._index.names, self._index, prefix, start_after, limit, delimiter, base
        )

    # --- compaction --------------------------------------------------------------------

    def _due(self, segment: int | None) -> bool:
        """Whether ``segment`` (None: the active one) is dead enough to compact: at least
        ``compact_ratio`` of it and ``compact_bytes``. The active segment is closed then
        (the next batch starts a new one, ``ManifestLog.append``), so that a store whose
        writes replace records (packing, overwrites) gets the space back long before its
        segment fills (64 MiB: most of a small store's log)."""
        if segment is None:
            segment = self._log.active
        size = self._log.sizes.get(segment, 0)
        dead = size - self._live.get(segment, 0)
        return dead >= self._compact_bytes and dead >= self._compact_ratio * size

    def _worst_segment(self) -> int | None:
        """The closed segment most worth compacting, if one is due."""
        worst, ratio = None, 0.0
        for segment, size in list(self._log.sizes.items()):  # the writer thread adds some
            if segment == self._log.active or segment in self._uncompactable:
                continue
            dead = size - self._live.get(segment, 0)
            if self._due(segment) and dead / size > ratio:
                worst, ratio = segment, dead / size
        return worst

    def _unhinted(self) -> builtins.list[int]:
        return [n for n in self._log.unhinted() if n not in self._unhintable]

    def _consider_compaction(self) -> None:
        if self._compactor is not None or self._closing:
            return
        if self._worst_segment() is not None or self._unhinted():
            self._compactor = asyncio.ensure_future(self._compact_due())

    async def _compact_due(self) -> None:
        """Compact the segments due, then write the hint files closed segments lack."""
        try:
            while True:
                if (segment := self._worst_segment()) is not None:  # first: no hint for
                    await self.compact(segment)  # a segment about to go
                elif unhinted := self._unhinted():
                    await self._write_hint_file(unhinted[0])
                else:
                    break
        except Exception:  # the next commit tries again; a bug must not stop writes
            log.exception("manifest log compaction failed")
        finally:
            self._compactor = None

    async def compacted(self) -> None:
        """Wait until the compaction under way (if any) has nothing more due, and every
        closed segment has its hint file (where it can have one)."""
        while self._compactor is not None:
            await asyncio.wait({self._compactor})

    async def _write_hint_file(self, segment: int) -> None:
        """Write the hint file of closed ``segment`` from its records, in a worker thread
        (shielded: ``close`` waits for it rather than leaving it to write into the data
        directory after). A segment that cannot have one is not tried again."""
        self._hinting = asyncio.ensure_future(asyncio.to_thread(self._build_hints, segment))
        try:
            written = await asyncio.shield(self._hinting)
        except Exception:  # (_build_hints catches all: a bug must not loop either)
            log.exception("hint file of manifest log segment %d", segment)
            written = False
        if written:
            self._log.hinted(segment)
        else:
            self._unhintable.add(segment)

    def _build_hints(self, segment: int) -> bool:
        """(Blocking.) Whether the hint file of ``segment`` was written."""
        writer = None
        try:
            writer = self._log.hint_writer(segment)
            for event in self._log.rescan(segment):
                if isinstance(event, Damage):  # reported, and written off, at the next start
                    log.warning("manifest log segment %d is damaged: no hint file", segment)
                    writer.abandon()
                    return False
                where, record = event
                manifest = None
                if record.kind != REMOVE:
                    manifest = Manifest.from_bytes(record.manifest or b"")
                writer.add(_hint_of(where, record, manifest))
            return writer.commit()
        except Exception as exc:  # an aid only, never a reason to stop compacting
            log.warning("hint file of manifest log segment %d not written: %r", segment, exc)
            _abandoned(writer)
            return False

    async def compact(self, segment: int) -> None:
        """Append the live records of closed ``segment`` again, ``COMPACT_SLICE`` bytes of
        it per pass, then delete it (unless a current record there did not read)."""
        start: int | None = self._log.first_record(segment)
        while start is not None:
            records, start = await asyncio.to_thread(
                self._log.records, segment, start, COMPACT_SLICE
            )
            await self._carry(records, oldest=segment == min(self._log.sizes))
        if self._live.get(segment, 0) > 0:  # current records there did not read (bit rot)
            await self._write_off_unread(segment)
        if self._live.get(segment, 0) > 0:  # (a bug): never delete a current record
            log.error(
                "manifest log segment %d not compacted: it still holds current records", segment
            )
            self._uncompactable.add(segment)
            return
        await asyncio.to_thread(self._log.remove, segment)
        self._live.pop(segment, None)
        self.compacted_segments += 1
        log.info("compacted manifest log segment %d", segment)

    async def _write_off_unread(self, segment: int) -> None:
        """Write off the names whose current record in ``segment`` compaction could not
        read (bit rot since a hint file spared a start from reading it): removed here, as
        a read of a damaged replica does, so that deleting the segment cannot let an older
        record of the name back (read repair puts the replica back). Looks through every
        name: rare."""
        names = [n for n in list(self._index) if _in(self._index.where(n), segment)]
        names += [n for n, where in list(self._removed.items()) if where.segment == segment]
        log.error(
            "manifest log segment %d: current records of %d names fail their checksum: "
            "written off here, left to read repair: %s",
            segment,
            len(names),
            names[:20],
        )
        for name in sorted(set(names)):
            async with self._locks.hold(name):
                removal = frame(LogRecord(REMOVE, name))
                if _in(self._index.where(name), segment):
                    await self._commit(removal, functools.partial(self._dropped, name))
                elif _in(old := self._removed.get(name), segment):
                    assert old is not None
                    await self._commit(removal, self._mover(name, old))

    async def _carry(
        self, records: builtins.list[tuple[Location, LogRecord]], oldest: bool
    ) -> None:
        """Append again those of ``records`` still current, under their names' locks."""

        def current(where: Location, record: LogRecord) -> bool:
            if record.kind == KEEP:
                return self._index.where(record.name) == where
            return self._removed.get(record.name) == where

        wanted = sorted({r.name for where, r in records if current(where, r)})
        async with contextlib.AsyncExitStack() as held:
            for name in wanted:  # in name order: compaction is the only multi-lock holder
                await held.enter_async_context(self._locks.hold(name))
            commits = []
            for where, record in records:
                if not current(where, record):
                    continue
                if record.kind == REMOVE and oldest:  # nothing older left to remove
                    del self._removed[record.name]
                    self._count(where, -1)
                    continue
                # A confirmation riding on this record is carried in its place: the marked
                # copy would follow the rider and win the next replay. The rider still goes
                # (waiting, or in the batch being written; should this copy's batch fail, it
                # is what stays): whichever lands second is a dead copy of the same record.
                rider = self._riders.get(where)
                if rider is None:
                    rider = self._riding.get(where)
                data = frame(record) if rider is None else rider.frame
                commits.append(self._commit(data, self._mover(record.name, where)))
            await asyncio.gather(*commits)

    def _mover(self, name: str, old: Location) -> Callable[[Location], None]:
        return lambda where: self._moved(name, old, where)


def _in(where: Location | None, segment: int) -> bool:
    return where is not None and where.segment == segment


def _abandoned(writer: HintWriter | None) -> None:
    """Abandon ``writer``'s file, if any."""
    if writer is not None:
        writer.abandon()


def _hint_of(where: Location, record: LogRecord, manifest: Manifest | None) -> Hint:
    """The hint of ``record`` at ``where`` (``manifest``: a KEEP's, decoded)."""
    if manifest is None:
        return Hint(record.kind, record.name, where.offset, where.length)
    flags, summary = portable(manifest)
    repair = (
        (manifest.layout.k, manifest.layout.m, len(manifest.chunks)) if manifest.chunked else None
    )
    return Hint(
        KEEP, record.name, where.offset, where.length, record.provisional, flags, summary, repair
    )


def _read_and_decode(manifest_log: ManifestLog, where: Location, name: str) -> Manifest:
    return _decode(manifest_log.read(where), where, name)


def _decode(record: LogRecord, where: Location, name: str) -> Manifest:
    if record.kind != KEEP or record.name != name:
        raise CorruptData(f"the record at {where} is not {name!r}'s manifest")
    manifest = Manifest.from_bytes(record.manifest or b"", keep=True)  # (answered as read)
    if manifest.name != name:
        raise CorruptData(f"the record at {where} holds {manifest.name!r}")
    return manifest


def _manifest_or_none(found: Manifest | Location | None) -> Manifest | None:
    return found if isinstance(found, Manifest) else None


def _storage_error(exc: OSError) -> Exception:
    if exc.errno == errno.ENOSPC:
        return InsufficientStorage(f"no room left for manifests: {exc}")
    return OSError(exc.errno, f"manifest log write failed: {exc.strerror}")
