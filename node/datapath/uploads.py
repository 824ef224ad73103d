"""Multipart uploads (S3's), carried out over files and records: no byte copied at Complete.

An upload's record and parts are manifests of reserved names (``node.model.multipart``): the
record is a cluster record (inline, no chunks), each part an ordinary file stored by the
coordinator. Complete reads the parts' manifests (``READING_AT_ONCE`` at a time, keeping
only a ``Segment`` of each), checks them against the client's list as S3 does, commits the
object's segmented manifest and marks the record completed with the object's version (a
Complete sent again, its answer lost, is answered from it: S3 answers such retries); parts
left out of the list get tombstones. Abort tombstones the parts, then the record (a failed
Abort can be sent again). Neither, nor the collection, ever drops a part that the object's
current version names, whatever the record says (``_drop_parts``). The
parts of a completed object are retired with it (``node.datapath.replicas``: a commit that
replaces a segmented manifest retires its segments). An upload neither completed nor aborted
after ``multipart_grace`` is aborted by the primary replica of its record
(``collect_stale``, called from anti-entropy's pass), which also drops completed records
after that grace. A part stored while its upload was being aborted is tombstoned as soon as
the store notices the record is gone (NoSuchUpload).
"""

from __future__ import annotations

import asyncio
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
    TooLarge,
    UploadNotFound,
)
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.multipart import (
    MAX_OBJECT_SIZE,
    MIN_PART_SIZE,
    UPLOAD_RECORDS,
    Segment,
    UploadRecord,
    multipart_etag,
    new_upload_id,
    part_name,
    part_prefix,
    upload_record_name,
)
from node.model.preconditions import Preconditions
from node.model.representation import Representation
from node.model.version import HybridClock

log = logging.getLogger(__name__)

READING_AT_ONCE = 32  # part manifests read at a time by Complete, tombstones written by Abort
LIST_PAGE = 1000  # names per listing page while walking an upload's parts
MAX_UPLOADS_LISTED = 10_000  # upload records of one bucket that a listing walks at most
_RECORD_LAYOUT = Layout(0, 1, 0)  # records have no chunks


