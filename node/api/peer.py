"""The peer-to-peer API under ``/internal/``: chunks, manifest replicas and gossip.

Only other peers call these routes. Bodies are raw bytes for chunks and msgpack otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from node.api.input import body_pieces, query_int
from node.cluster.transport import Address
from node.errors import CorruptData, FileNotFound, InvalidRequest
from node.model.digests import BlockDigests, chunk_digest
from node.model.manifest import ChunkMeta, Manifest
from node.model.version import Version
from node.model.wire import CHUNK_BLOCK_SIZE, CHUNK_NAME, CHUNK_VERSION, MSGPACK, pack, unpack
from node.process.wiring import CHUNKS, CLOCK, MANIFESTS, MEMBERSHIP, PEERS, REBALANCER


def add_routes(app: web.Application) -> None:
    app.router.add_put("/internal/chunks/{chunk_id}", put_chunk)
    app.router.add_get("/internal/chunks/{chunk_id}", get_chunk)
    app.router.add_delete("/internal/chunks/{chunk_id}", delete_chunk)
    app.router.add_post("/internal/chunks/{chunk_id}/pull", pull_chunk)
    app.router.add_get("/internal/manifests", get_manifest)
    app.router.add_put("/internal/manifests", put_manifest)
    app.router.add_delete("/internal/manifests", retract_manifest)
    app.router.add_get("/internal/manifests/list", list_manifests)
    app.router.add_post("/internal/gossip", gossip)


def _packed(value: Any) -> web.Response:
    return web.Response(body=pack(value), content_type=MSGPACK)


async def _unpacked(request: web.Request) -> Any:
    try:
        return unpack(await request.read())
    except CorruptData as exc:
        raise InvalidRequest(f"body is not msgpack: {exc}") from exc


def _chunk_meta(chunk_id: str, name: str, version: str, block_size: str | int) -> ChunkMeta:
    try:
        return ChunkMeta(
            unquote(name, errors="strict"),
            version,
            int(chunk_id.rpartition("-")[2]),
            int(block_size),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"chunk {chunk_id}: bad owner or block size: {exc}") from exc


async def put_chunk(request: web.Request) -> web.Response:
    chunk_id = request.match_info["chunk_id"]
    headers = request.headers
    meta = _chunk_meta(
        chunk_id,
        headers.get(CHUNK_NAME, ""),
        headers.get(CHUNK_VERSION, ""),
        headers.get(CHUNK_BLOCK_SIZE, ""),
    )
    stored = await request.app[CHUNKS].write(
        chunk_id, body_pieces(request), request.content_length, meta
    )
    return web.json_response({"size": stored.size}, status=201)


async def get_chunk(request: web.Request) -> web.FileResponse:
    # FileResponse serves Range requests with sendfile, off the event loop.
    return web.FileResponse(request.app[CHUNKS].path(request.match_info["chunk_id"]))


async def pull_chunk(request: web.Request) -> web.Response:
    """Copy a chunk from another peer (a rebalancing move), verified before it is kept."""
    chunk_id = request.match_info["chunk_id"]
    order = await _unpacked(request)
    try:
        source = Address(str(order["source"]), order.get("source_id"))
        size = int(order["size"])
        block_size, expected = int(order["block_size"]), bytes(order["digest"])
        meta = _chunk_meta(chunk_id, str(order["name"]), str(order["version"]), block_size)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"malformed pull order: {exc!r}") from exc
    async with request.app[PEERS].open_chunk(source, chunk_id, 0, size) as stream:

        async def verified() -> AsyncIterator[bytes]:
            digests = BlockDigests(block_size)
            async for piece in stream.iter_any():
                digests.update(piece)
                yield piece
            if chunk_digest(digests.digests()) != expected:
                raise CorruptData(f"chunk {chunk_id} from {source} fails its digest")

        stored = await request.app[CHUNKS].write(chunk_id, verified(), size, meta)
    return web.json_response({"size": stored.size}, status=201)


async def delete_chunk(request: web.Request) -> web.Response:
    await request.app[CHUNKS].delete(request.match_info["chunk_id"])
    return web.Response(status=204)


async def get_manifest(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    manifest = await request.app[MANIFESTS].get(name)
    if manifest is None:
        raise FileNotFound(f"no manifest replica of {name!r} here")
    return web.Response(body=manifest.to_bytes(), content_type=MSGPACK)


async def put_manifest(request: web.Request) -> web.Response:
    try:
        manifest = Manifest.from_bytes(await request.read())
    except CorruptData as exc:
        raise InvalidRequest(str(exc)) from exc
    expect = None
    if "expect" in request.query:
        try:
            version, _, revision = request.query["expect"].rpartition("/")
            expect = Version.parse(version), int(revision)
        except ValueError:
            raise InvalidRequest("expect is VERSION/REVISION") from None
    request.app[CLOCK].observe(manifest.version)
    result = await request.app[MANIFESTS].put(manifest, expect)
    if result.stored:
        request.app[REBALANCER].consider(manifest)
    return _packed(
        {
            "stored": result.stored,
            "current": result.current.to_wire(),
            "replaced": result.replaced.to_bytes() if result.replaced else None,
        }
    )


async def retract_manifest(request: web.Request) -> web.Response:
    query = request.query
    try:
        precedence = Version.parse(query["version"]), int(query["revision"])
    except (KeyError, ValueError):
        raise InvalidRequest("version and revision are required") from None
    await request.app[MANIFESTS].retract(query.get("name", ""), precedence)
    return web.Response(status=204)


async def list_manifests(request: web.Request) -> web.Response:
    query = request.query
    limit = query_int(request, "limit", 1000, 1, 100_000)
    found, truncated = request.app[MANIFESTS].list(
        query.get("prefix", ""), query.get("start_after", ""), limit
    )
    return _packed({"manifests": [m.to_bytes() for m in found], "truncated": truncated})


async def gossip(request: web.Request) -> web.Response:
    membership = request.app[MEMBERSHIP]
    payload = await _unpacked(request)
    try:
        membership.receive(payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"malformed gossip: {exc!r}") from exc
    return _packed(membership.gossip())
