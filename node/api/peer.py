"""The peer-to-peer API under ``/internal/``: chunks, manifest replicas and gossip.

Only other peers call these routes (``node.cluster.protocol`` lists them and their bodies).
``authenticated`` checks every request's proof of membership (``node.cluster.auth``) before
any work, and signs every answer read whole. Each route parses its request, calls the
``Holder`` or ``Gossip``, and encodes the answer; what a peer *does* lives there, not here.
Every route is also ``_guarded``: no ``Origin`` header (403), and ``application/msgpack``
for msgpack bodies (415). Batches of manifest calls mostly come as frames of a channel
(``manifest_channel``, ``node.cluster.channel``) and are answered by the same code, as are
chunks of up to ``FRAME_CHUNK_MAX`` bytes (``_answer_chunk``). Input
is bounded as it is parsed (``chunk_owner``, the protocol records, ``Manifest.from_bytes``),
authenticated peer or not: a buggy peer gets a 400, not a hung or crashed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Mapping
from typing import TypeVar
from urllib.parse import unquote

import msgspec
from aiohttp import hdrs, web

from node.api.access_log import SentFile
from node.api.errors import INTERNAL_MESSAGE, Handler, worth_a_warning
from node.api.input import body_pieces, defer_continue, query_int
from node.api.keys import ACCESS, AUTH, CHANNELS, CONFIG, GOSSIP, HOLDER
from node.api.limits import Refusals
from node.api.numbers import decimal
from node.api.ranges import parse_range
from node.cluster import channel
from node.cluster.auth import AUTH_HEADER, Request
from node.cluster.protocol import (
    CHUNK_BLOCK_SIZE,
    CHUNK_NAME,
    CHUNK_VERSION,
    CONFIRMED,
    CONFIRMED_BATCH,
    MANIFEST_BATCH,
    MSGPACK,
    PEER_HEADER,
    PEER_PREFIX,
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
    ManifestRead,
    PullOrder,
    ReplicaWriteReply,
    decode,
    encode,
    pack_chunk_ids,
    unpack_chunk_ids,
)
from node.datapath.holder import Holder
from node.disk.sendfile import ReaderStalled
from node.errors import (
    CorruptData,
    FileNotFound,
    Forbidden,
    InvalidName,
    InvalidRequest,
    RingstoreError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)
from node.model.folders import check_delimiter
from node.model.manifest import (
    ChunkMeta,
    Manifest,
    ReplicaRead,
    ReplicaWrite,
    chunk_index,
    chunk_owner,
)
from node.model.version import Version
from node.tracing import REQUEST_ID as CURRENT_ID
from node.tracing import new_request_id, sane_request_id

T = TypeVar("T")
log = logging.getLogger(__name__)
access_log = logging.getLogger("node.access")  # each batched call gets a line, as a request
stalled_readers = Refusals(log, level=logging.INFO)  # chunk reads cut by --send-timeout

PREFIX = PEER_PREFIX
CHUNK = "/internal/chunks/{chunk_id}"
CONDITIONAL = "/internal/manifests/conditional"
STREAMED = {("PUT", CHUNK)}  # routes whose body is a stream, signed as UNSIGNED-PAYLOAD
GOSSIP_ROUTE = "/internal/gossip"
# The one call that may leave its receiver unnamed (no PEER_HEADER): a joining peer's to a
# seed whose id it does not know yet. Replayed to another peer it only repeats what its
# sender told (gossip merges by version), where any other call replayed there would act.
UNADDRESSED = {("POST", GOSSIP_ROUTE)}
# Replicas a peer listing page holds at most: callers ask for a page of 1,001 at most (a
# client's page and one more), and each entry is looked up and encoded on the event loop
# (~5-10 us), so a page holds the loop ~0.1 s at most.
MAX_LIST_PAGE = 10_000
NONCE = web.RequestKey("nonce", str)  # the nonce of an authenticated request
FRAME_CALL = f"frame on {channel.CHANNEL}"  # how a call that came in a frame is logged


@web.middleware
async def signed_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sign every answer to an authenticated peer-API request whose body is sent whole,
    errors included (the outermost middleware: it sees what the error middleware made)."""
    response = await handler(request)
    nonce = request.get(NONCE)
    if nonce is not None and isinstance(response, web.Response):
        body = response.body
        if body is None or isinstance(body, bytes):
            auth = request.app[AUTH]
            response.headers[AUTH_HEADER] = auth.sign_answer(nonce, response.status, body or b"")
    return response


