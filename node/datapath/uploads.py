"""Multipart uploads (S3's), carried out over files and records: no byte copied at Complete.

An upload's record and parts are manifests of reserved names (``node.model.multipart``): the
record is a cluster record (inline, no chunks), each part attempt an ordinary file stored by
the coordinator under a name of its own. Complete reads the parts' manifests
(``READING_AT_ONCE`` at a time, keeping only a ``Segment`` of each), checks them against
the client's list as S3 does, commits the object's segmented manifest and marks the record
completed; attempts left out get tombstones. The parts of a completed object are retired
with it (``node.datapath.replicas``: a commit that replaces a segmented manifest retires its
segments).

The record's state (``node.model.multipart``) changes only by a commit conditional on the
record version the change was decided on (If-Match its etag, checked by every replica
under its lock: ``ManifestReplicas.commit``), so of an Abort and a Complete, or of two
Completes, exactly one takes an open upload. In order:

* Complete moves ``open -> completing`` (naming the object version it will commit), then
  reads and checks the parts, commits the object, and moves ``completing -> completed``.
  A refusal (InvalidPart, PreconditionFailed...) moves it back to open. An Abort or another
  Complete that finds it completing is refused (``UploadBusy``: S3's OperationAborted),
  unless the completing is older than ``COMPLETING_LEASE``: then its Complete is dead
  (a Complete gives up before it commits past half the lease), and whoever finds it
  recovers it (``_recover``): completed if the object is the version it named, else
  back to open. Nothing is dropped while a Complete may still commit.
* Abort moves ``open -> aborted``, then tombstones the parts; the aborted record is kept for
  ``multipart_grace`` and, as completed ones, dropped by the collection after a last sweep
  of the parts, which takes whatever an UploadPart stored after the Abort's pass and could
  not drop itself (its peer stopped).
* UploadPart stores a new attempt, then reads the record again: an attempt stored while the
  upload was aborted, or completed without it, is tombstoned at once (NoSuchUpload).
* ``collect_stale`` (anti-entropy's pass, by the record's primary replica) aborts uploads
  still open after ``multipart_grace``, recovers stale completing ones, and drops completed
  and aborted records that old.

Abort, the collection and Complete never drop a part that the object's current version
names (``_drop_parts``), whatever the record says.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

import msgspec

from node.config import PeerConfig
from node.datapath.coordinator import Coordinator
from node.datapath.replicas import ManifestReplicas
from node.errors import (
    EntityTooSmall,
    InvalidPart,
    InvalidPartOrder,
    PreconditionFailed,
    RingstoreError,
    TooLarge,
    Unavailable,
    UploadBusy,
    UploadNotFound,
)
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.multipart import (
    ABORTED,
    COMPLETED,
    COMPLETING,
    IN_PROGRESS,
    MAX_OBJECT_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    OPEN,
    UPLOAD_RECORDS,
    Segment,
    UploadPage,
    UploadRecord,
    after_every_upload_under,
    after_part,
    after_uploads_of,
    multipart_etag,
    new_attempt_id,
    new_upload_id,
    part_name,
    part_number,
    part_prefix,
    upload_id_of,
    upload_record_name,
    upload_records,
)
from node.model.names import validate_stored_name
from node.model.preconditions import EntityTag, Preconditions, TagList
from node.model.representation import Representation
from node.model.version import HybridClock, Version

log = logging.getLogger(__name__)

READING_AT_ONCE = 32  # part manifests read at a time by Complete, tombstones written by Abort
LIST_PAGE = 1000  # names per listing page while walking an upload's parts
MAX_WALKED = 10_000  # upload records one ListMultipartUploads walks at most (then truncated)
# Seconds a Complete holds its upload (completing) before another request may take the
# record back: a Complete commits within half of it or gives up, and one commit is bounded
# by the peer timeouts, far below.
COMPLETING_LEASE = 300.0
CHANGE_TRIES = 4  # looks at a record that changes under a request before it is refused
_RECORD_LAYOUT = Layout(0, 1, 0)  # records have no chunks
_GONE = (
    "The specified upload does not exist. The upload ID may be invalid, or the upload may "
    "have been aborted or completed."
)
_BUSY = (
    "A Complete of this upload is in progress; try again once it is done (the upload is "
    "then completed, or open again if it was refused)."
)


def _unchanged(record: Manifest) -> Preconditions:
    """The condition that commits a record's change only over the version it was decided on
    (every record version's etag is its own version)."""
    return Preconditions(if_match=TagList(False, (EntityTag(record.etag),)))


@dataclass(frozen=True)
class Upload:
    """A live upload: its id and record."""

    upload_id: str
    record: UploadRecord


@dataclass(frozen=True)
class UploadListing:
    """One page of ListMultipartUploads (``UploadPage``'s entries) and, when truncated,
    where the next page starts (S3's NextKeyMarker and NextUploadIdMarker)."""

    entries: list[tuple[str, Upload | None]]
    truncated: bool
    next_key: str = ""
    next_upload_id: str = ""


def _key(bucket: str, name: str) -> str:
    """An object's key: its name less the bucket."""
    return name[len(bucket) + 1 :]


class Uploads:
    """Create, fill, complete, abort and list multipart uploads; one per peer."""

    def __init__(
        self,
        config: PeerConfig,
        coordinator: Coordinator,
        replicas: ManifestReplicas,
        clock: HybridClock,
    ) -> None:
        self._config = config
        self._coordinator = coordinator
        self._replicas = replicas
        self._clock = clock
        self.completing_lease = COMPLETING_LEASE
        self.collected = 0  # stale uploads aborted by this peer

    def __repr__(self) -> str:
        return f"Uploads(grace={self._config.multipart_grace}s, collected={self.collected})"

    async def create(self, bucket: str, name: str, content_type: str, given: Representation) -> str:
        """Start an upload of object ``name`` (of ``bucket``); returns its id. Raises
        Unavailable below the write quorum."""
        version = self._clock.now()
        upload_id = new_upload_id(version.wall_ms)
        record = UploadRecord.of(bucket, name, version.wall_ms, content_type, given)
        record_name = upload_record_name(bucket, _key(bucket, name), upload_id)
        validate_stored_name(record_name)  # (a key near the name limit, with spaces, may not fit)
        manifest = Manifest(
            record_name,
            version,
            _RECORD_LAYOUT,
            str(version),
            inline=record.to_bytes(),
        )
        await self._replicas.commit(manifest)
        log.info("multipart upload %s of %r started", upload_id, name)
        return upload_id

    async def _read(
        self, bucket: str, upload_id: str, name: str
    ) -> tuple[Manifest, UploadRecord] | None:
        """The record of ``upload_id`` of object ``name`` read from a quorum, with its
        manifest (whose etag the next change is conditional on); None if there is none.
        Raises Unavailable."""
        record_name = upload_record_name(bucket, _key(bucket, name), upload_id)
        manifest = await self._replicas.read(record_name)
        if manifest is None or manifest.deleted:
            return None
        try:
            return manifest, UploadRecord.from_bytes(manifest.inline)
        except ValueError as exc:
            log.error("unreadable upload record %r: %s", manifest.name, exc)
            return None

    async def _found(self, bucket: str, upload_id: str, name: str) -> tuple[Manifest, UploadRecord]:
        """``_read``, for object ``name``; raises UploadNotFound (none, or another
        object's), Unavailable."""
        found = await self._read(bucket, upload_id, name)
        if found is None or found[1].name != name:
            raise UploadNotFound(_GONE)
        return found

    async def _change(self, current: Manifest, record: UploadRecord) -> Manifest:
        """Commit ``record`` over the record version ``current``, only if that is still the
        current one; returns the new version. Raises PreconditionFailed (it changed since),
        Unavailable."""
        version = self._clock.now()
        changed = Manifest(
            current.name, version, _RECORD_LAYOUT, str(version), inline=record.to_bytes()
        )
        await self._replicas.commit(changed, condition=_unchanged(current))
        return changed

    def _stale(self, record: UploadRecord) -> bool:
        """Whether a completing record's Complete is dead: held past the lease."""
        return time.time() * 1000 - record.since_ms > self.completing_lease * 1000

    async def record(self, bucket: str, upload_id: str, name: str) -> UploadRecord:
        """The record of upload ``upload_id`` of object ``name`` in progress (open, or held
        by a Complete); raises UploadNotFound (none, of another object, completed or
        aborted), Unavailable."""
        _, record = await self._found(bucket, upload_id, name)
        if record.state not in IN_PROGRESS:
            raise UploadNotFound(_GONE)
        return record

    async def put_part(
        self,
        bucket: str,
        upload_id: str,
        name: str,
        number: int,
        body: AsyncIterable[bytes],
        size: int | None,
    ) -> Manifest:
        """Store an attempt at part ``number`` (under a name of its own: it becomes the
        part of that number, as the newest attempt) and return its manifest.

        Raises UploadNotFound, also when the upload was aborted or completed without it
        while it was stored (it is then tombstoned), and what ``Coordinator.put`` raises.
        """
        await self.record(bucket, upload_id, name)
        stored_name = part_name(upload_id, number, new_attempt_id())
        part = await self._coordinator.put(stored_name, body, size, "application/octet-stream")
        # Read after the commit: an Abort or a completed mark this read misses comes after
        # the commit, so that request's own pass over the parts finds this attempt.
        found = await self._read(bucket, upload_id, name)
        if found is not None and found[1].name == name and found[1].state in IN_PROGRESS:
            return part
        if await self._named(name, stored_name):
            return part  # a Complete that read it after its commit chose it
        await self._tombstone(stored_name)
        log.info("part %r stored after its upload ended: dropped", stored_name)
        raise UploadNotFound(_GONE)

    async def _named(self, object_name: str, stored_name: str) -> bool:
        """Whether the current version of ``object_name`` (a quorum's) names that part."""
        current = await self._replicas.read(object_name)
        if current is None or current.deleted:
            return False
        return any(segment.name == stored_name for segment in current.segments)

    async def complete(
        self,
        bucket: str,
        upload_id: str,
        name: str,
        parts: Sequence[tuple[int, str]],
        condition: Preconditions | None = None,
    ) -> Manifest:
        """Commit object ``name`` from the ``(part number, etag)`` pairs given (S3's
        CompleteMultipartUpload) and end the upload; returns the object's manifest.

        Raises InvalidPartOrder (numbers not ascending), InvalidPart (a part not stored,
        or of another etag), EntityTooSmall (a part but the last under 5 MiB), TooLarge
        (past 5 TiB or ``--max-file-size``), PreconditionFailed: nothing is changed then,
        and the upload can be completed again. UploadNotFound (aborted, or completed and its
        object replaced since), UploadBusy (another Complete holds it), Unavailable (the
        upload may stay held until the lease, if the object's commit was under way).
        """
        numbers = [number for number, _ in parts]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InvalidPartOrder("The list of parts was not in ascending order.")
        for _ in range(CHANGE_TRIES):
            current, record = await self._found(bucket, upload_id, name)
            if record.state == COMPLETED:
                return await self._completed(upload_id, record)  # a Complete sent again
            if record.state == ABORTED:
                raise UploadNotFound(_GONE)
            if record.state == COMPLETING:
                await self._take_back(upload_id, current, record)
                continue
            planned = self._clock.now()
            holding = msgspec.structs.replace(
                record, state=COMPLETING, object_version=str(planned), since_ms=planned.wall_ms
            )
            try:
                held = await self._change(current, holding)
            except PreconditionFailed:
                continue  # an Abort or another Complete changed it first: look again
            return await self._commit(upload_id, held, holding, parts, planned, condition)
        raise UploadBusy(_BUSY)

    async def _completed(self, upload_id: str, record: UploadRecord) -> Manifest:
        """The answer to a Complete of an upload already completed: its object, while it is
        the version that Complete made; else UploadNotFound."""
        current = await self._replicas.read(record.name)
        if current is None or current.deleted or str(current.version) != record.object_version:
            raise UploadNotFound(f"upload {upload_id} was completed, and its object replaced")
        return current

    async def _commit(
        self,
        upload_id: str,
        held: Manifest,
        record: UploadRecord,
        parts: Sequence[tuple[int, str]],
        planned: Version,
        condition: Preconditions | None,
    ) -> Manifest:
        """Complete's work once it holds the record (``held``, completing)."""
        name = record.name
        try:
            segments = await self._segments(upload_id, parts)
            size = sum(segment.size for segment in segments)
            limit = min(MAX_OBJECT_SIZE, self._config.max_file_size)
            if size > limit:
                raise TooLarge(f"an object may be at most {limit} bytes; this is {size}")
            if time.time() * 1000 - record.since_ms > self.completing_lease * 500:
                raise Unavailable(f"upload {upload_id}: reading its parts outlasted half the lease")
        except RingstoreError as refused:
            await self._release(upload_id, held, record, refused)
            raise
        etag = multipart_etag(segment.etag for segment in segments)
        try:
            manifest = await self._coordinator.put_segmented(
                name,
                tuple(segments),
                etag,
                record.content_type,
                condition,
                representation=record.given,
                version=planned,
            )
        except PreconditionFailed as refused:
            await self._release(upload_id, held, record, refused)
            raise
        # Unavailable: the commit may have reached a replica, so the record stays held
        # until the lease, when whoever finds it decides by reading the object (_recover).
        done = msgspec.structs.replace(record, state=COMPLETED, since_ms=int(time.time() * 1000))
        try:
            await self._change(held, done)
        except RingstoreError as exc:  # the object is committed: the client has it
            log.warning(
                "multipart upload %s committed %r but is not marked completed (%s): taken "
                "back after the lease",
                upload_id,
                name,
                exc,
            )
            return manifest
        dropped = await self._drop_parts(upload_id, name, keep={s.name for s in segments})
        log.info(
            "multipart upload %s completed %r: %d parts, %d bytes (%d parts dropped)",
            upload_id,
            name,
            len(segments),
            size,
            dropped,
        )
        return manifest

    async def _release(
        self, upload_id: str, held: Manifest, record: UploadRecord, reason: Exception
    ) -> None:
        """Put a record a refused Complete held back to open (its object was not
        committed); if that fails, the lease does it later."""
        opened = msgspec.structs.replace(record, state=OPEN, object_version="", since_ms=0)
        try:
            await self._change(held, opened)
        except RingstoreError as exc:
            log.warning("multipart upload %s stays held until the lease: %s", upload_id, exc)
        else:
            log.info("multipart upload %s not completed, open again: %s", upload_id, reason)

    async def _take_back(self, upload_id: str, current: Manifest, record: UploadRecord) -> None:
        """A request found the upload completing: UploadBusy while its Complete may still
        commit, else recover it (``_recover``) for the request to look again."""
        if not self._stale(record):
            raise UploadBusy(_BUSY)
        with contextlib.suppress(PreconditionFailed):  # (someone else took it back first)
            await self._recover(upload_id, current, record)

    async def _recover(self, upload_id: str, current: Manifest, record: UploadRecord) -> None:
        """Finish or roll back a completing record whose Complete is dead (past the lease,
        so it commits nothing any more): completed if the object is the version it named
        (parts it does not name dropped), else open again. Raises PreconditionFailed (the
        record changed meanwhile), Unavailable."""
        found = await self._replicas.read(record.name)
        if found is not None and not found.deleted and str(found.version) == record.object_version:
            done = msgspec.structs.replace(
                record, state=COMPLETED, since_ms=int(time.time() * 1000)
            )
            await self._change(current, done)
            dropped = await self._drop_parts(upload_id, record.name)
            log.info(
                "multipart upload %s found committed after its Complete died: marked "
                "completed (%d parts dropped)",
                upload_id,
                dropped,
            )
            return
        opened = msgspec.structs.replace(record, state=OPEN, object_version="", since_ms=0)
        await self._change(current, opened)
        log.info("multipart upload %s: its Complete died before its commit, open again", upload_id)

    async def _newest(self, upload_id: str, after: int, limit: int) -> tuple[list[Manifest], bool]:
        """``(parts, truncated)``: the newest attempt (highest version) at each of at most
        ``limit`` part numbers after ``after``, in order (listing summaries)."""
        newest: dict[int, Manifest] = {}
        start = after_part(upload_id, after)
        while True:
            page, start = await self._coordinator.list(part_prefix(upload_id), start, LIST_PAGE)
            for attempt in page:
                number = part_number(attempt.name)
                known = newest.get(number)
                if known is None or known.precedence < attempt.precedence:
                    newest[number] = attempt
            if len(newest) > limit or not start:
                break
        numbers = sorted(newest)
        return [newest[number] for number in numbers[:limit]], len(numbers) > limit

    async def _segments(self, upload_id: str, parts: Sequence[tuple[int, str]]) -> list[Segment]:
        """The segments of the parts listed: each number's newest attempt, read from a
        quorum, if it has the etag given (quotes aside). Raises InvalidPart,
        EntityTooSmall, Unavailable."""
        stored, _ = await self._newest(upload_id, 0, MAX_PARTS)
        by_number = {part_number(attempt.name): attempt.name for attempt in stored}
        segments: list[Segment] = []
        for start in range(0, len(parts), READING_AT_ONCE):
            batch = parts[start : start + READING_AT_ONCE]
            read = await asyncio.gather(*(self._segment(by_number, *given) for given in batch))
            segments.extend(read)
        for number, segment in zip((n for n, _ in parts[:-1]), segments[:-1], strict=False):
            if segment.size < MIN_PART_SIZE:
                raise EntityTooSmall(
                    f"Your proposed upload is smaller than the minimum allowed object size: "
                    f"part {number} has {segment.size} bytes, every part but the last needs "
                    f"{MIN_PART_SIZE}."
                )
        return segments

    async def _segment(self, stored: dict[int, str], number: int, etag: str) -> Segment:
        """The segment of part ``number`` (its newest attempt: ``stored``) if it is stored
        with ``etag``; raises InvalidPart."""
        stored_name = stored.get(number)
        part = None if stored_name is None else await self._replicas.read(stored_name)
        if part is None or part.deleted or part.etag != etag.strip('"'):
            raise InvalidPart(
                f"One or more of the specified parts could not be found or its entity tag "
                f"did not match: part {number}."
            )
        return Segment(part.name, part.version, part.size, part.etag)

    async def abort(self, bucket: str, upload_id: str, name: str) -> int:
        """End an upload (``open -> aborted``) and tombstone its parts (those the object
        ``name`` does not name: ``_drop_parts``); returns how many parts. Raises
        UploadNotFound (none, completed, or aborted already: its parts are then swept
        again, as S3 lets an Abort be repeated to free what parts arrived late),
        UploadBusy (a Complete holds it), Unavailable (the parts left are dropped by an
        Abort sent again, or by the collection)."""
        for _ in range(CHANGE_TRIES):
            current, record = await self._found(bucket, upload_id, name)
            if record.state == ABORTED:
                await self._drop_parts(upload_id, name)
                raise UploadNotFound(_GONE)
            if record.state == COMPLETED:
                raise UploadNotFound(_GONE)
            if record.state == COMPLETING:
                await self._take_back(upload_id, current, record)
                continue
            aborted = msgspec.structs.replace(
                record, state=ABORTED, since_ms=int(time.time() * 1000)
            )
            try:
                await self._change(current, aborted)
            except PreconditionFailed:
                continue
            dropped = await self._drop_parts(upload_id, name)
            log.info(
                "multipart upload %s of %r aborted: %d parts dropped", upload_id, name, dropped
            )
            return dropped
        raise UploadBusy(_BUSY)

    async def parts(
        self, bucket: str, upload_id: str, name: str, after: int, limit: int
    ) -> tuple[UploadRecord, list[Manifest], bool]:
        """``(record, parts, truncated)``: at most ``limit`` parts numbered after ``after``
        (each its newest attempt), in order (manifests without chunks). Raises
        UploadNotFound, Unavailable."""
        record = await self.record(bucket, upload_id, name)
        found, truncated = await self._newest(upload_id, after, limit)
        return record, found, truncated

    async def listing(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        key_marker: str,
        upload_id_marker: str,
        limit: int,
    ) -> UploadListing:
        """One page of ``bucket``'s uploads in progress (ListMultipartUploads): keys with
        ``prefix`` after ``key_marker`` (and the uploads of ``key_marker`` itself after
        ``upload_id_marker``), by key then upload id (start time), at most ``limit``
        entries, rolled up at ``delimiter`` (``UploadPage``).

        Records sort so (``node.model.multipart``), so the walk starts at the markers and
        skips the rest of a rolled-up prefix; completed and aborted records on the way are
        passed over. It walks at most ``MAX_WALKED`` records: past that the page is
        truncated at the last one walked, so the client's next request goes on from there
        and nothing is skipped. Raises Unavailable."""
        page: UploadPage[Upload] = UploadPage(prefix, delimiter, key_marker, limit)
        if key_marker and upload_id_marker:
            cursor = upload_record_name(bucket, key_marker, upload_id_marker)
        elif key_marker:
            cursor = after_uploads_of(bucket, key_marker)
        else:
            cursor = ""
        scope = upload_records(bucket, prefix)
        walked = 0
        while True:
            found, following = await self._coordinator.list(scope, cursor, LIST_PAGE)
            skip_to = ""
            for manifest in found:
                walked += 1
                try:
                    record = UploadRecord.from_bytes(manifest.inline)
                except ValueError as exc:
                    log.error("unreadable upload record %r: %s", manifest.name, exc)
                    continue
                key, upload_id = _key(bucket, record.name), upload_id_of(manifest.name)
                if record.state in IN_PROGRESS:
                    common = page.feed(key, Upload(upload_id, record))
                    if page.truncated:
                        last, shown = page.entries[-1] if page.entries else ("", None)
                        next_id = shown.upload_id if shown is not None else ""
                        return UploadListing(page.entries, True, last, next_id)
                    if common is not None:
                        skip_to = after_every_upload_under(bucket, common)
                if walked >= MAX_WALKED:
                    return UploadListing(page.entries, True, key, upload_id)
                if skip_to:
                    break
            if not skip_to and not following:
                return UploadListing(page.entries, False)
            cursor = skip_to or following

    async def collect_stale(self, record: Manifest) -> bool:
        """Act on the upload of ``record`` (an upload record's manifest, this peer's
        replica) if its last change is over ``multipart_grace`` old; True if it did: abort
        it if open, recover it if completing past the lease (its Complete is dead), drop it if
        completed or aborted, after a last sweep of its parts (which takes an attempt an
        UploadPart stored after an Abort's pass and could not drop itself). What is decided
        on is the record read from a quorum (this replica may have missed a change), and
        parts the object names are never dropped (``_drop_parts``). Raises Unavailable."""
        if record.deleted or not record.name.startswith(UPLOAD_RECORDS):
            return False
        if time.time() - record.version.wall_ms / 1000 < self._config.multipart_grace:
            return False
        current = await self._replicas.read(record.name)
        if current is None or current.deleted:
            return False
        age = time.time() - current.version.wall_ms / 1000
        if age < self._config.multipart_grace:
            return False
        upload_id = upload_id_of(record.name)
        try:
            upload = UploadRecord.from_bytes(current.inline)
        except ValueError as exc:
            log.error("unreadable upload record %r: %s", record.name, exc)
            return False
        try:
            if upload.state == OPEN:
                aborted = msgspec.structs.replace(
                    upload, state=ABORTED, since_ms=int(time.time() * 1000)
                )
                await self._change(current, aborted)
                dropped = await self._drop_parts(upload_id, upload.name)
                self.collected += 1
                log.info(
                    "multipart upload %s collected after %.0f s unfinished: %d parts dropped",
                    upload_id,
                    age,
                    dropped,
                )
                return True
            if upload.state == COMPLETING:
                if not self._stale(upload):  # (a --multipart-grace below the lease)
                    return False
                await self._recover(upload_id, current, upload)
                return True
            dropped = await self._drop_parts(upload_id, upload.name)
            tombstone = Manifest(record.name, self._clock.now(), _RECORD_LAYOUT, deleted=True)
            await self._replicas.commit(tombstone, condition=_unchanged(current))
        except PreconditionFailed:
            return False  # changed meanwhile: a later pass looks again
        log.info(
            "record of %s multipart upload %s dropped (%d leftover parts)",
            upload.state,
            upload_id,
            dropped,
        )
        return True

    async def _drop_parts(
        self, upload_id: str, object_name: str, keep: set[str] | frozenset[str] = frozenset()
    ) -> int:
        """Tombstone every stored attempt of ``upload_id`` that is not in ``keep`` and that
        the current version of ``object_name`` (read from a quorum first) does not name;
        returns how many. Whatever state the upload's record is in (a Complete that committed
        its object but failed before its record, a stale record replica), a part a
        committed object reads is never dropped by its upload."""
        current = await self._replicas.read(object_name)
        if current is not None and not current.deleted:
            keep = set(keep) | {segment.name for segment in current.segments}
        dropped = 0
        after = ""
        while True:
            page, after = await self._coordinator.list(part_prefix(upload_id), after, LIST_PAGE)
            doomed = [part.name for part in page if part.name not in keep]
            for start in range(0, len(doomed), READING_AT_ONCE):
                batch = doomed[start : start + READING_AT_ONCE]
                await asyncio.gather(*(self._tombstone(stored) for stored in batch))
            dropped += len(doomed)
            if not after:
                return dropped

    async def _tombstone(self, name: str) -> None:
        """Commit a tombstone of ``name`` (its chunks are retired by the commit)."""
        tombstone = Manifest(name, self._clock.now(), _RECORD_LAYOUT, deleted=True)
        await self._replicas.commit(tombstone)
