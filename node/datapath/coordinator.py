"""The coordinator: any peer turns public requests into chunk and manifest operations.

PUT streams the body into stripes (``node.datapath.stripes``) and block *i* of every stripe
to the *i*-th member of the file version's placement set, one chunk stream each
(``ChunkWriter``), then commits by writing the manifest to a quorum of its replicas
(``ManifestReplicas``); until then no reader can see the new version. GET reads the manifest
from a read quorum and streams the k data chunks in parallel with bounded read-ahead,
decoding from parity around chunks that are missing, slow or corrupt; what it found broken is
reported for repair. A segmented manifest (a multipart object) is read segment by segment,
each through its part's own manifest, checked to be the part version the segment names; a
packed file (``node.model.packs``) is one segment, a range of its pack, whose manifest a
coordinator keeps for ``PACK_MANIFEST_TTL`` seconds.
DELETE commits a tombstone; listings merge every up peer's replicas
(folder listings: ``node.datapath.listing``).
A conditional PUT or DELETE (If-Match...) commits only where each manifest replica finds the
condition true of its own current version (``ManifestReplicas.commit``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable

from cachetools import TTLCache

from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.config import PeerConfig
from node.datapath.chunk_streams import (
    BlockBudget,
    ChunkWriter,
    ChunkWriters,
    failure_reason,
    read_in_hand,
    read_one_block,
    write_in_hand,
)
from node.datapath.codec import default_codec
from node.datapath.listing import list_flat, list_folder
from node.datapath.replicas import ManifestReplicas
from node.datapath.stripes import (
    DECODE_REASONS,
    Decoding,
    StripeRead,
    check_content_md5,
    trim_block,
    write_stripes,
)
from node.errors import (
    CorruptData,
    FileNotFound,
    IncompleteBody,
    PreconditionFailed,
    RingstoreError,
    Unavailable,
)
from node.model.digests import Buffer, ContentHash
from node.model.folders import Item, Page
from node.model.layout import ZFEC, Layout
from node.model.manifest import ChunkMeta, ChunkRef, Manifest, chunk_id, file_id
from node.model.multipart import Segment, segments_covering
from node.model.packs import PACK_BLOCK_SIZE, is_pack_name
from node.model.preconditions import Preconditions, representation
from node.model.representation import NO_REPRESENTATION, Representation
from node.model.version import HybridClock, Version
from node.waiting import Expired, within

log = logging.getLogger(__name__)

PACK_MANIFESTS = 256  # pack manifests a coordinator keeps (~6 KiB each for 4 MiB packs)
PACK_MANIFEST_TTL = 10.0  # seconds one is kept, at most


async def read_small(
    body: AsyncIterable[bytes], size: int | None, limit: int
) -> tuple[bytes | None, AsyncIterable[bytes]]:
    """``(the whole body, nothing)`` when it has at most ``limit`` bytes, else ``(None,
    the body)``: a body of unknown length (chunked) is read up to ``limit`` + 1 bytes to
    find out, and those come first in the body returned. A ``size`` past ``limit``, or a
    ``limit`` of 0 (nothing inline, not even an empty file), reads nothing."""
    if limit == 0 or (size is not None and size > limit):
        return None, body
    pieces = aiter(body)
    buffer = bytearray()
    async for piece in pieces:
        buffer += piece
        if len(buffer) > limit:

            async def rest(head: bytes) -> AsyncIterator[bytes]:
                yield head
                async for more in pieces:
                    yield more

            return None, rest(bytes(buffer))
    return bytes(buffer), body


# Told of a manifest and the indexes of chunks a read found missing or corrupt (read repair).
BrokenChunks = Callable[[Manifest, set[int]], None]


class Coordinator:
    """Carries out PUT, GET, DELETE and listings for the public API, from any peer."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        peers: Peers,
        clock: HybridClock,
        replicas: ManifestReplicas,
        report_broken: BrokenChunks,
        buffers: BlockBudget,
    ) -> None:
        self._config = config
        self._buffers = buffers  # shared with the peer's rebuilds
        self._membership = membership
        self._peers = peers
        self._clock = clock
        self._replicas = replicas
        self._report_broken = report_broken
        self.degraded_writes = 0  # files stored with chunks missing (a metric)
        # Reads that rebuilt a stripe from parity, by the first reason met (a metric), and
        # the stripes so rebuilt.
        self.decoded_reads = dict.fromkeys(DECODE_REASONS, 0)
        self.decoded_stripes = 0
        # A pack's manifest changes only where its chunks move or are rebuilt: one kept a
        # few seconds mostly still finds them (old copies go after --delete-grace, or once
        # scrub reaches them), and a read that fails with it is tried with a fresh one.
        ttl = min(PACK_MANIFEST_TTL, config.delete_grace / 2)
        self._packs: TTLCache[str, Manifest] = TTLCache(PACK_MANIFESTS, ttl)

    def __repr__(self) -> str:
        return f"Coordinator(peer={self._membership.me.id[:8]}, {self._replicas!r})"

    async def stat(self, name: str) -> Manifest:
        """The live manifest of ``name``; raises FileNotFound or Unavailable."""
        manifest = await self._replicas.read(name)
        if manifest is None or manifest.deleted:
            raise FileNotFound(f"no file named {name!r}")
        return manifest

    async def put(
        self,
        name: str,
        body: AsyncIterable[bytes],
        size: int | None,
        content_type: str,
        condition: Preconditions | None = None,
        *,
        representation: Representation | Callable[[], Representation] = NO_REPRESENTATION,
        content_md5: bytes | None = None,
        block_size: int | None = None,
    ) -> Manifest:
        """Store a file read from ``body`` and return its committed manifest.

        ``block_size``, where given, is the file's instead of ``--block-size``, and the
        file is cut into chunks however small (a pack: ``node.model.packs``).

        ``content_md5`` (only under ``--etag md5``: else ValueError) is the MD5 the body must
        have (a Content-MD5, RFC 1864): checked against the etag's own digest, so the body
        is hashed once, and refused (BadDigest) before the last stripe is sent.

        ``size`` is the Content-Length when the client sent one; ``representation`` is kept
        in the manifest (given by a function, it is asked once the body has ended: an S3
        aws-chunked body's trailing checksum is known only then). ``condition`` (If-Match,
        If-None-Match, If-Unmodified-Since) is checked by each manifest replica at the
        commit, which makes it atomic; it is also checked against a read before the upload,
        to refuse at once what would be refused anyway and to move this peer's clock past
        the current version (a condition that holds must not lose to an older clock). If
        ``body`` raises, the upload is aborted before any chunk of it is complete (a body of
        known size: its last stripe is held until the body has ended; of unknown size: a
        chunk is complete only with its end marker, sent after the body ended); the body
        is read no further once too few chunk streams are left to reach the quorum. A body
        that is not kept inline is read once the PUT is admitted to the peer's buffer
        memory (``BlockBudget.admit``). Raises Unavailable (too few peers, too few durable chunks,
        no manifest quorum), Overloaded (not admitted in time), InsufficientStorage (peers
        out of space), IncompleteBody, PreconditionFailed or what ``body`` raises.
        """
        config = self._config
        if content_md5 is not None and config.etag != "md5":
            raise ValueError("a Content-MD5 is checked against the etag only when it is an MD5")
        if condition is not None:
            await self._refuse_early(name, condition)
        await self._membership.refresh_ring()
        inline_max = config.inline_max if block_size is None else 0
        small, body = await read_small(body, size, inline_max)
        if small is not None:
            if size is not None and len(small) != size:
                raise IncompleteBody(f"body ended after {len(small)} of {size} bytes")
            layout = Layout(len(small), config.k, config.m, config.block_size)
            content = ContentHash(config.etag)
            content.update(small)
            if content_md5 is not None:
                check_content_md5(content, content_md5)
            manifest = Manifest(
                name,
                self._clock.now(),
                layout,
                content.etag(),
                content_type,
                inline=small,
                representation=_given(representation),
            )
            await self._replicas.commit(manifest, condition=condition)
            return manifest
        # Admitted before the version and the placement are taken: a wait must not leave
        # a placement with a peer that went down meanwhile.
        block_size = block_size or config.block_size
        in_hand = write_in_hand(size, config.k, config.m, block_size)
        async with self._buffers.admit(in_hand):
            manifest = await self._store_chunks(
                name, body, size, content_type, representation, content_md5, block_size
            )
        await self._replicas.commit(manifest, condition=condition)
        if manifest.degraded:
            self.degraded_writes += 1
            n = manifest.layout.n
            log.warning("%r stored degraded: %d of %d chunks", name, len(manifest.chunks), n)
        return manifest

    async def _store_chunks(
        self,
        name: str,
        body: AsyncIterable[bytes],
        size: int | None,
        content_type: str,
        representation: Representation | Callable[[], Representation],
        content_md5: bytes | None,
        block_size: int,
    ) -> Manifest:
        """Cut ``body`` into a new version's chunks on their holders (``put``): its
        manifest, not yet committed. Raises what ``put`` raises before the commit."""
        config = self._config
        m = config.m
        version = self._clock.now()
        file = file_id(name, version)
        # One layout for every file: k + m chunks. With fewer than k + m peers up the
        # chunks past the last up peer are not placed now; repair places them later.
        holders = self._membership.write_placement(file, config.k + m).members
        n = len(holders)
        if n < config.k:
            raise Unavailable(f"{n} peers are up; a file needs at least {config.k}")
        expected = Layout(size, config.k, m, block_size) if size is not None else None
        writers = {
            index: ChunkWriter(
                self._peers,
                holder,
                chunk_id(file, index),
                ChunkMeta(name, str(version), index, block_size),
                expected.chunk_size if expected else None,
                self._buffers,
                config.stall_timeout,
            )
            for index, holder in enumerate(holders)
        }
        async with ChunkWriters(writers, config.chunk_quorum(n)) as group:
            pieces = group.while_quorum(body)
            codec = self._codec()
            written = await write_stripes(
                pieces, group, config.k, m, block_size, size, config.etag, content_md5, codec
            )
            if size is not None and written.size != size:
                raise IncompleteBody(f"body ended after {written.size} of {size} bytes")
            stored = await group.finish()
        layout = Layout(written.size, config.k, m, block_size, codec)
        chunks = tuple(
            ChunkRef(index, writer.holder, bytes(written.digests[index]))
            for index, writer in writers.items()
            if stored[index] == layout.chunk_size
        )
        if len(chunks) < group.quorum:
            self._replicas.delete_later(name, {(w.holder, w.chunk_id) for w in writers.values()}, 0)
            raise group.shortfall(len(chunks))
        given = _given(representation)  # (an S3 trailing checksum is known only now)
        return Manifest(
            name, version, layout, written.etag, content_type, chunks, representation=given
        )

    async def put_segmented(
        self,
        name: str,
        segments: tuple[Segment, ...],
        etag: str,
        content_type: str,
        condition: Preconditions | None = None,
        *,
        representation: Representation = NO_REPRESENTATION,
        version: Version | None = None,
    ) -> Manifest:
        """Commit ``name`` as the concatenation of ``segments`` (parts already stored, each
        a file of its own): one manifest, no byte read or written; of ``version`` when
        given (a multipart Complete names it in its upload's record first), else a fresh
        one. Raises what ``put``'s commit raises (Unavailable, PreconditionFailed)."""
        if condition is not None:
            await self._refuse_early(name, condition)
        config = self._config
        size = sum(segment.size for segment in segments)
        manifest = Manifest(
            name,
            version or self._clock.now(),
            Layout(size, config.k, config.m, config.block_size),
            etag,
            content_type,
            representation=representation,
            segments=segments,
        )
        await self._replicas.commit(manifest, condition=condition)
        return manifest

    async def segment(self, segment: Segment, cached: bool = False) -> Manifest:
        """The manifest of the part (or pack) ``segment`` names, checked to be that version
        and to hold the segment's bytes; with ``cached``, a pack's may come from this peer's
        cache of them. Raises CorruptData when it is gone or another (the object has lost a
        part), Unavailable when too few of its replicas answer."""
        packed = is_pack_name(segment.name)
        part = self._packs.get(segment.name) if packed and cached else None
        if part is None or part.version != segment.version:
            part = await self._replicas.read(segment.name)
            if packed and part is not None and not part.deleted:
                self._packs[segment.name] = part
        if part is None or part.deleted or part.version != segment.version:
            raise CorruptData(
                f"segment {segment.name!r} version {segment.version} is gone: the object "
                "has lost a part"
            )
        holds = segment.offset + segment.size <= part.size if packed else part.size == segment.size
        if not holds:
            raise CorruptData(
                f"segment {segment.name!r} has {part.size} bytes, not {segment.size} "
                f"from byte {segment.offset}"
            )
        return part

    def _codec(self) -> str:
        """The codec of a new file's parity: ISA-L's Cauchy code once every member codes
        with it (``Membership.all_read_cauchy``), else zfec, which every release reads."""
        if self._membership.all_read_cauchy():
            return default_codec()
        return ZFEC

    def admit_read(
        self, manifest: Manifest, start: int, end: int
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Admission of a GET of bytes ``[start, end)`` of ``manifest`` to this peer's buffer
        memory while it streams (``BlockBudget.admit``: raises Overloaded after waiting
        ``--admission-wait``); a file kept in its manifest needs none."""
        if manifest.stored_inline:
            return contextlib.nullcontext()
        layout = manifest.layout
        if manifest.packed:  # what is read is the pack's, in its small blocks
            at = manifest.segments[0].offset
            start, end = at + start, at + end
            layout = Layout(end, layout.k, layout.m, PACK_BLOCK_SIZE)
        return self._buffers.admit(read_in_hand(layout, start, end))

    async def stream(
        self, manifest: Manifest, start: int, end: int
    ) -> AsyncGenerator[Buffer, None]:
        """Yield file bytes ``[start, end)`` of ``manifest``, verified, decoding if needed.

        Raises Unavailable when fewer than k chunks of a stripe can be read, CorruptData
        when a segment's part is gone. Chunks found broken on the way are reported for
        repair. A segmented manifest holds one part's manifest at a time.
        """
        if manifest.packed:
            async with contextlib.aclosing(self._packed(manifest, start, end)) as read:
                async for piece in read:
                    yield piece
            return
        if manifest.segmented:
            for segment, first, past in segments_covering(manifest.segments, start, end):
                part = await self.segment(segment)  # (a part's segment starts at its byte 0)
                async with contextlib.aclosing(self.stream(part, first, past)) as read:
                    async for piece in read:
                        yield piece
            return
        if manifest.stored_inline:
            if start < end:
                yield memoryview(manifest.inline)[start:end]
            return
        broken: set[int] = set()
        decoding = Decoding()
        layout = manifest.layout
        lone = layout.lone_block(start, end)
        if lone is not None:  # read at once; where that fails, decoded around below
            stripe, index = lone
            block = await self._read_alone(manifest, stripe, index, broken, decoding)
            if block is not None:
                trimmed = trim_block(layout, stripe, index, block, start, end)
                del block
                if trimmed is not None:  # (it is: the block holds the range)
                    yield trimmed
                return
        reading = StripeRead(
            self._peers,
            manifest,
            layout.stripes_covering(start, end),
            broken,
            self._membership.down_ids(),
            self._buffers,
            self._config.peer_timeout,
            decoding,
            (start, end),  # of its first and last stripes, only the blocks the range is in
        ).blocks()
        try:
            async with contextlib.aclosing(reading) as read:
                async for stripe, index, block in read:
                    trimmed = trim_block(layout, stripe, index, block, start, end)
                    del block
                    if trimmed is not None:
                        yield trimmed
                        del trimmed  # let go once sent, not held while the next is read
        finally:
            if decoding.reason is not None:
                self.decoded_reads[decoding.reason] += 1
                self.decoded_stripes += decoding.stripes
            if broken:
                self._report_broken(manifest, broken)

    async def _read_alone(
        self, manifest: Manifest, stripe: int, index: int, broken: set[int], decoding: Decoding
    ) -> Buffer | None:
        """Data block ``index`` of ``stripe`` read at once (``read_one_block``) where its
        chunk is in the manifest on a holder not seen down. None otherwise, or where the
        read fails or takes past the peer timeout: then the chunk is in ``broken`` and why
        in ``decoding``, as a ``StripeRead`` leaves them, for one to decode around it."""
        ref = next((ref for ref in manifest.chunks if ref.index == index), None)
        if ref is None or ref.holder in self._membership.down_ids():
            return None
        chunk_id = manifest.chunk_id(index)
        read = read_one_block(self._peers, ref, chunk_id, manifest.layout, stripe)
        try:
            return await within(read, self._config.peer_timeout)
        except Expired:
            reason = "slow"
        except Exception as exc:  # any failure means: decode around it
            reason = failure_reason(exc)
            log.warning("reading chunk %s from %s: %r", chunk_id, ref.holder, exc)
        broken.add(index)
        decoding.reasons[index] = reason
        return None

    async def _packed(
        self, manifest: Manifest, start: int, end: int
    ) -> AsyncGenerator[Buffer, None]:
        """``stream`` of a packed file: its bytes' range of its pack, read through the pack's
        manifest as this peer keeps it; a read that fails before its first byte is tried
        once more with the pack's manifest read again (its chunks may have moved)."""
        segment = manifest.segments[0]
        for cached in (True, False):
            pack = await self.segment(segment, cached)
            sent = False
            try:
                at = segment.offset
                async with contextlib.aclosing(self.stream(pack, at + start, at + end)) as read:
                    async for piece in read:
                        sent = True
                        yield piece
                return
            except (Unavailable, CorruptData):
                self._packs.pop(segment.name, None)
                if sent or not cached:
                    raise

    async def delete(self, name: str, condition: Preconditions | None = None) -> Manifest:
        """Write a tombstone for ``name``; raises FileNotFound, Unavailable or
        PreconditionFailed.

        Deleting a deleted file succeeds again (a client retrying after a lost answer must
        not be told the file never existed), unless a condition asks for a live version;
        while the newest manifest found is not yet decided (a conditional write's, maybe
        one about to be retracted, maybe a live one about to be confirmed), a tombstone
        is written over it instead. ``condition`` is checked by each manifest replica as
        it takes the tombstone.
        """
        found = await self._replicas.read_state(name)
        current = found.manifest
        if current is None:
            raise FileNotFound(f"no file named {name!r}")
        if condition is not None:
            self._check(name, condition, current)
        if current.deleted and not found.provisional:
            return current
        tombstone = Manifest(name, self._clock.now(), Layout(0, current.layout.k, 0), deleted=True)
        await self._replicas.commit(tombstone, condition=condition)
        return tombstone

    async def _refuse_early(self, name: str, condition: Preconditions) -> None:
        """Raise PreconditionFailed before any byte is stored where ``condition`` does not
        hold for the name's decided version. Where the newest found is provisional (a
        conditional write racing this one, maybe a loser about to be retracted) the commit
        judges: taken for the current version, it made a create-only PUT racing six others
        get 412 for a name none of them wrote (an attack: 6 of 406 rounds), and a client
        told 412 does not try again."""
        found = await self._replicas.read_state(name)
        if not found.provisional:
            self._check(name, condition, found.manifest)

    @staticmethod
    def _check(name: str, condition: Preconditions, current: Manifest | None) -> None:
        """Raise PreconditionFailed if ``condition`` does not hold for ``current`` (read
        from a quorum): what the replicas would refuse at the commit, refused early."""
        if not condition.allows_write(representation(current)):
            raise PreconditionFailed(
                f"{name!r}: {condition.describe()} does not hold for its current version; "
                "nothing was changed"
            )

    async def _pages(
        self, prefix: str, start_after: str, limit: int, delimiter: str = "", base: str = ""
    ) -> list[Page]:
        """Every up peer's page of its replicas (see ``Peers.list_manifests``); a peer that
        fails is left out, as it would be if it were down."""
        members = sorted(self._membership.up_ids())
        folding = (delimiter, base) if delimiter else ("", None)
        answers = await asyncio.gather(
            *(self._peers.list_manifests(m, prefix, start_after, limit, *folding) for m in members),
            return_exceptions=True,
        )
        pages: list[Page] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, RingstoreError):
                    raise answer
                continue
            pages.append(answer)
        return pages

    async def list(self, prefix: str, start_after: str, limit: int) -> tuple[list[Manifest], str]:
        """Live files with ``prefix`` after ``start_after`` in name order, from every up peer.

        Returns at most ``limit`` summaries and the name to continue after ("" when done).
        """
        return await list_flat(self._pages, prefix, start_after, limit)

    async def list_folder(
        self,
        prefix: str,
        delimiter: str,
        start_after: str,
        limit: int,
        scope: str | None = None,
    ) -> tuple[builtins.list[Item], str]:  # (``list`` here is the method above)
        """Live files and folders below ``prefix``, rolled up at ``delimiter``, after
        ``start_after`` in order, from every up peer (``node.datapath.listing``).

        Returns at most ``limit`` items (a folder counts as one) and the item to continue
        after ("" when done); ``scope`` lists only names with that prefix (which starts
        with ``prefix``), rolled up the same way.
        """
        return await list_folder(
            self._pages, self.list, prefix, delimiter, start_after, limit, scope
        )


def _given(representation: Representation | Callable[[], Representation]) -> Representation:
    return representation() if callable(representation) else representation
