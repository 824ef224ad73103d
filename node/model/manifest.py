"""Manifests and chunk sidecars: the records of one file version and of one stored chunk.

A file version exists exactly when a manifest for it is stored on a write quorum of its
replicas. Manifests are ordered by ``(version, revision)``: the version orders the writes of a
name, the revision orders changes of where one version's chunks live (moves and repairs).
The manifest names the layout, the content digest, and for every stored chunk its index,
holder peer and block digests. A tombstone is a manifest with ``deleted`` set and no chunks.
A cluster record (an access key, a namespace: ``node.model.access``) is a manifest of a
reserved name (``/``...) with no chunks that carries the record ``inline`` (at most
``MAX_INLINE`` bytes; the field is left out when empty, so other manifests keep their bytes).
A file's representation metadata (``node.model.representation``: Content-Encoding and the
other fields given at PUT, user metadata, an S3 checksum) is kept the same way: one
``representation`` map of the fields given, left out when none was, so manifests written
without it keep their bytes.
A segmented manifest (a multipart object: ``node.model.multipart``) has no chunks of its own
but a ``segments`` list naming each part's stored name, version, size and etag, in order
(left out when empty, same reason); its size is the sum of theirs. A packed file
(``node.model.packs``) has one segment, its bytes in a pack from an offset: its manifest is
of schema 2, which releases before packs refuse rather than read the pack from its start.

On the wire and on disk a manifest is the msgpack array ``[record, checksum]``: ``record`` is
the msgpack map of ``ManifestRecord`` (schema 1) as bytes, ``checksum`` its xxh3-128, so a
flipped byte never decodes into another manifest. A sidecar (``ChunkMeta``) is the msgpack
array ``[name, version, index, block_size, size, block_digests, stored_at]``. Both formats
are pinned by tests that decode bytes written by earlier releases.

Decoding a manifest checks it whole, since peers send them and a replica trusts none:
the name is valid (``node.model.names``), the layout within ``check_layout``'s bounds
(block size, k + m <= 256, size >= 0), the revision 0..2**63-1, every chunk reference
has an index below k + m, no index twice, and one digest per stripe; etag and content type
are short and free of control characters; representation metadata passes
``check_representation``, as it did when a client sent it. A chunk's owner (``chunk_owner``)
is checked the same way wherever it arrives: headers of a chunk upload, a pull order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, cast

import msgspec
import xxhash
from msgspec import UNSET, UnsetType

from node.errors import CorruptData, InvalidName
from node.model.digests import DIGEST_SIZE, chunk_digest
from node.model.layout import (
    ISAL_CAUCHY,
    MAX_CHUNKS,
    ZFEC,
    Layout,
    check_block_size,
    check_layout,
)
from node.model.multipart import MAX_PARTS, Segment, is_part_name
from node.model.names import RESERVED, has_control, validate_stored_name
from node.model.packs import is_pack_name
from node.model.representation import (
    MAX_FIELD_LENGTH,
    MAX_METADATA_BYTES,
    NO_REPRESENTATION,
    Checksum,
    Representation,
    check_representation,
)
from node.model.version import Version

SCHEMA = 1
PACKED_SCHEMA = 2  # a packed file's manifest (node.model.packs)
# A manifest whose parity was coded with ISA-L's Cauchy matrix, not zfec's: the schema says
# so (the record has no room for a field: below), and releases before it refuse it rather
# than rebuild its chunks with the wrong code.
CAUCHY_SCHEMA = 3
_CODEC_OF_SCHEMA = {SCHEMA: ZFEC, PACKED_SCHEMA: ZFEC, CAUCHY_SCHEMA: ISAL_CAUCHY}
MAX_REVISION = (1 << 63) - 1
MAX_LABEL_LENGTH = 1024  # etag and content type
MAX_INLINE = 64 << 10  # bytes a manifest carries inline

_Field = Annotated[str, msgspec.Meta(max_length=MAX_FIELD_LENGTH)]
_MetaText = Annotated[str, msgspec.Meta(max_length=MAX_METADATA_BYTES)]
_Metadata = Annotated[dict[_MetaText, _MetaText], msgspec.Meta(max_length=MAX_METADATA_BYTES)]

# What a malformed record raises while it is decoded: msgspec's errors, and Layout's.
_DECODE_ERRORS = (msgspec.DecodeError, ValueError)


class ChunkMeta(msgspec.Struct, frozen=True, array_like=True):
    """What a holder keeps beside a chunk (its sidecar): whose chunk it is, and the digest of
    every block. ``version`` is the file version as text; ``stored_at`` wall-clock seconds."""

    name: str
    version: str
    index: int
    block_size: int
    size: int = 0
    block_digests: bytes = b""
    stored_at: float = 0.0

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkMeta:
        """Decode a sidecar; raises CorruptData if it is not one."""
        try:
            return msgspec.msgpack.decode(data, type=cls)
        except msgspec.DecodeError as exc:
            raise CorruptData(f"undecodable chunk sidecar: {exc}") from exc


class ChunkRef(msgspec.Struct, frozen=True, array_like=True):
    """Where one chunk of a file version lives (``holder``, a member id), and how to check it
    (``block_digests``: ``DIGEST_SIZE`` bytes per stripe)."""

    index: int
    holder: str
    block_digests: bytes

    def __repr__(self) -> str:
        return f"ChunkRef({self.index}, {self.holder!r})"

    @property
    def digest(self) -> bytes:
        """Digest of the whole chunk: a hash over its block digests."""
        return chunk_digest(self.block_digests)

    def block_digest(self, stripe: int) -> bytes:
        return self.block_digests[stripe * DIGEST_SIZE : (stripe + 1) * DIGEST_SIZE]


class ChecksumRecord(msgspec.Struct, frozen=True, array_like=True):
    """A kept checksum (``Checksum``): ``[algorithm, base64 value]``."""

    algorithm: Annotated[str, msgspec.Meta(max_length=16)]
    value: Annotated[str, msgspec.Meta(max_length=64)]


class RepresentationRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A manifest's representation metadata (``Representation``): a msgpack map of the
    fields that were given. ``checksum`` came after the others: a reader that does not know
    it ignores it (msgspec skips unknown keys), and it is absent when none was kept, so
    manifests without one keep their bytes."""

    content_encoding: _Field = ""
    content_disposition: _Field = ""
    cache_control: _Field = ""
    content_language: _Field = ""
    expires: _Field = ""
    metadata: _Metadata = {}
    checksum: ChecksumRecord | None = None


class ManifestRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A manifest as stored and sent: a msgpack map (unknown keys are ignored on decode)."""

    schema: int
    name: str
    version: Version
    size: int
    k: int
    m: int
    block_size: int
    etag: Annotated[str, msgspec.Meta(max_length=MAX_LABEL_LENGTH)]
    content_type: Annotated[str, msgspec.Meta(max_length=MAX_LABEL_LENGTH)]
    deleted: bool
    # absent from manifests written before moves existed
    revision: Annotated[int, msgspec.Meta(ge=0, le=MAX_REVISION)] = 0
    chunks: list[ChunkRef]
    # a small record carried in the manifest itself (cluster records: access keys...);
    # absent when empty, so manifests without one keep their earlier bytes
    inline: Annotated[bytes, msgspec.Meta(max_length=MAX_INLINE)] | UnsetType = UNSET
    # representation metadata given at PUT, absent when none was (same reason)
    representation: RepresentationRecord | UnsetType = UNSET
    # the parts of a multipart object, absent when none (same reason)
    segments: Annotated[list[Segment], msgspec.Meta(max_length=MAX_PARTS)] | UnsetType = UNSET
    # msgspec writes a map of over 15 possible fields with a map16 header even when fewer
    # are present, which would change the bytes of every earlier manifest: add new fields
    # inside nested records, not here (this record has 15, the most a fixmap holds).


class SealedManifest(msgspec.Struct, frozen=True, array_like=True):
    """The outer array: the packed record and its xxh3-128 checksum."""

    record: bytes
    checksum: bytes


_record_decoder = msgspec.msgpack.Decoder(ManifestRecord)
_sealed_decoder = msgspec.msgpack.Decoder(SealedManifest)


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: Version
    layout: Layout
    etag: str = ""
    content_type: str = "application/octet-stream"
    chunks: tuple[ChunkRef, ...] = ()
    deleted: bool = False
    revision: int = 0
    inline: bytes = b""
    representation: Representation = NO_REPRESENTATION
    segments: tuple[Segment, ...] = ()
    # The bytes it was decoded from, where its decoder asked to keep them (``from_bytes``):
    # a replica answers a read and keeps an offer with the bytes it has. Never compared,
    # nor copied by ``dataclasses.replace`` (init=False).
    _sealed: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def precedence(self) -> tuple[Version, int]:
        """What decides which of two manifests of a name is current: the greater."""
        return self.version, self.revision

    def placed_chunks(self) -> set[tuple[str, str]]:
        """``(holder, chunk id)`` of every stored chunk."""
        return {(ref.holder, self.chunk_id(ref.index)) for ref in self.chunks}

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def file_id(self) -> str:
        return file_id(self.name, self.version)

    def chunk_id(self, index: int) -> str:
        return chunk_id(self.file_id, index)

    def chunk_owner(self, index: int) -> ChunkMeta:
        """The sidecar a holder keeps for chunk ``index`` (before size and digests)."""
        return ChunkMeta(self.name, str(self.version), index, self.layout.block_size)

    def holders(self) -> dict[int, str]:
        return {ref.index: ref.holder for ref in self.chunks}

    @property
    def stored_inline(self) -> bool:
        """Whether the bytes are the manifest's own (``inline``), with no chunks: a cluster
        record, a small file (``--inline-max``), an empty file."""
        return bool(self.inline) or (
            not self.chunks and not self.segments and self.layout.size == 0
        )

    @property
    def segmented(self) -> bool:
        """Whether the bytes are those of other files' versions (``segments``), in order:
        a multipart object's parts, or a packed file's pack."""
        return bool(self.segments)

    @property
    def packed(self) -> bool:
        """Whether the bytes lie in a pack (``node.model.packs``), not in parts."""
        return len(self.segments) == 1 and is_pack_name(self.segments[0].name)

    def segment_refs(self) -> set[tuple[str, str]]:
        """``(SEGMENT_HOLDER, segment id)`` of every part: what a commit that replaces this
        manifest retires with its chunks (``node.datapath.replicas``). Never a pack: other
        files' bytes are in it."""
        if self.packed:
            return set()
        return {(SEGMENT_HOLDER, segment_id(s.name, s.version)) for s in self.segments}

    @property
    def chunked(self) -> bool:
        """Whether the bytes lie in chunks of this version's own: not a tombstone, nor
        inline, nor segmented."""
        return not self.deleted and not self.stored_inline and not self.segmented

    @property
    def degraded(self) -> bool:
        """True when fewer chunks are stored than the layout has (inline files have none)."""
        return self.chunked and len(self.chunks) < self.layout.n

    def missing(self, parity: int) -> int:
        """Chunks this file version lacks to hold k data and ``parity`` parity chunks (or
        its own layout's m, where that is more): 0 for tombstones and inline files."""
        if not self.chunked:
            return 0
        return missing_chunks(self.layout.k, self.layout.m, len(self.chunks), parity)

    def with_parity(self, parity: int) -> Manifest:
        """This manifest laid out with ``parity`` parity chunks, its stored chunks kept.

        Sound because zfec's code is systematic and its parity block ``k + j`` does not
        depend on m (the rows of its encoding matrix are fixed per index; pinned by
        ``test_unit_codec``): chunks stored under a smaller m are chunks of the larger one.
        """
        return dataclasses.replace(self, layout=dataclasses.replace(self.layout, m=parity))

    @property
    def listed_inline(self) -> bytes:
        """The inline bytes a listing keeps (``without_chunks``): a cluster record's, which
        listings of records read (access keys, namespaces, uploads); never a file's, nor a
        part's of a multipart upload (a reserved name too), read whole when needed."""
        if self.name.startswith(RESERVED) and not is_part_name(self.name):
            return self.inline
        return b""

    def without_chunks(self) -> Manifest:
        """This manifest without its chunk list, nor segments, its inline bytes only those
        listings keep (``listed_inline``): what listings and the in-memory index of
        replicas keep (``node.disk.manifest_index``)."""
        return Manifest(
            self.name,
            self.version,
            self.layout,
            self.etag,
            self.content_type,
            (),
            self.deleted,
            self.revision,
            self.listed_inline,
            self.representation,
        )

    def to_bytes(self) -> bytes:
        """The sealed manifest ``[record, checksum]``: the bytes it was decoded from, or
        its encoding."""
        if self._sealed is not None:
            return self._sealed
        layout = self.layout
        given = self.representation
        record = ManifestRecord(
            schema=self._schema(),
            name=self.name,
            version=self.version,
            size=layout.size,
            k=layout.k,
            m=layout.m,
            block_size=layout.block_size,
            etag=self.etag,
            content_type=self.content_type,
            deleted=self.deleted,
            revision=self.revision,
            chunks=list(self.chunks),
            inline=self.inline or UNSET,
            representation=representation_record(given) if given else UNSET,
            # (msgspec encodes by type: a whole segment goes as the 4 fields it always had)
            segments=cast("list[Segment]", [s.on_wire() for s in self.segments]) or UNSET,
        )
        packed = msgspec.msgpack.encode(record)
        return msgspec.msgpack.encode(SealedManifest(packed, _checksum(packed)))

    def _schema(self) -> int:
        """The schema this manifest is written with: packed, else its chunks' codec's."""
        if self.packed:
            return PACKED_SCHEMA
        if self.layout.codec == ISAL_CAUCHY:
            return CAUCHY_SCHEMA
        return SCHEMA

    @classmethod
    def from_bytes(cls, data: bytes, keep: bool = False) -> Manifest:
        """Decode a stored manifest; raises CorruptData if it is not one. With ``keep``,
        ``to_bytes`` answers ``data`` itself (where ``data`` is ``bytes``, not a view of a
        buffer used again): for a manifest about to be sent or stored as it came, not one
        held among many (a listing's pages, an index), each of which would hold its bytes
        twice."""
        try:
            sealed = _sealed_decoder.decode(data)
            if _checksum(sealed.record) != sealed.checksum:
                raise CorruptData("manifest fails its checksum")
            record = _record_decoder.decode(sealed.record)
            codec = _CODEC_OF_SCHEMA.get(record.schema)
            if codec is None:
                raise CorruptData(f"unknown manifest schema {record.schema!r}")
            layout = Layout(record.size, record.k, record.m, record.block_size, codec)
            check_layout(layout)
            _check_record(record, layout)
            representation = _representation(record)
            segments = _segments(record, layout)
        except _DECODE_ERRORS as exc:
            raise CorruptData(f"undecodable manifest: {exc}") from exc
        manifest = cls(
            name=record.name,
            version=record.version,
            layout=layout,
            etag=record.etag,
            content_type=record.content_type,
            deleted=record.deleted,
            revision=record.revision,
            chunks=tuple(record.chunks),
            inline=record.inline or b"",
            representation=representation,
            segments=segments,
        )
        if keep and type(data) is bytes:
            object.__setattr__(manifest, "_sealed", data)
        return manifest

    @property
    def modified(self) -> str:
        """When this version was written (its clock time), as RFC 3339 UTC."""
        moment = datetime.fromtimestamp(self.version.wall_ms / 1000, tz=timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        """The manifest as ``GET /manifests/{name}`` shows it (fields not given: null)."""
        layout = self.layout
        given = self.representation
        return {
            "name": self.name,
            "version": str(self.version),
            "modified": self.modified,
            "revision": self.revision,
            "size": layout.size,
            "etag": self.etag,
            "content_type": self.content_type,
            "content_encoding": given.content_encoding or None,
            "content_disposition": given.content_disposition or None,
            "cache_control": given.cache_control or None,
            "content_language": given.content_language or None,
            "expires": given.expires or None,
            "metadata": dict(given.metadata),
            "deleted": self.deleted,
            "degraded": self.degraded,
            "inline": self.stored_inline,
            "segments": len(self.segments),
            "packed": self.packed,
            "k": layout.k,
            "m": layout.m,
            "block_size": layout.block_size,
            "codec": layout.codec,
            "chunk_size": layout.chunk_size,
            "stripes": layout.stripes,
            "chunks": [
                {
                    "index": ref.index,
                    "kind": "data" if ref.index < layout.k else "parity",
                    "holder": ref.holder,
                    "id": self.chunk_id(ref.index),
                    "size": layout.chunk_size,
                    "digest": ref.digest.hex(),
                }
                for ref in self.chunks
            ],
        }

    def summary(self) -> dict[str, Any]:
        """What a listing shows of this version."""
        return {
            "name": self.name,
            "version": str(self.version),
            "modified": self.modified,
            "size": self.size,
            "etag": self.etag,
            "content_type": self.content_type,
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class ReplicaWrite:
    """What a replica did with a manifest it was sent: kept it or not, the version it holds
    now, and the manifest it replaced."""

    stored: bool
    current: Version
    replaced: Manifest | None


@dataclass(frozen=True)
class ReplicaRead:
    """A replica's answer to a read: its manifest (None: none there), and whether that is
    provisional: a conditional write the replica kept but whose verdict (confirmed or
    retracted, ``node.datapath.replicas``) it has not heard yet; ``overdue`` once the
    verdict is later than it can be, its coordinator gone. A provisional manifest may be
    read, never copied to another replica: it may be a losing write about to be taken
    back, and a copy would outlive the retraction and bury the winner."""

    manifest: Manifest | None
    provisional: bool = False
    overdue: bool = False


@dataclass(frozen=True)
class SealedRead:
    """A ``ReplicaRead`` as a replica sends it to the peer that asked: the manifest's sealed
    bytes (``Manifest.to_bytes``; None: none there), not decoded there. The reader decodes
    and checks them (``Manifest.from_bytes``, and that they are the name's)."""

    sealed: bytes | None
    provisional: bool = False
    overdue: bool = False


def missing_chunks(k: int, m: int, stored: int, parity: int) -> int:
    """Chunks a chunked version of layout ``k`` + ``m`` with ``stored`` chunks lacks to hold
    k data and ``parity`` parity chunks (or its own m, where that is more)."""
    return k + max(m, parity) - stored


def _check_record(record: ManifestRecord, layout: Layout) -> None:
    """Raise ValueError unless a decoded record's name, labels and chunks fit its layout."""
    try:
        validate_stored_name(record.name)
    except InvalidName as exc:
        raise ValueError(f"invalid name: {exc}") from None
    for label in (record.etag, record.content_type):
        if has_control(label, surrogates=False):
            raise ValueError(f"control character in etag or content type {label!r}")
    seen: set[int] = set()
    digests = DIGEST_SIZE * layout.stripes
    for ref in record.chunks:
        if not 0 <= ref.index < layout.n or ref.index in seen:
            raise ValueError(f"chunk index {ref.index} is out of range or repeated")
        if len(ref.block_digests) != digests:
            raise ValueError(f"chunk {ref.index} has {len(ref.block_digests)} digest bytes")
        seen.add(ref.index)


def _segments(record: ManifestRecord, layout: Layout) -> tuple[Segment, ...]:
    """A decoded record's segments, checked: stored names, sizes that add up to the
    layout's, none beside chunks or inline bytes; one segment in a pack, with an offset
    where any is, exactly in a manifest of ``PACKED_SCHEMA``; raises ValueError."""
    packed = record.schema == PACKED_SCHEMA
    if isinstance(record.segments, UnsetType):
        if packed:
            raise ValueError("a packed file's manifest names its pack")
        return ()
    segments = tuple(record.segments)
    if record.chunks or record.inline:
        raise ValueError("a segmented manifest has no chunks or inline bytes of its own")
    if sum(s.size for s in segments) != layout.size:
        raise ValueError("the segments' sizes do not add up to the manifest's")
    packs = sum(is_pack_name(segment.name) for segment in segments)
    if (packs, len(segments)) != ((1, 1) if packed else (0, len(segments))):
        raise ValueError(
            f"schema {record.schema} with {packs} of {len(segments)} segments in packs"
        )
    if not packed and any(s.offset for s in segments):
        raise ValueError("only a packed file's segment starts past its file's first byte")
    for segment in segments:
        if is_part_name(segment.name):
            continue
        try:
            validate_stored_name(segment.name)
        except InvalidName as exc:
            raise ValueError(f"invalid segment name: {exc}") from None
    return segments


def representation_record(given: Representation) -> RepresentationRecord:
    """``given`` as a manifest stores it."""
    return RepresentationRecord(
        content_encoding=given.content_encoding,
        content_disposition=given.content_disposition,
        cache_control=given.cache_control,
        content_language=given.content_language,
        expires=given.expires,
        metadata=dict(given.metadata),
        checksum=(
            ChecksumRecord(given.checksum.algorithm, given.checksum.value)
            if given.checksum is not None
            else None
        ),
    )


def _representation(record: ManifestRecord) -> Representation:
    """A decoded record's representation metadata, checked as a client's would be; raises
    ValueError (InvalidRequest)."""
    stored = record.representation
    if isinstance(stored, UnsetType):
        return NO_REPRESENTATION
    given = representation_of(stored)
    check_representation(given)
    return given


def representation_of(stored: RepresentationRecord) -> Representation:
    """The representation ``stored`` holds, unchecked (``representation_record``'s inverse)."""
    return Representation(
        stored.content_encoding,
        stored.content_disposition,
        stored.cache_control,
        stored.content_language,
        stored.expires,
        tuple(sorted(stored.metadata.items())),
        Checksum(stored.checksum.algorithm, stored.checksum.value) if stored.checksum else None,
    )


def chunk_owner(name: str, version: str, index: int, block_size: int) -> ChunkMeta:
    """The sidecar of a chunk another peer asks this one to keep, checked: a valid name, a
    version that parses within bounds, an index a layout can have, a bounded block size.

    Raises ValueError (InvalidName for the name) saying what is wrong.
    """
    validate_stored_name(name)  # (parts of multipart uploads have reserved names)
    Version.parse(version)
    if not 0 <= index < MAX_CHUNKS:
        raise ValueError(f"chunk index {index} is out of range")
    return ChunkMeta(name, version, index, check_block_size(block_size))


def _checksum(packed: bytes) -> bytes:
    return xxhash.xxh3_128_digest(packed)


def file_id(name: str, version: Version) -> str:
    """Ring key of a file version's chunks: blake2b-128 of msgpack ``[name, version]``."""
    packed = msgspec.msgpack.encode((name, version))
    return hashlib.blake2b(packed, digest_size=16).hexdigest()


SEGMENT_HOLDER = "/segment"  # the "holder" of a retired segment (no member id has a /)


def segment_id(name: str, version: Version) -> str:
    """How a retired segment is named beside chunk ids: ``<version> <stored name>``."""
    return f"{version} {name}"


def parse_segment_id(text: str) -> tuple[str, Version]:
    """``(stored name, version)`` of a ``segment_id``; raises ValueError."""
    version, _, name = text.partition(" ")
    return name, Version.parse(version)


def chunk_id(file: str, index: int) -> str:
    """The id of chunk ``index`` of file version ``file``: ``<file id>-<index>``."""
    return f"{file}-{index}"


def chunk_index(chunk: str) -> int:
    """The index part of a chunk id; raises ValueError if the id has none."""
    return int(chunk.rpartition("-")[2])
