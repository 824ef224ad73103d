"""Typed records of what the server answers: stored files, listings, manifests, the cluster.

Each record is a frozen dataclass built from the API's JSON (or a file's headers) by one
``from_json`` / ``from_headers`` constructor, which raises KeyError, TypeError or ValueError
when the answer lacks a field; the transport turns those into UnexpectedResponse. Versions
are kept as the server's opaque strings: equal strings name the same file version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _fields(cls: type[Any], record: Mapping[str, Any], **given: Any) -> dict[str, Any]:
    """``given``, and each other field of dataclass ``cls`` read from ``record`` by name.

    A field is converted to its declared scalar type (str, int, float or bool), so an answer
    with a field missing or of the wrong kind raises KeyError, TypeError or ValueError.
    """
    return {
        **{
            f.name: _SCALARS[str(f.type)](record[f.name])
            for f in fields(cls)
            if f.name not in given
        },
        **given,
    }


META_PREFIX = "x-ringstore-meta-"
# Representation fields by the header that carries them (absent: None)
_REPRESENTATION = {
    "content_encoding": "Content-Encoding",
    "content_disposition": "Content-Disposition",
    "cache_control": "Cache-Control",
    "content_language": "Content-Language",
    "expires": "Expires",
}


def _representation_from_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """The representation fields and user metadata (names lower-case) of a file's headers."""
    found: dict[str, Any] = {name: headers.get(header) for name, header in _REPRESENTATION.items()}
    found["metadata"] = {
        key.lower()[len(META_PREFIX) :]: value
        for key, value in headers.items()
        if key.lower().startswith(META_PREFIX)
    }
    return found


def _representation_from_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """The representation fields and user metadata of a manifest's JSON (a server from
    before they were kept sends none: all None, no metadata)."""
    found: dict[str, Any] = {}
    for name in _REPRESENTATION:
        value = record.get(name)
        found[name] = None if value is None else str(value)
    metadata = record.get("metadata") or {}
    found["metadata"] = {str(key): str(value) for key, value in dict(metadata).items()}
    return found


def _etag(header: str) -> str:
    """An ETag header without its quotes (and without a weak ``W/`` prefix)."""
    return header.removeprefix("W/").strip('"')


@dataclass(frozen=True)
class PutResult:
    """A file version just stored by ``put``."""

    name: str
    size: int
    version: str
    etag: str
    content_type: str
    chunks: int
    """How many chunks were stored (data and parity)."""
    degraded: bool
    """True when fewer chunks were stored than the layout has (a peer was down)."""
    inline: bool = False
    """Kept inside the manifest (no chunks): a file of at most ``--inline-max`` bytes.
    False from a peer of before inline files."""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> PutResult:
        """Build from the JSON answer of ``PUT /files/{name}``."""
        inline = bool(record.get("inline", False))  # absent from peers of before
        return cls(**_fields(cls, record, inline=inline))


@dataclass(frozen=True)
class FileStat:
    """What the headers of a file tell: its size, version, etag, type and modification time,
    and the representation fields and user metadata it was stored with (None: not given)."""

    name: str
    size: int
    """Bytes as stored (and served): encoded ones if ``content_encoding`` is set."""
    version: str
    etag: str
    content_type: str
    last_modified: datetime
    """When this version was written (UTC, whole seconds)."""
    content_encoding: str | None = None
    content_disposition: str | None = None
    cache_control: str | None = None
    content_language: str | None = None
    expires: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """User metadata (``X-Ringstore-Meta-<name>``), by lower-case name."""

    @classmethod
    def from_headers(cls, name: str, headers: Mapping[str, str]) -> FileStat:
        """Build from the headers of a ``GET`` or ``HEAD`` of ``/files/{name}``.

        The size comes from ``Content-Range`` on a 206 answer, else from ``Content-Length``.
        """
        content_range = headers.get("Content-Range")
        if content_range is not None:
            size = int(content_range.rpartition("/")[2])
        else:
            size = int(headers["Content-Length"])
        modified = parsedate_to_datetime(headers["Last-Modified"])
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=timezone.utc)
        return cls(
            name=name,
            size=size,
            version=headers["X-Ringstore-Version"],
            etag=_etag(headers["ETag"]),
            content_type=headers.get("Content-Type", "application/octet-stream"),
            last_modified=modified,
            **_representation_from_headers(headers),
        )


@dataclass(frozen=True)
class FileEntry:
    """One file of a listing."""

    name: str
    size: int
    version: str
    etag: str
    content_type: str
    deleted: bool

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> FileEntry:
        """Build from one entry of ``GET /files``."""
        return cls(**_fields(cls, record))


@dataclass(frozen=True)
class Folder:
    """A folder of a listing with a delimiter (S3's common prefix): every live file whose
    name starts with ``name``, rolled up into one entry. ``name`` ends with the delimiter
    and sorts before every name in it, so entries and folders of a listing interleave in
    name order."""

    name: str


