"""The in-memory index of one peer's manifest replicas: for each name, where its record lies
in the manifest log and the summary a listing shows (``Manifest.without_chunks``).

A peer holds one entry per name it keeps a replica of, so an entry's size is what a
million small files cost in memory. Each is one ``bytes`` object: a fixed header
(``HEADER``: the record's segment, offset and length, and flags: a tombstone's, a hex
etag's, one whose manifest names chunks), then the summary as a msgpack array
(``_Summary``), decoded into a ``Manifest`` on each lookup (~3 us here). A lowercase hex
etag is kept as the bytes it spells, issuing peer ids and content types as numbers into two
tables of shared strings (at most ``SHARED_STRINGS`` each: clients choose content types;
past it, the string itself).
``bench/manifest_index.py`` (tracemalloc; 100,000 and 1,000,000 inline files named
``idle/<8 digits>``, 13 characters): 685-700 bytes of Python objects per name as slotted
``Manifest`` summaries and a ``Location`` each, 200-208 this way; ~235 with names of 40
characters.

Names are kept sorted for listings; while the log is replayed they are sorted once at the
end (``sort``), since inserting each name in log order is quadratic. A hint file
(``node.disk.manifest_hints``) carries each record's summary as ``portable`` gives it (peer
id and content type spelled out: the tables' numbers are one process's), which ``restore``
indexes without decoding a ``Manifest``.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator, Mapping, Sequence

import msgspec

from node.disk.manifest_log import Location
from node.model.layout import Layout
from node.model.manifest import (
    Manifest,
    RepresentationRecord,
    representation_of,
    representation_record,
)
from node.model.representation import NO_REPRESENTATION
from node.model.version import Version

SHARED_STRINGS = 4096  # distinct peer ids, and content types, the index keeps one copy of
# segment number, offset of the record's frame, its length, flags (TOMBSTONE, HEX_ETAG, CHUNKS)
HEADER = struct.Struct("<QQIB")
TOMBSTONE = 1  # flags: a tombstone's entry...
HEX_ETAG = 2  # ...one whose etag is kept as the bytes its lowercase hex spells...
CHUNKS = 4  # ...one whose manifest names chunks on peers (what rebalancing may move)
FLAGS = TOMBSTONE | HEX_ETAG | CHUNKS  # every flag there is

__all__ = ["SHARED_STRINGS", "ManifestIndex", "portable"]


class _Summary(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """An entry's summary after its header: a ``Manifest`` without name, chunks and
    segments. ``peer`` and ``content_type``: a number into the shared strings, or the
    string; ``etag``: the bytes its lowercase hex spells (flag ``HEX_ETAG``), or its UTF-8.
    Hint files carry it and the flags (``portable``): a change to either takes a new
    ``HINT_MAGIC`` format."""

    wall_ms: int
    counter: int
    peer: int | str
    revision: int
    size: int
    k: int
    m: int
    block_size: int
    etag: bytes
    content_type: int | str
    representation: RepresentationRecord | None = None
    inline: bytes = b""  # ``Manifest.listed_inline``: a cluster record's


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Summary)


class _Strings:
    """Strings many entries share, each kept once and named by its number: at most
    ``SHARED_STRINGS`` of them, first come first kept."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._numbers: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._texts)

    def number(self, text: str) -> int | str:
        """The number of ``text``, or ``text`` itself once the table is full."""
        found = self._numbers.get(text)
        if found is not None:
            return found
        if len(self._texts) >= SHARED_STRINGS:
            return text
        self._numbers[text] = len(self._texts)
        self._texts.append(text)
        return len(self._texts) - 1

    def text(self, kept: int | str) -> str:
        """What ``number`` was given."""
        return self._texts[kept] if isinstance(kept, int) else kept


