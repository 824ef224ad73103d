"""Multipart uploads: the records, names and arithmetic, without I/O.

An upload is a record (``UploadRecord``) kept inline in the manifest of the reserved name
``/uploads/<bucket>/<key, spaces escaped> <upload id>`` (``upload_record_name``), so that
records sort as ListMultipartUploads lists uploads: by key, then by upload id, which begins
with its start time (``new_upload_id``), and a listing pages from a marker without walking
what comes before it; each part is an ordinary file (chunks on distinct peers,
or inline when small) under the reserved name
``/parts/<upload id>/<part number, 5 digits>.<attempt id, 16 hex digits>`` (zero-padded so
that names sort in part order). Every UploadPart stores a new *attempt* under a name of its
own, so an attempt still running when Complete chose another (a client's retry of a part
that timed out) never replaces what the object names: the part of a number is its newest
attempt (highest version), and the attempts Complete did not choose are dropped.

The record is a state machine (``UploadState``), changed only by conditional commits (each
record version has an etag of its own, and a change is committed If-Match the version it
was decided on: ``node.datapath.uploads``)::

    open --Complete--> completing --object committed--> completed
      ^                    |
      +-- rolled back -----+        (a Complete refused, or one that died: after a lease)
    open --Abort or collection--> aborted

Completed and aborted records are kept for the grace (a Complete sent again is answered
from it; parts that arrive late are swept when it is collected), then dropped.

Reserved names start with ``/``, which no file name can (``node.model.names``), so no
client can write, read or list them, while repair, scrub, rebalancing and anti-entropy
handle them as any manifest.

Completing an upload commits the object's manifest with one ``Segment`` per part (its
stored name, version, size and etag): the object's bytes are its parts' bytes in order,
read through the parts' manifests, never copied (as OpenStack Swift's static large
objects). A segment names the part *version*, so a part re-uploaded or deleted after the
commit is noticed on read, never served in its place.

ETags (as AWS computes them; "Checking object integrity", Amazon S3 user guide): a part's
is the MD5 of its bytes (its manifest's etag); the object's is the MD5 of the
concatenated binary MD5s of its parts, then ``-N`` for N parts (``multipart_etag``). A
part whose etag is not 32 hex digits (written by an older release with another digest)
contributes the MD5 of its etag's text instead, so the object's etag is still defined.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Generic, Literal, TypeVar

import msgspec

from node.model.representation import Representation
from node.model.version import Version

UPLOAD_RECORDS = "/uploads/"
PART_FILES = "/parts/"
MAX_PARTS = 10_000  # part numbers are 1..MAX_PARTS (S3's bound)
MIN_PART_SIZE = 5 << 20  # every part but the last has at least this many bytes (S3's)
MAX_PART_SIZE = 5 << 30  # S3's bound on one part
MAX_OBJECT_SIZE = 5 << 40  # S3's bound on a multipart object (5 TiB)
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_PART_NAME = re.compile(r"/parts/[0-9a-f]{32}/[0-9]{5}\.[0-9a-f]{16}")
_MAX_TEXT = 1024
_AFTER_EVERY_NAME = "\U0010ffff"  # sorts after any character a name can hold
T = TypeVar("T")


class InvalidUpload(ValueError):
    """An upload id or part number that cannot be one; the message says why."""


OPEN = "open"  # parts may be stored, the upload completed or aborted
COMPLETING = "completing"  # a Complete holds it: it commits ``object_version`` now
COMPLETED = "completed"  # the object ``object_version`` was committed from its parts
ABORTED = "aborted"  # aborted (or collected): its parts are dropped
UploadState = Literal["open", "completing", "completed", "aborted"]
IN_PROGRESS: frozenset[str] = frozenset({OPEN, COMPLETING})


class UploadRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What CreateMultipartUpload was given: the object's bucket and full name, when (wall
    ms), its content type and representation fields (``node.model.representation``:
    Content-Encoding... and user metadata, as a PUT's), kept for Complete; and where the
    upload stands (``state``; ``object_version``: the object's version a Complete commits
    or committed; ``since_ms``: wall ms of the last change of state)."""

    bucket: Annotated[str, msgspec.Meta(max_length=_MAX_TEXT)]
    name: Annotated[str, msgspec.Meta(max_length=_MAX_TEXT)]
    initiated_ms: Annotated[int, msgspec.Meta(ge=0)]
    content_type: Annotated[str, msgspec.Meta(max_length=_MAX_TEXT)] = "application/octet-stream"
    representation: dict[str, str] = {}
    metadata: dict[str, str] = {}
    state: UploadState = "open"
    # the version of the object Complete commits (completing) or committed (completed): a
    # Complete sent again (its answer lost) is answered from it
    object_version: Annotated[str, msgspec.Meta(max_length=_MAX_TEXT)] = ""
    since_ms: Annotated[int, msgspec.Meta(ge=0)] = 0

    @classmethod
    def of(
        cls, bucket: str, name: str, initiated_ms: int, content_type: str, given: Representation
    ) -> UploadRecord:
        return cls(
            bucket=bucket,
            name=name,
            initiated_ms=initiated_ms,
            content_type=content_type,
            representation=given.standard,
            metadata=dict(given.metadata),
        )

    @property
    def given(self) -> Representation:
        """The representation metadata to commit the object with (checked again: raises
        InvalidRequest)."""
        return Representation.build(**self.representation, metadata=self.metadata)

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> UploadRecord:
        """Decode a record; raises ValueError if it is not one."""
        try:
            return msgspec.msgpack.decode(data, type=cls)
        except msgspec.DecodeError as exc:
            raise ValueError(f"undecodable upload record: {exc}") from exc