@dataclass(frozen=True)
class ChunkInfo:
    """One stored chunk of a file version: which peer holds it and how to check it."""

    index: int
    kind: str
    """``"data"`` or ``"parity"``."""
    holder: str
    """Id of the peer that holds the chunk (see ``ClusterView.peers`` for its URL)."""
    id: str
    size: int
    digest: str

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> ChunkInfo:
        """Build from one entry of a manifest's ``chunks``."""
        return cls(**_fields(cls, record))


@dataclass(frozen=True)
class Manifest:
    """The committed record of one file version: layout, content digest and chunk holders,
    and the representation fields and user metadata it was stored with (None: not given)."""

    name: str
    version: str
    size: int
    etag: str
    content_type: str
    deleted: bool
    degraded: bool
    k: int
    """Data chunks per file."""
    m: int
    """Parity chunks per file: how many chunks may be lost."""
    block_size: int
    chunk_size: int
    stripes: int
    chunks: tuple[ChunkInfo, ...]
    content_encoding: str | None = None
    content_disposition: str | None = None
    cache_control: str | None = None
    content_language: str | None = None
    expires: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """User metadata (``X-Ringstore-Meta-<name>``), by lower-case name."""
    inline: bool = False
    """The bytes live in the manifest itself (3 replicas), not in chunks: a file of at
    most ``--inline-max`` bytes. False from a peer of before inline files."""
    segments: int = 0
    """Parts of a multipart (S3) object whose bytes this file is, in order (its own
    ``chunks`` are then empty); 1 for a packed file (``packed``: its pack); 0 for other
    files, and from a peer of before them."""
    packed: bool = False
    """The bytes lie in a pack of small files (its one segment names the pack): a small file
    left unchanged for ``--pack-after``. False from a peer of before packs."""
    codec: str = "zfec"
    """The Reed-Solomon code its parity chunks were computed with: ``isa-l-cauchy`` or
    ``zfec`` (files written before ISA-L, or while a member lacked it; and from a peer of
    before codecs)."""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Manifest:
        """Build from the JSON answer of ``GET /manifests/{name}``."""
        chunks = tuple(ChunkInfo.from_json(chunk) for chunk in record["chunks"])
        given = _representation_from_json(record)
        stored = {  # absent from peers of before each
            "inline": bool(record.get("inline", False)),
            "segments": int(record.get("segments", 0)),
            "packed": bool(record.get("packed", False)),
            "codec": str(record.get("codec", "zfec")),
        }
        return cls(**_fields(cls, record, chunks=chunks, **stored, **given))


