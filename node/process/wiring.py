"""Assembles one peer: stores, membership, coordinator and both APIs on one aiohttp app.

Typed state lives under ``web.AppKey``s; everything with a lifetime (stores, the client
session, the gossip loop, the coordinator's background deletions) is opened and closed by one
``cleanup_ctx`` generator, so a peer in a test stops exactly like one in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from node.api.errors import Handler, error_middleware
from node.cluster.discovery import DISCOVERY, Discovery
from node.cluster.membership import Membership
from node.cluster.transport import PeerClient
from node.config import PeerConfig
from node.datapath.coordinator import Coordinator
from node.disk.chunk_store import ChunkStore
from node.disk.durable import write_atomically
from node.disk.manifest_store import ManifestStore
from node.errors import WrongPeer
from node.model.version import HybridClock
from node.model.wire import PEER_HEADER
from node.upkeep.rebalancer import Rebalancer
from node.upkeep.repairer import Repairer
from node.upkeep.scrubber import Scrubber
from ring import Member

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", PeerConfig)
CHUNKS = web.AppKey("chunks", ChunkStore)
MANIFESTS = web.AppKey("manifests", ManifestStore)
MEMBERSHIP = web.AppKey("membership", Membership)
COORDINATOR = web.AppKey("coordinator", Coordinator)
CLOCK = web.AppKey("clock", HybridClock)
PEERS = web.AppKey("peers", PeerClient)
REBALANCER = web.AppKey("rebalancer", Rebalancer)
REPAIRER = web.AppKey("repairer", Repairer)
SCRUBBER = web.AppKey("scrubber", Scrubber)


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


def disk_usage(data_dir: Path) -> dict[str, int]:
    """Size and free space of the data directory's file system (one statvfs call)."""
    usage = shutil.disk_usage(data_dir)
    return {"disk_total_bytes": usage.total, "disk_free_bytes": usage.free}


def create_app(config: PeerConfig) -> web.Application:
    from node.api import peer, public

    # Manifests of huge files pass aiohttp's 1 MiB default (16 bytes per chunk per stripe).
    app = web.Application(
        middlewares=[error_middleware, _addressed_to_me], client_max_size=256 << 20
    )
    app[CONFIG] = config
    app.cleanup_ctx.append(_lifecycle)
    public.add_routes(app)
    peer.add_routes(app)
    return app


@web.middleware
async def _addressed_to_me(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse peer-to-peer calls meant for another peer (one that had this address before)."""
    meant = request.headers.get(PEER_HEADER)
    if meant is not None and meant != request.app[MEMBERSHIP].me.id:
        raise WrongPeer(request.app[CONFIG].url, f"this is not peer {meant}")
    return await handler(request)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    await asyncio.to_thread(config.data_dir.mkdir, parents=True, exist_ok=True)
    peer_id = await asyncio.to_thread(load_peer_id, config.data_dir)
    chunks = ChunkStore(config.data_dir, config.max_bytes)
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
        lambda: {
            "used_bytes": chunks.used_bytes,
            "chunks": chunks.chunk_count,
            **disk_usage(config.data_dir),
            "rebalance": rebalancer.progress.to_json(),
        },
        vnodes=config.vnodes,
        interval=config.heartbeat_interval,
        down_after=config.down_after,
    )
    await asyncio.to_thread(membership.load)
    coordinator = Coordinator(config, membership, peers, clock)
    rebalancer = Rebalancer(config, membership, manifests, coordinator, peers)
    repairer = Repairer(config, membership, manifests, coordinator)
    coordinator.on_broken_chunks = repairer.report  # read repair
    scrubber = Scrubber(config, membership, chunks, coordinator, repairer)
    app[CHUNKS], app[MANIFESTS], app[MEMBERSHIP] = chunks, manifests, membership
    app[CLOCK], app[COORDINATOR], app[PEERS] = clock, coordinator, peers
    app[REBALANCER], app[REPAIRER], app[SCRUBBER] = rebalancer, repairer, scrubber
    loops = [
        asyncio.ensure_future(job.run()) for job in (membership, rebalancer, repairer, scrubber)
    ]
    discovery = None
    if config.discovery == "zeroconf":
        discovery = app[DISCOVERY] = Discovery(config, membership)
        await discovery.start()
    log.info("peer %s serving %s from %s", peer_id, config.url, config.data_dir)
    try:
        yield
    finally:
        if discovery is not None:
            await discovery.stop()  # first: nothing learned while the rest shuts down
        for task in loops:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await membership.save()
        await coordinator.close()
        await session.close()
        log.info("peer %s stopped", peer_id)