@web.middleware
async def authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (401) a peer-API request without valid proof of membership: its signature is
    checked from the headers before the body is read, and the body against its signed
    digest before any work. Other routes pass untouched."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    if not (request.path.startswith(PREFIX) or canonical.startswith(PREFIX)):
        return await handler(request)
    auth = request.app[AUTH]
    signed = Request(
        request.method, request.headers.get(hdrs.HOST, ""), request.raw_path, request.headers
    )
    try:
        if hdrs.CONTENT_ENCODING in request.headers:  # peers never compress; a zip bomb would
            raise Unauthenticated("peer calls take no Content-Encoding")
        nonce, digest = auth.check_request(signed)
        unaddressed = PEER_HEADER not in request.headers  # (else compared by _addressed_to_me)
        if auth.enforced and unaddressed and (request.method, canonical) not in UNADDRESSED:
            raise Unauthenticated(f"a peer call must name its receiver ({PEER_HEADER})")
        # Chunk uploads stream; every other body is small and read whole to check its digest.
        streamed = (request.method, canonical) in STREAMED
        auth.check_body(digest, None if streamed else await request.read())
    except Unauthenticated as exc:
        auth.note_refusal(f"{request.method} {request.path!r} from {request.remote}", exc.message)
        raise
    request[NONCE] = nonce
    return await handler(request)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_put(CHUNK, _guarded(put_chunk), expect_handler=defer_continue)
    router.add_get(CHUNK, _guarded(get_chunk))
    router.add_delete(CHUNK, _guarded(delete_chunk))
    router.add_post(CHUNK + "/pull", _guarded(pull_chunk, MSGPACK))
    router.add_post("/internal/inventory", _guarded(check_inventory, MSGPACK))
    router.add_get("/internal/manifests", _guarded(get_manifest))
    router.add_put("/internal/manifests", _guarded(put_manifest, MSGPACK))
    router.add_put(CONDITIONAL, _guarded(put_manifest_on_condition, MSGPACK))
    router.add_delete("/internal/manifests", _guarded(retract_manifest))
    router.add_post(CONFIRMED, _guarded(confirm_manifest))
    router.add_get("/internal/manifests/list", _guarded(list_manifests))
    router.add_post(MANIFEST_BATCH, _guarded(manifest_calls, MSGPACK))
    router.add_post(CONFIRMED_BATCH, _guarded(manifest_confirmations, MSGPACK))
    router.add_get(channel.CHANNEL, _guarded(manifest_channel))
    router.add_post(GOSSIP_ROUTE, _guarded(gossip, MSGPACK))
    router.add_post("/internal/keys", _guarded(create_key, MSGPACK))


def _guarded(handler: Handler, body_type: str | None = None) -> Handler:
    """``handler`` behind the checks every peer route makes before it reads anything.

    A request with an ``Origin`` header comes from a browser page, never from a peer: it is
    refused (403), so no web page can make a browser POST gossip. A route that takes a
    msgpack body refuses any other Content-Type (415): a browser's "simple" request can only
    send text/plain, form data or multipart, so it cannot reach such a route either.
    """

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if hdrs.ORIGIN in request.headers:
            raise Forbidden(f"{request.path} is for peers only; requests with Origin are refused")
        if body_type is not None and request.content_type != body_type:
            raise UnsupportedMediaType(
                f"{request.path} takes {body_type}, not {request.content_type}"
            )
        return await handler(request)

    return guarded


