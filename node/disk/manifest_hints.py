"""Hint files: what a closed manifest log segment holds, summarised, so that a restart
rebuilds the in-memory index without reading the segment.

The idea is Bitcask's (J. Sheehy, D. Smith, "Bitcask: A Log-Structured Hash Table for Fast
Key/Value Data", Basho, 2010, "hint files"): a segment no longer appended to is summarised
once, each record by its name, where it lies and what the index keeps of it, ~0.1 KB per
record where the record itself is up to 64 KiB (an inline file's bytes). Restarting a peer
that holds a million small files then reads ~0.1 GB of hints rather than ~4 GB of log.

Layout: ``manifests/hints/<seq, 12 digits>.hint`` for segment ``<seq>.log``::

    HEAD    magic ``HINT_MAGIC``, the segment's number, its size in bytes and the xxh3-64
            of its last ``TAIL_BYTES`` bytes (uint64 each, little endian)
    batches each a uint32 length (little endian) and a msgpack array of at most
            ``BATCH`` ``Hint`` records, in the segment's record order
    TAIL    the xxh3-64 of every byte before it (uint64, little endian)

A hint file is only ever an aid: one that is missing, torn, fails its checksum, is of
another format, or names another size or last bytes than its segment's is passed over (the
segment is read instead) and written again. So it is written without fsync (temporary file,
then rename): a crash loses at most the time to rebuild it. A segment is immutable once
closed (appends go to the newest; a torn tail is only ever cut from the newest), so a hint
that matches its segment's size and last ``TAIL_BYTES`` (its last records' ends, checksums
included) describes it; a segment of the same number and size that holds other records (a
data directory restored in part from a backup) is told apart by those bytes. A record
damaged after its hint was written is found when it is read, as it would be for any record
read after a restart (the read fails its checksum, and the name is written off), or when
compaction reads it (the name is written off before the segment goes:
``node.disk.manifest_store``).

Blocking: call from a worker thread, or at start-up before the peer serves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import xxhash

log = logging.getLogger(__name__)

# Format 2 (1 lacked the index's CHUNKS flag). A change to ``Hint``, or to the flags and
# summary it carries (``node.disk.manifest_index``), takes a new format number: a file of
# another format is read as none (its segment is read, and the hint file written again).
HINT_MAGIC = b"RSMHNT\x00\x02"
HEAD = struct.Struct("<8sQQQ")  # magic, segment number, segment size, xxh3-64 of its end
TAIL_BYTES = 4096  # of the segment, checked against a hint file's HEAD
LENGTH = struct.Struct("<I")  # bytes of one batch
TAIL = struct.Struct("<Q")  # xxh3-64 of everything before
BATCH = 4096  # hints per batch: decoded one batch at a time
HINT_NAME = re.compile(r"^(\d{12})\.hint$")


class Hint(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """One record of a segment: its ``kind`` (``KEEP``, ``REMOVE``), ``name``, and where it
    lies (``offset``, ``length``: its ``Location``). A ``KEEP``'s ``flags`` and ``summary``
    are ``node.disk.manifest_index.portable``'s; ``provisional`` as the record's (the mark's
    details are read from the record itself: rare); ``repair``, for a version whose bytes
    lie in chunks of its own (``Manifest.chunked``): its layout's k and m and the chunks it
    has, which is what the peer's count of degraded versions needs."""

    kind: int
    name: str
    offset: int
    length: int
    provisional: bool = False
    flags: int = 0
    summary: bytes = b""
    repair: tuple[int, int, int] | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(list[Hint]).decode


def hint_path(directory: Path, segment: int) -> Path:
    """Where the hint file of ``segment`` lies in ``directory``."""
    return directory / f"{segment:012d}.hint"


