"""Real ``ringstore peer`` processes, each started and stopped by its own pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from node.process.certificates import ensure_certificates
from node.process.supervisor import PeerProcess
from tests.harness.access import seed_admin_key, wait_admin_key
from tests.harness.disk import new_secret_file
from tests.harness.files import all_see_all_up
from tests.harness.polling import eventually
from tests.harness.ports import free_port, free_ports


@contextlib.contextmanager
def sigint_reaches_children() -> Iterator[None]:
    """Processes started inside get SIGINT (Ctrl-C) as from an interactive shell.

    A run started in the background of a shell without job control ignores SIGINT (POSIX),
    and a child inherits that through exec, so a SIGINT a test sends would never reach it
    (three whole-suite runs started with ``(... &)`` failed so). Handled here (not
    ignored) while children start, it is the default in them."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessCluster:
    """Real ``ringstore peer`` processes on free ports, each stopped by its own pid.

    Peers join the first one and run no discovery, unless ``service_type`` is given: then they
    find each other with mDNS under that (test-unique) type, and ``seeded=False`` drops the
    seeds so mDNS is the only way. With ``tls_dir`` the peers serve HTTPS with certificates
    of a CA made there (``tls_dir/ca.pem``; sessions passed in must trust it). Every peer
    gets the cluster's secret file, ``root/cluster-secret.json``. ``fast=False`` leaves
    the peers' own defaults (benchmarks): no quick background timings, no test settings.
    ``per_peer[i]``: options of peer ``i`` alone, after the others.
    """

    def __init__(
        self,
        root: Path,
        count: int,
        *args: str,
        service_type: str | None = None,
        seeded: bool = True,
        tls_dir: Path | None = None,
        fast: bool = True,
        per_peer: Sequence[Sequence[str]] = (),
    ) -> None:
        self._root = root
        self._args = args
        self._service_type = service_type
        self.secret_file = new_secret_file(root / "cluster-secret.json")
        ports = free_ports(count)
        # TLS: a CA and a certificate per peer in tls_dir, as ``ringstore up --tls`` makes.
        tls = ensure_certificates(tls_dir, "127.0.0.1", count) if tls_dir else [None] * count
        scheme = "https" if tls_dir else "http"
        urls = [f"{scheme}://127.0.0.1:{p}" for p in ports]
        settings = [f"--cluster-secret-file={self.secret_file}"]
        if fast:  # as tests.harness.local.FAST: quick background work, production timeouts
            settings += [
                "--heartbeat-interval=0.2",
                "--peer-timeout=10",
                "--stall-timeout=10",
                "--delete-grace=0.2",
                "--inline-max=0",  # chunks for every size, as most tests expect
                "--log-level=info",
            ]
        if service_type is None:
            settings.append("--discovery=none")
        else:
            settings += ["--discovery=zeroconf", f"--service-type={service_type}"]
        self._settings = settings
        self.peers = [
            PeerProcess(
                root / f"peer-{i}",
                "127.0.0.1",
                port,
                [urls[0]] if i and seeded else [],
                settings + list(args) + list(per_peer[i] if i < len(per_peer) else ()),
                tls[i],
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
            self._settings + list(self._args) + list(args),
        )
        self.peers.append(peer)  # stopped with the others, even if it fails to start
        await peer.start()
        await peer.wait_healthy(session, 30.0)
        return peer

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.peers]

    async def start(self, session: aiohttp.ClientSession, healthy_within: float = 30.0) -> None:
        """Start every peer and wait until the harness's admin key (``ADMIN``) is stored and
        they see each other. The key first: seeing each other is asked on ``/cluster``,
        which needs a key the cluster knows. A lone peer can store no key (it takes a write
        quorum of two) and has no one to see: healthy, it is started. Each peer must answer
        within ``healthy_within`` seconds of its start (a peer opening a big data directory
        answers once it has read its manifest log)."""
        seed_admin_key(self.peers[0].data_dir)
        await asyncio.gather(*(p.start() for p in self.peers))
        await asyncio.gather(*(p.wait_healthy(session, healthy_within) for p in self.peers))
        if len(self.peers) >= 2:
            await wait_admin_key(self.peers[0].data_dir, 30.0)
            await self.wait_converged(session)

    async def restart_without(self, session: aiohttp.ClientSession, *options: str) -> None:
        """Stop every peer and start it again on its port and data directory without the
        ``--name=value`` options named in ``options`` (a benchmark's settings that only
        prepared its data: packing's quick walks); wait until they see each other. Raises
        ValueError for one given as two words (its value would be left behind)."""
        await self.stop()
        for peer in self.peers:  # (as NetnsPeerProcess and held_commits edit it)
            if set(options) & set(peer._command):
                raise ValueError(f"{options}: give each as --name=value to drop it")
            named = tuple(f"{option}=" for option in options)
            peer._command = [arg for arg in peer._command if not arg.startswith(named)]
        await asyncio.gather(*(p.start() for p in self.peers))
        await asyncio.gather(*(p.wait_healthy(session, 30.0) for p in self.peers))
        await self.wait_converged(session)

    async def wait_converged(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        running = [p.url for p in self.peers if p.running]
        await eventually(
            lambda: all_see_all_up(session, running), timeout, "the processes to see each other"
        )

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

    async def _each(self, session: aiohttp.ClientSession, path: str) -> list[dict[str, Any]]:
        """The JSON answer of ``GET path`` from every running peer, in peer order."""
        found = []
        for peer in self.peers:
            if peer.running:
                async with session.get(f"{peer.url}{path}") as response:
                    found.append(await response.json())
        return found

    async def views(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """``GET /cluster`` of every running peer, in peer order."""
        return await self._each(session, "/cluster")

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

    async def settle(
        self, session: aiohttp.ClientSession, timeout: float = 120, unchanged_for: float = 1.0
    ) -> list[int]:
        """Wait until rebalancing and the deletions after it are done; return used bytes.

        Done means quiet, and every peer's used bytes unchanged for ``unchanged_for`` seconds
        (longer than the delete grace and a heartbeat).

        Writes made while a busy peer was briefly seen down are placed around it and moved
        back once it is seen again, so "nothing moves from here on" needs this first.
        """
        await eventually(lambda: self.quiet(session), timeout, "rebalancing to finish", 0.1)
        last: list[int] = []
        since = time.monotonic()

        async def stable() -> bool:
            nonlocal last, since
            now = await self.used_bytes(session)
            if now != last:
                last, since = now, time.monotonic()
            return time.monotonic() - since >= unchanged_for and await self.quiet(session)

        await eventually(stable, 60 + unchanged_for, "used bytes to settle", 0.1)
        return last

    async def scrub_stats(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """``GET /scrub`` of every running peer, in peer order."""
        return await self._each(session, "/scrub")

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


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (exited, or a zombie waiting to be reaped)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def own_record(view: dict[str, Any]) -> dict[str, Any]:
    """A peer's entry for itself in its ``/cluster`` answer."""
    return next(p for p in view["peers"] if p["id"] == view["self"])


def peer_id_of(data_dir: Path) -> str:
    """The id a peer keeps in its data directory."""
    return (data_dir / "peer-id").read_text().strip()


class NetnsPeerProcess(PeerProcess):
    """A ``ringstore peer`` run inside network namespace ``netns`` (``ip netns exec`` execs,
    so the pid is still the peer's own)."""

    def __init__(
        self, netns: str, data_dir: Path, host: str, port: int, join: list[str], args: list[str]
    ) -> None:
        super().__init__(data_dir, host, port, join, args)
        self._command = ["ip", "netns", "exec", netns, *self._command]