def _packed(record: object) -> web.Response:
    return web.Response(body=encode(record), content_type=MSGPACK)


async def _body(request: web.Request, kind: type[T]) -> T:
    try:
        return decode(await request.read(), kind)
    except CorruptData as exc:
        raise InvalidRequest(exc.message) from exc


def _chunk_meta(chunk_id: str, name: str, version: str, block_size: str) -> ChunkMeta:
    """The owner a chunk request's headers give (a quoted name, a decimal block size)."""
    try:
        name, size = unquote(name, errors="strict"), decimal(block_size)
    except ValueError as exc:
        raise InvalidRequest(f"chunk {chunk_id}: bad owner or block size: {exc}") from exc
    return _owner(chunk_id, name, version, size)


def _owner(chunk_id: str, name: str, version: str, block_size: int) -> ChunkMeta:
    """A chunk's owner, checked (``chunk_owner``); raises InvalidName, InvalidRequest."""
    try:
        return chunk_owner(name, version, chunk_index(chunk_id), block_size)
    except InvalidName:
        raise
    except ValueError as exc:
        raise InvalidRequest(f"chunk {chunk_id}: bad owner or block size: {exc}") from exc


def _stored(meta: ChunkMeta) -> web.Response:
    body = msgspec.json.encode(ChunkStored(meta.size))
    return web.Response(body=body, status=201, content_type="application/json")


async def put_chunk(request: web.Request) -> web.Response:
    chunk_id = request.match_info["chunk_id"]
    headers = request.headers
    meta = _chunk_meta(
        chunk_id,
        headers.get(CHUNK_NAME, ""),
        headers.get(CHUNK_VERSION, ""),
        headers.get(CHUNK_BLOCK_SIZE, ""),
    )
    # No rate: the coordinator holds its own client to one, and sends a holder 1/k of it.
    body = body_pieces(request, request.app[CONFIG].upload_stall, min_rate=0)
    stored = await request.app[HOLDER].write_chunk(chunk_id, body, request.content_length, meta)
    return _stored(stored)


async def get_chunk(request: web.Request) -> SentFile:
    """A chunk's bytes, or the range of them a ``Range: bytes=`` header asks (``206``; ``416``
    past the end or invalid: peers send none, and the whole chunk would be read as the range
    asked): with sendfile(2) where the connection allows, else read in worker threads.
    The sidecar and trailer that end the chunk's file are never sent."""
    async with request.app[HOLDER].chunk_range(request.match_info["chunk_id"]) as chunk:
        wanted = parse_range(request.headers.get(hdrs.RANGE), chunk.size, refuse_invalid=True)
        response = SentFile(status=200 if wanted is None else 206)
        response.headers[hdrs.ACCEPT_RANGES] = "bytes"
        if wanted is not None:
            chunk.narrow(*wanted)
            start, end = wanted
            response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{chunk.size}"
        response.content_length = (wanted[1] - wanted[0]) if wanted else chunk.size
        await response.prepare(request)
        if request.method == hdrs.METH_HEAD:
            return response
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the connection closed before the chunk was sent")
        stall = request.app[CONFIG].send_timeout
        try:
            whole = await chunk.send(transport, stall)
        except ReaderStalled:  # (the stream is cut partway: only a reset tells the reader)
            reset(transport)
            stalled_readers.note(f"dropped chunk readers that took nothing for {stall:g}s")
            raise ConnectionResetError("the reader stopped reading") from None
        if whole:
            response.file_bytes = chunk.read_bytes
        else:
            async for piece in chunk.iter_any():
                await response.write(piece)
        await response.write_eof()
    return response