class Segment(msgspec.Struct, frozen=True, array_like=True):
    """One part of a segmented object: the stored name and version of the file whose bytes
    it is, their size and etag. The object's bytes are its segments' in order. A multipart
    object's segments are its parts, whole; a packed file's one segment is ``size`` bytes
    of its pack from ``offset`` (``node.model.packs``). On the wire a segment at offset 0
    is the four fields before it (``on_wire``), as releases before packs wrote it."""

    name: str
    version: Version
    size: Annotated[int, msgspec.Meta(ge=0)]
    etag: Annotated[str, msgspec.Meta(max_length=_MAX_TEXT)]
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0

    def on_wire(self) -> msgspec.Struct:
        """What encodes this segment: itself, or where its offset is 0, its first four
        fields (msgspec writes every field of an array-like struct, defaults too)."""
        if self.offset:
            return self
        return _Whole(self.name, self.version, self.size, self.etag)


class _Whole(msgspec.Struct, frozen=True, array_like=True):
    """A segment's fields as a segment at offset 0 is written (``Segment.on_wire``)."""

    name: str
    version: Version
    size: int
    etag: str


def new_attempt_id() -> str:
    """A fresh part attempt id: 16 hex digits (64 random bits)."""
    return secrets.token_hex(8)


def new_upload_id(now_ms: int) -> str:
    """A fresh upload id: 32 hex digits, the start time (``now_ms``, wall ms, 12 digits)
    then 80 random bits, so that ids sort by start time, as ListMultipartUploads lists the
    uploads of one key (S3 compares upload-id-marker lexicographically)."""
    return f"{now_ms % (1 << 48):012x}{secrets.token_hex(10)}"


def check_upload_id(upload_id: str) -> str:
    """Return ``upload_id`` if it has the form ``new_upload_id`` gives; else InvalidUpload."""
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise InvalidUpload("an upload id is 32 lower-case hex digits")
    return upload_id


def check_part_number(text: str) -> int:
    """The part number ``text`` gives (1..MAX_PARTS, decimal); else InvalidUpload."""
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PARTS:
        raise InvalidUpload(f"a part number is an integer 1..{MAX_PARTS}")
    return int(text)


def _sortable(key: str) -> str:
    """``key`` with each space written as two characters, space and ``~``: a single space
    then ends a key in a record name (no character a key may hold sorts below a space, since
    names hold no control characters), so record names sort as their keys do, the uploads
    of a key before those of any longer key it begins. The mapping keeps prefixes: the
    escaped ``prefix`` begins the escaped key exactly when ``prefix`` begins the key."""
    return key.replace(" ", " ~")


def upload_records(bucket: str, key_prefix: str = "") -> str:
    """The prefix of the record names of ``bucket``'s uploads whose key has ``key_prefix``."""
    return f"{UPLOAD_RECORDS}{bucket}/{_sortable(key_prefix)}"


def upload_record_name(bucket: str, key: str, upload_id: str) -> str:
    """The record name of upload ``upload_id`` of ``key`` (the object's name less its
    bucket). Raises nothing; a name too long to store is refused where it is committed."""
    return f"{upload_records(bucket, key)} {upload_id}"


def upload_id_of(record_name: str) -> str:
    """The upload id a record name ends with."""
    return record_name.rpartition(" ")[2]


