"""``ringstore up``: N peer processes on one machine, started, watched and stopped together.

Each peer gets its own data directory (``DIR/peer-i``), port ``BASE+i``, a log file in its
data directory, every other peer's URL as a join seed, the cluster's secret file
(``DIR/cluster-secret.json``, made on the first ``up``: one cluster for all its peers), and
mDNS discovery on its serving address (loopback by default), so a peer started by hand on
that address with a join token (``ringstore token --data-dir DIR``) finds the cluster.
Once every peer answers, the cluster's admin access key is read from ``DIR/credentials``, or
made on the first start through the peers (signed with the cluster secret,
``node.process.admin``) and saved there, and printed with a ready-to-paste example.
A peer that dies is restarted after a short pause; a peer that dies before it ever answered
(port taken, bad data dir) stops the whole start-up with its log tail, since restarting it
would only loop. A supervisor killed outright (SIGKILL, out of memory) leaves no peer
running: each stops on the SIGTERM Linux sends it then (``node.process.parent``).

With ``s3`` (the default) peer *i* also serves S3 on port ``BASE + 1000 + i``, and the
example printed includes an awscli command against it; with ``s3_shared`` every peer serves
it on ``BASE + 1000``, bound with ``--s3-reuse-port`` (one endpoint spread over every peer).
With ``files_shared`` every peer also serves the files API on ``BASE + 2000``
(``--shared-port``), and the examples printed use that port.

With ``tls``, a local CA and one certificate per peer are made (or reused) in ``DIR/tls``
(``node.process.certificates``), every peer serves HTTPS with its certificate, and the
supervisor's own health checks trust only that CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import aiohttp

from node.access.startup import ADMIN_KEY_NAME
from node.disk.data_dir import (
    CREDENTIALS_FILE,
    IDENTITY_FILE,
    PEER_ID_FILE,
    load_credentials,
    load_identity,
    lock_data_dir,
    prepare_data_dir,
    save_credentials,
    save_identity,
)
from node.errors import RingstoreError, StartRefused
from node.model.access import Grants
from node.model.identity import ClusterIdentity
from node.process.admin import create_key_as_cluster
from node.process.parent import environment_for_tied_child
from node.process.tls import TlsFiles, client_context
from node.waiting import within

log = logging.getLogger(__name__)

# How long ``up`` waits for its peers to see each other before it says the cluster is ready.
JOIN_WAIT = 30.0
READY_TIMEOUT = aiohttp.ClientTimeout(total=1.0)  # one /ready answer, while waiting for it

T = TypeVar("T")

RESTART_DELAY = 1.0
S3_PORT_OFFSET = 1000  # peer i serves S3 on --port + 1000 + i (make up: 9000-9006)
SHARED_PORT_OFFSET = 2000  # --files-shared: every peer's files API on --port + 2000 too
KEY_PATIENCE = 60.0  # seconds a new cluster has to become able to store its admin key


def _s3_port(base_port: int, index: int) -> int | None:
    """The S3 port of peer ``index`` (None past the last port: that peer serves none)."""
    port = base_port + S3_PORT_OFFSET + index
    return port if port <= 65535 else None


class _Stopped(Exception):
    """SIGINT or SIGTERM came while the cluster was starting."""


class PeerProcess:
    """One ``ringstore peer`` child process, by pid."""

    def __init__(
        self,
        data_dir: Path,
        host: str,
        port: int,
        join: list[str],
        args: list[str],
        tls: TlsFiles | None = None,
        s3_port: int | None = None,
        stop_with_parent: bool = False,
    ):
        """``stop_with_parent``: the peer stops when this process is gone, however it ended
        (``node.process.parent``)."""
        self.data_dir = data_dir
        self.stop_with_parent = stop_with_parent
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{port}"
        self.s3_url = f"{scheme}://{host}:{s3_port}" if s3_port is not None else None
        self.log_path = data_dir / "peer.log"
        self._command = [
            sys.executable,
            "-m",
            "node",
            "peer",
            "--host",
            host,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *(arg for url in join for arg in ("--join", url)),
            *(("--s3-port", str(s3_port)) if s3_port is not None else ()),
            *args,
            *(tls.options() if tls else ()),
        ]
        self.process: asyncio.subprocess.Process | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        tied = ", tied" if self.stop_with_parent else ""
        return f"PeerProcess({self.url}, pid={pid}, running={self.running}{tied})"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Start the process, logging to ``peer.log``; raises RuntimeError when its data
        directory or log cannot be made (a read-only or full file system)."""
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            log_file = self.log_path.open("ab")
        except OSError as exc:
            message = f"cannot start peer {self.url}: {exc.strerror} ({exc.filename})"
            raise RuntimeError(message) from None
        with log_file:
            self.process = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops peers in order
                # (tied: started from the event loop's thread, which lives as long as we do)
                env=environment_for_tied_child() if self.stop_with_parent else None,
            )

    async def wait_healthy(self, session: aiohttp.ClientSession, timeout: float) -> None:
        """Poll ``/health`` until this peer answers it (the id in the answer is the one in
        its data directory: another process on the port, a peer of another cluster, is
        not it); raises RuntimeError if the peer exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running()
            try:
                async with session.get(f"{self.url}/health") as response:
                    answered = (await response.json()).get("id") if response.status == 200 else None
            except (aiohttp.ClientError, OSError, ValueError, AttributeError):
                answered = None
            if answered is not None and answered == await asyncio.to_thread(self._own_id):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"peer {self.url} did not answer within {timeout}s")

    async def sees_all_up(self, session: aiohttp.ClientSession, count: int) -> bool:
        """Whether this peer's ``/ready`` says it is ready and sees ``count`` members up (an
        answer within a second); raises RuntimeError if the peer exited."""
        self._check_running()
        try:
            async with session.get(f"{self.url}/ready", timeout=READY_TIMEOUT) as response:
                answer = await response.json() if response.status == 200 else {}
            return int(answer.get("members_up", 0)) >= count
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False
        except (ValueError, TypeError, AttributeError):  # not JSON, an object, a number
            return False

    def _check_running(self) -> None:
        """Raise RuntimeError, with the end of its log, if the peer exited."""
        if not self.running:
            raise RuntimeError(f"peer {self.url} exited; last log lines:\n{self.log_tail()}")

    def _own_id(self) -> str | None:
        """The peer id in this peer's data directory (None before the peer made it)."""
        try:  # as ``load_peer_id`` reads it: any spelling of a UUID, in its canonical form
            return str(uuid.UUID((self.data_dir / PEER_ID_FILE).read_text().strip()))
        except (OSError, ValueError):
            return None

    def signal(self, sig: int) -> None:
        if self.running and self.process is not None:
            self.process.send_signal(sig)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if the peer has not stopped within ``timeout``."""
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            await within(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            self.signal(signal.SIGKILL)
            await self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class Supervisor:
    def __init__(
        self,
        count: int,
        data_dir: Path,
        base_port: int,
        host: str,
        log_level: str,
        discovery: str = "zeroconf",
        service_type: str | None = None,
        tls: bool = False,
        s3: bool = True,
        log_format: str = "text",
        *,
        s3_shared: bool = False,
        files_shared: bool = False,
    ):
        self.tls_dir = data_dir / "tls" if tls else None
        scheme = "https" if tls else "http"
        self.data_dir = data_dir
        self.secret_file = data_dir / IDENTITY_FILE
        urls = [f"{scheme}://{host}:{base_port + i}" for i in range(count)]
        # Seeds are kept: discovery only adds peers, and cannot fail a start-up.
        args = ["--log-level", log_level, "--log-format", log_format, "--discovery", discovery]
        args += ["--cluster-secret-file", str(self.secret_file)]
        if service_type is not None:
            args += ["--service-type", service_type]
        if s3_shared:
            args.append("--s3-reuse-port")
        self.shared_url: str | None = None
        if files_shared:
            shared_port = base_port + SHARED_PORT_OFFSET
            if shared_port > 65535:
                raise ValueError(f"--files-shared: port {shared_port} is past 65535")
            args += ["--shared-port", str(shared_port)]
            self.shared_url = f"{scheme}://{host}:{shared_port}"
        self.s3_shared = s3_shared
        self.peers = [
            PeerProcess(
                data_dir / f"peer-{i}",
                host,
                base_port + i,
                [u for u in urls if u != urls[i]],
                args,
                self._tls_files(i),
                _s3_port(base_port, 0 if s3_shared else i) if s3 else None,
                stop_with_parent=True,  # killed outright, this supervisor stops no peer itself
            )
            for i in range(count)
        ]
        self._host = host
        self._stopping = asyncio.Event()
        self._lock: int | None = None  # DATA's lock, held while supervising

    def _tls_files(self, index: int) -> TlsFiles | None:
        """Where peer ``index``'s TLS files are (made in ``run``), or None without TLS."""
        if self.tls_dir is None:
            return None
        return TlsFiles(
            self.tls_dir / f"peer-{index}.pem",
            self.tls_dir / f"peer-{index}-key.pem",
            self.tls_dir / "ca.pem",
        )

    async def _health_session(self) -> aiohttp.ClientSession:
        """A session for health checks: trusting only the cluster CA under TLS."""
        if self.tls_dir is None:
            return aiohttp.ClientSession()
        from node.process.certificates import ensure_certificates

        try:
            files = await asyncio.to_thread(
                ensure_certificates, self.tls_dir, self._host, len(self.peers)
            )
            context = await asyncio.to_thread(client_context, files[0].ca)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot make TLS certificates in {self.tls_dir}: {exc}") from exc
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    async def run(self) -> int:
        """Start every peer, supervise until SIGINT/SIGTERM, stop them all; return an exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            credentials = await self._until_stopped(self._start())
            self._print_ready(credentials)
            watchers = [asyncio.ensure_future(self._watch(p)) for p in self.peers]
            await self._stopping.wait()
            for watcher in watchers:
                watcher.cancel()
            return 0
        except _Stopped:
            return 0
        except (RuntimeError, StartRefused) as exc:
            log.error("%s", exc)
            return 1
        finally:
            print("stopping peers...", flush=True)
            await asyncio.gather(*(p.stop() for p in self.peers))
            print("all peers stopped", flush=True)
            if self._lock is not None:
                os.close(self._lock)

    async def _start(self) -> tuple[str, str] | None:
        """Start every peer and wait for each to answer; the admin key, if there is one."""
        identity = await asyncio.to_thread(self._identity)
        log.info("cluster %s", identity.cluster_id)
        session = await self._health_session()  # makes the certificates first, under TLS
        await asyncio.gather(*(p.start() for p in self.peers))
        async with session:
            await asyncio.gather(*(p.wait_healthy(session, 60.0) for p in self.peers))
            await self._wait_joined(session, JOIN_WAIT)
        return await self._admin_key()

    async def _wait_joined(self, session: aiohttp.ClientSession, timeout: float) -> None:
        """Wait until every peer sees every other up (``/ready``), so that the cluster
        printed ready serves at once: restarted peers know their members from disk but
        take them for down until they hear from them, and a read then finds no replica.
        After ``timeout`` seconds, a warning says which peers do not yet, and ``up`` goes on
        (the cluster serves what it can; ``ringstore status`` tells more)."""
        count = len(self.peers)
        deadline = time.monotonic() + timeout
        while True:
            seen = await asyncio.gather(*(p.sees_all_up(session, count) for p in self.peers))
            if all(seen):
                return
            if time.monotonic() >= deadline:
                late = ", ".join(p.url for p, ok in zip(self.peers, seen, strict=True) if not ok)
                log.warning(
                    "after %.0fs, these peers do not see every peer up yet: %s", timeout, late
                )
                return
            await asyncio.sleep(0.1)

    async def _until_stopped(self, work: Awaitable[T]) -> T:
        """``work``'s result, or _Stopped once SIGINT or SIGTERM came first (start-up
        waits up to a minute for peers and another for the admin key: a Ctrl-C then was
        taken only once both were over)."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise _Stopped
        finally:
            stopping.cancel()
            task.cancel()

    def _identity(self) -> ClusterIdentity:
        """The cluster's identity: made on the first ``up`` in this data directory, which
        this supervisor locks first (a second ``up`` on it would find the first one's peers
        answering its health checks, and restart its own refused peers forever)."""
        prepare_data_dir(self.data_dir)  # (StartRefused, as lock_data_dir: said by ``run``)
        self._lock = lock_data_dir(self.data_dir)
        try:
            identity = load_identity(self.secret_file)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from None
        if identity is None:
            identity = ClusterIdentity.create()
            try:
                save_identity(self.secret_file, identity)
            except OSError as exc:
                raise RuntimeError(f"cannot write {self.secret_file}: {exc.strerror}") from None
        return identity

    async def _admin_key(self) -> tuple[str, str] | None:
        """The cluster's admin key from ``DATA/credentials``; made on the first ``up`` (or
        the first since access keys exist) through the peers, signed with the cluster
        secret, and printed then with a note that it is shown in full only there."""
        path = self.data_dir / CREDENTIALS_FILE
        try:
            known = await asyncio.to_thread(load_credentials, path)
        except ValueError as exc:
            log.error("%s; not making another admin key", exc)
            return None
        if known is not None:
            return known
        if len(self.peers) < 2:
            log.warning("one peer cannot store an access key (it takes two); none made")
            return None
        cafile = self.tls_dir / "ca.pem" if self.tls_dir is not None else None
        urls = [p.url for p in self.peers]
        try:
            made = await create_key_as_cluster(
                self.data_dir, urls, ADMIN_KEY_NAME, Grants(admin=True), KEY_PATIENCE, cafile
            )
        except RingstoreError as exc:
            log.error("could not make the admin access key: %s", exc)
            return None
        await asyncio.to_thread(save_credentials, path, made.access_key, made.secret_key)
        print(f"created the admin access key {made.access_key}; saved to {path}", flush=True)
        return made.access_key, made.secret_key

    def _print_ready(self, credentials: tuple[str, str] | None) -> None:
        print(f"ringstore: {len(self.peers)} peers up", flush=True)
        for peer in self.peers:
            pid = peer.process.pid if peer.process else "?"
            print(f"  {peer.url}  pid {pid}  data {peer.data_dir}", flush=True)
        data = self.data_dir
        print(f"logs: {data}/peer-*/peer.log; Ctrl-C stops", flush=True)
        print(  # the token in the environment: on the command line, ps shows it to all
            f'add a peer: RINGSTORE_JOIN_TOKEN="$(ringstore token --data-dir {data})" '
            "ringstore peer --data-dir DIR --port PORT",
            flush=True,
        )
        url = self.peers[0].url
        if self.shared_url is not None:
            print(f"the files API of every peer: {self.shared_url} (a shared port)", flush=True)
            url = self.shared_url
        if credentials is not None:
            access_key, secret = credentials
            print(
                f"admin access key (also the [default] profile of {data}/credentials, "
                "for awscli and boto3):",
                flush=True,
            )
            print(f"  export RINGSTORE_ACCESS_KEY={access_key} RINGSTORE_SECRET_KEY={secret}")
            print("then, e.g.:", flush=True)
            cacert = f"--cacert {self.tls_dir / 'ca.pem'} " if self.tls_dir is not None else ""
            auth = '-u "$RINGSTORE_ACCESS_KEY:$RINGSTORE_SECRET_KEY"'
            print(f"  curl {cacert}{auth} -T README.md {url}/files/docs/README.md", flush=True)
            print(f"  ringstore ls {cacert}--peer {url} docs/", flush=True)
            s3_url = self.peers[0].s3_url
            if s3_url is not None:
                tls_dir = self.tls_dir
                bundle = f"--ca-bundle {tls_dir / 'ca.pem'} " if tls_dir is not None else ""
                where = (
                    f"shared by all {len(self.peers)} peers"
                    if self.s3_shared
                    else "and the next ports"
                )
                print(f"S3 (docs/s3.md) on {s3_url} {where}; awscli, e.g.:", flush=True)
                print(
                    f"  AWS_SHARED_CREDENTIALS_FILE={data}/credentials aws {bundle}"
                    f"--endpoint-url {s3_url} s3 ls s3://docs/",
                    flush=True,
                )
        if self.tls_dir is not None:
            ca = self.tls_dir / "ca.pem"
            print(f"TLS: the peers trust only the CA in {ca}; to use it:", flush=True)
            print(f"  curl --cacert {ca} {url}/health", flush=True)
            print(f"  ringstore ls --cacert {ca} --peer {url}", flush=True)

    async def _watch(self, peer: PeerProcess) -> None:
        while not self._stopping.is_set() and peer.process is not None:
            code = await peer.process.wait()
            if self._stopping.is_set():
                return
            log.warning(
                "peer %s exited with %s; restarting in %.0fs", peer.url, code, RESTART_DELAY
            )
            await asyncio.sleep(RESTART_DELAY)
            await peer.start()
