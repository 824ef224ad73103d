"""Looking at and damaging a peer's data directory from a test."""

from __future__ import annotations

import os
from pathlib import Path

from node.disk.data_dir import save_identity
from node.model.identity import ClusterIdentity
from node.model.names import name_key


def chunk_files_in(data_dir: Path) -> list[Path]:
    """Complete chunk files under a peer's data directory (not their sidecars)."""
    return sorted(p for p in (data_dir / "chunks").glob("*/*") if "." not in p.name)


def incoming_files_in(data_dir: Path) -> list[Path]:
    """Chunks being received (or left behind by a crash) under a peer's data directory."""
    incoming = data_dir / "incoming"
    return sorted(incoming.iterdir()) if incoming.is_dir() else []


def manifest_replica_path(data_dir: Path, name: str) -> Path:
    """Where a peer keeps its replica of ``name``'s manifest (it may not hold one)."""
    key = name_key(name)
    return data_dir / "manifests" / key[:2] / key


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