def after_uploads_of(bucket: str, key: str) -> str:
    """A name after the records of every upload of ``key`` and before those of any other
    key that sorts after it (the start of a listing after a key-marker)."""
    return f"{upload_records(bucket, key)} ~"


def after_every_upload_under(bucket: str, key_prefix: str) -> str:
    """A name after the records of every key that begins with ``key_prefix`` (where a
    listing goes on once it has rolled those keys up under a delimiter)."""
    return upload_records(bucket, key_prefix) + _AFTER_EVERY_NAME


@dataclass
class UploadPage(Generic[T]):
    """One page of ListMultipartUploads, built as a walk feeds it the uploads in progress
    in key then upload-id order, from where the markers put it (sans I/O).

    An entry is ``(key, upload)`` or, with a ``delimiter``, ``(common prefix, None)`` for
    the keys after ``prefix`` that hold the delimiter, rolled up into one entry each (a
    prefix at or before ``key_marker`` was shown on an earlier page). ``truncated`` once an
    entry past ``limit`` was offered: the page is full. Amazon S3 API reference,
    ListMultipartUploads."""

    prefix: str
    delimiter: str
    key_marker: str
    limit: int
    entries: list[tuple[str, T | None]] = field(default_factory=list)
    truncated: bool = False

    def feed(self, key: str, upload: T) -> str | None:
        """Take the next upload in progress; returns the common prefix it was rolled up
        into (the walk may skip every other key under it), else None."""
        if self.delimiter and (cut := key.find(self.delimiter, len(self.prefix))) >= 0:
            common = key[: cut + len(self.delimiter)]
            shown = self.key_marker and common <= self.key_marker
            if not shown and not (self.entries and self.entries[-1][0] == common):
                self._add(common, None)
            return common
        self._add(key, upload)
        return None

    def _add(self, key: str, upload: T | None) -> None:
        if len(self.entries) >= self.limit:
            self.truncated = True
        else:
            self.entries.append((key, upload))


def part_prefix(upload_id: str) -> str:
    return f"{PART_FILES}{upload_id}/"


def part_name(upload_id: str, number: int, attempt: str) -> str:
    """The stored name of one attempt at part ``number`` (``attempt``: ``new_attempt_id``)."""
    return f"{part_prefix(upload_id)}{number:05d}.{attempt}"


def after_part(upload_id: str, number: int) -> str:
    """A name after every attempt at part ``number`` and before those of the next (a
    listing's start), or "" for part 0."""
    return f"{part_prefix(upload_id)}{number:05d}.~" if number else ""


def part_number(name: str) -> int:
    """The part number of a part's stored name (``part_name``)."""
    return int(name.rpartition("/")[2][:5])


def is_part_name(name: str) -> bool:
    """Whether ``name`` has the form of ``part_name`` (a valid stored name: checked fast,
    since a manifest of 10,000 segments is checked whenever it is decoded)."""
    return _PART_NAME.fullmatch(name) is not None


def is_multipart_name(name: str) -> bool:
    """Whether ``name`` is an upload record's or a part's."""
    return name.startswith((UPLOAD_RECORDS, PART_FILES))


def is_upload_record(name: str) -> bool:
    return name.startswith(UPLOAD_RECORDS)


def part_md5(etag: str) -> bytes:
    """The 16 bytes a part's etag contributes to its object's etag: the MD5 it is, or the
    MD5 of its text when it is not 32 hex digits (see the module's docstring)."""
    if _MD5_HEX.fullmatch(etag):
        return bytes.fromhex(etag)
    return hashlib.md5(etag.encode("utf-8"), usedforsecurity=False).digest()


def multipart_etag(part_etags: Iterable[str]) -> str:
    """S3's etag of a multipart object: hex MD5 of the parts' binary MD5s, ``-N``."""
    digest = hashlib.md5(usedforsecurity=False)
    count = 0
    for etag in part_etags:
        digest.update(part_md5(etag))
        count += 1
    return f"{digest.hexdigest()}-{count}"


def segments_covering(
    segments: Sequence[Segment], start: int, end: int
) -> Iterator[tuple[Segment, int, int]]:
    """``(segment, first, past)`` for every segment holding object bytes ``[start, end)``,
    in order, with the range in the segment's own bytes."""
    if start >= end:
        return
    offset = 0
    for segment in segments:
        following = offset + segment.size
        if following > start and offset < end and segment.size:
            yield segment, max(start - offset, 0), min(end, following) - offset
        if following >= end:
            return
        offset = following
