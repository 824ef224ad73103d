"""Access keys and namespaces as cluster state: records on the ring, read through a cache.

Every record is the manifest of a reserved name (``node.model.access``) carrying the record
inline, so it has the manifests' quorum rules: written to W of its N replicas, read from R
(R + W > N), read-repaired, moved when the ring grows, and a peer that was down catches up
through read repair like for any manifest. Revoking a key or removing a namespace writes a
tombstone.

Lookups are cached per peer for ``ttl`` seconds (positive and negative answers alike), so a
cold check costs one quorum read and a warm one none; concurrent misses of one record share
that read. A revocation is therefore seen by every peer within ``ttl`` plus one quorum read
(the default 2 s keeps it well inside 5 s), and at once by the peer that made it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from node.datapath.coordinator import Coordinator
from node.datapath.listing import holds_a_live_file
from node.datapath.replicas import ManifestReplicas
from node.errors import (
    AccessKeyNotFound,
    InvalidNamespace,
    NamespaceExists,
    NamespaceNotEmpty,
    NamespaceNotFound,
    PreconditionFailed,
)
from node.model import access
from node.model.access import AccessKey, Grants, NamespaceRecord
from node.model.identity import ClusterIdentity, key_id
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.names import RESERVED, is_stored_name
from node.model.preconditions import Preconditions, TagList
from node.model.version import HybridClock
from node.waiting import consume

log = logging.getLogger(__name__)
R = TypeVar("R")

DEFAULT_TTL = 2.0  # seconds a looked-up record is trusted
MAX_CACHED = 10_000  # records cached per peer
LIST_PAGE = 1000
MAX_LISTED = 100_000  # records one listing walks at most
_RECORD_LAYOUT = Layout(0, 1, 0)  # records have no chunks
_ABSENT = Preconditions(if_none_match=TagList(True))  # If-None-Match: *


@dataclass(frozen=True)
class _Entry:
    manifest: Manifest | None  # live record, or None (absent or tombstone)
    fetched: float


@dataclass(frozen=True)
class KnownKey:
    """A live access key with its secret opened (kept in memory only)."""

    record: AccessKey
    secret: str


class AccessStore:
    """Reads and writes access keys and namespaces; one per peer."""

    def __init__(
        self,
        replicas: ManifestReplicas,
        coordinator: Coordinator,
        clock: HybridClock,
        identity: ClusterIdentity,
        ttl: float = DEFAULT_TTL,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._replicas = replicas
        self._coordinator = coordinator
        self._clock = clock
        self._identity = identity
        self._ttl = ttl
        self._now = now
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._reading: dict[str, asyncio.Future[Manifest | None]] = {}
        self._opened: dict[tuple[str, bytes], str] = {}

    def __repr__(self) -> str:
        return f"AccessStore(cached={len(self._cache)}, ttl={self._ttl}s)"

    # --- reading, cached ------------------------------------------------------------------

    async def _read(self, name: str, fresh: bool = False) -> Manifest | None:
        """The live record manifest of ``name``: cached, or one quorum read shared by every
        concurrent caller; ``fresh``: a quorum read of its own, whatever is cached (before a
        write that must not replace a record this peer has not seen yet). Raises
        Unavailable when too few replicas answer."""
        entry = self._cache.get(name)
        if not fresh and entry is not None and self._now() - entry.fetched < self._ttl:
            return entry.manifest
        if fresh:
            manifest = await self._replicas.read(name)
        else:
            pending = self._reading.get(name)
            if pending is None:
                pending = asyncio.ensure_future(self._replicas.read(name))
                self._reading[name] = pending
                pending.add_done_callback(lambda _: self._reading.pop(name, None))
                pending.add_done_callback(consume)  # every waiter may have been cancelled
            manifest = await asyncio.shield(pending)
        live = None if manifest is None or manifest.deleted else manifest
        self._remember(name, live)
        return live

    def _remember(self, name: str, manifest: Manifest | None) -> None:
        self._cache[name] = _Entry(manifest, self._now())
        self._cache.move_to_end(name)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)

    async def key(self, access_key: str, fresh: bool = False) -> KnownKey | None:
        """The live key ``access_key`` with its secret, or None (unknown or revoked);
        ``fresh``: not from the cache."""
        if not access.ACCESS_KEY.fullmatch(access_key):
            return None  # not even shaped like one: no read for it
        manifest = await self._read(access.key_record_name(access_key), fresh)
        if manifest is None:
            return None
        try:
            record = access.decode_key(manifest.inline)
            opened = (record.access_key, record.sealed_secret)
            secret = self._opened.get(opened)
            if secret is None:
                secret = access.open_secret(self._identity, record)
                if len(self._opened) >= MAX_CACHED:
                    self._opened.clear()
                self._opened[opened] = secret
        except ValueError as exc:
            log.error("access key %s cannot be used: %s", access_key, exc)
            return None
        return KnownKey(record, secret)

    async def namespace(self, name: str, fresh: bool = False) -> NamespaceRecord | None:
        """The namespace ``name``, or None if there is none; ``fresh``: not from the cache."""
        if not name or "/" in name or name.startswith(RESERVED):
            return None
        manifest = await self._read(access.namespace_record_name(name), fresh)
        if manifest is None:
            return None
        try:
            return access.decode_namespace(manifest.inline)
        except ValueError as exc:
            log.error("namespace record %r is unreadable: %s", name, exc)
            return None

    async def _list(self, prefix: str) -> list[Manifest]:
        found: list[Manifest] = []
        after = ""
        while len(found) < MAX_LISTED:
            page, after = await self._coordinator.list(prefix, after, LIST_PAGE)
            found.extend(page)
            if not after:
                break
        return found

    async def _records(self, prefix: str, decode: Callable[[bytes], R]) -> list[R]:
        """Every live record under ``prefix``, decoded, in name order (unreadable ones are
        logged and left out)."""
        records = []
        for manifest in await self._list(prefix):
            try:
                records.append(decode(manifest.inline))
            except ValueError as exc:
                log.error("unreadable record %r: %s", manifest.name, exc)
        return records

    async def keys(self) -> list[AccessKey]:
        """Every live access key, in id order."""
        return await self._records(access.KEY_RECORDS, access.decode_key)

    async def namespaces(self) -> list[NamespaceRecord]:
        """Every namespace, in name order."""
        return await self._records(access.NAMESPACE_RECORDS, access.decode_namespace)

    # --- writing --------------------------------------------------------------------------

    async def _write(self, name: str, inline: bytes | None, new: bool = False) -> None:
        """Commit a record (``None``: a tombstone) and know it at once on this peer;
        ``new``: only where there is no live record (If-None-Match: * at each replica,
        so of two writers only one wins: PreconditionFailed for the other)."""
        if inline is None:
            manifest = Manifest(name, self._clock.now(), _RECORD_LAYOUT, deleted=True)
        else:
            manifest = Manifest(name, self._clock.now(), _RECORD_LAYOUT, inline=inline)
        await self._replicas.commit(manifest, condition=_ABSENT if new else None)
        self._remember(name, None if inline is None else manifest)

    async def create_key(
        self, name: str, grants: Grants, given: tuple[str, str] | None = None
    ) -> tuple[AccessKey, str]:
        """A new access key named ``name`` (a label) with ``grants``; returns the record and
        the secret, which is stored only sealed. ``given`` is ``(access key, secret)`` made
        beforehand (a new cluster's admin key). Raises Unavailable below the write quorum."""
        access_key, secret = given or (access.new_access_key(), access.new_secret())
        sealed, sealed_with = access.seal_secret(self._identity, access_key, secret)
        record = AccessKey(
            access_key=access_key,
            name=name,
            created_ms=int(time.time() * 1000),
            grants=grants,
            sealed_secret=sealed,
            sealed_with=sealed_with,
        )
        await self._write(access.key_record_name(access_key), access.encode_record(record))
        log.info("created access key %s (%r): %s", access_key, name, grants.to_json())
        return record, secret

    async def revoke_key(self, access_key: str) -> None:
        """Revoke a key; raises AccessKeyNotFound if there is no such live key."""
        if await self.key(access_key, fresh=True) is None:
            raise AccessKeyNotFound(f"no access key {access_key[:40]!r}")
        await self._write(access.key_record_name(access_key), None)
        log.info("revoked access key %s", access_key)

    async def set_grants(self, access_key: str, grants: Grants) -> AccessKey:
        """Give the live key ``access_key`` these ``grants`` in place of its own (its id and
        secret stay): a new revision of its record, which replicas take only over the
        record it was made from, so a key revoked meanwhile stays revoked. Other peers see
        the new grants within their cache's ``ttl``. Raises AccessKeyNotFound (no such live
        key), Unavailable (below the quorum, or the record changed meanwhile: retry)."""
        name = access.key_record_name(access_key)
        current = await self._replicas.read(name)
        if current is None or current.deleted or current.inline is None:
            raise AccessKeyNotFound(f"no access key {access_key[:40]!r}")
        record = msgspec.structs.replace(access.decode_key(current.inline), grants=grants)
        update = dataclasses.replace(
            current, inline=access.encode_record(record), revision=current.revision + 1
        )
        await self._replicas.commit(update, base=current)
        self._remember(name, update)
        log.info("changed the grants of access key %s: %s", access_key, grants.to_json())
        return record

    async def reseal(self) -> int:
        """Seal again, under the signing secret, every key sealed under an older cluster
        secret still held (the middle step of a rotation), so the older secret can be
        retired without losing a key. Each is a new revision of the same version that
        replicas take only over the record it was made from: a key revoked meanwhile stays
        revoked. Returns how many were resealed. Raises Unavailable."""
        signing = key_id(self._identity.signing_secret)
        count = 0
        for listed in await self._list(access.KEY_RECORDS):
            if access.decode_key(listed.inline).sealed_with == signing:
                continue
            current = await self._replicas.read(listed.name)
            if current is None or current.deleted:
                continue
            record = access.decode_key(current.inline)
            secret = access.open_secret(self._identity, record)
            sealed, sealed_with = access.seal_secret(self._identity, record.access_key, secret)
            resealed = msgspec.structs.replace(
                record, sealed_secret=sealed, sealed_with=sealed_with
            )
            update = dataclasses.replace(
                current, inline=access.encode_record(resealed), revision=current.revision + 1
            )
            await self._replicas.commit(update, base=current)
            count += 1
        return count

    async def create_namespace(
        self, name: str, public_read: bool = False, adopted: bool = False
    ) -> NamespaceRecord:
        """Create namespace ``name``. Raises InvalidNamespace for a name breaking the bucket
        rules (unless ``adopted``; then for one too long to name its record), NamespaceExists
        when it exists: checked with a quorum read, not the cache, which may not have seen
        a namespace made through another peer in the last ``ttl`` seconds, and by the
        replicas at the commit (If-None-Match: *), so of two creates racing one wins (the
        other's flags would have replaced the first's, e.g. made a private one public).

        Raises NamespaceNotEmpty where files are left under ``name/`` from a namespace
        removed before (written while its removal was under way), unless ``adopted``: a
        namespace made again over them would show them, to whoever its new grants let in.
        """
        if not adopted:
            try:
                access.validate_namespace(name)
            except access.InvalidNamespace as exc:
                raise InvalidNamespace(str(exc)) from None
        elif not is_stored_name(access.namespace_record_name(name)):
            raise InvalidNamespace(f"namespace {name[:80]!r}... is too long to name its record")
        # Files first, then the record: files of a racing create (an admin's first write
        # through another peer, whose namespace was made after the listing and filled since)
        # are then that namespace's, not leftovers; and the listing's time does not widen
        # the span between the read and the conditional commit, where racing creates split
        # the replicas (WriteContended).
        leftovers = not adopted and await self._holds_files(name)
        if await self.namespace(name, fresh=True) is not None:
            raise NamespaceExists(f"namespace {name!r} exists")
        if leftovers:
            raise NamespaceNotEmpty(
                f"files are left under {name!r}/ from a namespace of that name removed "
                "while they were written: an admin key deletes them (or reads them) first"
            )
        record = NamespaceRecord(
            name=name,
            created_ms=int(time.time() * 1000),
            public_read=public_read,
            adopted=adopted,
        )
        try:
            await self._write(
                access.namespace_record_name(name), access.encode_record(record), new=True
            )
        except PreconditionFailed:
            raise NamespaceExists(f"namespace {name!r} exists (made meanwhile)") from None
        log.info("created namespace %r%s", name, " (adopted)" if adopted else "")
        return record

    async def remove_namespace(self, name: str) -> None:
        """Remove an empty namespace; raises NamespaceNotFound or NamespaceNotEmpty."""
        if await self.namespace(name) is None:
            raise NamespaceNotFound(f"no namespace {name!r}")
        if await self._holds_files(name):
            raise NamespaceNotEmpty(f"namespace {name!r} holds files; delete them first")
        await self._write(access.namespace_record_name(name), None)
        log.info("removed namespace %r", name)

    async def _holds_files(self, name: str) -> bool:
        """Whether a live file is named under namespace ``name`` (past any deleted ones)."""
        return await holds_a_live_file(self._coordinator.list, name + "/", "", 1)

    async def adopt(self, names: Iterable[str]) -> int:
        """Make every first segment of ``names`` a namespace if it is not one yet (data
        written before access keys); returns how many were created. Raises RingstoreError
        (Unavailable) when the cluster cannot read or write records yet."""
        created = 0
        for namespace in sorted({access.namespace_of(n) for n in names if n[:1] != RESERVED}):
            if await self.namespace(namespace) is not None:
                continue
            try:
                await self.create_namespace(namespace, adopted=True)
            except NamespaceExists:
                continue
            except InvalidNamespace as exc:  # its files stay readable by admin keys only
                log.warning("not adopting a namespace: %s", exc)
                continue
            created += 1
        return created
