"""How one peer reaches another: the ``Transport`` interface and its HTTP implementation.

A transport makes one call of the peer-to-peer API (``node.cluster.protocol``) to an address;
it knows nothing of members or liveness (``node.cluster.peers`` adds those). ``HttpTransport``
is the real one: one pooled aiohttp session serves every call, each signed with the cluster
secret and each answer read whole checked for the answerer's signature (``node.cluster.auth``).
Here, and only here, transport failures and error answers become the domain exceptions of
``node.errors``: a transport failure, an unreadable or unsigned answer, a refusal of our
credentials (401) or an unexplained server error is PeerUnavailable (it counts against the
peer's liveness); an error the peer explained (404, 507, a corrupt manifest...) is raised as
the class it named. Every call made for a public request carries that request's id
(``node.tracing``). Manifest reads and offers to a peer that already has one request out
(or made in one turn of the event loop) leave together as one batch
(``node.cluster.batching``), as one frame of the
channel to that peer (``node.cluster.channel``: one WebSocket each way, opened on the
first batch) or, to a peer of a release before channels, as one request. A chunk of up to
``FRAME_CHUNK_MAX`` bytes, or such a range of one, goes as one frame of that channel too
where the peer takes chunk frames; larger ones stream as requests. Tests swap in an
in-process transport.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeGuard, TypeVar, runtime_checkable
from urllib.parse import quote

import aiohttp
import msgspec
from cachetools import TTLCache
from yarl import URL

from node.cluster.auth import AUTH_HEADER, UNSIGNED, Authenticator, Request, content_digest
from node.cluster.batching import Batcher
from node.cluster.channel import (
    CALLS,
    CHANNEL,
    CHUNK_READ,
    CHUNK_WRITE,
    CLOSE_TIMEOUT,
    CONFIRMATIONS,
    HEARTBEAT,
    OFFERED,
    SUBPROTOCOLS,
    Channel,
    frame_version,
)
from node.cluster.protocol import (
    CHUNK_BLOCK_SIZE,
    CHUNK_NAME,
    CHUNK_VERSION,
    CONFIRMED,
    CONFIRMED_BATCH,
    FRAME_CHUNK_MAX,
    MANIFEST_BATCH,
    MSGPACK,
    PEER_HEADER,
    PROVISIONAL,
    CallFailure,
    ChunkAnswer,
    ChunkRead,
    ChunkStored,
    ChunkWrite,
    ConditionalManifest,
    GossipMessage,
    InventoryCheck,
    KeyCreated,
    KeyOrder,
    ManifestAnswer,
    ManifestAnswers,
    ManifestCall,
    ManifestCalls,
    ManifestConfirm,
    ManifestConfirmations,
    ManifestList,
    ManifestOffer,
    ManifestRead,
    PullOrder,
    ReplicaWriteReply,
    encode,
    pack_chunk_ids,
    unpack_chunk_ids,
)
from node.errors import (
    CorruptData,
    CredentialsRefused,
    IncompleteBody,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PeerUnavailable,
    RingstoreError,
    Unauthenticated,
    error_from_code,
)
from node.model.digests import Buffer
from node.model.manifest import ChunkMeta, Manifest, ReplicaRead, ReplicaWrite
from node.model.preconditions import Preconditions
from node.model.version import Version
from node.tracing import REQUEST_ID, REQUEST_ID_HEADER

TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# A signed body past this is sent from a BytesIO, which aiohttp writes in pieces, not whole
# (a manifest of 10,000 segments is about 1.3 MB; aiohttp warns past 1 MiB of raw bytes).
LARGE_BODY = 1 << 20
# Bytes a chunk stream's reader takes from its socket before it stops reading (aiohttp pauses
# at twice its read_bufsize, 2 x 256 KiB by default, plus up to one 256 KiB receive): a slow
# GET keeps 5 streams open: up to 3.75 MiB buffered per GET with the default (bench/memory.py,
# 64 slow GETs: 215 MiB). With 64 KiB, at most 384 KiB a stream; the rest waits in the kernel.
CHUNK_STREAM_BUFFER = 1 << 16
CHUNK_STREAM_BUFFERED = 2 * CHUNK_STREAM_BUFFER + (256 << 10)  # the most one holds: 384 KiB
# Manifest calls to one peer, per kind (reads do not wait on offers' fsyncs): requests out
# at once, and calls in one batch at most (a peer takes up to MAX_MANIFEST_CALLS). One out
# batches the most: 4 KiB PUTs x 16 clients, 411/s with 1, 343/s with 2, 332/s with 4,
# 300/s unbatched (bench/small.py, 2 rounds alternated, medians).
MANIFEST_CALLS_OUT = 1
MAX_BATCHED_CALLS = 64
MAX_BATCH_BYTES = LARGE_BODY  # a single larger call (a huge file's manifest) leaves alone
RETRY_BATCHES = 300.0  # seconds before calls go batched again to a peer that had no route
REFUSALS_KEPT = 1024  # (replica, name) pairs whose refused manifest was logged lately
T = TypeVar("T")
Lane = tuple["Address", str]  # a peer, and the kind of call ("get", "put", "confirm")
Batched = ManifestCall | ManifestConfirm  # what a lane queues (confirmations: lanes of their own)

log = logging.getLogger(__name__)


def _call_size(call: Batched) -> int:
    """A call's weight in a batch: its manifest's bytes, or its name's characters."""
    return len(call.manifest) if isinstance(call, ManifestOffer) else len(call.name)


