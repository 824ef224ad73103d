"""In-process peers: real aiohttp peers on 127.0.0.1 in the test's event loop.

``LocalCluster`` runs N peers, each on its own port and data directory, and can stop, hang,
restart and add peers (after Tahoe-LAFS's NoNetworkGrid, but over real sockets).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from node.access.store import AccessStore
from node.api.keys import (
    ACCESS,
    ANTI_ENTROPY,
    AUTH,
    CHANNELS,
    CHUNKS,
    CLOCK,
    CONFIG,
    COORDINATOR,
    GOSSIP,
    HOLDER,
    MANIFESTS,
    MEMBERSHIP,
    PACKER,
    REBALANCER,
    REPAIRER,
    REPLICAS,
    S3_URL,
    SCRUBBER,
)
from node.cluster.auth import Authenticator
from node.cluster.gossip import Gossip
from node.cluster.membership import Membership
from node.config import PeerConfig
from node.datapath.coordinator import Coordinator
from node.datapath.holder import Holder
from node.datapath.replicas import ManifestReplicas
from node.disk.chunk_store import ChunkStore
from node.disk.data_dir import load_identity
from node.disk.manifest_store import ManifestStore
from node.model.identity import ClusterIdentity
from node.model.version import HybridClock, system_wall_ms
from node.process.connections import PeerRunner, PeerServer
from node.process.tls import TlsFiles, server_context
from node.process.wiring import create_app
from node.upkeep.anti_entropy import AntiEntropy
from node.upkeep.packer import Packer
from node.upkeep.rebalancer import Rebalancer
from node.upkeep.repairer import Repairer
from node.upkeep.scrubber import Scrubber
from tests.harness.access import seed_admin_key, wait_admin_key
from tests.harness.disk import chunk_files_in, new_secret_file
from tests.harness.polling import eventually, spin

# Fast background timings so changes are noticed within a test's patience, but the
# production timeouts for peer calls: on a loaded machine a healthy chunk reply (an fsync
# behind other work) can take seconds, and a test must not fail for that. Real stalls are
# still caught: by the loop watchdog in-process, and by tests that hang peers on purpose,
# which ask for HANG_DETECTION.
FAST = {
    "discovery": "none",
    "heartbeat_interval": 0.2,
    "down_after": 2,
    "peer_timeout": 10.0,
    "stall_timeout": 10.0,
    "delete_grace": 0.2,
    "rebalance_interval": 2.0,
    # Files of every size are cut into chunks, as the tests of the chunk path (most of them,
    # with small files for speed) expect; tests of inline files ask for INLINE.
    "inline_max": 0,
    # Chunks are files, as the tests that lose or damage chunk files by hand expect; tests
    # of packed chunks ask for PACKED (real peers and ProcessCluster's pack them).
    "pack_max": 0,
}
INLINE = {"inline_max": 16 << 10}  # the default of a real peer
PACKED = {"pack_max": 1 << 20}  # the default of a real peer
# For tests that hang a peer on purpose: give up on it quickly (and tolerate less load).
HANG_DETECTION = {"peer_timeout": 2.0, "stall_timeout": 3.0}


class Served:
    """A listening socket on 127.0.0.1 (``port`` 0: any free one) to serve an aiohttp app on."""

    def __init__(self, port: int = 0) -> None:
        self._listening = socket.socket()
        self._listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listening.bind(("127.0.0.1", port))
        self.port: int = self._listening.getsockname()[1]
        self._runner: web.AppRunner | None = None

    async def serve(self, app: web.Application, tls: ssl.SSLContext | None = None) -> None:
        # A peer's app is served as a peer process serves it (its limits on connections);
        # a test's own app (a fake peer) as plain aiohttp serves it.
        runner = (
            PeerRunner(app, shutdown_timeout=0.5)
            if CONFIG in app
            else web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        )
        try:
            await runner.setup()
        except BaseException:  # e.g. StartRefused: a peer that refuses to start
            await runner.cleanup()
            self._listening.close()
            raise
        self._runner = runner
        await web.SockSite(self._runner, self._listening, ssl_context=tls).start()

    @property
    def server(self) -> PeerServer:
        """What serves the connections (``PeerServer``), while serving."""
        assert self._runner is not None
        assert isinstance(self._runner.server, PeerServer)
        return self._runner.server

    async def stop(self) -> None:
        if self._runner is None:
            self._listening.close()
            return
        # Closing a listening socket while a just-accepted connection's set-up task is still
        # queued leaks that connection's socket (CPython gh-109564, open on every version we
        # test; seen here when other peers heartbeat a stopping one). So: stop accepting,
        # let the loop turn so accepted connections attach, and only then shut down.
        asyncio.get_running_loop().remove_reader(self._listening.fileno())
        await spin()
        await self._runner.cleanup()
        self._runner = None
        await spin()  # let closed transports run their connection_lost callbacks


class LocalPeer:
    """One in-process peer that can be stopped, hung and restarted on the same port."""

    def __init__(
        self,
        data_dir: Path,
        join: tuple[str, ...],
        *,
        wall_ms: Callable[[], int] = system_wall_ms,
        **overrides: Any,
    ) -> None:
        """``overrides`` are ``PeerConfig`` settings; ``wall_ms`` is the clock the peer
        versions files and dates answers with (give a skewed one to test clock skew)."""
        self.data_dir = data_dir
        self._join = join
        self._wall_ms = wall_ms
        self._overrides = {**FAST, **overrides}
        self.port = 0
        self.app: web.Application | None = None
        self._served: Served | None = None
        self._running = asyncio.Event()  # cleared while hung
        self._running.set()

    def __repr__(self) -> str:
        state = "stopped" if self._served is None else "hung" if self.hung else "up"
        return f"LocalPeer({self.url}, {state})"

    @property
    def url(self) -> str:
        scheme = "https" if self._overrides.get("tls_cert") is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def id(self) -> str:
        return self.membership.me.id

    @property
    def hung(self) -> bool:
        return not self._running.is_set()

    @web.middleware
    async def _hang(self, request: web.Request, handler: Any) -> web.StreamResponse:
        await self._running.wait()
        response: web.StreamResponse = await handler(request)
        return response

    async def start(self) -> None:
        served = Served(self.port)
        self.port = served.port
        config = PeerConfig(
            data_dir=self.data_dir, port=self.port, join=self._join, **self._overrides
        )
        self.app = create_app(config, wall_ms=self._wall_ms)
        self.app.middlewares.insert(0, self._hang)
        files = TlsFiles.of(config)
        await served.serve(self.app, server_context(files) if files is not None else None)
        self._served = served

    async def stop(self) -> None:
        """Stop serving, as a crash would look to other peers (connections refused)."""
        self._running.set()
        if self._served is not None:
            await self._served.stop()
            self._served = None

    def configure(self, **overrides: Any) -> None:
        """Change settings for the next start (as an operator restarting with new options)."""
        self._overrides.update(overrides)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def hang(self) -> None:
        """Accept connections but answer nothing until ``unhang``: new requests wait, and
        nothing more is read of the channels open now, as from a stopped process."""
        self._running.clear()
        for transport in self._channels():
            transport.pause_reading()

    def unhang(self) -> None:
        self._running.set()
        for transport in self._channels():
            transport.resume_reading()

    def _channels(self) -> list[asyncio.Transport]:
        """The connections of the channels other peers have open to this one."""
        if self.app is None or self._served is None:
            return []
        found = (request.transport for request in self.app[CHANNELS].serving.values())
        return [t for t in found if isinstance(t, asyncio.Transport) and not t.is_closing()]

    @property
    def running(self) -> bool:
        return self._served is not None

    @property
    def server(self) -> PeerServer:
        """The peer's HTTP server: its open connections and refusals."""
        assert self._served is not None, f"{self} is not serving"
        return self._served.server

    def chunk_files(self) -> list[Path]:
        """The chunk files on this peer's disk."""
        return chunk_files_in(self.data_dir)

    def _app(self) -> web.Application:
        assert self.app is not None, f"{self} was never started"
        return self.app

    @property
    def identity(self) -> ClusterIdentity:
        """The cluster identity this peer keeps in its data directory."""
        identity = load_identity(self.data_dir)
        assert identity is not None, f"{self} has no cluster identity"
        return identity

    @property
    def s3_url(self) -> str:
        """Where this peer serves S3 (started with ``s3_port``: 0 picks a free port, a new
        one at each start)."""
        return self._app()[S3_URL]

    @property
    def access(self) -> AccessStore:
        """This peer's keys and namespaces."""
        return self._app()[ACCESS]

    @property
    def gossip(self) -> Gossip:
        return self._app()[GOSSIP]

    @property
    def auth(self) -> Authenticator:
        """What signs and checks this peer's peer-to-peer calls."""
        return self._app()[AUTH]

    @property
    def clock(self) -> HybridClock:
        return self._app()[CLOCK]

    @property
    def coordinator(self) -> Coordinator:
        return self._app()[COORDINATOR]

    @property
    def membership(self) -> Membership:
        return self._app()[MEMBERSHIP]

    @property
    def chunks(self) -> ChunkStore:
        return self._app()[CHUNKS]

    @property
    def manifests(self) -> ManifestStore:
        return self._app()[MANIFESTS]

    @property
    def replicas(self) -> ManifestReplicas:
        return self._app()[REPLICAS]

    @property
    def holder(self) -> Holder:
        return self._app()[HOLDER]

    @property
    def rebalancer(self) -> Rebalancer:
        return self._app()[REBALANCER]

    @property
    def repairer(self) -> Repairer:
        return self._app()[REPAIRER]

    @property
    def scrubber(self) -> Scrubber:
        return self._app()[SCRUBBER]

    @property
    def anti_entropy(self) -> AntiEntropy:
        return self._app()[ANTI_ENTROPY]

    @property
    def packer(self) -> Packer:
        return self._app()[PACKER]


