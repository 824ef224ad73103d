"""Wiring one peer together: every component built in one place, in dependency order.

``create_app`` returns the aiohttp app of a peer (served by ``node.process.connections``,
which adds the limits on connections); its ``cleanup_ctx`` generators take the data
directory's lock (``_data_dir_lock``: one peer process per directory), then
(``_lifecycle``) open the stores, build the components (each gets what it needs at
construction: no callbacks are attached afterwards), set the app keys, start the background
loops and mDNS, and on shutdown stop them in reverse order. A peer in a test stops exactly
like one in production.

Construction order (each line uses only what is above it)::

    cluster identity (node.process.identity) -> authenticator
    -> stores -> membership -> transport, peers -> gossip (own figures: stores + progress)
    -> replicas -> rebuilder -> repairer -> coordinator (reports broken chunks to repairer)
    -> rebalancer -> holder (tells the rebalancer of stored replicas) -> scrubber
    -> access store (keys and namespaces: records on the replicas) -> gatekeeper
    -> the S3 frontend (``--s3-port``): its own app and server over the same components
    -> the metrics collector (reads the components at scrape time) and the loops

Both listeners share the peer's metrics registry (``node.api.metrics``; made with the app,
so its servers' access logger can count from the first request) and give every request
an id first thing (``node.api.access_log.traced``).

The S3 frontend is a second aiohttp app (``_serve_s3``) with S3's middlewares (XML errors,
Signature V4) that shares the peer's coordinator, access store, Gatekeeper and request
limit; it is served on its own port from the start of the peer's life to its stop (first
to stop, so no S3 request runs on stopped components). A port shared by the peers of a host
(``--s3-reuse-port``) is bound at the start but listened on only once the peer is first
ready (``_listen_when_ready``). ``--shared-port`` serves the files API that way too: a third
app (``_files_app``) with the public routes over the same components, none of the peer API.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone

import aiohttp
from aiohttp import hdrs, web

from node.access.guard import Gatekeeper
from node.access.sessions import Sessions
from node.access.startup import adopt_namespaces, reseal_keys, store_admin_key
from node.access.store import AccessStore
from node.api import access, browser, dates, forms, keys, monitoring, peer, public
from node.api.access_log import request_id_header, traced
from node.api.console import routes as console
from node.api.errors import NOSNIFF, SERVER, Handler, close_after_error, error_middleware
from node.api.limits import RequestLimit
from node.api.metrics import Metrics, PeerCollector, Watched
from node.api.s3 import routes as s3_routes
from node.api.s3.auth import signed_requests
from node.api.s3.errors import common_headers, s3_errors
from node.cluster.auth import Authenticator
from node.cluster.channel import OpenChannels
from node.cluster.gossip import Gossip
from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.cluster.protocol import PEER_HEADER, PeerFigures
from node.cluster.transport import HttpTransport
from node.config import AUTO_WEIGHT, PeerConfig, auto_weight
from node.datapath import isal
from node.datapath.chunk_streams import BlockBudget
from node.datapath.coordinator import Coordinator
from node.datapath.holder import Holder, LocalFirst
from node.datapath.rebuild import Rebuilder
from node.datapath.replicas import ManifestReplicas
from node.datapath.uploads import Uploads
from node.disk.chunk_store import ChunkStore
from node.disk.data_dir import (
    WriteProbe,
    disk_usage,
    load_peer_id,
    lock_data_dir,
    prepare_data_dir,
)
from node.disk.deletions import DeletionLog
from node.disk.manifest_store import ManifestStore
from node.errors import StartRefused, WrongPeer
from node.model.manifest import Manifest
from node.model.version import HybridClock, system_wall_ms
from node.model.zones import default_zone
from node.process.connections import PeerRunner, unbindable
from node.process.identity import cluster_identity
from node.process.memory import Trimmer
from node.process.tls import TlsFiles, client_context, server_context
from node.tracing import start_for_peer
from node.upkeep.anti_entropy import AntiEntropy
from node.upkeep.packer import Packer
from node.upkeep.rebalancer import Progress, Rebalancer
from node.upkeep.repairer import Repairer, RepairStats
from node.upkeep.scrubber import Scrubber, ScrubStats
from ring import Member

log = logging.getLogger(__name__)
READY_POLL = 0.1  # seconds between readiness checks before a shared port is listened on
# Manifests of huge files pass aiohttp's 1 MiB default (16 bytes per chunk per stripe).
CLIENT_MAX_SIZE = 256 << 20


def create_app(
    config: PeerConfig, *, wall_ms: Callable[[], int] = system_wall_ms
) -> web.Application:
    """The aiohttp app of one peer serving ``config``; components start with the app.

    ``wall_ms`` is the clock the peer versions files and dates answers with (tests give a
    skewed one; auth keeps the system's).
    """
    limit = RequestLimit(config.max_requests)  # shared with the S3 frontend
    app = web.Application(
        middlewares=[
            traced,  # first: every request has its id, and errors are logged with it
            peer.signed_answers,
            error_middleware,
            limit.middleware(),  # inside: its 503 is JSON
            access.identified,
            peer.authenticated,
            _addressed_to_me,
        ],
        client_max_size=CLIENT_MAX_SIZE,
        # Request bodies are never decoded: a file is stored as the bytes it was sent,
        # with its Content-Encoding kept beside it (node.api.representation).
        handler_args={"auto_decompress": False},
    )
    app[keys.CONFIG] = config
    app[keys.METRICS], app[keys.LISTENER] = Metrics(), "public"  # the registry: every listener
    app[keys.WRITE_PROBE] = WriteProbe(config.data_dir)
    app[keys.SESSIONS] = Sessions()  # the web console's logins (node.api.console)
    app[forms.FORM_GUARD] = browser.form_guard  # a form sent with one: its CSRF token
    app.on_response_prepare.append(_common_headers)
    app.on_response_prepare.append(request_id_header)
    s3, shared = _Frontend(), _Frontend()
    app.cleanup_ctx.append(_data_dir_lock)
    lifecycle = functools.partial(_lifecycle, wall_ms=wall_ms, limit=limit, s3=s3, shared=shared)
    app.cleanup_ctx.append(lifecycle)
    app.on_response_prepare.append(dates.date_response)  # Last-Modified never after Date
    app[keys.CHANNELS] = OpenChannels()
    # First at shutdown: the S3 and shared ports take no new connection (a shared one: the
    # host's other peers take them), then other peers' channels answer the frames under way
    # and close; then the requests under way on every port are waited for.
    app.on_shutdown.append(s3.stop_taking)
    app.on_shutdown.append(shared.stop_taking)
    app.on_shutdown.append(lambda app: app[keys.CHANNELS].stop(config.peer_timeout))
    public.add_routes(app)
    monitoring.add_routes(app)
    access.add_routes(app)
    console.add_routes(app)
    peer.add_routes(app)
    return app


def _weight(config: PeerConfig) -> int:
    """The peer's weight: ``--weight``, or with ``auto`` one per TiB of its capacity."""
    if config.weight != AUTO_WEIGHT:
        return config.weight
    capacity = config.max_bytes or disk_usage(config.data_dir)[0]
    weight = auto_weight(capacity)
    log.info("weight %d, from a capacity of %d bytes (--weight auto)", weight, capacity)
    return weight


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer: no version banner (aiohttp's ``Server`` names Python's and its own),
    and no content sniffing by browsers; a 408 and a public 503 close their connection."""
    response.headers[hdrs.SERVER] = SERVER
    response.headers[NOSNIFF[0]] = NOSNIFF[1]
    close_after_error(request, response)


@web.middleware
async def _addressed_to_me(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse peer-to-peer calls meant for another peer (one that had this address before)."""
    meant = request.headers.get(PEER_HEADER)
    if meant is not None and meant != request.app[keys.MEMBERSHIP].me.id:
        raise WrongPeer(request.app[keys.CONFIG].url, f"this is not peer {meant}")
    return await handler(request)


def _s3_app(app: web.Application, limit: RequestLimit) -> web.Application:
    """The S3 frontend's app over the components of the peer's ``app`` (started)."""
    clock = app[keys.CLOCK]

    def now() -> datetime:  # the peer's clock, as its answers' Date
        return datetime.fromtimestamp(clock.wall_ms() / 1000, timezone.utc)

    s3 = web.Application(
        middlewares=[traced, s3_errors, limit.middleware(), signed_requests(now)],
        handler_args={"auto_decompress": False},  # objects are stored as sent
    )
    s3[keys.CONFIG], s3[keys.CLOCK] = app[keys.CONFIG], clock
    s3[keys.COORDINATOR], s3[keys.ACCESS] = app[keys.COORDINATOR], app[keys.ACCESS]
    s3[keys.GATEKEEPER] = app[keys.GATEKEEPER]
    s3[keys.UPLOADS] = app[keys.UPLOADS]
    s3[keys.MEMBERSHIP], s3[keys.METRICS] = app[keys.MEMBERSHIP], app[keys.METRICS]
    s3[keys.LISTENER] = "s3"
    s3.on_response_prepare.append(common_headers)
    s3.on_response_prepare.append(request_id_header)
    s3.on_response_prepare.append(dates.date_response)
    s3_routes.add_routes(s3)
    return s3


def _files_app(app: web.Application, limit: RequestLimit) -> web.Application:
    """The files API's app for ``--shared-port``, over the components of the peer's ``app``
    (started): the public routes with the peer's port's middlewares, less those of peer
    calls; no peer-to-peer API (a call meant for one peer could reach another) and no web
    console (its sessions live in the peer that opened them)."""
    files = web.Application(
        middlewares=[traced, error_middleware, limit.middleware(), access.identified],
        client_max_size=CLIENT_MAX_SIZE,
        handler_args={"auto_decompress": False},
    )
    for key, value in app.items():  # the same components: keys set by ``_lifecycle``
        if key is not keys.SESSIONS:  # a console login is no key here: it lives in one peer
            files[key] = value
    files[keys.LISTENER] = "shared"
    files.on_response_prepare.append(_common_headers)
    files.on_response_prepare.append(request_id_header)
    files.on_response_prepare.append(dates.date_response)
    public.add_routes(files)
    monitoring.add_routes(files)
    access.add_routes(files)
    return files


async def _serve_shared(
    app: web.Application, limit: RequestLimit
) -> tuple[PeerRunner, list[socket.socket]]:
    """Bind ``--shared-port`` for the files API (``_files_app``) with SO_REUSEPORT, as
    ``_serve_s3`` binds a shared S3 port: the sockets are listened on by
    ``_listen_when_ready`` once the peer is first ready. Raises StartRefused when the port
    cannot be bound."""
    config = app[keys.CONFIG]
    assert config.shared_port is not None
    runner = PeerRunner(_files_app(app, limit))
    await runner.setup()
    try:
        return runner, await _bound_shared(config.host, config.shared_port)
    except OSError as exc:
        await runner.cleanup()
        why = unbindable(exc, shared=True)
        raise StartRefused(f"cannot serve the files API on --shared-port: {why}") from exc
    except BaseException:
        await runner.cleanup()
        raise


async def _serve_s3(
    app: web.Application, limit: RequestLimit
) -> tuple[PeerRunner, list[socket.socket]]:
    """Serve S3 on ``--s3-port`` (with the peer's TLS, if any) and note its URL.

    With ``--s3-reuse-port`` the port is bound with SO_REUSEPORT (socket(7)): the peers of one
    host that all bind it share it, the kernel giving each new connection to one of the
    sockets that *listen*. The sockets are bound now (a process holding the port without the
    option stops this start) and returned, to be listened on by ``_listen_when_ready`` once
    the peer is first ready: a peer still joining takes no connection meant for the ones
    serving. The caller closes them when the peer stops (closing twice is harmless).
    Raises StartRefused when the port cannot be bound.
    """
    config = app[keys.CONFIG]
    runner = PeerRunner(_s3_app(app, limit))
    await runner.setup()
    tls = _serving_tls(config)
    try:
        if config.s3_reuse_port:
            assert config.s3_port  # PeerConfig: a shared port is a given one
            return runner, await _bound_shared(config.host, config.s3_port)
        site = web.TCPSite(runner, config.host, config.s3_port, reuse_address=True, ssl_context=tls)
        await site.start()
    except OSError as exc:  # EADDRINUSE, EACCES: the operator's to fix, no traceback
        await runner.cleanup()
        raise StartRefused(f"cannot serve S3: {unbindable(exc, config.s3_reuse_port)}") from exc
    except BaseException:
        await runner.cleanup()
        raise
    _serving_s3(app, runner.addresses[0][1])
    return runner, []


def _serving_s3(app: web.Application, port: int, shared: bool = False) -> None:
    """Note (``S3_URL``, shown in ``/cluster``) and log where the peer now serves S3."""
    config = app[keys.CONFIG]
    url = app[keys.S3_URL] = config.url_at(port)
    log.info(
        "serving S3 on %s%s", url, ", a port shared with the host's other peers" if shared else ""
    )


def _serving_shared(app: web.Application, port: int) -> None:
    """Log that the peer now serves the files API on the shared ``port`` too."""
    url = app[keys.CONFIG].url_at(port)
    log.info("serving the files API on %s too, a port shared with the host's other peers", url)


def _serving_tls(config: PeerConfig) -> ssl.SSLContext | None:
    """The server side of the peer's TLS (``--tls-*``), or None when it serves plain HTTP."""
    files = TlsFiles.of(config)
    return server_context(files) if files is not None else None


async def _bound_shared(host: str, port: int) -> list[socket.socket]:
    """TCP sockets bound to ``port`` on every address of ``host`` (as ``TCPSite`` binds: a
    name such as ``localhost`` may have an IPv4 and an IPv6 one; a family the system does not
    support is skipped, as asyncio's create_server does), with SO_REUSEPORT, not listening
    yet. Raises OSError when one cannot be bound (a process holds the port without
    SO_REUSEPORT), having closed those it made.

    No SO_REUSEADDR: on Linux a socket bound with it, not listening yet, lets any other
    socket with SO_REUSEADDR (any user's) bind the port and listen first, and this one's
    listen would then fail. SO_REUSEPORT alone already binds over connections in TIME_WAIT.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:  # (IPv6 off on this host)
                    continue
                raise
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server: IPv6 only, so an
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv4 one can bind
            sock.bind(address)
            sock.setblocking(False)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


async def _listen_when_ready(
    app: web.Application,
    runner: PeerRunner,
    shared: list[socket.socket],
    tls: ssl.SSLContext | None,
    serving: Callable[[int], None],
) -> None:
    """Listen on the shared sockets once the peer is first ready, then call ``serving``
    with the port; a listen that fails is logged (the peer serves on, with nothing on that
    address)."""
    # Polled: readiness is derived (members up, ring, a timed disk probe), no event.
    while True:
        if not await monitoring.reasons_not_ready(app):
            break
        await asyncio.sleep(READY_POLL)
    listening = 0
    for sock in shared:
        try:
            await web.SockSite(runner, sock, ssl_context=tls).start()
            listening += 1
        except OSError:
            log.exception("cannot listen on the shared port at %s", sock.getsockname())
    if listening:
        serving(shared[0].getsockname()[1])


class _Frontend:
    """A frontend of the peer on a port of its own, S3's or the shared files API's
    (``_lifecycle`` fills it in): its runner, the task that listens on a shared port once
    the peer is ready (``_listen_when_ready``) and that port's sockets."""

    def __init__(self) -> None:
        self.runner: PeerRunner | None = None
        self.gate: asyncio.Task[None] | None = None
        self.shared: list[socket.socket] = []

    async def stop_taking(self, app: web.Application) -> None:
        """Take no new connection (leave a shared port's group), leaving the requests under
        way to ``close``; again is harmless. (Open keep-alive connections still take
        requests until then: closing them here cut uploads under way, not understood yet.)"""
        if self.gate is not None:  # before the runner it would start a site on
            self.gate.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.gate
        if self.runner is not None:
            for site in list(self.runner.sites):
                await site.stop()
        for sock in self.shared:  # those no site took (a stop while joining)
            sock.close()

    async def close(self, app: web.Application) -> None:
        """Stop serving: the requests under way get ``SHUTDOWN_GRACE``."""
        await self.stop_taking(app)
        if self.runner is not None:
            await self.runner.cleanup()


async def _data_dir_lock(app: web.Application) -> AsyncIterator[None]:
    """Make the data directory and hold its lock (``lock_data_dir``) while the peer runs:
    before anything else opens, after everything else closed."""
    data_dir = app[keys.CONFIG].data_dir
    await asyncio.to_thread(prepare_data_dir, data_dir)
    lock = await asyncio.to_thread(lock_data_dir, data_dir)
    try:
        yield
    finally:
        os.close(lock)


async def _lifecycle(
    app: web.Application,
    wall_ms: Callable[[], int],
    limit: RequestLimit,
    s3: _Frontend,
    shared: _Frontend,
) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    identity, token_seeds = await asyncio.to_thread(cluster_identity, config)
    auth = app[keys.AUTH] = Authenticator(identity, enforced=config.peer_auth == "hmac")
    if not auth.enforced:
        log.warning("peer authentication is OFF: anyone who reaches this port is a member")
    peer_id = await asyncio.to_thread(load_peer_id, config.data_dir)
    chunks = ChunkStore(config.data_dir, config.max_bytes, config.pack_max, config.reserve_bytes)
    # A conditional write's verdict comes after its offers to the home replicas and one more
    # call, each bounded by the peer timeout: past three of them, it is overdue.
    manifests = ManifestStore(config.data_dir, config.m, provisional_for=3 * config.peer_timeout)
    await chunks.open()
    await manifests.open()
    clock = app[keys.CLOCK] = HybridClock(peer_id, wall_ms)
    membership = Membership(
        Member(peer_id, config.url, _weight(config), config.zone or default_zone(config.url)),
        config.data_dir,
        vnodes=config.vnodes,
        replicas=config.manifest_replicas,
        down_after=config.down_after,
        settle_after=3 * config.heartbeat_interval,
    )
    await asyncio.to_thread(membership.load)
    tls = TlsFiles.of(config)  # peer calls: only servers the CA signed; present our cert
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=0,
            enable_cleanup_closed=True,
            ssl=client_context(tls.ca, tls) if tls is not None else True,
        )
    )
    transport = HttpTransport(session, config.peer_timeout, auth)
    calls = LocalFirst(transport, peer_id)  # manifest calls and chunk writes to itself skip HTTP
    peers = Peers(membership, calls)
    progress = Progress()
    repair_stats, scrub_stats = RepairStats(), ScrubStats()
    deletions = DeletionLog(config.data_dir)

    def own_figures() -> PeerFigures:
        total, free = disk_usage(config.data_dir)
        return PeerFigures(
            used_bytes=chunks.used_bytes,
            chunks=chunks.chunk_count,
            disk_total_bytes=total,
            disk_free_bytes=free,
            max_bytes=config.max_bytes or 0,
            rebalance=progress.to_json(),
            settled_ring=membership.settled_ring,
            s3_url=app.get(keys.S3_URL, ""),
            repair_queued=repair_stats.queued,
            scrub_pass_chunks=scrub_stats.pass_chunks,
            scrub_pass_checked=scrub_stats.pass_checked,
            deletions_pending=deletions.pending,
            reads_packs=True,
            reads_cauchy=isal.available(),
        )

    seeds = [*config.join, *token_seeds]
    gossip = Gossip(
        membership,
        peers,
        clock,
        seeds,
        own_figures,
        config.heartbeat_interval,
        config.down_after,
    )
    pending_deletions = await asyncio.to_thread(deletions.open)
    replicas = ManifestReplicas(config, membership, peers, clock, deletions, own=manifests.read_now)
    replicas.resume(pending_deletions)
    # One budget per peer: its requests' blocks in hand and their read-ahead.
    buffers = BlockBudget(config.buffer_memory, config.queue_depth, config.admission_wait)
    rebuilder = Rebuilder(config, membership, peers, replicas, buffers)
    repairer = Repairer(config, membership, manifests, replicas, rebuilder, repair_stats)
    coordinator = Coordinator(config, membership, peers, clock, replicas, repairer.report, buffers)
    rebalancer = Rebalancer(
        config, membership, manifests, replicas, peers, progress, repairer.report
    )
    metrics = app[keys.METRICS]

    def replica_stored(manifest: Manifest) -> None:
        rebalancer.consider(manifest)  # it may belong on other members now
        repairer.consider(manifest)  # it may place a chunk on a member lost for good

    holder = calls.holder = Holder(
        chunks,
        manifests,
        clock,
        transport,
        membership,
        replica_stored,
        metrics.chunk_stored,
        metrics.chunk_read,
    )
    scrubber = Scrubber(config, membership, chunks, replicas, repairer, scrub_stats)
    uploads = Uploads(config, coordinator, replicas, clock)
    packer = Packer(config, membership, coordinator, replicas, clock)
    anti_entropy = AntiEntropy(
        config, membership, manifests, replicas, peers, repairer, uploads, packer
    )
    access_store = AccessStore(replicas, coordinator, clock, identity, config.access_cache_ttl)

    app[keys.CHUNKS], app[keys.MANIFESTS], app[keys.MEMBERSHIP] = chunks, manifests, membership
    app[keys.GOSSIP], app[keys.REPLICAS], app[keys.COORDINATOR] = gossip, replicas, coordinator
    app[keys.HOLDER], app[keys.REBALANCER] = holder, rebalancer
    app[keys.REPAIRER], app[keys.SCRUBBER] = repairer, scrubber
    app[keys.ANTI_ENTROPY], app[keys.PACKER] = anti_entropy, packer
    app[keys.UPLOADS] = uploads
    app[keys.ACCESS], app[keys.GATEKEEPER] = access_store, Gatekeeper(access_store)
    collector = PeerCollector(
        Watched(
            config,
            membership,
            chunks,
            manifests,
            coordinator,
            repairer,
            scrubber,
            progress,
            anti_entropy,
            packer,
            deletions,
            buffers,
            replicas.hedge,
            transport.manifest_calls.counts,
            lambda: transport.channels_open,
            lambda: transport.channels_opened,
            in_progress=lambda: limit.active,
            connections=metrics.open_connections,
        )
    )
    metrics.registry.register(collector)
    retry = config.heartbeat_interval
    jobs = [job.run() for job in (gossip, rebalancer, repairer, scrubber, anti_entropy, Trimmer())]
    jobs.append(metrics.sample_loop_lag())
    jobs.append(store_admin_key(access_store, config.data_dir, retry))
    jobs.append(adopt_namespaces(access_store, config.data_dir, manifests.live_names, retry))
    if len(identity.secrets) > 1:  # a rotation is under way: keys move to the new secret
        jobs.append(reseal_keys(access_store, retry))
    loops = start_for_peer(peer_id, jobs)  # their log lines name this peer
    discovery = None
    try:  # a start that fails from here on (S3's port taken) stops what started, as a stop
        if config.discovery == "zeroconf":
            from node.cluster.discovery import Discovery  # zeroconf: ~3 MiB a peer saves

            discovery = Discovery(config, identity.cluster_id, membership.me, gossip.add_seed)
            app[keys.DISCOVERY] = discovery
            await discovery.start()
        server_tls = _serving_tls(config)
        if config.s3_port is not None:
            s3.runner, s3.shared = await _serve_s3(app, limit)
            if s3.shared:
                serving = functools.partial(_serving_s3, app, shared=True)
                listen = _listen_when_ready(app, s3.runner, s3.shared, server_tls, serving)
                s3.gate = start_for_peer(peer_id, [listen])[0]
        if config.shared_port is not None:
            shared.runner, shared.shared = await _serve_shared(app, limit)
            serving = functools.partial(_serving_shared, app)
            listen = _listen_when_ready(app, shared.runner, shared.shared, server_tls, serving)
            shared.gate = start_for_peer(peer_id, [listen])[0]
        log.info(
            "peer %s of cluster %s serving %s from %s",
            peer_id,
            identity.cluster_id,
            config.url,
            config.data_dir,
        )
        yield
    finally:
        # First, together: no S3 or shared-port request runs on stopped components, and
        # neither port's requests wait out the other's grace. A failure is logged: the rest
        # must still stop.
        closed = await asyncio.gather(s3.close(app), shared.close(app), return_exceptions=True)
        for failure in closed:
            if isinstance(failure, Exception):
                log.error("stopping a frontend failed: %r", failure)
        if discovery is not None:
            await discovery.stop()  # first: nothing learned while the rest shuts down
        for task in loops:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        metrics.registry.unregister(collector)
        await membership.save()
        await replicas.close()
        await manifests.close()
        await chunks.close()
        deletions.close()
        await transport.close()  # its queued manifest calls fail: none is left waiting
        await session.close()
        log.info("peer %s stopped", peer_id)