@dataclass(frozen=True)
class Address:
    """Where to reach a peer, and which peer must answer there.

    A URL can change hands (a peer whose disk was wiped restarts on the same port as a new
    member); with ``peer_id`` set, any other peer at that URL refuses the call (421), so it
    fails like an unreachable peer instead of answering for the one we meant.
    """

    url: str
    peer_id: str | None = None


class ChunkStream(Protocol):
    """Bytes of a chunk being read (aiohttp's StreamReader is one)."""

    async def readexactly(self, n: int) -> bytes: ...

    def iter_any(self) -> AsyncIterator[bytes]: ...


@runtime_checkable
class BlockFile(Protocol):
    """A chunk stream that fills a whole block in one read: a range of a chunk file of this
    peer (``node.disk.chunk_store.ChunkRange``), not a socket read piece by piece."""

    async def readinto(self, view: memoryview) -> None:
        """Fill ``view``; raises asyncio.IncompleteReadError if the stream ends first, and
        OSError for a failed read."""
        ...


def fills_blocks(stream: object) -> TypeGuard[BlockFile]:
    """Whether ``stream`` is a ``BlockFile``, decided once per type: a runtime protocol's
    ``isinstance`` costs ~10 us, and the data path asks for every block of every stream."""
    kind = type(stream)
    known = _BLOCK_FILE_TYPES.get(kind)
    if known is None:
        known = _BLOCK_FILE_TYPES[kind] = issubclass(kind, BlockFile)
    return known


_BLOCK_FILE_TYPES: dict[type, bool] = {}  # stream types seen, and whether each is a BlockFile


class FramedChunk:
    """Bytes of a chunk that came whole in one channel answer: a ``ChunkStream`` whose
    blocks ``take`` gives as views, with no copy (``read_block``). Lets go of the answer
    once all of it is read (the views hold it until they are let go)."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._at = 0

    def __repr__(self) -> str:
        return f"FramedChunk({len(self._data) - self._at} bytes left)"

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes, a view of the answer's (no copy); raises
        asyncio.IncompleteReadError where fewer are left."""
        left = len(self._data) - self._at
        if n > left:
            raise asyncio.IncompleteReadError(bytes(self._data[self._at :]), n)
        piece = self._data[self._at : self._at + n]
        self._at += n
        if self._at == len(self._data):
            self._data, self._at = memoryview(b""), 0
        return piece

    async def readexactly(self, n: int) -> bytes:
        return bytes(self.take(n))

    async def iter_any(self) -> AsyncIterator[bytes]:
        left = len(self._data) - self._at
        if left:
            yield bytes(self.take(left))