def reset(transport: asyncio.Transport) -> None:
    """Close the connection with a reset (SO_LINGER 0, as nginx's
    ``reset_timedout_connection``), not a FIN behind megabytes its reader will not take."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def pull_chunk(request: web.Request) -> web.Response:
    """Copy a chunk from another peer (a rebalancing move), verified before it is kept."""
    chunk_id = request.match_info["chunk_id"]
    order = await _body(request, PullOrder)
    return _stored(await request.app[HOLDER].pull_chunk(chunk_id, order))


async def delete_chunk(request: web.Request) -> web.Response:
    await request.app[HOLDER].delete_chunk(request.match_info["chunk_id"])
    return web.Response(status=204)


async def check_inventory(request: web.Request) -> web.Response:
    """Anti-entropy: which of the chunks a manifest places here are not here."""
    try:
        chunk_ids = unpack_chunk_ids(await _body(request, InventoryCheck))
    except ValueError as exc:
        raise InvalidRequest(f"inventory check: {exc}") from exc
    missing = await request.app[HOLDER].missing_chunks(chunk_ids)
    return _packed(pack_chunk_ids(missing))


async def get_manifest(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    found = await request.app[HOLDER].get_manifest(name)
    if found.manifest is None:
        raise FileNotFound(f"no manifest replica of {name!r} here")
    response = web.Response(body=found.manifest.to_bytes(), content_type=MSGPACK)
    if found.provisional:
        response.headers[PROVISIONAL] = "overdue" if found.overdue else "pending"
    return response


def _manifest(data: bytes) -> Manifest:
    try:
        return Manifest.from_bytes(data, keep=True)  # (an offer: stored as it came)
    except CorruptData as exc:
        raise InvalidRequest(str(exc)) from exc


def _reply(written: ReplicaWrite) -> ReplicaWriteReply:
    replaced = written.replaced.to_bytes() if written.replaced else None
    return ReplicaWriteReply(written.stored, written.current, replaced)


def _written(written: ReplicaWrite) -> web.Response:
    return _packed(_reply(written))


async def put_manifest(request: web.Request) -> web.Response:
    manifest = _manifest(await request.read())
    expect = None
    if "expect" in request.query:
        try:
            version, _, revision = request.query["expect"].rpartition("/")
            expect = Version.parse(version), decimal(revision)
        except ValueError:
            raise InvalidRequest("expect is VERSION/REVISION") from None
    return _written(await request.app[HOLDER].put_manifest(manifest, expect))


async def put_manifest_on_condition(request: web.Request) -> web.Response:
    """A conditional PUT's or DELETE's manifest: kept only if its condition holds here."""
    offer = await _body(request, ConditionalManifest)
    manifest = _manifest(offer.manifest)
    return _written(await request.app[HOLDER].put_manifest(manifest, None, offer.condition))


async def manifest_calls(request: web.Request) -> web.Response:
    """A batch of manifest reads and offers (``ManifestCalls``, 1 to ``MAX_MANIFEST_CALLS``),
    each answered on its own as its single route would (its failure in its answer, the
    others unaffected), all at once: the manifest log commits the offers together."""
    batch = await _body(request, ManifestCalls)
    return _packed(await _answers(request.app[HOLDER], batch.calls, f"POST {MANIFEST_BATCH}"))


async def manifest_confirmations(request: web.Request) -> web.Response:
    """Confirmations of conditional writes kept here (``ManifestConfirmations``, 1 to
    ``MAX_MANIFEST_CALLS``), each answered on its own as ``confirm_manifest`` would, all at
    once (each one's record rides the manifest log's next batch: no sync of its own)."""
    batch = await _body(request, ManifestConfirmations)
    via = f"POST {CONFIRMED_BATCH}"
    return _packed(await _answers(request.app[HOLDER], batch.confirmations, via))


async def manifest_channel(request: web.Request) -> web.StreamResponse:
    """A channel (``node.cluster.channel``): this request, authenticated like any other,
    upgraded to a WebSocket whose frames are batches of manifest calls and confirmations,
    each answered as ``manifest_calls`` and ``manifest_confirmations`` answer theirs, and
    chunks of up to ``FRAME_CHUNK_MAX`` bytes to write or read (``_answer_chunk``).
    Raises InvalidRequest unless the request is a WebSocket upgrade whose subprotocols are
    those its caller signed (``channel.changed_offer``), Unavailable once the peer is
    stopping."""
    ws = web.WebSocketResponse(
        protocols=channel.SUBPROTOCOLS,  # the first the caller offers: the frames it sends
        max_msg_size=channel.MAX_FRAME,
        timeout=channel.CLOSE_TIMEOUT,
        heartbeat=channel.HEARTBEAT,
        autoping=True,
        compress=False,  # frames are small, and a deflated one could inflate past its size
    )
    if not ws.can_prepare(request).ok:
        raise InvalidRequest(f"{channel.CHANNEL} takes a WebSocket upgrade")
    app = request.app
    channels, auth, holder = app[CHANNELS], app[AUTH], app[HOLDER]
    headers = request.headers
    changed = channel.changed_offer(
        headers.get(channel.OFFERED), headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL)
    )
    if changed is not None:  # changed on the way: no channel rather than a weaker one
        auth.note_refusal(f"a channel from {request.remote}", changed)
        raise InvalidRequest(f"{channel.CHANNEL}: {changed}")
    served = channel.ServedChannel(
        ws,
        functools.partial(auth.frame_keys, request.get(NONCE, ""), receiver=True),
        functools.partial(_answer_frame, holder),
        str(request.remote),
        auth.note_refusal,
    )
    channels.serving[served] = request  # before the upgrade: a stop meanwhile sees it
    try:
        if channels.stopping:
            raise Unavailable("this peer is stopping")
        await ws.prepare(request)
        why = await served.run()  # (closes at once if the peer began to stop meanwhile)
    finally:
        del channels.serving[served]
    log.debug("channel from %s closed: %s", request.remote, why)
    return ws


async def _answer_frame(holder: Holder, kind: int, body: memoryview) -> bytes:
    """The answer to one frame of calls (kind CALLS), confirmations (CONFIRMATIONS) or a
    chunk's write or read (CHUNK_WRITE, CHUNK_READ); raises CorruptData if it cannot be
    read. A chunk read the page cache holds is answered at once (``_chunk_now``)."""
    if kind == channel.CHUNK_WRITE:
        return encode(await _answer_chunk(holder, decode(body, ChunkWrite)))
    if kind == channel.CHUNK_READ:
        read = decode(body, ChunkRead)
        now = _chunk_now(holder, read)
        return encode(now if now is not None else await _answer_chunk(holder, read))
    started = time.monotonic()
    calls: list[ManifestCall] | list[ManifestConfirm]
    if kind == channel.CALLS:
        calls = decode(body, ManifestCalls).calls
    else:
        calls = decode(body, ManifestConfirmations).confirmations
    answer = encode(await _answers(holder, calls, FRAME_CALL))
    access_log.debug(
        "peer frame of %d %s: %d bytes in, %d out, %.3fs",
        len(calls),
        "calls" if kind == channel.CALLS else "confirmations",
        len(body),
        len(answer),
        time.monotonic() - started,
    )
    return answer


async def _answers(
    holder: Holder, calls: list[ManifestCall] | list[ManifestConfirm], via: str
) -> ManifestAnswers:
    """Each call of a batch answered on its own, all at once: a read the holder answers
    without waiting (``_answer_now``) in place, the others each in a task (``_answer``).
    (A task and a loop pass per read cost a replica ~0.1 ms of CPU per 4 KiB GET:
    docs/architecture.md, "The manifest log".)"""
    in_place = [_answer_now(holder, call) for call in calls]
    waiting = (call for call, answer in zip(calls, in_place, strict=True) if answer is None)
    late = iter(await asyncio.gather(*(_answer(holder, call, via) for call in waiting)))
    return ManifestAnswers([answer if answer is not None else next(late) for answer in in_place])


def _answer_now(holder: Holder, call: ManifestCall | ManifestConfirm) -> ManifestAnswer | None:
    """A read's answer where the holder has it without waiting
    (``Holder.get_manifest_now``), else None (``_answer`` answers it). Never where peer
    calls are logged: that line names the call's request, which takes a task of its own."""
    if not isinstance(call, ManifestRead) or access_log.isEnabledFor(logging.DEBUG):
        return None
    found = holder.get_manifest_now(call.name)
    if found is None:
        return None
    return ManifestAnswer(found.sealed, found.provisional, found.overdue)


