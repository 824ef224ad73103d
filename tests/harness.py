"""Test clusters: real aiohttp peers on 127.0.0.1, in-process or as processes.

``LocalCluster`` runs N peers in the test's event loop, each on its own port and data
directory, and can stop, hang, restart and add peers (after Tahoe-LAFS's NoNetworkGrid, but
over real sockets). ``ProcessCluster`` runs real ``ringstore peer`` processes and can SIGKILL
them. Every wait polls with a deadline; nothing sleeps for a fixed time to wait for a state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node.cluster.membership import Membership
from node.config import PeerConfig
from node.datapath.coordinator import Coordinator
from node.disk.chunk_store import ChunkStore
from node.disk.manifest_store import ManifestStore
from node.model.names import name_key
from node.process.supervisor import PeerProcess
from node.process.wiring import (
    CHUNKS,
    COORDINATOR,
    MANIFESTS,
    MEMBERSHIP,
    REBALANCER,
    REPAIRER,
    SCRUBBER,
    create_app,
)
from node.upkeep.rebalancer import Rebalancer
from node.upkeep.repairer import Repairer
from node.upkeep.scrubber import Scrubber

# Fast timings so failures are noticed within a test's patience.
FAST = {
    "heartbeat_interval": 0.2,
    "down_after": 2,
    "peer_timeout": 2.0,
    "stall_timeout": 3.0,
    "delete_grace": 0.2,
    "rebalance_interval": 2.0,
}


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, what: str = ""
) -> None:
    """Poll ``check`` until it is true; fail the test if ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.02)


async def _spin(turns: int = 3) -> None:
    """Let the event loop run ``turns`` rounds of ready callbacks."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Served:
    """A listening socket on 127.0.0.1 (``port`` 0: any free one) to serve an aiohttp app on."""

    def __init__(self, port: int = 0) -> None:
        self._listening = socket.socket()
        self._listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listening.bind(("127.0.0.1", port))
        self.port: int = self._listening.getsockname()[1]
        self._runner: web.AppRunner | None = None

    async def serve(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, self._listening).start()

    async def stop(self) -> None:
        if self._runner is None:
            self._listening.close()
            return
        # Closing a listening socket while a just-accepted connection's set-up task is still
        # queued leaks that connection's socket (CPython gh-109564, open on every version we
        # test; seen here when other peers heartbeat a stopping one). So: stop accepting,
        # let the loop turn so accepted connections attach, and only then shut down.
        asyncio.get_running_loop().remove_reader(self._listening.fileno())
        await _spin()
        await self._runner.cleanup()
        self._runner = None
        await _spin()  # let closed transports run their connection_lost callbacks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalPeer:
    """One in-process peer that can be stopped, hung and restarted on the same port."""

    def __init__(self, data_dir: Path, join: tuple[str, ...], **overrides: Any) -> None:
        self.data_dir = data_dir
        self._join = join
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
        return f"http://127.0.0.1:{self.port}"

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
        self.app = create_app(config)
        self.app.middlewares.insert(0, self._hang)
        await served.serve(self.app)
        self._served = served

    async def stop(self) -> None:
        """Stop serving, as a crash would look to other peers (connections refused)."""
        self._running.set()
        if self._served is not None:
            await self._served.stop()
            self._served = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def hang(self) -> None:
        """Accept connections but answer nothing until ``unhang``."""
        self._running.clear()

    def unhang(self) -> None:
        self._running.set()

    @property
    def running(self) -> bool:
        return self._served is not None

    def chunk_files(self) -> list[Path]:
        """The chunk files on this peer's disk (not their sidecars)."""
        return sorted(p for p in (self.data_dir / "chunks").glob("*/*") if p.suffix != ".meta")

    def _app(self) -> web.Application:
        assert self.app is not None, f"{self} was never started"
        return self.app

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
    def rebalancer(self) -> Rebalancer:
        return self._app()[REBALANCER]

    @property
    def repairer(self) -> Repairer:
        return self._app()[REPAIRER]

    @property
    def scrubber(self) -> Scrubber:
        return self._app()[SCRUBBER]


class LocalCluster:
    """N in-process peers that found each other through ``--join`` (the first peer's URL).

    ``seeded=False`` gives peers no seeds at all, for clusters that must find each other
    through discovery (pass ``discovery="zeroconf", service_type=...`` as overrides).
    """

    def __init__(self, root: Path, *, seeded: bool = True, **overrides: Any) -> None:
        self.root = root
        self.seeded = seeded
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
        join = (self.peers[0].url,) if self.peers and self.seeded else ()
        peer = LocalPeer(
            self.root / f"peer-{len(self.peers)}", join, **{**self.overrides, **overrides}
        )
        await peer.start()
        self.peers.append(peer)
        return peer

    async def start(self, count: int) -> None:
        for _ in range(count):
            await self.add_peer()
        await self.wait_converged()

    async def wait_converged(self, timeout: float = 15.0) -> None:
        """Wait until every running peer sees every running peer up."""
        running = [p for p in self.peers if p.running and not p.hung]
        ids = {p.id for p in running}

        def converged() -> bool:
            return all(ids <= p.membership.up_ids() for p in running)

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