class Transport(Protocol):
    """One call of the peer-to-peer API to the peer at an address.

    Every method raises PeerUnavailable when the peer cannot be reached, answers something
    unreadable or fails without explanation, and the peer's own error class (NotFound,
    InsufficientStorage, CorruptData...) when it explained its refusal.
    """

    async def put_chunk(
        self,
        to: Address,
        chunk_id: str,
        body: AsyncIterable[Buffer],
        size: int | None,
        owner: ChunkMeta,
    ) -> int:
        """Stream a chunk of ``owner`` (name, version, block size); return the size stored."""
        ...

    def open_chunk(
        self, to: Address, chunk_id: str, offset: int, length: int
    ) -> AbstractAsyncContextManager[ChunkStream]:
        """Open bytes ``[offset, offset+length)`` of a chunk as a stream (0: all of it)."""
        ...

    async def pull_chunk(self, to: Address, chunk_id: str, order: PullOrder) -> int:
        """Have peer ``to`` copy a chunk as ``order`` says; return the size stored. Raises
        ChunkNotFound when the source does not hold the chunk, CorruptData when its copy
        fails ``order.digest``."""
        ...

    async def delete_chunk(self, to: Address, chunk_id: str) -> None:
        """Remove a chunk; raises ChunkNotFound if the peer does not hold it."""
        ...

    async def missing_chunks(self, to: Address, chunk_ids: list[str]) -> list[str]:
        """Which of ``chunk_ids`` (at most ``MAX_INVENTORY``) the peer does not hold."""
        ...

    async def get_manifest(self, to: Address, name: str) -> ReplicaRead:
        """The peer's replica of ``name``'s manifest (None if it has none), and whether it
        is provisional there (``ReplicaRead``)."""
        ...

    async def put_manifest(
        self,
        to: Address,
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        """Offer a manifest to a replica: kept only over exactly ``expect`` (a move) and
        only if ``condition`` holds for its current one (a conditional PUT or DELETE)."""
        ...

    async def retract_manifest(
        self, to: Address, manifest: Manifest, restore: Manifest | None = None
    ) -> None:
        """Take back the peer's replica of ``manifest`` if it is still exactly that one,
        putting back ``restore`` (what it replaced there) when given."""
        ...

    async def confirm_manifest(self, to: Address, manifest: Manifest) -> None:
        """Tell a replica that kept the conditional write ``manifest`` that it was
        committed: its replica is no longer provisional."""
        ...

    async def list_manifests(
        self,
        to: Address,
        prefix: str,
        start_after: str,
        limit: int,
        delimiter: str = "",
        base: str | None = None,
    ) -> tuple[list[Manifest], bool]:
        """Summaries (manifests without chunks) of the peer's replicas, and if it had more;
        with a ``delimiter``, rolled up into folders below ``base`` (``ManifestStore.list``).
        A peer of before folders ignores both and lists flat."""
        ...

    async def exchange(self, to: Address, gossip: GossipMessage) -> GossipMessage:
        """Send this peer's gossip to another and return its answer."""
        ...


def replica_write(reply: ReplicaWriteReply) -> ReplicaWrite:
    """The typed result of a manifest write from its wire reply; raises CorruptData."""
    replaced = Manifest.from_bytes(reply.replaced) if reply.replaced is not None else None
    return ReplicaWrite(reply.stored, reply.current, replaced)


class _NoBatches(Exception):
    """The peer has no batch route (a release before batches): send the call alone. Never
    leaves this module, so never counts against the peer."""


def _echo(exc: Exception) -> Exception:
    """The failure of a batch's other calls when its request failed with ``exc``: their own
    exception, and one that does not count against the peer again (``Peers``)."""
    if isinstance(exc, PeerUnavailable):
        return PeerUnavailable(exc.peer, f"{exc.reason} (a request of several calls)", False)
    if isinstance(exc, _NoBatches):
        return _NoBatches(*exc.args)
    if isinstance(exc, RingstoreError):
        return error_from_code(exc.code, exc.message) or exc
    return exc


def _repeats(exc: Exception) -> bool:
    """Whether a failed batch's calls queued behind it fail with it: when sending them would
    fail the same way (a timeout: a hung peer, whose next request would time out again; no
    batch route), not after a failure that may pass (a connection dropped, an overload)."""
    return isinstance(exc, _NoBatches) or isinstance(exc.__cause__, asyncio.TimeoutError)


def _naming(manifest: Manifest) -> dict[str, str]:
    """The query that names one manifest replica exactly: name, version, revision."""
    return {
        "name": manifest.name,
        "version": str(manifest.version),
        "revision": str(manifest.revision),
    }


def _call_outcome(to: Address, answer: ManifestAnswer) -> ManifestAnswer | RingstoreError:
    """One call's answer, or the failure it reported."""
    return answer if answer.failure is None else _failed(to, answer.failure)


def _failed(to: Address, failure: CallFailure) -> RingstoreError:
    """The error a call's failure names (an unexplained one is the peer's: PeerUnavailable,
    as an HTTP 500 is)."""
    return error_from_code(failure.code, failure.message) or PeerUnavailable(
        to.url, f"{failure.code}: {failure.message}"
    )


async def _whole(body: AsyncIterable[Buffer], size: int, chunk_id: str) -> Buffer:
    """All of a chunk's body of ``size`` bytes in one buffer (its one piece, if so sent);
    raises IncompleteBody if it has another length."""
    pieces = [piece async for piece in body]
    data: Buffer = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if len(data) != size:
        raise IncompleteBody(f"chunk {chunk_id}: a body of {len(data)} bytes, not {size}")
    return data


async def _raise_for_status(url: str, response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    try:
        error = (await response.json())["error"]
        code, message = str(error["code"]), str(error["message"])
    except (aiohttp.ClientError, ValueError, KeyError, TypeError):
        code, message = "", response.reason or ""
    if response.status == 401:  # we are not (or no longer) a member in its eyes
        raise CredentialsRefused(url, f"refused our credentials: {message}")
    known = error_from_code(code, message)
    if known is not None:
        raise known
    if response.status == 421:  # a different peer now serves this address
        raise PeerUnavailable(url, f"another peer answers here: {message}")
    if response.status == 404:
        raise NotFound(message)
    if response.status == 507:
        raise InsufficientStorage(message)
    if 400 <= response.status < 500:
        raise InvalidRequest(f"{url}: HTTP {response.status} {code}: {message}")
    raise PeerUnavailable(url, f"HTTP {response.status} {code}: {message}")


@dataclass(frozen=True)
class _Reply:
    """An answer, and what checks that its body comes from a member."""

    response: aiohttp.ClientResponse
    nonce: str
    auth: Authenticator

    async def body(self) -> bytes:
        """The body, read whole; raises PeerUnavailable unless a member signed it."""
        data = await self.response.read()
        try:
            header = self.response.headers.get(AUTH_HEADER)
            self.auth.check_answer(self.nonce, self.response.status, data, header)
        except Unauthenticated as exc:
            raise PeerUnavailable(str(self.response.url), exc.message) from exc
        return data

    async def decode(self, kind: type[T], json: bool = False) -> T:
        """Decode the signed body (msgpack, or JSON); an unreadable one means a broken peer."""
        return _decoded(str(self.response.url), await self.body(), kind, json)


def _decoded(url: str, data: bytes | memoryview, kind: type[T], json: bool = False) -> T:
    """An answer's body (msgpack, or JSON) as ``kind``; one that cannot be read means a
    broken peer: PeerUnavailable."""
    try:
        if json:
            return msgspec.json.decode(data, type=kind)
        return msgspec.msgpack.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise PeerUnavailable(url, f"malformed {kind.__name__}: {exc}") from exc


class HttpTransport:
    """The peer-to-peer API over HTTP, on one pooled aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float, auth: Authenticator) -> None:
        self._session = session
        self._auth = auth
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self.manifest_calls: Batcher[Lane, Batched, ManifestAnswer] = Batcher(
            self._send_manifest_calls,
            _call_size,
            max_out=MANIFEST_CALLS_OUT,
            max_calls=MAX_BATCHED_CALLS,
            max_bytes=MAX_BATCH_BYTES,
            echo=_echo,
            fails_queue=_repeats,
        )
        # Peers without a batch route, and since when: (peer, route) -> monotonic seconds.
        self._unbatched: dict[tuple[Address, str], float] = {}
        # Replicas whose manifest of a name was refused lately (``_replica_read``), so that
        # each is logged once a minute, not on every read of the name.
        self._refused: TTLCache[tuple[str, str], None] = TTLCache(REFUSALS_KEPT, ttl=60.0)
        self._channels: dict[Address, Channel] = {}  # to each peer: the latest opened
        self._opening: dict[Address, asyncio.Future[Channel | None]] = {}
        self._retired: list[Channel] = []  # replaced, maybe still closing
        self.channels_opened = 0  # since start (one per peer called, and one per break)

    def __repr__(self) -> str:
        return f"HttpTransport(timeout={self._timeout.sock_read}s, closed={self._session.closed})"

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        to: Address,
        path: str,
        params: dict[str, str] | None = None,
        data: bytes | AsyncIterable[Buffer] | None = None,
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        read_bufsize: int | None = None,
    ) -> AsyncIterator[_Reply]:
        """Make one signed call; yields the answer once its status is a success.
        ``read_bufsize``: bytes of the answer buffered before reading pauses (aiohttp's)."""
        url = URL(f"{to.url}{path}")
        if params:
            url = url.with_query(params)
        if data is None or isinstance(data, bytes):
            digest = content_digest(data or b"")
        else:
            digest = UNSIGNED  # a streamed chunk: its blocks are checked against the manifest
        nonce, headers = self._signed(method, to, url, digest, headers)
        sent: bytes | io.BytesIO | AsyncIterable[Buffer] | None = data
        if isinstance(data, bytes) and len(data) > LARGE_BODY:
            sent = io.BytesIO(data)
        try:
            async with self._session.request(
                method,
                url,
                data=sent,
                headers=headers,
                timeout=timeout or self._timeout,
                allow_redirects=False,
                read_bufsize=read_bufsize,
            ) as response:
                reply = _Reply(response, nonce, self._auth)
                if response.status >= 400:
                    if response.status != 401:  # a refusal of our credentials is not signed
                        await reply.body()  # an unsigned error is no member's answer
                    await _raise_for_status(str(url), response)
                yield reply
        except RingstoreError:
            raise
        except TRANSPORT_ERRORS as exc:
            raise PeerUnavailable(str(url), str(exc) or type(exc).__name__) from exc

    def _signed(
        self, method: str, to: Address, url: URL, digest: str, headers: dict[str, str] | None
    ) -> tuple[str, dict[str, str]]:
        """The nonce and headers of a call to ``to``: ``headers``, the peer it is meant for,
        the request id it serves, and the signature over them and a body of ``digest``."""
        headers = dict(headers or {})
        if to.peer_id is not None:
            headers[PEER_HEADER] = to.peer_id
        request_id = REQUEST_ID.get()
        if request_id is not None:  # the public request this call serves (unsigned: a label)
            headers[REQUEST_ID_HEADER] = request_id
        request = Request(method, url.host_port_subcomponent or "", url.raw_path_qs, headers)
        nonce, signed = self._auth.sign(request, digest)
        headers.update(signed)
        return nonce, headers

    async def put_chunk(
        self,
        to: Address,
        chunk_id: str,
        body: AsyncIterable[Buffer],
        size: int | None,
        owner: ChunkMeta,
    ) -> int:
        if size is not None and 0 < size <= FRAME_CHUNK_MAX:
            opened = await self._channel(to)
            if opened is not None and opened.chunks:
                data = memoryview(await _whole(body, size, chunk_id))
                named = (chunk_id, owner.name, owner.version, owner.block_size)
                frame = encode(ChunkWrite(*named, data, REQUEST_ID.get()))
                sent = self._chunk_call(opened, to, CHUNK_WRITE, frame)
                del data, frame  # not held past their send, while the holder writes and syncs
                written = await sent
                if written.size is None:
                    raise PeerUnavailable(to.url, f"chunk {chunk_id}: an answer without its size")
                return written.size
        headers = {
            "Content-Type": "application/octet-stream",
            CHUNK_NAME: quote(owner.name, safe=""),
            CHUNK_VERSION: owner.version,
            CHUNK_BLOCK_SIZE: str(owner.block_size),
        }
        if size is not None:  # a known length avoids chunked encoding (cheaper on both ends)
            headers["Content-Length"] = str(size)
        async with self._request(
            "PUT", to, f"/internal/chunks/{chunk_id}", data=body, headers=headers
        ) as reply:
            return (await reply.decode(ChunkStored, json=True)).size

    @asynccontextmanager
    async def open_chunk(
        self, to: Address, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[ChunkStream]:
        if 0 < length <= FRAME_CHUNK_MAX:
            opened = await self._channel(to)
            if opened is not None and opened.chunks:
                call = encode(ChunkRead(chunk_id, offset, length, REQUEST_ID.get()))
                answer = await self._chunk_call(opened, to, CHUNK_READ, call)
                if answer.data is None:
                    raise PeerUnavailable(to.url, f"chunk {chunk_id}: an answer without bytes")
                stream = FramedChunk(answer.data)
                del answer  # the stream lets go of the answer's bytes once they are read
                yield stream
                return
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"} if length else {}
        async with self._request(
            "GET",
            to,
            f"/internal/chunks/{chunk_id}",
            headers=headers,
            read_bufsize=CHUNK_STREAM_BUFFER,
        ) as reply:  # streamed, unsigned: every block is checked against its digest
            yield reply.response.content

    async def pull_chunk(self, to: Address, chunk_id: str, order: PullOrder) -> int:
        """The call may take as long as copying the chunk at a floor of 1 MB/s."""
        budget = self._timeout.sock_read or 10.0
        timeout = aiohttp.ClientTimeout(total=budget + order.size / 1e6, sock_connect=budget)
        async with self._request(
            "POST",
            to,
            f"/internal/chunks/{chunk_id}/pull",
            data=encode(order),
            headers={"Content-Type": MSGPACK},
            timeout=timeout,
        ) as reply:
            return (await reply.decode(ChunkStored, json=True)).size

    async def delete_chunk(self, to: Address, chunk_id: str) -> None:
        async with self._request("DELETE", to, f"/internal/chunks/{chunk_id}") as reply:
            await reply.body()  # signed: only the member can say it deleted

    async def missing_chunks(self, to: Address, chunk_ids: list[str]) -> list[str]:
        async with self._request(
            "POST",
            to,
            "/internal/inventory",
            data=encode(pack_chunk_ids(chunk_ids)),
            headers={"Content-Type": MSGPACK},
        ) as reply:
            try:
                return unpack_chunk_ids(await reply.decode(InventoryCheck))
            except ValueError as exc:
                raise PeerUnavailable(to.url, f"unreadable inventory answer: {exc}") from exc

    async def get_manifest(self, to: Address, name: str) -> ReplicaRead:
        if not self._batches_to(to):
            return await self._get_manifest_alone(to, name)
        try:
            read = ManifestRead(name, REQUEST_ID.get())
            answer = await self.manifest_calls.call((to, "get"), read)
        except _NoBatches:
            return await self._get_manifest_alone(to, name)
        if answer.manifest is None:
            return ReplicaRead(None)
        return self._replica_read(to, name, answer.manifest, answer.provisional, answer.overdue)

    def _replica_read(
        self, to: Address, name: str, sealed: bytes, provisional: bool, overdue: bool
    ) -> ReplicaRead:
        """``to``'s replica of ``name`` from the sealed manifest it answered: a replica sends
        what it stored without decoding it (``ManifestStore.sealed_now``). Raises
        CorruptData where it does not decode or is another name's (logged once a minute per
        replica and name): the quorum read asks another replica. (Such a record, which its
        log checksum passed, is written off by the replica's own reads, not by this one.)"""
        try:
            manifest = Manifest.from_bytes(sealed)
            if manifest.name != name:
                raise CorruptData(f"the manifest of {manifest.name!r}")
        except CorruptData as exc:
            if (to.url, name) not in self._refused:
                self._refused[to.url, name] = None
                log.warning("manifest replica of %r on %s refused: %s", name, to.url, exc)
            raise CorruptData(f"{to.url} answered a read of {name!r} with {exc}") from exc
        return ReplicaRead(manifest, provisional, overdue)

    async def _get_manifest_alone(self, to: Address, name: str) -> ReplicaRead:
        try:
            async with self._request(
                "GET", to, "/internal/manifests", params={"name": name}
            ) as reply:
                sealed = await reply.body()
                mark = reply.response.headers.get(PROVISIONAL)
                return self._replica_read(to, name, sealed, mark is not None, mark == "overdue")
        except NotFound:
            return ReplicaRead(None)

    async def put_manifest(
        self,
        to: Address,
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None = None,
    ) -> ReplicaWrite:
        if not self._batches_to(to):
            return await self._put_manifest_alone(to, manifest, expect, condition)
        offer = ManifestOffer(manifest.to_bytes(), expect, condition, REQUEST_ID.get())
        try:
            answer = await self.manifest_calls.call((to, "put"), offer)
        except _NoBatches:
            return await self._put_manifest_alone(to, manifest, expect, condition)
        if answer.written is None:
            raise PeerUnavailable(to.url, "a manifest offer answered without its outcome")
        return replica_write(answer.written)

    async def _put_manifest_alone(
        self,
        to: Address,
        manifest: Manifest,
        expect: tuple[Version, int] | None,
        condition: Preconditions | None,
    ) -> ReplicaWrite:
        params = {} if expect is None else {"expect": f"{expect[0]}/{expect[1]}"}
        path, body = "/internal/manifests", manifest.to_bytes()
        if condition is not None:
            path += "/conditional"
            body = encode(ConditionalManifest(body, condition))
        async with self._request(
            "PUT", to, path, data=body, params=params, headers={"Content-Type": MSGPACK}
        ) as reply:
            return replica_write(await reply.decode(ReplicaWriteReply))

    async def _chunk_call(
        self, opened: Channel, to: Address, kind: int, call: bytes
    ) -> ChunkAnswer:
        """One chunk frame's answer; raises the failure it reports."""
        called = opened.call(kind, call)
        del call  # (``Channel.call`` lets go of it once sent)
        answer = _decoded(to.url, await called, ChunkAnswer)
        if answer.failure is not None:
            raise _failed(to, answer.failure)
        return answer

    def _batches_to(self, to: Address, route: str = MANIFEST_BATCH) -> bool:
        """Whether calls to ``to`` go batched by ``route``: not to a peer that lacked the
        route (a release before it) within the last ``RETRY_BATCHES`` seconds."""
        since = self._unbatched.get((to, route))
        if since is None:
            return True
        if time.monotonic() - since < RETRY_BATCHES:
            return False
        del self._unbatched[to, route]
        return True

    async def _send_manifest_calls(
        self, lane: Lane, calls: list[Batched]
    ) -> list[ManifestAnswer | Exception]:
        """One batch request (``Batcher``'s send): an answer or a failure per call."""
        to = lane[0]
        confirmations = [call for call in calls if isinstance(call, ManifestConfirm)]
        others = [call for call in calls if not isinstance(call, ManifestConfirm)]
        if confirmations and others:  # a lane holds one kind of call
            raise TypeError(f"a batch to {to.url} mixes confirmations with other calls")
        if confirmations:
            kind, route = CONFIRMATIONS, CONFIRMED_BATCH
            body = encode(ManifestConfirmations(confirmations))
        else:
            kind, route, body = CALLS, MANIFEST_BATCH, encode(ManifestCalls(others))
        opened = await self._channel(to)
        if opened is not None:
            answered = _decoded(to.url, await opened.call(kind, body), ManifestAnswers)
            return self._outcomes(to, calls, answered.answers)
        try:
            async with self._request(
                "POST", to, route, data=body, headers={"Content-Type": MSGPACK}
            ) as reply:
                answers = (await reply.decode(ManifestAnswers)).answers
        except NotFound as exc:  # no such route there: a peer of a release before it
            self._unbatched[to, route] = time.monotonic()
            raise _NoBatches(str(exc)) from exc
        return self._outcomes(to, calls, answers)

    @staticmethod
    def _outcomes(
        to: Address, calls: list[Batched], answers: list[ManifestAnswer]
    ) -> list[ManifestAnswer | Exception]:
        if len(answers) != len(calls):
            raise PeerUnavailable(to.url, f"{len(answers)} answers to {len(calls)} manifest calls")
        return [_call_outcome(to, answer) for answer in answers]

    @property
    def channels_open(self) -> int:
        """Channels open to other peers now."""
        return sum(1 for opened in self._channels.values() if opened.open)

    @property
    def frame_versions(self) -> dict[str, int]:
        """The frame version (``node.cluster.auth.FrameKeys``) of each open channel, by the
        URL of the peer it goes to."""
        return {to.url: opened.version for to, opened in self._channels.items() if opened.open}

    async def _channel(self, to: Address) -> Channel | None:
        """The open channel to ``to``, opened now if need be (one opening at a time, its
        outcome shared); None for a peer without the route, whose batches go as requests.
        Raises PeerUnavailable if it cannot be opened."""
        found = self._channels.get(to)
        if found is not None and found.open:
            return found
        if not self._batches_to(to, CHANNEL):
            return None
        opening = self._opening.get(to)
        if opening is None:
            opening = self._opening[to] = asyncio.ensure_future(self._open_channel(to))
            opening.add_done_callback(functools.partial(self._opened, to))
        return await asyncio.shield(opening)

    def _opened(self, to: Address, opening: asyncio.Future[Channel | None]) -> None:
        self._opening.pop(to, None)
        if not opening.cancelled():
            opening.exception()  # retrieved here: every caller that waited has it too

    async def _open_channel(self, to: Address) -> Channel | None:
        url = URL(f"{to.url}{CHANNEL}")
        offer = {OFFERED: ",".join(SUBPROTOCOLS)}  # signed: see ``changed_offer``
        nonce, headers = self._signed("GET", to, url, content_digest(b""), offer)
        timeout = self._timeout.sock_read or 10.0
        try:
            ws = await asyncio.wait_for(
                self._session.ws_connect(
                    url,
                    headers=headers,
                    max_msg_size=0,  # answers: no cap, as an HTTP batch's answer had none
                    protocols=SUBPROTOCOLS,
                    heartbeat=HEARTBEAT,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
                ),
                timeout,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:  # a peer of a release before channels
                self._unbatched[to, CHANNEL] = time.monotonic()
                return None
            if exc.status == 401:
                reason = f"refused our credentials: HTTP 401 {exc.message}"
                raise CredentialsRefused(to.url, reason) from exc
            reason = f"refused a channel: HTTP {exc.status} {exc.message}"
            raise PeerUnavailable(to.url, reason) from exc
        except TRANSPORT_ERRORS as exc:
            raise PeerUnavailable(str(url), str(exc) or type(exc).__name__) from exc
        version = frame_version(ws.protocol)
        keys = functools.partial(self._auth.frame_keys, nonce, version)
        chunks = ws.protocol in SUBPROTOCOLS  # the receiver takes chunk frames
        opened = Channel(ws, keys, version, to.url, timeout, self._auth.note_refusal, chunks)
        replaced = self._channels.get(to)
        self._channels[to] = opened
        self._retired = [c for c in self._retired if not c.finished]
        if replaced is not None and not replaced.finished:  # (closing: awaited by ``close``)
            self._retired.append(replaced)
        self.channels_opened += 1
        return opened

    async def close(self) -> None:
        """Fail the manifest calls queued or out (this peer is stopping) and close the
        channels; before the session closes."""
        await self.manifest_calls.close(PeerUnavailable("(this one)", "stopping"))
        for opening in list(self._opening.values()):
            opening.cancel()
        await asyncio.gather(*self._opening.values(), return_exceptions=True)
        channels = [*self._channels.values(), *self._retired]
        await asyncio.gather(*(opened.close() for opened in channels))
        self._channels.clear()
        self._retired.clear()

    async def retract_manifest(
        self, to: Address, manifest: Manifest, restore: Manifest | None = None
    ) -> None:
        params = _naming(manifest)
        body, headers = None, None
        if restore is not None:
            body, headers = restore.to_bytes(), {"Content-Type": MSGPACK}
        async with self._request(
            "DELETE", to, "/internal/manifests", params=params, data=body, headers=headers
        ) as reply:
            await reply.body()

    async def confirm_manifest(self, to: Address, manifest: Manifest) -> None:
        if self._batches_to(to, CONFIRMED_BATCH):
            confirm = ManifestConfirm(
                manifest.name, manifest.version, manifest.revision, REQUEST_ID.get()
            )
            try:
                await self.manifest_calls.call((to, "confirm"), confirm)
                return
            except _NoBatches:
                pass
        params = _naming(manifest)
        async with self._request("POST", to, CONFIRMED, params=params) as reply:
            await reply.body()

    async def list_manifests(
        self,
        to: Address,
        prefix: str,
        start_after: str,
        limit: int,
        delimiter: str = "",
        base: str | None = None,
    ) -> tuple[list[Manifest], bool]:
        params = {"prefix": prefix, "start_after": start_after, "limit": str(limit)}
        if delimiter:
            params["delimiter"] = delimiter
            if base is not None:
                params["base"] = base
        async with self._request("GET", to, "/internal/manifests/list", params=params) as reply:
            page = await reply.decode(ManifestList)
            return [Manifest.from_bytes(m) for m in page.manifests], page.truncated

    async def exchange(self, to: Address, gossip: GossipMessage) -> GossipMessage:
        async with self._request(
            "POST",
            to,
            "/internal/gossip",
            data=encode(gossip),
            headers={"Content-Type": MSGPACK},
        ) as reply:
            return await reply.decode(GossipMessage)

    async def create_key(self, to: Address, order: KeyOrder) -> KeyCreated:
        """Have a peer create an access key (an admin tool's call, not one peers make)."""
        async with self._request(
            "POST", to, "/internal/keys", data=encode(order), headers={"Content-Type": MSGPACK}
        ) as reply:
            return await reply.decode(KeyCreated)