def _chunk_now(holder: Holder, call: ChunkRead) -> ChunkAnswer | None:
    """A chunk read's answer where the page cache has its bytes
    (``Holder.read_chunk_now``), else None (``_answer_chunk`` answers it); never where
    peer calls are logged (as ``_answer_now``)."""
    if access_log.isEnabledFor(logging.DEBUG):
        return None
    data = holder.read_chunk_now(call.chunk_id, call.offset, call.length)
    return None if data is None else ChunkAnswer(data=memoryview(data))


def _read_answer(found: ReplicaRead) -> ManifestAnswer:
    """The answer to a read that found ``found``."""
    if found.manifest is None:
        return ManifestAnswer()
    return ManifestAnswer(found.manifest.to_bytes(), found.provisional, found.overdue)


async def _answer(holder: Holder, call: ManifestCall | ManifestConfirm, via: str) -> ManifestAnswer:
    """One call of a batch, run in a task of its own under its own request id (a fresh one
    without: as ``traced`` gives a request), so that its log lines and its access-log line
    name the request it serves; ``via`` (how it came: a batch route, or a channel frame)
    heads those lines. Failures are logged as ``error_middleware`` logs them."""
    CURRENT_ID.set(sane_request_id(call.request_id) or new_request_id())
    try:
        if isinstance(call, ManifestRead):
            found = await holder.get_manifest(call.name)
            answer = _read_answer(found)
            held = "none here" if found.manifest is None else "found"
            what = f"read of {call.name!r}: {held}" + " (provisional)" * found.provisional
        elif isinstance(call, ManifestConfirm):
            await holder.confirm_manifest(call.name, (call.version, call.revision))
            answer, what = ManifestAnswer(), f"confirmation of {call.name!r} {call.version}"
        else:
            manifest = _manifest(call.manifest)
            written = await holder.put_manifest(manifest, call.expect, call.condition)
            answer = ManifestAnswer(written=_reply(written))
            kept = "kept" if written.stored else f"not kept (holds {written.current})"
            what = f"offer of {manifest.name!r} {manifest.version}: {kept}"
    except RingstoreError as exc:
        if worth_a_warning(exc):
            log.warning("%s: %s", via, exc)
        answer, what = ManifestAnswer(failure=CallFailure(exc.code, exc.message)), repr(exc)
    except Exception as exc:  # what a single call's 500 would be; the batch goes on
        log.exception("%s: a call failed", via)
        answer = ManifestAnswer(failure=CallFailure(RingstoreError.code, INTERNAL_MESSAGE))
        what = repr(exc)
    access_log.debug("peer %s: %s", via, what)
    return answer