class ManifestIndex(Mapping[str, Manifest]):
    """name -> the summary of its replica here (a ``Manifest`` decoded on each lookup, with
    no chunks), and where its record lies (``where``)."""

    def __init__(self) -> None:
        self._entries: dict[str, bytes] = {}
        self._names: list[str] = []  # sorted once ``sort`` ran
        self._sorted = False
        self._peers = _Strings()  # issuing peer ids: a cluster's members
        self._types = _Strings()  # content types: chosen by clients

    # --- lookups -----------------------------------------------------------------------

    def __getitem__(self, name: str) -> Manifest:
        return self._decode(name, self._entries[name])

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"ManifestIndex(names={len(self._entries)}, sorted={self._sorted}, "
            f"peer_ids={len(self._peers)}, content_types={len(self._types)})"
        )

    @property
    def names(self) -> Sequence[str]:
        """Every name in order, once ``sort`` ran (empty before: the log is being read)."""
        return self._names

    def where(self, name: str) -> Location | None:
        """Where the record of ``name``'s replica lies, or None when there is none."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        segment, offset, length, _ = HEADER.unpack_from(entry)
        return Location(segment, offset, length)

    def deleted(self, name: str) -> bool:
        """Whether ``name``'s replica is a tombstone (KeyError: none here)."""
        return bool(_flags(self._entries[name]) & TOMBSTONE)

    def has_chunks(self, name: str) -> bool:
        """Whether ``name``'s replica here names chunks on peers: False for a tombstone,
        a file whose bytes are in its manifest, and a name not here."""
        entry = self._entries.get(name)
        return entry is not None and bool(_flags(entry) & CHUNKS)

    # --- changes -----------------------------------------------------------------------

    def sort(self) -> None:
        """Sort the names once the log is read; from then on each new name is inserted."""
        self._names, self._sorted = sorted(self._entries), True

    def keep(self, manifest: Manifest, where: Location) -> Location | None:
        """Index ``manifest`` (its summary) as its name's replica, its record at ``where``;
        returns where the record it replaces lay (None: a new name)."""
        flags, etag = _flags_and_etag(manifest)
        peer, content_type = manifest.version.peer, manifest.content_type
        summary = _summary(
            manifest, etag, self._peers.number(peer), self._types.number(content_type)
        )
        return self._put(manifest.name, where, flags, _encoder.encode(summary))

    def restore(self, name: str, where: Location, flags: int, portable: bytes) -> Location | None:
        """``keep`` from what ``portable`` gave for the manifest (a hint file's, written by
        another process: its strings are not numbers into this one's tables). Raises
        msgspec.DecodeError where ``portable`` is not such a summary, or ``flags`` holds one
        not in ``FLAGS`` (a file written by another release: what it meant is unknown)."""
        if flags & ~FLAGS:
            raise msgspec.DecodeError(f"unknown entry flags {flags:#x}")
        summary = _decoder.decode(portable)
        peer, content_type = summary.peer, summary.content_type
        if not isinstance(peer, str) or not isinstance(content_type, str):
            raise msgspec.DecodeError("a portable summary names its peer and content type")
        numbered = msgspec.structs.replace(
            summary, peer=self._peers.number(peer), content_type=self._types.number(content_type)
        )
        return self._put(name, where, flags, _encoder.encode(numbered))

    def _put(self, name: str, where: Location, flags: int, summary: bytes) -> Location | None:
        old = self.where(name)
        if old is None and self._sorted:
            bisect.insort(self._names, name)
        self._entries[name] = _header(where, flags) + summary
        return old

    def move(self, name: str, where: Location) -> None:
        """The record of ``name`` was appended again at ``where`` (compaction, a
        confirmation); KeyError when ``name`` is not here."""
        entry = self._entries[name]
        self._entries[name] = _header(where, _flags(entry)) + entry[HEADER.size :]

    def forget(self, name: str) -> Location:
        """Drop ``name`` (KeyError: not here); returns where its record lay."""
        where = self.where(name)
        if where is None:
            raise KeyError(name)
        del self._entries[name]
        if self._sorted:
            self._names.pop(bisect.bisect_left(self._names, name))
        return where

    # --- an entry's summary ------------------------------------------------------------

    def _decode(self, name: str, entry: bytes) -> Manifest:
        summary = _decoder.decode(memoryview(entry)[HEADER.size :])
        flags, stored = _flags(entry), summary.representation
        return Manifest(
            name,
            Version(summary.wall_ms, summary.counter, self._peers.text(summary.peer)),
            Layout(summary.size, summary.k, summary.m, summary.block_size),
            summary.etag.hex() if flags & HEX_ETAG else summary.etag.decode(),
            self._types.text(summary.content_type),
            (),
            bool(flags & TOMBSTONE),
            summary.revision,
            summary.inline,
            NO_REPRESENTATION if stored is None else representation_of(stored),
        )


def portable(manifest: Manifest) -> tuple[int, bytes]:
    """``manifest``'s entry flags and summary as ``ManifestIndex.restore`` takes them in any
    process: its peer id and content type spelled out."""
    flags, etag = _flags_and_etag(manifest)
    summary = _summary(manifest, etag, manifest.version.peer, manifest.content_type)
    return flags, _encoder.encode(summary)


def _flags_and_etag(manifest: Manifest) -> tuple[int, bytes]:
    etag = _hex_bytes(manifest.etag)
    flags = (TOMBSTONE if manifest.deleted else 0) | (0 if etag is None else HEX_ETAG)
    if manifest.chunks and not manifest.deleted:
        flags |= CHUNKS
    return flags, manifest.etag.encode() if etag is None else etag


def _summary(manifest: Manifest, etag: bytes, peer: int | str, content_type: int | str) -> _Summary:
    version, layout, given = manifest.version, manifest.layout, manifest.representation
    return _Summary(
        version.wall_ms,
        version.counter,
        peer,
        manifest.revision,
        layout.size,
        layout.k,
        layout.m,
        layout.block_size,
        etag,
        content_type,
        representation_record(given) if given else None,
        manifest.listed_inline,
    )


def _header(where: Location, flags: int) -> bytes:
    return HEADER.pack(where.segment, where.offset, where.length, flags)


def _flags(entry: bytes) -> int:
    return entry[HEADER.size - 1]


def _hex_bytes(etag: str) -> bytes | None:
    """The bytes ``etag`` spells where it is lowercase hex of even length (an MD5 or xxh3
    digest: half the size), so that ``.hex()`` gives it back; else None."""
    if len(etag) % 2:
        return None
    try:
        raw = bytes.fromhex(etag)
    except ValueError:
        return None
    return raw if raw.hex() == etag else None
