"""Pending deletions on disk: chunks a coordinator decided to delete later, kept across a
restart or crash of that peer.

Layout under the data directory::

    pending-deletes.log   append-only msgpack records: ["add", id, name, due, chunks] with
                          ``due`` in wall-clock seconds and ``chunks`` [[holder, chunk id]...],
                          and ["done", id]

Appends are not fsynced: a process crash keeps them (the kernel has them), a power loss may
lose the last ones, and garbage collection removes what a lost entry would have. At start
the log is read (a torn last record is dropped), and rewritten with only what is still
pending, so it stays as long as the deletions still to do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack
import msgspec

from node.disk.durable import write_atomically

log = logging.getLogger(__name__)

LOG_FILE = "pending-deletes.log"

Chunks = frozenset[tuple[str, str]]  # (holder member id, chunk id)


@dataclass(frozen=True)
class PendingDeletion:
    """Chunks of ``name`` to delete at ``due`` (wall-clock seconds), unless referenced then."""

    id: int
    name: str
    due: float
    chunks: Chunks


class DeletionLog:
    """The pending deletions of one peer, journaled in its data directory."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / LOG_FILE
        self._pending: dict[int, PendingDeletion] = {}
        self._next = 1
        self._file: BinaryIO | None = None

    def __repr__(self) -> str:
        return f"DeletionLog({self._path}, pending={len(self._pending)})"

    @property
    def pending(self) -> int:
        """Deletions journaled and not yet carried out (nor given up)."""
        return len(self._pending)

    @property
    def pending_chunks(self) -> int:
        """Chunks those deletions name."""
        return sum(len(entry.chunks) for entry in self._pending.values())

    def open(self) -> list[PendingDeletion]:
        """Read the log, compact it (where the disk has room), and return what is still
        pending (blocking: at start-up, before the peer serves)."""
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            data = b""
        records, whole = _records(data, self._path)
        for record in records:
            if isinstance(record, Added):
                chunks = frozenset((holder, chunk) for holder, chunk in record.chunks)
                self._pending[record.id] = PendingDeletion(
                    record.id, record.name, record.due, chunks
                )
            else:
                self._pending.pop(record.id, None)
        self._next = max(self._pending, default=0) + 1
        try:
            write_atomically(
                self._path, b"".join(_encode_add(entry) for entry in self._pending.values())
            )
        except OSError as exc:  # a full disk: appended to as it is (it only saves space)
            log.warning("cannot compact %s (kept as it is): %s", self._path, exc)
            if whole < len(data):  # a torn last record: records after it would be lost
                os.truncate(self._path, whole)  # (needs no room)
        self._file = open(self._path, "ab")  # noqa: SIM115 (kept open until close())
        return sorted(self._pending.values(), key=lambda entry: entry.due)

    def add(self, name: str, chunks: Iterable[tuple[str, str]], due: float) -> PendingDeletion:
        """Journal a deletion of ``chunks`` of ``name`` at ``due``."""
        entry = PendingDeletion(self._next, name, due, frozenset(chunks))
        self._next += 1
        self._pending[entry.id] = entry
        self._append(_encode_add(entry))
        return entry

    def done(self, entry: PendingDeletion) -> None:
        """The deletion was carried out (or given up): forget it."""
        if self._pending.pop(entry.id, None) is not None:
            self._append(msgspec.msgpack.encode(Done(entry.id)))

    def _append(self, record: bytes) -> None:
        if self._file is None:
            return  # not opened: tests and tools that keep deletions in memory only
        try:
            self._file.write(record)
            self._file.flush()
        except OSError as exc:  # a full disk: the deletion still runs, just not journaled
            log.warning("cannot journal a pending deletion in %s: %s", self._path, exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Added(msgspec.Struct, frozen=True, array_like=True, tag="add"):
    """A log record: a deletion journaled."""

    id: int
    name: str
    due: float
    chunks: list[tuple[str, str]]


class Done(msgspec.Struct, frozen=True, array_like=True, tag="done"):
    """A log record: a deletion carried out or given up."""

    id: int


def _encode_add(entry: PendingDeletion) -> bytes:
    chunks = sorted(entry.chunks)
    return msgspec.msgpack.encode(Added(entry.id, entry.name, entry.due, chunks))


def _records(data: bytes, path: Path) -> tuple[list[Added | Done], int]:
    """The records of a log, up to the first that cannot be read (a torn last one), and
    where the last of them ends."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    records: list[Added | Done] = []
    whole = 0
    try:
        for raw in unpacker:
            records.append(msgspec.convert(raw, Added | Done))
            whole = unpacker.tell()
    except (msgpack.UnpackException, ValueError, msgspec.ValidationError) as exc:
        log.warning("%s: reading stopped at a damaged record (%s); the rest is dropped", path, exc)
    if whole < len(data):
        log.warning("%s: %d bytes after its last whole record dropped", path, len(data) - whole)
    return records, whole