def tail_digest(path: Path, size: int) -> int:
    """The xxh3-64 of the last ``TAIL_BYTES`` of the segment file at ``path``, of ``size``
    bytes (read through a descriptor of its own); raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return xxhash.xxh3_64_intdigest(os.pread(fd, TAIL_BYTES, max(0, size - TAIL_BYTES)))
    finally:
        os.close(fd)


class HintWriter:
    """Writes the hint file of one closed segment as its records are read, a batch at a
    time (memory: one batch, not the segment's hints): ``add`` each hint in record order,
    then ``commit`` (renamed into place) or ``abandon``. A hint file being only an aid, a
    write that fails (a full disk) is logged once and the file abandoned; nothing raises."""

    def __init__(self, directory: Path, segment: int, size: int, end: int) -> None:
        """``size``: the segment's bytes; ``end``: its ``tail_digest``."""
        self.path = hint_path(directory, segment)
        self._temp = self.path.with_name(self.path.name + ".tmp")
        self._check = xxhash.xxh3_64()
        self._batch: list[Hint] = []
        self._file: BinaryIO | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._file = open(self._temp, "wb")  # noqa: SIM115 (closed by commit, abandon)
            self._put(HEAD.pack(HINT_MAGIC, segment, size, end))
        except OSError as exc:
            self._failed(exc)

    def __repr__(self) -> str:
        return f"HintWriter({self.path}, open={self._file is not None})"

    def add(self, hint: Hint) -> None:
        if self._file is None:
            return
        self._batch.append(hint)
        if len(self._batch) == BATCH:
            self._flush()

    def commit(self) -> bool:
        """Finish the file and rename it into place; whether it was written."""
        if self._file is None:
            return False
        try:
            if not self._flush():
                return False
            self._file.write(TAIL.pack(self._check.intdigest()))
            self._file.close()
            self._file = None
            os.replace(self._temp, self.path)
        except OSError as exc:
            self._failed(exc)
            return False
        return True

    def abandon(self) -> None:
        """Drop the file being written (the segment is damaged, or the write failed)."""
        with contextlib.suppress(OSError):
            file, self._file = self._file, None
            if file is not None:
                file.close()
            self._temp.unlink(missing_ok=True)

    def _flush(self) -> bool:
        """Write the batch in hand; whether the file is still being written."""
        if self._batch and self._file is not None:
            encoded = _encode(self._batch)
            self._batch = []
            try:
                self._put(LENGTH.pack(len(encoded)) + encoded)
            except OSError as exc:
                self._failed(exc)
        return self._file is not None

    def _put(self, data: bytes) -> None:
        assert self._file is not None
        self._check.update(data)
        self._file.write(data)

    def _failed(self, exc: OSError) -> None:
        log.warning("hint file %s not written (the segment is read at starts): %s", self.path, exc)
        self.abandon()


def read_hints(directory: Path, segment: int, size: int, end: int) -> Iterator[Hint] | None:
    """The hints of ``segment`` in record order if its hint file is whole and describes
    ``size`` bytes of it that end as ``end`` says (``tail_digest``); None otherwise (why is
    logged)."""
    path = hint_path(directory, segment)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("hint file %s unreadable (%s): the segment is read instead", path, exc)
        return None
    why = _fault(data, segment, size, end)
    body = memoryview(data)[HEAD.size : len(data) - TAIL.size]
    if why is None:
        try:  # decoded twice (~1 us a hint) rather than kept: none is applied unless all are
            for _ in _hints(body):
                pass
        except (msgspec.DecodeError, struct.error) as exc:
            why = f"does not decode ({exc})"
    if why is not None:
        log.warning("hint file %s %s: the segment is read instead", path, why)
        return None
    return _hints(body)


def _fault(data: bytes, segment: int, size: int, end: int) -> str | None:
    """Why ``data`` is not a whole hint file of ``segment`` as it is now, or None."""
    if len(data) < HEAD.size + TAIL.size:
        return "is cut short"
    (check,) = TAIL.unpack_from(data, len(data) - TAIL.size)
    if xxhash.xxh3_64_intdigest(memoryview(data)[: len(data) - TAIL.size]) != check:
        return "fails its checksum"
    magic, number, described, ending = HEAD.unpack_from(data)
    if magic != HINT_MAGIC:
        return "is of another format"
    if number != segment:
        return "is not this segment's"
    if described != size:
        return f"describes {described} bytes of a segment of {size}"
    if ending != end:
        return "describes a segment that ends otherwise"
    return None


def _hints(body: memoryview) -> Iterator[Hint]:
    """Decode ``body``'s batches one at a time; raises msgspec.DecodeError, struct.error."""
    at = 0
    while at < len(body):
        (length,) = LENGTH.unpack_from(body, at)
        yield from _decode_batch(body[at + LENGTH.size : at + LENGTH.size + length])
        at += LENGTH.size + length


def hinted_segments(directory: Path) -> set[int]:
    """The segment numbers that have a hint file in ``directory`` (none if it is absent or
    cannot be listed); temporary files left by a crash are removed."""
    found: set[int] = set()
    try:
        if not directory.is_dir():
            return found
        paths = list(directory.iterdir())
    except OSError as exc:
        log.warning("hint files in %s unreadable (%s): every segment is read", directory, exc)
        return found
    for path in paths:
        if path.name.endswith(".tmp"):
            _remove(path)
        elif match := HINT_NAME.match(path.name):
            found.add(int(match.group(1)))
    return found


def remove_hints(directory: Path, segment: int) -> None:
    """Remove ``segment``'s hint file, if any (a failure is logged: a hint file left over
    names a segment number never used again, and is removed at a start)."""
    _remove(hint_path(directory, segment))


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("hint file %s not removed: %s", path, exc)