@dataclass(frozen=True)
class Upload:
    """A live upload: its id and record."""

    upload_id: str
    record: UploadRecord


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
        self.collected = 0  # stale uploads aborted by this peer

    def __repr__(self) -> str:
        return f"Uploads(grace={self._config.multipart_grace}s, collected={self.collected})"

    async def create(self, bucket: str, name: str, content_type: str, given: Representation) -> str:
        """Start an upload of object ``name`` (of ``bucket``); returns its id. Raises
        Unavailable below the write quorum."""
        upload_id = new_upload_id()
        version = self._clock.now()
        record = UploadRecord.of(bucket, name, version.wall_ms, content_type, given)
        manifest = Manifest(
            upload_record_name(bucket, upload_id), version, _RECORD_LAYOUT, inline=record.to_bytes()
        )
        await self._replicas.commit(manifest)
        log.info("multipart upload %s of %r started", upload_id, name)
        return upload_id

    async def record(
        self, bucket: str, upload_id: str, name: str, completed: bool = False
    ) -> UploadRecord:
        """The record of upload ``upload_id`` of object ``name`` in progress (or also
        completed, with ``completed``); raises UploadNotFound (none, of another object, or
        completed), Unavailable."""
        manifest = await self._replicas.read(upload_record_name(bucket, upload_id))
        if manifest is not None and not manifest.deleted:
            try:
                record = UploadRecord.from_bytes(manifest.inline)
            except ValueError as exc:
                log.error("unreadable upload record %r: %s", manifest.name, exc)
            else:
                if record.name == name and (completed or not record.completed):
                    return record
        raise UploadNotFound(
            "The specified upload does not exist. The upload ID may be invalid, or the "
            "upload may have been aborted or completed."
        )

    async def put_part(
        self,
        bucket: str,
        upload_id: str,
        name: str,
        number: int,
        body: AsyncIterable[bytes],
        size: int | None,
    ) -> Manifest:
        """Store part ``number`` (replacing one of that number) and return its manifest.
        Raises UploadNotFound (also when the upload ends while the part is stored: the part
        is then tombstoned), and what ``Coordinator.put`` raises."""
        await self.record(bucket, upload_id, name)
        stored_name = part_name(upload_id, number)
        part = await self._coordinator.put(stored_name, body, size, "application/octet-stream")
        try:
            await self.record(bucket, upload_id, name)
        except UploadNotFound:
            await self._tombstone(stored_name)
            raise
        return part

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
        (past 5 TiB or ``--max-file-size``), UploadNotFound, and what the commit raises
        (PreconditionFailed, Unavailable): nothing is changed then, and the upload can be
        completed again.
        """
        record = await self.record(bucket, upload_id, name, completed=True)
        if record.completed:
            current = await self._replicas.read(name)
            if current is None or current.deleted or str(current.version) != record.completed:
                raise UploadNotFound(f"upload {upload_id} was completed, and its object replaced")
            return current  # a Complete sent again
        numbers = [number for number, _ in parts]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InvalidPartOrder("The list of parts was not in ascending order.")
        segments: list[Segment] = []
        for start in range(0, len(parts), READING_AT_ONCE):
            batch = parts[start : start + READING_AT_ONCE]
            read = await asyncio.gather(*(self._segment(upload_id, *given) for given in batch))
            segments.extend(read)
        for segment in segments[:-1]:
            if segment.size < MIN_PART_SIZE:
                raise EntityTooSmall(
                    f"Your proposed upload is smaller than the minimum allowed object size: "
                    f"part {segment.name.rpartition('/')[2].lstrip('0')} has {segment.size} "
                    f"bytes, every part but the last needs {MIN_PART_SIZE}."
                )
        size = sum(segment.size for segment in segments)
        limit = min(MAX_OBJECT_SIZE, self._config.max_file_size)
        if size > limit:
            raise TooLarge(f"an object may be at most {limit} bytes; this is {size}")
        etag = multipart_etag(segment.etag for segment in segments)
        manifest = await self._coordinator.put_segmented(
            name,
            tuple(segments),
            etag,
            record.content_type,
            condition,
            representation=record.given,
        )
        done = msgspec.structs.replace(record, completed=str(manifest.version))
        record_name = upload_record_name(bucket, upload_id)
        await self._replicas.commit(
            Manifest(record_name, self._clock.now(), _RECORD_LAYOUT, inline=done.to_bytes())
        )
        kept = frozenset(segment.name for segment in segments)
        dropped = await self._drop_parts(upload_id, name, keep=kept)
        log.info(
            "multipart upload %s completed %r: %d parts, %d bytes (%d parts dropped)",
            upload_id,
            name,
            len(segments),
            size,
            dropped,
        )
        return manifest

    async def _segment(self, upload_id: str, number: int, etag: str) -> Segment:
        """The segment of part ``number`` if it is stored with ``etag`` (quotes aside);
        raises InvalidPart."""
        stored_name = part_name(upload_id, number)
        part = await self._replicas.read(stored_name)
        if part is None or part.deleted or part.etag != etag.strip('"'):
            raise InvalidPart(
                f"One or more of the specified parts could not be found or its entity tag "
                f"did not match: part {number}."
            )
        return Segment(stored_name, part.version, part.size, part.etag)

    async def abort(self, bucket: str, upload_id: str, name: str) -> int:
        """End an upload and tombstone its parts (those the object ``name`` does not name:
        ``_drop_parts``), then its record; returns how many parts. Raises UploadNotFound,
        Unavailable (the record is then kept, and abort can be retried)."""
        await self.record(bucket, upload_id, name)
        dropped = await self._drop_parts(upload_id, name)
        await self._tombstone(upload_record_name(bucket, upload_id))
        log.info("multipart upload %s of %r aborted: %d parts dropped", upload_id, name, dropped)
        return dropped

    async def parts(
        self, bucket: str, upload_id: str, name: str, after: int, limit: int
    ) -> tuple[UploadRecord, list[Manifest], bool]:
        """``(record, parts, truncated)``: at most ``limit`` stored parts numbered after
        ``after``, in order (manifests without chunks). Raises UploadNotFound, Unavailable."""
        record = await self.record(bucket, upload_id, name)
        start = part_name(upload_id, after) if after else ""
        found, following = await self._coordinator.list(part_prefix(upload_id), start, limit)
        return record, found, bool(following)

    async def uploads(self, bucket: str) -> list[Upload]:
        """The live uploads of ``bucket`` (``MAX_UPLOADS_LISTED`` at most), by object name
        then start time. Raises Unavailable."""
        prefix = f"{UPLOAD_RECORDS}{bucket}/"
        found: list[Upload] = []
        after = ""
        while len(found) < MAX_UPLOADS_LISTED:
            page, after = await self._coordinator.list(prefix, after, LIST_PAGE)
            for manifest in page:
                try:
                    record = UploadRecord.from_bytes(manifest.inline)
                except ValueError as exc:
                    log.error("unreadable upload record %r: %s", manifest.name, exc)
                    continue
                if not record.completed:
                    found.append(Upload(manifest.name[len(prefix) :], record))
            if not after:
                break
        found.sort(key=lambda upload: (upload.record.name, upload.record.initiated_ms))
        return found

    async def collect_stale(self, record: Manifest) -> bool:
        """Abort the upload of ``record`` (an upload record's manifest, this peer's replica)
        if it started over ``multipart_grace`` ago, or drop it if it was completed that long
        ago; True if it did. What is decided on is the record read from a quorum (this
        replica may have missed the Complete), and parts the object names are never
        dropped (``_drop_parts``). Parts go first, the record last, so a pass that fails
        midway is taken up again by the next. Raises Unavailable."""
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
        upload_id = record.name.rpartition("/")[2]
        try:
            upload = UploadRecord.from_bytes(current.inline)
        except ValueError as exc:
            log.error("unreadable upload record %r: %s", record.name, exc)
            return False
        dropped = await self._drop_parts(upload_id, upload.name)
        await self._tombstone(record.name)
        if upload.completed:
            log.info(
                "record of completed multipart upload %s dropped (%d leftover parts)",
                upload_id,
                dropped,
            )
            return True
        self.collected += 1
        log.info(
            "multipart upload %s collected after %.0f s unfinished: %d parts dropped",
            upload_id,
            age,
            dropped,
        )
        return True

    async def _drop_parts(
        self, upload_id: str, object_name: str, keep: frozenset[str] = frozenset()
    ) -> int:
        """Tombstone every stored part of ``upload_id`` that is not in ``keep`` and that the
        current version of ``object_name`` (read from a quorum first) does not name; returns
        how many. Whatever state the upload's record is in (a Complete that committed its
        object but failed before its record, an Abort or two Completes racing, a stale
        record replica), a part a committed object reads is never dropped by its upload."""
        current = await self._replicas.read(object_name)
        if current is not None and not current.deleted:
            keep = keep | {segment.name for segment in current.segments}
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