class ProcessCluster:
    """Real ``ringstore peer`` processes on free ports, each stopped by its own pid.

    Peers join the first one and run no discovery, unless ``service_type`` is given: then they
    find each other with mDNS under that (test-unique) type, and ``seeded=False`` drops the
    seeds so mDNS is the only way.
    """

    def __init__(
        self,
        root: Path,
        count: int,
        *args: str,
        service_type: str | None = None,
        seeded: bool = True,
    ) -> None:
        self._root = root
        self._args = args
        self._service_type = service_type
        ports = [free_port() for _ in range(count)]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        fast = [
            "--heartbeat-interval=0.2",
            "--peer-timeout=2",
            "--stall-timeout=3",
            "--delete-grace=0.2",
            "--log-level=info",
        ]
        if service_type is None:
            fast.append("--discovery=none")
        else:
            fast += ["--discovery=zeroconf", f"--service-type={service_type}"]
        self._fast = fast
        self.peers = [
            PeerProcess(
                root / f"peer-{i}",
                "127.0.0.1",
                port,
                [urls[0]] if i and seeded else [],
                fast + list(args),
            )
            for i, port in enumerate(ports)
        ]

    async def add_peer(
        self, session: aiohttp.ClientSession, *args: str, seeded: bool = True
    ) -> PeerProcess:
        """Start one more peer (joining the first, unless ``seeded`` is False)."""
        peer = PeerProcess(
            self._root / f"peer-{len(self.peers)}",
            "127.0.0.1",
            free_port(),
            [self.peers[0].url] if seeded else [],
            self._fast + list(self._args) + list(args),
        )
        self.peers.append(peer)  # stopped with the others, even if it fails to start
        await peer.start()
        await peer.wait_healthy(session, 30.0)
        return peer

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.peers]

    async def start(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(p.start() for p in self.peers))
        await asyncio.gather(*(p.wait_healthy(session, 30.0) for p in self.peers))
        await self.wait_converged(session)

    async def wait_converged(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        running = [p for p in self.peers if p.running]

        async def converged() -> bool:
            for peer in running:
                async with session.get(f"{peer.url}/cluster") as response:
                    view = await response.json()
                up = [m for m in view["peers"] if m["state"] == "up"]
                if len(up) < len(running):
                    return False
            return True

        await eventually(converged, timeout, "the processes to see each other")

    def kill(self, index: int) -> None:
        """SIGKILL one peer, by its pid."""
        process = self.peers[index].process
        if process is None:
            raise RuntimeError(f"peer {index} was never started")
        os.kill(process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop(timeout=5.0) for p in self.peers))

    # --- additions for the process-level fault suite (tests/faults) ----------------------

    async def crash(self, index: int) -> None:
        """SIGKILL one peer by its pid and reap it, so ``running`` is False at once."""
        self.kill(index)
        process = self.peers[index].process
        assert process is not None
        await process.wait()

    def index_of(self, peer_id: str) -> int:
        """The index of the running peer whose data directory holds ``peer_id``."""
        for index, peer in enumerate(self.peers):
            if peer_id_of(peer.data_dir) == peer_id:
                return index
        raise KeyError(f"no peer of this cluster has id {peer_id}")

    async def restart(self, index: int, session: aiohttp.ClientSession) -> None:
        """Start peer ``index`` again (after a kill or a stop), on its port and data dir."""
        peer = self.peers[index]
        if peer.process is not None:
            await peer.process.wait()  # reap a killed peer; a running one would be an error
        await peer.start()
        await peer.wait_healthy(session, 30.0)

    async def views(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """``GET /cluster`` of every running peer, in peer order."""
        found = []
        for peer in self.peers:
            if peer.running:
                async with session.get(f"{peer.url}/cluster") as response:
                    found.append(await response.json())
        return found

    async def used_bytes(self, session: aiohttp.ClientSession) -> list[int]:
        """Chunk bytes each running peer reports for itself, in peer order."""
        return [own_record(view)["used_bytes"] for view in await self.views(session)]

    async def quiet(self, session: aiohttp.ClientSession) -> bool:
        """Every peer sees every peer up and has no rebalancing queued or under way."""
        for view in await self.views(session):
            if sum(p["state"] == "up" for p in view["peers"]) < len(self.peers):
                return False
            me = own_record(view)
            if me["rebalance"]["pending"] or me["rebalance"]["remaining_bytes"]:
                return False
        return True

    async def settle(self, session: aiohttp.ClientSession) -> list[int]:
        """Wait until rebalancing and the deletions after it are done; return used bytes.

        Writes made while a busy peer was briefly seen down are placed around it and moved
        back once it is seen again, so "nothing moves from here on" needs this first.
        """
        await eventually(lambda: self.quiet(session), 120, "rebalancing to finish")
        last: list[int] = []
        since = time.monotonic()

        async def stable() -> bool:
            """Unchanged for a second: longer than the delete grace (0.2 s) and a heartbeat."""
            nonlocal last, since
            now = await self.used_bytes(session)
            if now != last:
                last, since = now, time.monotonic()
            return time.monotonic() - since >= 1.0 and await self.quiet(session)

        await eventually(stable, 60, "used bytes to settle")
        return last

    async def scrub_stats(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """``GET /scrub`` of every running peer, in peer order."""
        found = []
        for peer in self.peers:
            if peer.running:
                async with session.get(f"{peer.url}/scrub") as response:
                    found.append(await response.json())
        return found

    async def wait_seen_down(
        self, session: aiohttp.ClientSession, peer_ids: set[str], timeout: float = 20.0
    ) -> None:
        """Wait until every running peer sees each of ``peer_ids`` as down."""

        async def seen() -> bool:
            for view in await self.views(session):
                states = {p["id"]: p["state"] for p in view["peers"]}
                if any(states.get(i) == "up" for i in peer_ids if i != view["self"]):
                    return False
            return True

        await eventually(seen, timeout, f"{sorted(peer_ids)} to be seen down")


def own_record(view: dict[str, Any]) -> dict[str, Any]:
    """A peer's entry for itself in its ``/cluster`` answer."""
    return next(p for p in view["peers"] if p["id"] == view["self"])


def peer_id_of(data_dir: Path) -> str:
    """The id a peer keeps in its data directory."""
    return (data_dir / "peer-id").read_text().strip()


def chunk_files_in(data_dir: Path) -> list[Path]:
    """Complete chunk files under a peer's data directory (not their sidecars)."""
    return sorted(p for p in (data_dir / "chunks").glob("*/*") if "." not in p.name)


def incoming_files_in(data_dir: Path) -> list[Path]:
    """Chunks being received (or left behind by a crash) under a peer's data directory."""
    incoming = data_dir / "incoming"
    return sorted(incoming.iterdir()) if incoming.is_dir() else []


def manifest_replica_path(data_dir: Path, name: str) -> Path:
    """Where a peer keeps its replica of ``name``'s manifest (it may not hold one)."""
    key = name_key(name)
    return data_dir / "manifests" / key[:2] / key


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte of a file in place (no truncation), by default the middle one."""
    with path.open("r+b") as file:
        size = file.seek(0, os.SEEK_END)
        where = size // 2 if offset is None else offset % size
        file.seek(where)
        old = file.read(1)
        file.seek(where)
        file.write(bytes([old[0] ^ 0xFF]))


async def put_file(
    session: aiohttp.ClientSession, url: str, name: str, data: bytes
) -> dict[str, Any]:
    """PUT ``data`` as ``name`` through ``url``; fail the test unless it is a 201."""
    async with session.put(f"{url}/files/{name}", data=data) as response:
        assert response.status == 201, f"PUT {name}: {response.status} {await response.text()}"
        reply: dict[str, Any] = await response.json()
        return reply


async def get_file(session: aiohttp.ClientSession, url: str, name: str) -> bytes:
    """GET ``name`` through ``url``; fail the test unless it is a 200."""
    async with session.get(f"{url}/files/{name}") as response:
        assert response.status == 200, f"GET {name}: {response.status} {await response.text()}"
        return await response.read()


async def get_manifest(session: aiohttp.ClientSession, url: str, name: str) -> dict[str, Any]:
    """``GET /manifests/{name}`` through ``url``; fail the test unless it is a 200."""
    async with session.get(f"{url}/manifests/{name}") as response:
        assert response.status == 200, f"manifest {name}: {response.status}"
        manifest: dict[str, Any] = await response.json()
        return manifest


async def check_files(
    session: aiohttp.ClientSession, urls: list[str], files: dict[str, bytes]
) -> None:
    """Read every file back, rotating over ``urls``; fail on any status or byte difference."""
    for i, (name, data) in enumerate(sorted(files.items())):
        got = await get_file(session, urls[i % len(urls)], name)
        assert got == data, f"{name}: {len(got)} bytes read differ from the {len(data)} written"


async def fully_redundant(session: aiohttp.ClientSession, url: str, names: list[str]) -> bool:
    """Every file's manifest has all k+m chunks of its layout, each on a member seen up."""
    async with session.get(f"{url}/cluster") as response:
        view = await response.json()
    up = {p["id"] for p in view["peers"] if p["state"] == "up"}
    for name in names:
        manifest = await get_manifest(session, url, name)
        holders = [c["holder"] for c in manifest["chunks"]]
        if len(holders) != manifest["k"] + manifest["m"] or not set(holders) <= up:
            return False
    return True


class NetnsPeerProcess(PeerProcess):
    """A ``ringstore peer`` run inside network namespace ``netns`` (``ip netns exec`` execs,
    so the pid is still the peer's own)."""

    def __init__(
        self, netns: str, data_dir: Path, host: str, port: int, join: list[str], args: list[str]
    ) -> None:
        super().__init__(data_dir, host, port, join, args)
        self._command = ["ip", "netns", "exec", netns, *self._command]