async def _answer_chunk(holder: Holder, call: ChunkWrite | ChunkRead) -> ChunkAnswer:
    """A chunk frame's call, answered as ``put_chunk`` or ``get_chunk`` would answer it as a
    request (its failure in the answer), logged under the request id it serves."""
    started = time.monotonic()
    CURRENT_ID.set(sane_request_id(call.request_id) or new_request_id())
    try:
        if isinstance(call, ChunkWrite):
            owner = _owner(call.chunk_id, call.name, call.version, call.block_size)
            size = len(call.data)
            stored = await holder.write_chunk(call.chunk_id, _one(call.data), size, owner)
            path = CHUNK.format(chunk_id=call.chunk_id)  # as the request would have been
            answer, what = ChunkAnswer(size=stored.size), f"PUT {path}: {size} bytes"
        else:
            async with holder.open_chunk(call.chunk_id, call.offset, call.length) as chunk:
                data = bytearray(max(0, min(chunk.size, call.offset + call.length) - call.offset))
                if data:
                    await chunk.readinto(memoryview(data))
            answer = ChunkAnswer(data=memoryview(data))
            path = CHUNK.format(chunk_id=call.chunk_id)
            what = f"GET {path} [{call.offset}, +{call.length}): {len(data)} bytes"
    except RingstoreError as exc:
        if worth_a_warning(exc):
            log.warning("%s: chunk %s: %s", FRAME_CALL, call.chunk_id, exc)
        answer, what = ChunkAnswer(failure=CallFailure(exc.code, exc.message)), repr(exc)
    except Exception as exc:  # what a chunk request's 500 would be
        log.exception("%s: chunk %s failed", FRAME_CALL, call.chunk_id)
        answer = ChunkAnswer(failure=CallFailure(RingstoreError.code, INTERNAL_MESSAGE))
        what = repr(exc)
    access_log.debug("peer %s: %s, %.3fs", FRAME_CALL, what, time.monotonic() - started)
    return answer