class LocalCluster:
    """N in-process peers that found each other through ``--join`` (the first peer's URL).

    ``seeded=False`` gives peers no seeds at all, for clusters that must find each other
    through discovery (pass ``discovery="zeroconf", service_type=...`` as overrides). Every
    peer gets the cluster's secret file, ``root/cluster-secret.json`` (made before the first
    peer starts, off the event loop: it is fsynced, unless the overrides name one or a join
    token).
    """

    def __init__(self, root: Path, *, seeded: bool = True, **overrides: Any) -> None:
        self.root = root
        self.seeded = seeded
        self._secret_file: Path | None = None
        if not {"cluster_secret_file", "join_token"} & set(overrides):
            self._secret_file = overrides["cluster_secret_file"] = root / "cluster-secret.json"
        self.overrides = overrides
        self.peers: list[LocalPeer] = []

    def __repr__(self) -> str:
        return f"LocalCluster({self.peers})"

    def __getitem__(self, index: int) -> LocalPeer:
        return self.peers[index]

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.peers]

    async def add_peer(self, **overrides: Any) -> LocalPeer:
        if self._secret_file is not None and not self._secret_file.exists():
            await asyncio.to_thread(new_secret_file, self._secret_file)
        seeds = (self.peers[0].url,) if self.peers and self.seeded else ()
        join = overrides.pop("join", seeds)
        peer = LocalPeer(
            self.root / f"peer-{len(self.peers)}", join, **{**self.overrides, **overrides}
        )
        await peer.start()
        self.peers.append(peer)
        return peer

    async def start(
        self,
        count: int,
        admin_key: bool = True,
        zones: Sequence[str] = (),
        each: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Start ``count`` peers; with two or more (a write quorum of manifest replicas),
        wait until the harness's admin key (``ADMIN``) is stored too. ``admin_key=False``
        seeds no key: a lone peer with a key pending retries storing it by calling itself,
        so only without one is every connection to a lone peer a test's own. ``zones``
        gives peer *i* the zone ``zones[i]`` (default: all share 127.0.0.1's), ``each``
        the overrides ``each[i]``."""
        if not self.peers and admin_key:
            await asyncio.to_thread(seed_admin_key, self.root / "peer-0")  # fsyncs: off the loop
        for index in range(count):
            zone = {"zone": zones[index]} if zones else {}
            await self.add_peer(**zone, **(each[index] if each else {}))
        await self.wait_converged()
        if len(self.peers) >= 2:
            await wait_admin_key(self.peers[0].data_dir)

    async def wait_converged(self, timeout: float = 15.0) -> None:
        """Wait until every running peer sees every running peer up, and has them all on its
        ring (rebuilt in the background after members arrive: a test that picks a name by
        its replicas on a ring of fewer members would pick on the wrong placement)."""
        running = [p for p in self.peers if p.running and not p.hung]
        ids = {p.id for p in running}

        def converged() -> bool:
            return all(
                ids <= p.membership.up_ids() and len(p.membership.ring) >= len(ids) for p in running
            )

        await eventually(converged, timeout, "the cluster to converge")

    async def wait_down(self, peer: LocalPeer, timeout: float = 15.0) -> None:
        """Wait until every other running peer sees ``peer`` as down."""
        others = [p for p in self.peers if p.running and p is not peer and not p.hung]
        await eventually(
            lambda: all(peer.id in p.membership.down_ids() for p in others),
            timeout,
            f"{peer} to be seen down",
        )

    def holder(self, peer_id: str) -> LocalPeer:
        return next(p for p in self.peers if p.id == peer_id)

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.peers))