@dataclass(frozen=True)
class Upkeep:
    """Background work under way on one peer, as it last reported it (all 0: none, or a
    peer of before these figures)."""

    repair_queued: int = 0
    """Files waiting for their lost or corrupt chunks to be rebuilt."""
    rebalance_pending: int = 0
    """Names queued for the peer's next rebalancing pass."""
    rebalance_remaining_bytes: int = 0
    """Bytes its rebalancing planned to move and has not moved yet."""
    scrub_pass_chunks: int = 0
    """Chunks the scrub pass under way set out to check (0: no pass running)."""
    scrub_pass_checked: int = 0
    """Chunks that pass has checked so far."""
    deletions_pending: int = 0
    """Delayed chunk deletions journaled and not yet carried out."""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Upkeep:
        """Build from one entry of ``GET /cluster``'s ``peers`` (absent figures: 0)."""
        rebalance = record.get("rebalance") or {}
        scrub = record.get("scrub") or {}
        return cls(
            repair_queued=int(record.get("repair_queued", 0)),
            rebalance_pending=int(rebalance.get("pending", 0)),
            rebalance_remaining_bytes=int(rebalance.get("remaining_bytes", 0)),
            scrub_pass_chunks=int(scrub.get("pass_chunks", 0)),
            scrub_pass_checked=int(scrub.get("pass_checked", 0)),
            deletions_pending=int(record.get("deletions_pending", 0)),
        )

    @property
    def idle(self) -> bool:
        """Nothing queued or under way."""
        return not any(
            (
                self.repair_queued,
                self.rebalance_pending,
                self.rebalance_remaining_bytes,
                self.scrub_pass_chunks,
                self.deletions_pending,
            )
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class PeerInfo:
    """One member of the cluster as the answering peer sees it."""

    id: str
    url: str
    state: str
    """``"up"`` or ``"down"``, as last seen by the answering peer."""
    weight: int
    used_bytes: int
    chunks: int
    clock_offset_ms: int | None = None
    """How far its wall clock is from the answering peer's (positive: ahead), as the last
    gossip exchange measured it; None when not measured (yet)."""
    skewed: bool = False
    """Its clock is further off than the cluster allows (``max_clock_offset_ms``, 500)."""
    zone: str = ""
    """Its failure domain (``--zone``; by default its URL's host). "" from a peer of before
    zones."""
    s3_url: str | None = None
    """Where it serves the S3 API (``--s3-port``); None when it does not (or is of before
    S3)."""
    capacity_bytes: int = 0
    """Its ``--max-bytes`` when it has one, else its disk's size (0: not reported)."""
    fill: float | None = None
    """How full it is, 0..1: ``used_bytes`` over its ``--max-bytes``, or without one its
    disk's used bytes (chunks and anything else on it) over its size; what the cluster
    decides a member is full by. None: not reported."""
    max_bytes: int = 0
    """Its ``--max-bytes`` (0: none, the disk is the limit)."""
    upkeep: Upkeep = field(default_factory=Upkeep)
    """Background work under way on it."""
    token_share: float | None = None
    """Fraction of the ring's hash space it is primary for (None: not on the ring)."""
    fair_share: float | None = None
    """Its weight over the ring's total weight: the share it would get on a perfect ring."""
    figures_age_s: float | None = None
    """Seconds since its figures (fill, chunks, upkeep) reached the answering peer (None:
    none yet; 0 for the answering peer itself)."""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> PeerInfo:
        """Build from one entry of ``GET /cluster``'s ``peers`` (a peer of before clock
        offsets were reported gives ``None`` and ``False``, one of before zones ``""``, one
        of before capacities and upkeep figures 0 and None)."""
        offset = record.get("clock_offset_ms")
        return cls(
            **_fields(
                cls,
                record,
                clock_offset_ms=None if offset is None else int(offset),
                skewed=bool(record.get("skewed", False)),
                zone=str(record.get("zone", "")),
                s3_url=None if record.get("s3_url") is None else str(record["s3_url"]),
                capacity_bytes=int(record.get("capacity_bytes", 0)),
                fill=_optional_float(record.get("fill")),
                max_bytes=int(record.get("max_bytes", 0)),
                upkeep=Upkeep.from_json(record),
                token_share=_optional_float(record.get("token_share")),
                fair_share=_optional_float(record.get("fair_share")),
                figures_age_s=_optional_float(record.get("figures_age_s")),
            )
        )

    @property
    def share_ratio(self) -> float | None:
        """``token_share`` over ``fair_share``: 1.0 is exactly its weight's part."""
        if self.token_share is None or not self.fair_share:
            return None
        return self.token_share / self.fair_share


@dataclass(frozen=True)
class RingInfo:
    """The consistent-hash ring the answering peer places chunks on."""

    digest: str
    vnodes: int
    members: int
    evenness: float
    """Largest share of placements over the mean share, per unit of weight; 1.0 is even."""
    max_ratio: float | None = None
    """The largest member's token share over its weight-fair share (``PeerInfo.share_ratio``;
    None from a peer of before it)."""
    min_ratio: float | None = None
    """The smallest such ratio."""
    cv: float | None = None
    """Coefficient of variation of the ratios (standard deviation / mean; 0 is even)."""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> RingInfo:
        """Build from ``GET /cluster``'s ``ring``."""
        balance = record.get("balance") or {}
        return cls(
            **_fields(
                cls,
                record,
                max_ratio=_optional_float(balance.get("max_ratio")),
                min_ratio=_optional_float(balance.get("min_ratio")),
                cv=_optional_float(balance.get("cv")),
            )
        )


@dataclass(frozen=True)
class ClusterView:
    """What one peer believes about the cluster: its ring and every member's state and fill."""

    self_id: str
    """Id of the peer that answered."""
    cluster_id: str
    """Id of the cluster it belongs to (public; its secret never leaves the peers)."""
    ring: RingInfo
    peers: tuple[PeerInfo, ...]
    max_clock_offset_ms: int | None = None
    """How far apart members' clocks may be before they are reported ``skewed`` (None from
    a peer of before clock offsets were reported)."""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> ClusterView:
        """Build from the JSON answer of ``GET /cluster``."""
        limit = record.get("max_clock_offset_ms")
        return cls(
            self_id=str(record["self"]),
            cluster_id=str(record["cluster"]),
            ring=RingInfo.from_json(record["ring"]),
            peers=tuple(PeerInfo.from_json(peer) for peer in record["peers"]),
            max_clock_offset_ms=None if limit is None else int(limit),
        )

    def peer(self, peer_id: str) -> PeerInfo | None:
        """The member with this id, or None if the answering peer does not know it."""
        return next((p for p in self.peers if p.id == peer_id), None)


def entity_tag(etag: str) -> str:
    """An etag as HTTP conditions carry it: quoted, unless it is ``*`` or already quoted
    (``"..."`` or weak ``W/"..."``)."""
    if etag == "*" or etag.startswith(('"', 'W/"')):
        return etag
    return f'"{etag}"'