async def _one(data: memoryview) -> AsyncIterator[memoryview]:
    yield data


def _precedence(query: Mapping[str, str]) -> tuple[Version, int]:
    try:
        return Version.parse(query["version"]), decimal(query["revision"])
    except (KeyError, ValueError):
        raise InvalidRequest("version and revision are required") from None


async def confirm_manifest(request: web.Request) -> web.Response:
    """A conditional write this peer kept was committed (``Holder.confirm_manifest``);
    raises InvalidRequest without a name, version and revision."""
    query = request.query
    if not query.get("name"):
        raise InvalidRequest("a confirmation names its manifest")
    await request.app[HOLDER].confirm_manifest(query["name"], _precedence(query))
    return web.Response(status=204)


async def retract_manifest(request: web.Request) -> web.Response:
    query = request.query
    precedence = _precedence(query)
    body = await request.read()  # the manifest to put back, if any
    restore = None
    if body:
        if request.content_type != MSGPACK:
            raise UnsupportedMediaType(f"{request.path} takes {MSGPACK}")
        restore = _manifest(body)
    await request.app[HOLDER].retract_manifest(query.get("name", ""), precedence, restore)
    return web.Response(status=204)


async def list_manifests(request: web.Request) -> web.Response:
    query = request.query
    limit = query_int(request, "limit", 1000, 1, MAX_LIST_PAGE)
    prefix = query.get("prefix", "")
    delimiter = check_delimiter(query.get("delimiter", ""))
    base = query.get("base")
    if base is not None and not prefix.startswith(base):
        raise InvalidRequest("a listing's base is a prefix of its prefix")
    found, truncated = request.app[HOLDER].list_manifests(
        prefix, query.get("start_after", ""), limit, delimiter, base
    )
    return _packed(ManifestList([m.to_bytes() for m in found], truncated))


async def gossip(request: web.Request) -> web.Response:
    gossip = request.app[GOSSIP]
    message = await _body(request, GossipMessage)
    try:
        gossip.receive(message)
    except ValueError as exc:
        raise InvalidRequest(f"malformed gossip: {exc}") from exc
    return _packed(gossip.answer(message))


async def create_key(request: web.Request) -> web.Response:
    """Create an access key for whoever holds the cluster secret (the first admin key)."""
    order = await _body(request, KeyOrder)
    record, secret = await request.app[ACCESS].create_key(order.name, order.grants)
    return _packed(KeyCreated(record.access_key, secret))
