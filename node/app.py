"""Assembles one peer: stores, membership, coordinator and both APIs on one aiohttp app.

Typed state lives under ``web.AppKey``s; everything with a lifetime (stores, the client
session, the gossip loop, the coordinator's background deletions) is opened and closed by one
``cleanup_ctx`` generator, so a peer in a test stops exactly like one in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from node.chunk_store import ChunkStore
from node.config import PeerConfig
from node.coordinator import Coordinator
from node.durable import write_atomically
from node.http_errors import error_middleware
from node.manifest_store import ManifestStore
from node.membership import Membership
from node.peer_client import PeerClient
from node.version import HybridClock
from ring import Member

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", PeerConfig)
CHUNKS = web.AppKey("chunks", ChunkStore)
MANIFESTS = web.AppKey("manifests", ManifestStore)
MEMBERSHIP = web.AppKey("membership", Membership)
COORDINATOR = web.AppKey("coordinator", Coordinator)
CLOCK = web.AppKey("clock", HybridClock)


def load_peer_id(data_dir: Path) -> str:
    """The peer's stable id, created on first start and kept in the data directory."""
    path = data_dir / "peer-id"
    try:
        return str(uuid.UUID(path.read_text().strip()))
    except FileNotFoundError:
        peer_id = str(uuid.uuid4())
        write_atomically(path, f"{peer_id}\n".encode())
        return peer_id
    except ValueError:
        raise SystemExit(f"{path} does not hold a peer id; fix or remove it") from None


def create_app(config: PeerConfig) -> web.Application:
    from node import peer_api, public_api

    # Manifests of huge files pass aiohttp's 1 MiB default (16 bytes per chunk per stripe).
    app = web.Application(middlewares=[error_middleware], client_max_size=256 << 20)
    app[CONFIG] = config
    app.cleanup_ctx.append(_lifecycle)
    public_api.add_routes(app)
    peer_api.add_routes(app)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    await asyncio.to_thread(config.data_dir.mkdir, parents=True, exist_ok=True)
    peer_id = await asyncio.to_thread(load_peer_id, config.data_dir)
    chunks = ChunkStore(config.data_dir)
    manifests = ManifestStore(config.data_dir)
    await chunks.open()
    await manifests.open()
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
    session = aiohttp.ClientSession(connector=connector)
    peers = PeerClient(session, config.peer_timeout)
    me = Member(peer_id, config.url, config.weight)
    clock = HybridClock(peer_id)
    membership = Membership(
        me,
        config.data_dir,
        config.join,
        peers,
        clock,
        lambda: (chunks.used_bytes, chunks.chunk_count),
        vnodes=config.vnodes,
        interval=config.heartbeat_interval,
        down_after=config.down_after,
    )
    await asyncio.to_thread(membership.load)
    coordinator = Coordinator(config, membership, peers, clock)
    app[CHUNKS], app[MANIFESTS], app[MEMBERSHIP] = chunks, manifests, membership
    app[CLOCK], app[COORDINATOR] = clock, coordinator
    gossip = asyncio.ensure_future(membership.run())
    log.info("peer %s serving %s from %s", peer_id, config.url, config.data_dir)
    try:
        yield
    finally:
        gossip.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gossip
        await coordinator.close()
        await session.close()
        log.info("peer %s stopped", peer_id)
