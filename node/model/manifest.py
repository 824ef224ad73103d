"""Manifests: the record of one file version, and the commit point of a PUT.

A file version exists exactly when a manifest for it is stored on a write quorum of its
replicas. Manifests are ordered by ``(version, revision)``: the version orders the writes of a
name, the revision orders changes of where one version's chunks live (moves and repairs).
The manifest names the layout, the content digest, and for every stored chunk its index,
holder peer and block digests. A tombstone is a manifest with ``deleted`` set
and no chunks. On the wire and on disk a manifest is msgpack with a schema number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgpack
import xxhash

from node.errors import CorruptData
from node.model.digests import DIGEST_SIZE, chunk_digest
from node.model.layout import Layout
from node.model.version import Version
from node.model.wire import pack, unpack

SCHEMA = 1


@dataclass(frozen=True)
class ChunkMeta:
    """What a holder keeps beside a chunk: whose it is, and the digest of every block."""

    name: str
    version: str
    index: int
    block_size: int
    size: int = 0
    block_digests: bytes = b""
    stored_at: float = 0.0  # wall-clock seconds

    def to_bytes(self) -> bytes:
        return pack(
            [
                self.name,
                self.version,
                self.index,
                self.block_size,
                self.size,
                self.block_digests,
                self.stored_at,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkMeta:
        """Decode a sidecar; raises CorruptData if it is not one."""
        try:
            name, version, index, block_size, size, digests, stored_at = unpack(data)
            return cls(name, version, index, block_size, size, digests, stored_at)
        except (ValueError, TypeError) as exc:
            raise CorruptData(f"undecodable chunk sidecar: {exc!r}") from exc


@dataclass(frozen=True)
class ChunkRef:
    """Where one chunk of a file version lives, and how to check it."""

    index: int
    holder: str
    block_digests: bytes = field(repr=False)

    @property
    def digest(self) -> bytes:
        """Digest of the whole chunk: a hash over its block digests."""
        return chunk_digest(self.block_digests)

    def block_digest(self, stripe: int) -> bytes:
        return self.block_digests[stripe * DIGEST_SIZE : (stripe + 1) * DIGEST_SIZE]


@dataclass(frozen=True)
class Manifest:
    name: str
    version: Version
    layout: Layout
    etag: str = ""
    content_type: str = "application/octet-stream"
    chunks: tuple[ChunkRef, ...] = ()
    deleted: bool = False
    revision: int = 0

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
    def degraded(self) -> bool:
        """True when fewer chunks are stored than the layout has."""
        return not self.deleted and len(self.chunks) < self.layout.n

    def to_bytes(self) -> bytes:
        layout = self.layout
        record = {
            "schema": SCHEMA,
            "name": self.name,
            "version": self.version.to_wire(),
            "size": layout.size,
            "k": layout.k,
            "m": layout.m,
            "block_size": layout.block_size,
            "etag": self.etag,
            "content_type": self.content_type,
            "deleted": self.deleted,
            "revision": self.revision,
            "chunks": [[c.index, c.holder, c.block_digests] for c in self.chunks],
        }
        packed: bytes = msgpack.packb(record, use_bin_type=True)
        # A checksum over the record: a flipped byte must never decode into another manifest
        # (a version bit flipped upward would otherwise win every read and doom the file).
        sealed: bytes = msgpack.packb([packed, _checksum(packed)], use_bin_type=True)
        return sealed

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Decode a stored manifest; raises CorruptData if it is not one."""
        try:
            packed, checksum = msgpack.unpackb(data, raw=False)
            if not isinstance(packed, bytes) or _checksum(packed) != checksum:
                raise CorruptData("manifest fails its checksum")
            record: dict[str, Any] = msgpack.unpackb(packed, raw=False)
            if record["schema"] != SCHEMA:
                raise CorruptData(f"unknown manifest schema {record['schema']!r}")
            layout = Layout(record["size"], record["k"], record["m"], record["block_size"])
            return cls(
                name=record["name"],
                version=Version.from_wire(record["version"]),
                layout=layout,
                etag=record["etag"],
                content_type=record["content_type"],
                deleted=record["deleted"],
                revision=record.get("revision", 0),
                chunks=tuple(ChunkRef(i, h, d) for i, h, d in record["chunks"]),
            )
        except CorruptData:
            raise
        except Exception as exc:
            raise CorruptData(f"undecodable manifest: {exc!r}") from exc

    @property
    def modified(self) -> str:
        """When this version was written (its clock time), as RFC 3339 UTC."""
        moment = datetime.fromtimestamp(self.version.wall_ms / 1000, tz=timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        layout = self.layout
        return {
            "name": self.name,
            "version": str(self.version),
            "modified": self.modified,
            "revision": self.revision,
            "size": layout.size,
            "etag": self.etag,
            "content_type": self.content_type,
            "deleted": self.deleted,
            "degraded": self.degraded,
            "k": layout.k,
            "m": layout.m,
            "block_size": layout.block_size,
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


def _checksum(packed: bytes) -> bytes:
    return xxhash.xxh3_128_digest(packed)


def file_id(name: str, version: Version) -> str:
    """Ring key of a file version's chunks: blake2b-128 of (name, version)."""
    packed = msgpack.packb([name, version.to_wire()])
    return hashlib.blake2b(packed, digest_size=16).hexdigest()


def chunk_id(file: str, index: int) -> str:
    return f"{file}-{index}"
