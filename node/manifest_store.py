"""The manifest replicas one peer keeps: the newest version of each name it was sent.

Layout under the data directory::

    manifests/<2 hex>/<name key>   msgpack manifest, replaced only by a newer version

A write is kept only if its version is newer than the stored one, so replicas converge on the
highest version whatever order writes arrive in. Files are written to a temporary name,
fsynced and renamed. An in-memory index of summaries serves listings without disk reads.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from node.errors import CorruptData
from node.manifest import Manifest
from node.names import name_key
from node.version import Version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreResult:
    """What a replica did with a manifest it was sent."""

    stored: bool
    current: Version
    replaced: Manifest | None


class ManifestStore:
    def __init__(self, root: Path) -> None:
        self._root = root / "manifests"
        self._index: dict[str, Manifest] = {}
        self._names: list[str] = []  # sorted names in the index
        self._locks = KeyedLocks()

    def __repr__(self) -> str:
        return f"ManifestStore({self._root}, names={len(self._index)})"

    def __len__(self) -> int:
        return len(self._index)

    async def open(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        for shard in self._root.iterdir():
            for path in shard.iterdir():
                if path.name.endswith(".tmp"):
                    path.unlink()
                    continue
                try:
                    manifest = Manifest.from_bytes(path.read_bytes())
                except CorruptData as exc:
                    log.error("unreadable manifest %s: %s", path, exc)
                    continue
                self._index[manifest.name] = _summary(manifest)
        self._names = sorted(self._index)

    def _path(self, name: str) -> Path:
        key = name_key(name)
        return self._root / key[:2] / key

    async def get(self, name: str) -> Manifest | None:
        """The stored manifest of ``name``, or None. Raises CorruptData if it is damaged."""
        if name not in self._index:
            return None
        try:
            data = await asyncio.to_thread(self._path(name).read_bytes)
        except FileNotFoundError:
            return None
        return Manifest.from_bytes(data)

    async def put(self, manifest: Manifest) -> StoreResult:
        """Keep ``manifest`` if it is newer than the stored version of its name."""
        async with self._locks.hold(manifest.name):
            current = self._index.get(manifest.name)
            if current is not None and current.version >= manifest.version:
                return StoreResult(False, current.version, None)
            replaced = await self.get(manifest.name) if current is not None else None
            await asyncio.to_thread(self._write, manifest)
            if current is None:
                bisect.insort(self._names, manifest.name)
            self._index[manifest.name] = _summary(manifest)
            return StoreResult(True, manifest.version, replaced)

    def _write(self, manifest: Manifest) -> None:
        path = self._path(manifest.name)
        path.parent.mkdir(exist_ok=True)
        temp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        with open(temp, "wb") as file:
            file.write(manifest.to_bytes())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def list(self, prefix: str, start_after: str, limit: int) -> tuple[list[Manifest], bool]:
        """Summaries of names with ``prefix`` after ``start_after``, tombstones included.

        Returns at most ``limit`` entries in name order and whether more remain.
        """
        names = self._names
        position = bisect.bisect_left(names, prefix)
        if start_after:
            position = max(position, bisect.bisect_right(names, start_after))
        found: list[Manifest] = []
        for name in names[position:]:
            if not name.startswith(prefix):
                break
            if len(found) == limit:
                return found, True
            found.append(self._index[name])
        return found, False


class KeyedLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._entries.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._entries[key]


def _summary(manifest: Manifest) -> Manifest:
    """The manifest without its chunk list: what the index keeps in memory."""
    return Manifest(
        manifest.name,
        manifest.version,
        manifest.layout,
        manifest.etag,
        manifest.content_type,
        (),
        manifest.deleted,
    )
