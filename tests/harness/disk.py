"""Looking at and damaging a peer's data directory from a test."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from node.disk import chunk_store
from node.disk.chunk_store import CHUNKS_DIR, VOLUMES_DIR, sidecar_of
from node.disk.chunk_volumes import KEEP as PACKED_KEEP
from node.disk.chunk_volumes import Entry as VolumeEntry
from node.disk.chunk_volumes import scan as scan_volume
from node.disk.data_dir import save_identity
from node.disk.manifest_log import FRAME, KEEP, Damage, LogRecord, scan
from node.errors import CorruptData
from node.model.identity import ClusterIdentity
from node.model.manifest import Manifest

T = TypeVar("T")


def scanned(path: Path, scanner: Callable[[int, int], Iterable[T]]) -> list[T]:
    """What ``scanner(fd, size)`` finds in the file at ``path`` (a manifest log segment's
    or a chunk volume's ``scan``), opened read-only and never changed: as the peer would
    replay it (a running peer's too: a record being written reads as torn)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(scanner(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def chunk_files_in(data_dir: Path) -> list[Path]:
    """Complete chunk files under a peer's data directory."""
    return sorted(p for p in (data_dir / CHUNKS_DIR).glob("*/*") if "." not in p.name)


def chunk_files_size(data_dir: Path) -> int:
    """The bytes of a peer's chunk files, sidecars included: what its ``used_bytes`` counts."""
    total = 0
    for path in chunk_files_in(data_dir):
        with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
            total += path.stat().st_size
    return total


def chunk_bytes(path: Path) -> bytes:
    """The chunk's bytes in a chunk file (without the sidecar and trailer that end it)."""
    raw = path.read_bytes()
    return raw[: sidecar_of(path).size]


def packed_chunk(data_dir: Path, chunk_id: str) -> tuple[Path, int, int] | None:
    """Where a peer's chunk volumes hold ``chunk_id``: the volume, the offset of the
    chunk's bytes in it and their length; None if it is not packed there. Reads the volumes
    as the peer would replay them (a running peer's too: a record being written reads as
    torn), without changing them."""
    found: dict[str, tuple[Path, int, int]] = {}
    for path in sorted((data_dir / VOLUMES_DIR).glob("*.vol")):
        for entry in scanned(path, scan_volume):
            if not isinstance(entry, VolumeEntry):
                continue  # damage (a flipped byte), or a record being written
            if entry.kind == PACKED_KEEP:
                found[entry.chunk_id] = (path, entry.offset, entry.size)
            else:
                found.pop(entry.chunk_id, None)
    return found.get(chunk_id)


def stored_chunk(data_dir: Path, chunk_id: str) -> bytes | None:
    """A chunk's bytes as a peer holds them, in a file or packed; None if it has none (or
    a damaged sidecar)."""
    packed = packed_chunk(data_dir, chunk_id)
    if packed is not None:
        path, offset, size = packed
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(size)
    try:
        return chunk_bytes(data_dir / CHUNKS_DIR / chunk_id[:2] / chunk_id)
    except (FileNotFoundError, CorruptData):
        return None


def flip_chunk_byte(data_dir: Path, chunk_id: str) -> None:
    """Invert the middle byte of a chunk's bytes where a peer holds them (file or volume)."""
    packed = packed_chunk(data_dir, chunk_id)
    if packed is None:
        path = data_dir / CHUNKS_DIR / chunk_id[:2] / chunk_id
        flip_byte(path, sidecar_of(path).size // 2)
    else:
        path, offset, size = packed
        flip_byte(path, offset + size // 2)


def incoming_files_in(data_dir: Path) -> list[Path]:
    """Chunks being received (or left behind by a crash) under a peer's data directory."""
    incoming = data_dir / "incoming"
    return sorted(incoming.iterdir()) if incoming.is_dir() else []


def manifest_record(data_dir: Path, name: str) -> tuple[Path, int, int] | None:
    """Where a peer's manifest log holds its current replica of ``name``: the segment, the
    record's offset and length; None if it holds none, or the replica's record is damaged.
    Reads the log as the peer would replay it (a running peer's too: a tail being written
    reads as torn), without changing it."""
    found: dict[str, tuple[Path, int, int]] = {}
    directory = data_dir / "manifests" / "log"
    for path in sorted(directory.glob("*.log")) if directory.is_dir() else []:
        for event in scanned(path, lambda fd, _: scan(fd, 0)):
            if isinstance(event, Damage):
                if event.name is not None and not event.tail:
                    found.pop(event.name, None)
                continue
            where, record = event
            if record.kind == KEEP:
                found[record.name] = (path, where.offset, where.length)
            else:
                found.pop(record.name, None)
    return found.get(name)


def manifest_replica(data_dir: Path, name: str) -> Manifest | None:
    """A peer's replica of ``name``'s manifest as its log holds it (``manifest_record``)."""
    where = manifest_record(data_dir, name)
    if where is None:
        return None
    path, offset, length = where
    with path.open("rb") as file:
        file.seek(offset + FRAME.size)
        record = msgspec.msgpack.decode(file.read(length - FRAME.size), type=LogRecord)
    return Manifest.from_bytes(record.manifest or b"")


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte of a file in place (no truncation), by default the middle one."""
    with path.open("r+b") as file:
        size = file.seek(0, os.SEEK_END)
        where = size // 2 if offset is None else offset % size
        file.seek(where)
        old = file.read(1)
        file.seek(where)
        file.write(bytes([old[0] ^ 0xFF]))


def new_secret_file(path: Path) -> Path:
    """A new cluster's secret file at ``path`` (mode 0600), as ``ringstore up`` writes one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_identity(path, ClusterIdentity.create())
    return path


class ThreadHops:
    """Counts worker-thread hops while a test runs: ``asyncio.to_thread`` calls and those to
    the chunk store's readers (``node.disk.chunk_store.reading``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = asyncio.to_thread
        real_reading = chunk_store.reading

        async def counted(func: Any, /, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await real(func, *args, **kwargs)

        async def counted_reading(func: Any, *args: Any) -> Any:
            self.count += 1
            return await real_reading(func, *args)

        monkeypatch.setattr(asyncio, "to_thread", counted)
        monkeypatch.setattr(chunk_store, "reading", counted_reading)


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (written back first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
