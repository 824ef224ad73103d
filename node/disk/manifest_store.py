"""The manifest replicas one peer keeps: the newest version of each name it was sent.

Layout under the data directory::

    manifests/<2 hex>/<name key>   msgpack manifest, replaced only by a newer version

A write is kept only if it takes precedence over the stored one (a newer version, or a newer
revision of the same version), so replicas converge whatever order writes arrive in; a
conditional write (If-Match...) only if its condition also holds for the stored one. Files
are written to a temporary name, fsynced and renamed. An in-memory index of summaries serves
listings without disk reads.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from pathlib import Path

from node.disk.durable import write_atomically
from node.disk.locks import KeyedLocks
from node.errors import CorruptData
from node.model.folders import replica_page
from node.model.layout import DEFAULT_M
from node.model.manifest import Manifest, ReplicaWrite
from node.model.names import name_key
from node.model.preconditions import Preconditions, representation
from node.model.version import Version

log = logging.getLogger(__name__)


class ManifestStore:
    """The manifest replicas on this peer's disk, with an in-memory index for listings."""

    def __init__(self, root: Path, parity: int = DEFAULT_M) -> None:
        self._root = root / "manifests"
        self._index: dict[str, Manifest] = {}
        self._names: list[str] = []  # sorted names in the index
        self._parity = parity  # the cluster's m: versions with fewer chunks are degraded
        self._degraded: dict[str, int] = {}  # degraded live versions: chunks they have
        self._locks = KeyedLocks()

    def __repr__(self) -> str:
        return f"ManifestStore({self._root}, names={len(self._index)})"

    def __len__(self) -> int:
        return len(self._index)

    def names(self) -> list[str]:
        """Every name this peer holds a replica of, in order."""
        return list(self._names)

    def live_names(self) -> list[str]:
        """Names whose replica here is a live version (not a tombstone), in order."""
        return [name for name in self._names if not self._index[name].deleted]

    def degraded(self) -> dict[str, int]:
        """Chunks stored, by name, of the live versions that lack chunks of the cluster's
        layout (k + ``parity``; repair's work): written degraded, or by a release that
        wrote fewer parity chunks."""
        return dict(self._degraded)

    def _note_degraded(self, manifest: Manifest) -> None:
        if manifest.missing(self._parity) > 0:
            self._degraded[manifest.name] = len(manifest.chunks)
        else:
            self._degraded.pop(manifest.name, None)

    async def open(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        for shard in self._root.iterdir():
            for path in shard.iterdir():
                if path.suffix == ".corrupt":
                    continue
                if path.suffix == ".tmp":
                    path.unlink()
                    continue
                try:
                    manifest = Manifest.from_bytes(path.read_bytes())
                except CorruptData as exc:
                    log.error("unreadable manifest %s: %s", path, exc)
                    continue
                self._index[manifest.name] = manifest.without_chunks()
                self._note_degraded(manifest)
        self._names = sorted(self._index)

    def _path(self, name: str) -> Path:
        key = name_key(name)
        return self._root / key[:2] / key

    async def get(self, name: str) -> Manifest | None:
        """The stored manifest of ``name``, or None.

        A damaged replica is set aside (renamed ``.corrupt``) and forgotten, so that this
        peer answers "none" and read repair or the next write puts a good copy back.
        """
        if name not in self._index:
            return None
        path = self._path(name)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        try:
            return Manifest.from_bytes(data)
        except CorruptData as exc:
            log.error("manifest replica of %r is damaged (%s); set aside for repair", name, exc)
            await asyncio.to_thread(path.replace, path.with_suffix(".corrupt"))
            self._forget(name)
            return None

    def _forget(self, name: str) -> None:
        del self._index[name]
        self._names.pop(bisect.bisect_left(self._names, name))
        self._degraded.pop(name, None)

    async def put(
        self,
        manifest: Manifest,
        expect: tuple[Version, int] | None = None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        """Keep ``manifest`` if it takes precedence over the stored one of its name.

        With ``expect`` (a move or repair: a new revision of one version), keep it only if
        the stored manifest is exactly ``expect`` or there is none: of two revisions built
        on the same base, each replica keeps the first, and only one can reach a quorum.
        With ``condition`` (a conditional PUT or DELETE), keep it only if the condition
        holds for the stored live version (or for none, when there is none or a tombstone):
        checked under the name's lock, so of two writes conditional on the same state each
        replica keeps the first, and only one can reach a quorum. A refusal answers the
        version held (the offered one when there is none).
        """
        async with self._locks.hold(manifest.name):
            current = self._index.get(manifest.name)
            if condition is not None and not condition.allows_write(representation(current)):
                held = manifest.version if current is None else current.version
                return ReplicaWrite(False, held, None)
            if current is not None and (
                current.precedence >= manifest.precedence
                or (expect is not None and current.precedence != expect)
            ):
                return ReplicaWrite(False, current.version, None)
            # A damaged stored replica reads as none (and is forgotten): it is just replaced.
            replaced = await self.get(manifest.name) if current is not None else None
            await self._keep(manifest)
            return ReplicaWrite(True, manifest.version, replaced)

    async def _keep(self, manifest: Manifest) -> None:
        await asyncio.to_thread(self._write, manifest)
        if manifest.name not in self._index:
            bisect.insort(self._names, manifest.name)
        self._index[manifest.name] = manifest.without_chunks()
        self._note_degraded(manifest)

    async def retract(
        self, name: str, precedence: tuple[Version, int], restore: Manifest | None = None
    ) -> bool:
        """Take back this replica of ``name`` if it is exactly ``precedence`` (a failed
        write's): put ``restore`` back in its place (what that write replaced here), or
        drop it when there is nothing to restore. True if it was taken back."""
        async with self._locks.hold(name):
            current = self._index.get(name)
            if current is None or current.precedence != precedence:
                return False
            if restore is not None:
                await self._keep(restore)
                return True
            await asyncio.to_thread(self._path(name).unlink, missing_ok=True)
            self._forget(name)
            return True

    def _write(self, manifest: Manifest) -> None:
        path = self._path(manifest.name)
        path.parent.mkdir(exist_ok=True)
        write_atomically(path, manifest.to_bytes())

    def list(
        self,
        prefix: str,
        start_after: str,
        limit: int,
        delimiter: str = "",
        base: str | None = None,
    ) -> tuple[list[Manifest], bool]:
        """Summaries of names with ``prefix`` after ``start_after``, tombstones included,
        at most ``limit``, and whether more remain; with a ``delimiter``, rolled up into
        folders below ``base`` (``node.model.folders.replica_page`` has the rules)."""
        return replica_page(self._names, self._index, prefix, start_after, limit, delimiter, base)
