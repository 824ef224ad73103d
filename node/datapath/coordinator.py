"""The coordinator: any peer turns public requests into chunk and manifest operations.

PUT streams the body into stripes, erasure-codes each stripe in a worker thread and sends
block *i* to the *i*-th peer of the placement set over one streaming request per chunk. Each
chunk stream has a bounded queue, so a slow peer slows the upload instead of filling memory,
and a peer that fails or stalls is dropped while the others go on. When the body ends, the
PUT commits by writing the manifest to a write quorum of its replicas; until then no reader
can see the new version.

GET reads the manifest from a read quorum (highest version wins), streams the k data chunks
in parallel with bounded read-ahead, verifies every block against the manifest, and when a
chunk is missing, slow or corrupt switches to a parity chunk and decodes from there on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import xxhash

from node.cluster.membership import Membership
from node.cluster.transport import Address, PeerClient
from node.config import PeerConfig
from node.datapath.codec import decode_stripe, encode_stripe
from node.disk.manifest_store import ReplicaWrite
from node.errors import (
    CorruptData,
    FileNotFound,
    IncompleteBody,
    InsufficientStorage,
    PeerUnavailable,
    RingstoreError,
    Unavailable,
)
from node.model.digests import DIGEST_SIZE, Buffer, block_digest
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, ChunkRef, Manifest, chunk_id, file_id
from node.model.names import name_key
from node.model.version import HybridClock
from node.waiting import within

log = logging.getLogger(__name__)
T = TypeVar("T")


class Coordinator:
    """Carries out PUT, GET, DELETE and listings for the public API, from any peer."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        peers: PeerClient,
        clock: HybridClock,
    ) -> None:
        self._config = config
        self._membership = membership
        self._peers = peers
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()
        # Called with a manifest and the indexes of chunks a read found missing or corrupt.
        self.on_broken_chunks: Callable[[Manifest, set[int]], None] | None = None

    def __repr__(self) -> str:
        return f"Coordinator(peer={self._membership.me.id[:8]}, background={len(self._background)})"

    # --- calls to members ------------------------------------------------------------------

    async def _call(self, member_id: str, call: Callable[[Address], Awaitable[T]]) -> T:
        """Run ``call(address)`` against a member, feeding the outcome to liveness."""
        try:
            result = await call(self._membership.address(member_id))
        except PeerUnavailable as exc:
            self._membership.report_failure(member_id, str(exc))
            raise
        self._membership.report_success(member_id)
        return result

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- manifests -------------------------------------------------------------------------

    async def _ask_replicas(
        self, name: str, call: Callable[[Address], Awaitable[T]], wanted: int
    ) -> dict[str, T]:
        """Call the manifest replicas of ``name`` until ``wanted`` of them have answered.

        Starts with the first N up members clockwise from the name's key; each one that fails
        is replaced by the next member on the ring, so a peer that died a moment ago (not yet
        seen down) costs an extra call, not the request. Returns the answers by member.
        """
        down = self._membership.down_ids()
        ring = self._membership.ring
        candidates = (m for m in ring.successors(name_key(name)) if m not in down)
        asking: dict[asyncio.Future[T], str] = {}

        def ask(member: str) -> None:
            asking[asyncio.ensure_future(self._call(member, call))] = member

        for member in itertools.islice(candidates, self._config.manifest_replicas):
            ask(member)
        answers: dict[str, T] = {}
        try:
            while asking and len(answers) < wanted:
                done, _ = await asyncio.wait(asking, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    member = asking.pop(task)
                    error = task.exception()
                    if error is None:
                        answers[member] = task.result()
                    elif not isinstance(error, RingstoreError):
                        raise error
                    elif (standby := next(candidates, None)) is not None:
                        ask(standby)
        finally:
            for task in asking:
                task.cancel()
                task.add_done_callback(_consume)
        return answers

    async def read_manifest(self, name: str, every_replica: bool = False) -> Manifest | None:
        """The newest manifest of ``name`` among the first R replicas to answer.

        Tombstones included. With ``every_replica``, all N replicas must answer (for
        decisions that destroy data). Raises Unavailable when too few replicas answer.
        Replicas found behind are brought up to date in the background.
        """
        config = self._config
        quorum = config.manifest_replicas if every_replica else config.manifest_read_quorum
        ask = partial(self._peers.get_manifest, name=name)
        found = await self._ask_replicas(name, ask, quorum)
        if len(found) < quorum:
            raise Unavailable(f"only {len(found)} of {quorum} manifest replicas answered")
        versions = [m for m in found.values() if m is not None]
        if not versions and quorum < config.manifest_replicas:
            # The first "none"s may come from stand-ins for replicas that are down, which
            # answer faster than a surviving replica reading its file: hear all N first.
            found = await self._ask_replicas(name, ask, config.manifest_replicas)
            versions = [m for m in found.values() if m is not None]
        if not versions:
            return None
        newest = max(versions, key=lambda m: m.precedence)
        self._clock.observe(newest.version)
        for replica, manifest in found.items():
            if manifest is None or manifest.precedence < newest.precedence:
                self._spawn(self._repair_manifest(replica, newest))
        return newest

    async def _repair_manifest(self, replica: str, manifest: Manifest) -> None:
        try:
            await self._call(replica, partial(self._peers.put_manifest, manifest=manifest))
        except RingstoreError as exc:
            log.warning("read repair of %r on %s failed: %s", manifest.name, replica, exc)

    async def _write_manifest(
        self, manifest: Manifest, base: Manifest | None = None
    ) -> list[ReplicaWrite]:
        """Write a manifest to its N replicas; raises Unavailable below the write quorum.

        A write that misses the quorum is retracted from the replicas that took it, so a
        failed PUT or DELETE does not surface later through them (as far as they answer).
        """
        expect = None if base is None else base.precedence
        answers = await self._ask_replicas(
            manifest.name,
            partial(self._peers.put_manifest, manifest=manifest, expect=expect),
            self._config.manifest_replicas,
        )
        quorum = self._config.manifest_write_quorum
        counted = answers if base is None else {r: a for r, a in answers.items() if a.stored}
        if len(counted) < quorum:
            await asyncio.gather(
                *(
                    self._call(r, partial(self._peers.retract_manifest, manifest=manifest))
                    for r, answer in answers.items()
                    if answer.stored
                ),
                return_exceptions=True,
            )
            raise Unavailable(
                f"manifest of {manifest.name!r} reached {len(counted)} of the {quorum} "
                "replicas needed"
            )
        return list(answers.values())

    async def commit(self, manifest: Manifest, base: Manifest | None = None) -> None:
        """Write ``manifest`` to a quorum of its replicas, then retire what it superseded.

        ``base`` is the manifest a move or repair started from: the new revision is then
        kept only by replicas still holding ``base``, and only if a quorum of them took it
        does it count. Raises Unavailable below the quorum (nothing is retired then).
        """
        acks = await self._write_manifest(manifest, base)
        self._retire(acks, manifest)

    def _retire(self, acks: list[ReplicaWrite], manifest: Manifest) -> None:
        """After a commit, delete chunks no longer referenced, once readers had time to finish.

        Chunks of the manifests it replaced go, except those it still references. If every
        replica already held a newer *version*, this manifest's own chunks go too; if they
        held the same version at a newer revision (another move won), nothing does.
        """
        unused = {c for a in acks if a.replaced is not None for c in a.replaced.placed_chunks()}
        if any(a.stored for a in acks):
            unused -= manifest.placed_chunks()
        elif all(a.current > manifest.version for a in acks):
            unused |= manifest.placed_chunks()
        if unused:
            self._spawn(self._delete_chunks(manifest.name, unused, self._config.delete_grace))

    async def _delete_chunks(self, name: str, chunks: set[tuple[str, str]], delay: float) -> None:
        """Delete ``(holder, chunk id)`` pairs of ``name`` after ``delay`` seconds.

        What to delete was decided ``delay`` ago; since then a move or repair may have put
        the same chunk back on the same holder. So the current manifest is read first and
        whatever it references stays; if it cannot be read, nothing is deleted (garbage
        collection will decide later).
        """
        await asyncio.sleep(delay)
        try:
            current = await self.read_manifest(name)
        except RingstoreError as exc:
            log.info("not deleting chunks of %r now: %s", name, exc)
            return
        if current is not None:
            chunks = chunks - current.placed_chunks()
        for holder, chunk in sorted(chunks):
            try:
                await self._call(holder, partial(self._peers.delete_chunk, chunk_id=chunk))
            except (RingstoreError, KeyError) as exc:
                log.info("chunk %s not deleted from %s: %s", chunk, holder, exc)

    # --- public operations -----------------------------------------------------------------

    async def stat(self, name: str) -> Manifest:
        """The live manifest of ``name``; raises FileNotFound or Unavailable."""
        manifest = await self.read_manifest(name)
        if manifest is None or manifest.deleted:
            raise FileNotFound(f"no file named {name!r}")
        return manifest

    async def put(
        self,
        name: str,
        body: AsyncIterable[bytes],
        size: int | None,
        content_type: str,
    ) -> Manifest:
        """Store a file read from ``body`` and return its committed manifest.

        ``size`` is the Content-Length when the client sent one. Raises Unavailable (too few
        peers, too few durable chunks, no manifest quorum) or IncompleteBody.
        """
        config = self._config
        await self._membership.refresh_ring()
        version = self._clock.now()
        file = file_id(name, version)
        holders = self._membership.ring.placement(
            file, config.k + config.m, skip=self._membership.down_ids()
        )
        n = len(holders)  # fewer than k+m peers up: fewer parity chunks
        if n < config.k:
            raise Unavailable(f"{n} peers are up; a file needs at least {config.k}")
        expected = (
            Layout(size, config.k, n - config.k, config.block_size) if size is not None else None
        )
        writers = [
            ChunkWriter(
                self._peers,
                holder,
                self._membership.address(holder),
                chunk_id(file, index),
                ChunkMeta(name, str(version), index, config.block_size),
                expected.chunk_size if expected else None,
                config.queue_depth,
                config.stall_timeout,
            )
            for index, holder in enumerate(holders)
        ]
        try:
            received, etag, digests = await self._stream_stripes(body, writers, n - config.k)
            if size is not None and received != size:
                raise IncompleteBody(f"body ended after {received} of {size} bytes")
            stored = await asyncio.gather(*(w.finish() for w in writers))
        except BaseException:
            for writer in writers:
                writer.abort()
            await asyncio.gather(*(w.wait() for w in writers))
            raise
        layout = Layout(received, config.k, n - config.k, config.block_size)
        chunks = tuple(
            ChunkRef(index, writer.holder, bytes(digests[index]))
            for index, writer in enumerate(writers)
            if stored[index] == layout.chunk_size
        )
        for writer, result in zip(writers, stored, strict=True):
            if result is None and isinstance(writer.error, PeerUnavailable):
                self._membership.report_failure(writer.holder, str(writer.error))
        quorum = config.chunk_quorum(n)
        if len(chunks) < quorum:
            written = {(w.holder, w.chunk_id) for w in writers}
            self._spawn(self._delete_chunks(name, written, 0))
            message = f"only {len(chunks)} of {n} chunks were stored; {quorum} needed"
            if any(isinstance(w.error, InsufficientStorage) for w in writers):
                raise InsufficientStorage(f"{message}: peers are out of space")
            raise Unavailable(message)
        manifest = Manifest(name, version, layout, etag, content_type, chunks)
        await self.commit(manifest)
        if manifest.degraded:
            log.warning("%r stored degraded: %d of %d chunks", name, len(chunks), n)
        return manifest

    async def _stream_stripes(
        self, body: AsyncIterable[bytes], writers: list[ChunkWriter], m: int
    ) -> tuple[int, str, list[bytearray]]:
        """Cut the body into stripes, encode them and feed the chunk writers.

        Encoding of one stripe (in a thread) overlaps with sending the previous one.
        Returns the byte count, the content etag and each chunk's block digests.
        """
        k = self._config.k
        content = xxhash.xxh3_128()
        digests = [bytearray() for _ in writers]
        received = 0

        def encode(stripe: memoryview) -> tuple[list[Buffer], bytes]:
            block = -(-len(stripe) // k)
            padded = stripe if block * k == len(stripe) else _pad(stripe, block * k)
            return encode_stripe([padded[i * block : (i + 1) * block] for i in range(k)], m)

        async def send(encoded: tuple[list[Buffer], bytes]) -> None:
            blocks, stripe_digests = encoded
            for index, writer in enumerate(writers):
                digests[index] += stripe_digests[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]
                await writer.send(blocks[index])

        pending: asyncio.Future[tuple[list[Buffer], bytes]] | None = None
        try:
            async for stripe in read_stripes(body, k * self._config.block_size):
                received += len(stripe)
                content.update(stripe)  # in order, on the loop: xxh3 takes ~0.2 ms per stripe
                encoding = asyncio.ensure_future(asyncio.to_thread(encode, stripe))
                if pending is not None:
                    await send(await pending)
                pending = encoding
            if pending is not None:
                await send(await pending)
                pending = None
        finally:
            if pending is not None:
                pending.cancel()
                pending.add_done_callback(_consume)
        return received, content.hexdigest(), digests

    async def _read_stripes(
        self, manifest: Manifest, stripes: range, broken: set[int]
    ) -> AsyncGenerator[tuple[int, list[Buffer]], None]:
        """Yield each stripe's k data blocks, verified, decoding around failed chunks.

        Chunks in ``broken`` are not read; chunks that fail while reading are added to it.
        Raises Unavailable when fewer than k chunks of a stripe can be read.
        """
        layout = manifest.layout
        refs = {ref.index: ref for ref in manifest.chunks if ref.index not in broken}
        down = self._membership.down_ids()
        # Data chunks first, then parity; chunks on holders seen down only as a last resort.
        spares = deque(sorted(refs, key=lambda i: (refs[i].holder in down, i)))
        active: dict[int, ChunkReader] = {}

        def activate(first: int) -> ChunkReader:
            index = spares.popleft()
            reader = ChunkReader(
                self._peers,
                self._membership,
                refs[index],
                manifest.chunk_id(index),
                layout,
                range(first, stripes.stop),
                self._config.queue_depth,
            )
            active[index] = reader
            return reader

        async def next_block(index: int, blocks: dict[int, Buffer]) -> None:
            block = await active[index].next_block(self._config.peer_timeout)
            if block is None:
                active.pop(index).close()
                broken.add(index)
            else:
                blocks[index] = block

        try:
            while spares and len(active) < layout.k:
                activate(stripes.start)
            for stripe in stripes:
                blocks: dict[int, Buffer] = {}
                for index in list(active):
                    await next_block(index, blocks)
                while len(blocks) < layout.k:
                    if not spares:
                        raise Unavailable(
                            f"{manifest.name!r}: only {len(blocks)} of the {layout.k} chunks "
                            f"needed for stripe {stripe} are readable"
                        )
                    await next_block(activate(stripe).ref.index, blocks)
                if all(i in blocks for i in range(layout.k)):
                    yield stripe, [blocks[i] for i in range(layout.k)]
                else:
                    yield stripe, await asyncio.to_thread(decode_stripe, blocks, layout.k, layout.m)
        finally:
            for reader in active.values():
                reader.close()

    async def stream(
        self, manifest: Manifest, start: int, end: int
    ) -> AsyncGenerator[Buffer, None]:
        """Yield file bytes ``[start, end)`` of ``manifest``, verified, decoding if needed.

        Raises Unavailable when fewer than k chunks of a stripe can be read. Chunks found
        broken on the way are reported to ``on_broken_chunks`` (read repair).
        """
        broken: set[int] = set()
        stripes = manifest.layout.stripes_covering(start, end)
        try:
            async with contextlib.aclosing(self._read_stripes(manifest, stripes, broken)) as read:
                async for stripe, data in read:
                    for piece in _trim(manifest.layout, stripe, data, start, end):
                        yield piece
        finally:
            if broken and self.on_broken_chunks is not None:
                self.on_broken_chunks(manifest, broken)

    async def rebuild(self, manifest: Manifest, targets: dict[int, str]) -> Manifest:
        """Recompute chunks ``targets`` (index -> new holder) from the others and commit.

        The chunks named in ``targets`` are not read. Each rebuilt chunk is streamed to its
        target stripe by stripe, checked against the manifest's block digests when it had
        them, and the manifest is committed at the next revision with the new holders.
        Raises Unavailable (too few readable chunks, a target failed, no quorum) or
        CorruptData (a rebuilt chunk differs from what the manifest recorded).
        """
        layout = manifest.layout
        writers = {
            index: ChunkWriter(
                self._peers,
                holder,
                self._membership.address(holder),
                manifest.chunk_id(index),
                manifest.chunk_owner(index),
                layout.chunk_size,
                self._config.queue_depth,
                self._config.stall_timeout,
            )
            for index, holder in targets.items()
        }
        digests = {index: bytearray() for index in targets}
        broken = set(targets)
        try:
            async with contextlib.aclosing(
                self._read_stripes(manifest, range(layout.stripes), broken)
            ) as read:
                async for _, data in read:
                    blocks, stripe_digests = await asyncio.to_thread(encode_stripe, data, layout.m)
                    for index, writer in writers.items():
                        digests[index] += stripe_digests[
                            index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE
                        ]
                        await writer.send(blocks[index])
            stored = dict(
                zip(
                    writers,
                    await asyncio.gather(*(w.finish() for w in writers.values())),
                    strict=True,
                )
            )
        except BaseException:
            for writer in writers.values():
                writer.abort()
            await asyncio.gather(*(w.wait() for w in writers.values()))
            raise
        failed = [i for i, size in stored.items() if size != layout.chunk_size]
        if failed:
            raise Unavailable(f"rebuilding {manifest.name!r}: chunks {failed} were not stored")
        known = {ref.index: ref for ref in manifest.chunks}
        for index in targets:
            if index in known and known[index].block_digests != bytes(digests[index]):
                raise CorruptData(f"rebuilt chunk {index} of {manifest.name!r} differs")
        chunks = [ref for ref in manifest.chunks if ref.index not in targets]
        chunks += [ChunkRef(i, targets[i], bytes(digests[i])) for i in targets]
        updated = dataclasses.replace(
            manifest,
            chunks=tuple(sorted(chunks, key=lambda ref: ref.index)),
            revision=manifest.revision + 1,
        )
        await self.commit(updated, base=manifest)
        return updated

    async def delete(self, name: str) -> Manifest:
        """Write a tombstone for ``name``; raises FileNotFound or Unavailable.

        Deleting a deleted file succeeds again (a client retrying after a lost answer must
        not be told the file never existed).
        """
        current = await self.read_manifest(name)
        if current is None:
            raise FileNotFound(f"no file named {name!r}")
        if current.deleted:
            return current
        tombstone = Manifest(name, self._clock.now(), Layout(0, current.layout.k, 0), deleted=True)
        await self.commit(tombstone)
        return tombstone

    async def list(self, prefix: str, start_after: str, limit: int) -> tuple[list[Manifest], str]:
        """Live files with ``prefix`` after ``start_after`` in name order, from every up peer.

        Returns at most ``limit`` summaries and the name to continue after ("" when done).
        """
        members = sorted(self._membership.up_ids())
        answers = await asyncio.gather(
            *(
                self._call(
                    member, lambda to: self._peers.list_manifests(to, prefix, start_after, limit)
                )
                for member in members
            ),
            return_exceptions=True,
        )
        newest: dict[str, Manifest] = {}
        cutoff: str | None = None  # names past a truncated answer are not known completely
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, RingstoreError):
                    raise answer
                continue
            entries, truncated = answer
            for entry in entries:
                known = newest.get(entry.name)
                if known is None or known.precedence < entry.precedence:
                    newest[entry.name] = entry
            if truncated and entries and (cutoff is None or entries[-1].name < cutoff):
                cutoff = entries[-1].name
        names = sorted(n for n in newest if cutoff is None or n <= cutoff)
        live = [newest[n] for n in names if not newest[n].deleted]
        if len(live) > limit:
            return live[:limit], live[limit - 1].name
        if cutoff is not None:
            return live, cutoff
        return live, ""


def _consume(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned task's outcome as seen, so asyncio does not log it."""
    if not task.cancelled():
        task.exception()


def _pad(stripe: memoryview, length: int) -> memoryview:
    padded = bytearray(length)
    padded[: len(stripe)] = stripe
    return memoryview(padded)


def _trim(layout: Layout, stripe: int, data: list[Buffer], start: int, end: int) -> list[Buffer]:
    """The parts of a stripe's data blocks inside ``[start, end)`` and the file."""
    stripe_start = layout.stripe_start(stripe)
    stripe_end = stripe_start + layout.stripe_data_length(stripe)
    block = layout.block_length(stripe)
    pieces: list[Buffer] = []
    for index, buffer in enumerate(data):
        lo = max(start, stripe_start + index * block)
        hi = min(end, stripe_end, stripe_start + (index + 1) * block)
        if lo < hi:
            offset = stripe_start + index * block
            pieces.append(memoryview(buffer)[lo - offset : hi - offset])
    return pieces


async def read_stripes(body: AsyncIterable[bytes], stripe_size: int) -> AsyncIterator[memoryview]:
    """Regroup a byte stream into full stripes and a short last one (if any bytes remain).

    Every stripe is a fresh buffer, so blocks handed on stay valid while queued.
    """
    buffer = bytearray(stripe_size)
    view = memoryview(buffer)
    filled = 0
    async for piece in body:
        piece_view = memoryview(piece)
        while piece_view:
            take = min(len(piece_view), stripe_size - filled)
            view[filled : filled + take] = piece_view[:take]
            filled += take
            piece_view = piece_view[take:]
            if filled == stripe_size:
                yield view
                buffer = bytearray(stripe_size)
                view = memoryview(buffer)
                filled = 0
    if filled:
        yield view[:filled]


class ChunkWriter:
    """Streams one chunk to its holder from a bounded queue of blocks."""

    _END = b""

    def __init__(
        self,
        peers: PeerClient,
        holder: str,
        to: Address,
        chunk_id: str,
        owner: ChunkMeta,
        size: int | None,
        depth: int,
        stall_timeout: float,
    ) -> None:
        self.holder = holder
        self.chunk_id = chunk_id
        self.error: BaseException | None = None
        self._stall_timeout = stall_timeout
        self._queue: asyncio.Queue[Buffer] = asyncio.Queue(depth)
        self._task = asyncio.ensure_future(
            peers.put_chunk(to, chunk_id, self._blocks(), size, owner)
        )
        self._task.add_done_callback(self._on_done)

    def __repr__(self) -> str:
        state = "failed" if self.error else "done" if self._task.done() else "sending"
        queued = self._queue.qsize()
        return f"ChunkWriter({self.chunk_id} -> {self.holder[:8]}, {state}, queued={queued})"

    async def _blocks(self) -> AsyncIterator[Buffer]:
        while (block := await self._queue.get()) is not self._END:
            yield block

    def _on_done(self, task: asyncio.Task[int]) -> None:
        if task.cancelled():
            self.error = self.error or asyncio.CancelledError()
        elif task.exception() is not None:
            self.error = task.exception()
            log.warning("chunk %s to %s failed: %s", self.chunk_id, self.holder, self.error)
        while not self._queue.empty():  # unblock a sender waiting for room
            self._queue.get_nowait()

    async def send(self, block: Buffer) -> None:
        """Queue a block; drop this chunk if its holder takes nothing for stall_timeout."""
        if self._task.done():
            return
        try:
            await within(self._queue.put(block), self._stall_timeout)
        except asyncio.TimeoutError:
            self.error = PeerUnavailable(self.holder, f"stalled for {self._stall_timeout}s")
            log.warning("chunk %s to %s dropped: %s", self.chunk_id, self.holder, self.error)
            self._task.cancel()

    async def finish(self) -> int | None:
        """End the stream; return the stored size, or None if this chunk failed."""
        await self.send(self._END)
        await self.wait()
        if self._task.cancelled() or self._task.exception() is not None:
            return None
        return self._task.result()

    def abort(self) -> None:
        self._task.cancel()

    async def wait(self) -> None:
        await asyncio.wait([self._task])


class ChunkReader:
    """Reads one chunk's blocks for a range of stripes ahead of the consumer, verified.

    The reading task ends on the first failure (unreachable or silent holder, short or
    corrupt data); the consumer then gets None and switches to another chunk.
    """

    def __init__(
        self,
        peers: PeerClient,
        membership: Membership,
        ref: ChunkRef,
        chunk_id: str,
        layout: Layout,
        stripes: range,
        depth: int,
    ) -> None:
        self.ref = ref
        self.chunk_id = chunk_id
        self._peers = peers
        self._membership = membership
        self._layout = layout
        self._stripes = stripes
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(depth)
        self._task = asyncio.ensure_future(self._run())

    def __repr__(self) -> str:
        state = "ended" if self._task.done() else "reading"
        where = f"{self.chunk_id} @ {self.ref.holder[:8]}"
        return f"ChunkReader({where}, {state}, queued={self._queue.qsize()})"

    async def _run(self) -> None:
        layout, stripes = self._layout, self._stripes
        offset = layout.chunk_offset(stripes.start)
        last = stripes.stop - 1
        length = layout.chunk_offset(last) + layout.block_length(last) - offset
        try:
            to = self._membership.address(self.ref.holder)
            async with self._peers.open_chunk(to, self.chunk_id, offset, length) as stream:
                for stripe in stripes:
                    block = await stream.readexactly(layout.block_length(stripe))
                    if block_digest(block) != self.ref.block_digest(stripe):
                        raise CorruptData(f"chunk {self.chunk_id} block {stripe} fails its digest")
                    await self._queue.put(block)
        except PeerUnavailable as exc:
            self._membership.report_failure(self.ref.holder, str(exc))
            log.warning("reading chunk %s: %s", self.chunk_id, exc)
        except Exception as exc:  # any failure means: read another chunk instead
            log.warning("reading chunk %s from %s: %r", self.chunk_id, self.ref.holder, exc)

    async def next_block(self, timeout: float) -> bytes | None:
        """The next stripe's block, or None if this chunk cannot give it within ``timeout``."""
        if self._queue.empty() and self._task.done():
            return None
        getting = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait(
            {getting, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getting in done:
            return getting.result()
        getting.cancel()
        if not self._queue.empty():  # the reader ended right after queueing its last block
            return self._queue.get_nowait()
        return None

    def close(self) -> None:
        self._task.cancel()
