"""End to end against real ``ringstore`` processes: big files, SIGKILL, curl, ``ringstore up``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from client.credentials import read_credentials
from node.disk.data_dir import CREDENTIALS_FILE, load_identity
from node.process.supervisor import PeerProcess
from tests.harness import (
    ProcessCluster,
    all_see_all_up,
    eventually,
    free_port_block,
    process_gone,
)
from tests.harness.access import ADMIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MIB = 1 << 20


def peak_rss_mib(pid: int) -> float:
    """The peak resident set size of a live process (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    return kib / 1024


async def random_body(size: int, seed: bytes, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    """A deterministic pseudo-random stream, hashed as it goes, never held whole."""
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    sent = 0
    counter = 0
    while sent < size:
        piece = bytes([counter % 251]) + block[1 : min(MIB, size - sent)]
        counter += 1
        digest.update(piece)
        sent += len(piece)
        yield piece


async def fetch_digest(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        async for piece in response.content.iter_any():
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


@pytest.fixture
async def processes(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[ProcessCluster]:
    cluster = ProcessCluster(tmp_path, 7)
    try:
        await cluster.start(http)
        yield cluster
    finally:
        await cluster.stop()


async def test_100_mib_round_trip_then_two_peers_killed(
    processes: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    size = 100 * MIB + 3
    sent = hashlib.sha256()
    headers = {"Content-Length": str(size)}
    url = f"{processes.urls[3]}/files/big/file.bin"
    async with http.put(url, data=random_body(size, b"big", sent), headers=headers) as response:
        assert response.status == 201, await response.text()
    assert await fetch_digest(http, f"{processes.urls[0]}/files/big/file.bin") == (
        size,
        sent.hexdigest(),
    )
    rss = {p.url: peak_rss_mib(p.process.pid) for p in processes.peers if p.process}
    print("peak RSS per peer after 100 MiB PUT+GET (MiB):", rss)
    # Bounded memory: a coordinator that buffered the file would pass 100 MiB on its own.
    assert max(rss.values()) < 160, rss

    processes.kill(1)
    processes.kill(5)
    assert await fetch_digest(http, f"{processes.urls[2]}/files/big/file.bin") == (
        size,
        sent.hexdigest(),
    )


async def test_peers_on_uvloop_and_on_asyncio_serve_one_cluster(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Peers on either event loop (``--event-loop``; the default is uvloop here, where it is
    installed) in one cluster: files whose chunks go as frames, and one whose chunks stream
    as requests (read back with sendfile(2): ``loop.sendfile`` on asyncio's loop, on a dup
    of the connection's descriptor on uvloop's, which has none), round-trip through a peer
    of each kind."""
    loops = ["asyncio" if i % 2 else "uvloop" for i in range(7)]
    cluster = ProcessCluster(tmp_path, 7, per_peer=[[f"--event-loop={k}"] for k in loops])
    try:
        await cluster.start(http)
        for peer, kind in zip(cluster.peers, loops, strict=True):
            assert f"(event loop: {kind})" in peer.log_path.read_text()
        for size in (700_000, 12 * MIB + 5):  # chunks of 140 KB (frames); of 2.4 MiB
            sent = hashlib.sha256()
            body = random_body(size, str(size).encode(), sent)
            url = f"{cluster.urls[0]}/files/loops/{size}"
            async with http.put(url, data=body, headers={"Content-Length": str(size)}) as put:
                assert put.status == 201, await put.text()
            for reader in cluster.urls[:2]:  # uvloop, asyncio: each reads from both kinds
                got = await fetch_digest(http, f"{reader}/files/loops/{size}")
                assert got == (size, sent.hexdigest())
    finally:
        await cluster.stop()


async def test_chunked_upload_between_processes(
    processes: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    size = 3 * MIB + 12345
    sent = hashlib.sha256()
    async with http.put(
        f"{processes.urls[6]}/files/e2e/chunked", data=random_body(size, b"chunked", sent)
    ) as response:
        assert response.status == 201
        assert response.request_info.headers["Transfer-Encoding"] == "chunked"
    assert await fetch_digest(http, f"{processes.urls[1]}/files/e2e/chunked") == (
        size,
        sent.hexdigest(),
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_as_in_the_readme(processes: ProcessCluster, tmp_path: Path) -> None:
    source = tmp_path / "bigfile"
    source.write_bytes(os.urandom(7 * MIB + 1))

    def curl(*args: str, stdin: bytes | None = None) -> bytes:
        done = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "-u", ":".join(ADMIN), *args],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    up = processes.urls
    await asyncio.to_thread(curl, "-T", str(source), f"{up[3]}/files/some/dir/bigfile.bin")
    got = await asyncio.to_thread(curl, f"{up[0]}/files/some/dir/bigfile.bin")
    assert got == source.read_bytes()
    await asyncio.to_thread(curl, "-T", "-", f"{up[2]}/files/docs/piped", stdin=b"from a pipe")
    assert await asyncio.to_thread(curl, f"{up[4]}/files/docs/piped") == b"from a pipe"


async def test_ringstore_up_starts_serves_stops_and_keeps_data(tmp_path: Path) -> None:
    base = free_port_block(5)
    command = [
        sys.executable, "-m", "node", "up", "-n", "5",
        "--port", str(base), "--data-dir", str(tmp_path / "data"),
        "--service-type", f"_rs{os.getpid() % 10**6:06d}._tcp.local.",
    ]  # fmt: skip

    async def run_once(check: bool) -> list[int]:
        up = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        pids: list[int] = []
        said: list[str] = []
        try:
            assert up.stdout is not None
            while len(pids) < 5:
                line = (await asyncio.wait_for(up.stdout.readline(), 60)).decode()
                assert line, f"ringstore up exited early, saying: {''.join(said)}"
                said.append(line)
                if match := re.search(r"pid (\d+)", line):
                    pids.append(int(match.group(1)))
            url = f"http://127.0.0.1:{base + 3}/files/e2e/kept"
            # Its admin key: made on the first run, kept in DATA/credentials for the next.
            async with up_admin(tmp_path / "data") as admin:
                if check:
                    async with admin.get(url) as response:
                        assert await response.read() == b"still here"
                    # A second `up` on the same data directory is refused before it starts
                    # any peer, and the running cluster goes on serving.
                    second = await asyncio.create_subprocess_exec(
                        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
                    )
                    refused, _ = await asyncio.wait_for(second.communicate(), 60)
                    assert second.returncode == 1, refused
                    assert b"in use by another process (pid " in refused, refused
                    assert b"pid " not in refused.split(b"in use by")[0], refused  # no peer
                    async with admin.get(url) as response:
                        assert await response.read() == b"still here"
                else:
                    await eventually(
                        lambda: all_see_all_up(admin, urls(base, 5)),
                        what="peers to see each other",
                    )
                    async with admin.put(url, data=b"still here") as response:
                        assert response.status == 201, await response.text()
        finally:
            with contextlib.suppress(ProcessLookupError):  # exited early: said why above
                up.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(up.wait(), 30)
        assert code == 0
        for pid in pids:
            assert process_gone(pid), f"peer {pid} still runs"
        return pids

    first = await run_once(check=False)
    second = await run_once(check=True)
    assert not set(first) & set(second)


def up_admin(data: Path) -> aiohttp.ClientSession:
    """A session that sends the admin key ``ringstore up --data-dir DATA`` saved."""
    key = read_credentials(data / CREDENTIALS_FILE)
    timeout = aiohttp.ClientTimeout(total=120)
    return aiohttp.ClientSession(timeout=timeout, headers={"Authorization": key.authorization})


def urls(base: int, count: int) -> list[str]:
    """The URLs of ``count`` peers on consecutive ports from ``base``."""
    return [f"http://127.0.0.1:{port}" for port in range(base, base + count)]


async def test_a_peer_joins_an_up_cluster_with_its_token_and_only_with_it(
    tmp_path: Path,
) -> None:
    base = free_port_block(5)
    data = tmp_path / "data"
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "up", "-n", "4", "--port", str(base),
        "--data-dir", str(data), "--discovery", "none", "--log-level", "debug",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    newcomer = PeerProcess(tmp_path / "newcomer", "127.0.0.1", base + 4, [], [])
    try:
        # up saves its admin key once its peers are up: every request below sends it.
        await eventually((data / CREDENTIALS_FILE).exists, 60, "up to save its admin key")
        async with up_admin(data) as admin:
            await eventually(
                lambda: all_see_all_up(admin, urls(base, 4)), 60, "the up cluster to see itself"
            )
            token_run = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "node", "token", "--data-dir", str(data)],
                capture_output=True,
                check=True,
            )
            token = token_run.stdout.decode().splitlines()[-1]
            assert token.startswith("rsjoin1.")
            # --join alone: refused at start, with what to do.
            lone = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "node", "peer", "--data-dir", str(tmp_path / "lone"),
                 "--port", str(base + 4), "--join", f"http://127.0.0.1:{base}"],
                capture_output=True, timeout=60,
            )  # fmt: skip
            assert lone.returncode != 0
            assert b"--join-token" in lone.stderr
            # With the token (from the environment, as an orchestrator would pass it): a member.
            newcomer._command += ["--log-level", "debug", "--discovery", "none"]
            os.environ["RINGSTORE_JOIN_TOKEN"] = token
            try:
                await newcomer.start()
            finally:
                del os.environ["RINGSTORE_JOIN_TOKEN"]
            await newcomer.wait_healthy(admin, 30)
            await eventually(
                lambda: all_see_all_up(admin, urls(base, 5)), 30, "the newcomer to be a member"
            )
            async with admin.put(f"{newcomer.url}/files/e2e/joined", data=b"through the newcomer"):
                pass
            async with admin.get(f"http://127.0.0.1:{base}/files/e2e/joined") as response:
                assert await response.read() == b"through the newcomer"
    finally:
        await newcomer.stop()
        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 30) == 0
    identity = load_identity(data)
    assert identity is not None
    assert (data / "cluster-secret.json").stat().st_mode & 0o777 == 0o600
    logs = "".join(p.read_text() for p in [*data.glob("peer-*/peer.log"), newcomer.log_path])
    assert "DEBUG" in logs
    for form in (token, base64.urlsafe_b64encode(identity.signing_secret).decode()[:40]):
        assert form not in logs
    assert identity.signing_secret.hex() not in logs


async def test_peers_stop_cleanly_when_ringstore_up_is_killed(tmp_path: Path) -> None:
    """SIGKILL gives ``ringstore up`` no chance to stop its peers: each stops on its own, as
    on a SIGTERM (``node.process.parent``), and frees its port and data directory."""
    base = free_port_block(2)
    data = tmp_path / "data"
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "up", "-n", "2", "--port", str(base),
        "--data-dir", str(data), "--discovery", "none", "--no-s3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    pids: list[int] = []
    try:
        assert up.stdout is not None
        printed = ""
        while "Ctrl-C stops" not in printed:  # after the line of each peer, with its pid
            line = (await asyncio.wait_for(up.stdout.readline(), 60)).decode()
            assert line, f"ringstore up exited early:\n{printed}"
            printed += line
        pids = [int(pid) for pid in re.findall(r"\bpid (\d+)", printed)]
        assert len(pids) == 2, printed
        up.kill()
        assert await asyncio.wait_for(up.wait(), 30) == -signal.SIGKILL
        await eventually(lambda: all(process_gone(pid) for pid in pids), 60, "the peers to stop")
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
        for pid in pids:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
    for peer in range(2):
        log = (data / f"peer-{peer}" / "peer.log").read_text()
        assert "is gone" not in log  # the SIGTERM came: it was tied in time
        assert re.search(r"node\.process\.serve: stopping$", log, re.MULTILINE), log[-2000:]


def up_command(base: int, data: Path, peers: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "node", "up", "-n", str(peers), "--port", str(base),
        "--data-dir", str(data), "--discovery", "none", "--no-s3",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def up_process(base: int, data: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ringstore up`` of 2 peers (``up_command``), its output piped; killed by its pid at
    the end if it still runs."""
    up = await asyncio.create_subprocess_exec(
        *up_command(base, data), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        yield up
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()


async def test_ringstore_up_on_ports_another_cluster_holds_stops_and_says_why(
    tmp_path: Path,
) -> None:
    """Its peers could not bind and exited, but the other cluster's peers answered /health
    on their ports: ``up`` said "2 peers up" with dead pids, then restarted them every
    second. Only an answer with its own peer's id counts now."""
    base = free_port_block(2)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "id": "a peer of another cluster"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        for port in (base, base + 1):
            await web.TCPSite(runner, "127.0.0.1", port).start()
        async with up_process(base, tmp_path / "data") as up:
            said, _ = await asyncio.wait_for(up.communicate(), 60)
        assert up.returncode == 1, said
        assert b"peers up" not in said, said
        assert b"exited" in said, said
        assert b"address already in use" in said.lower(), said
    finally:
        await runner.cleanup()


async def test_ringstore_up_stops_at_once_when_asked_while_starting(tmp_path: Path) -> None:
    """A SIGTERM (or Ctrl-C) during start-up was taken only once every peer had answered
    and the admin key was made (51 s in one attack), the banner printed first."""
    async with up_process(free_port_block(2), tmp_path / "data") as up:
        assert up.stdout is not None
        line = (await asyncio.wait_for(up.stdout.readline(), 60)).decode()
        assert "cluster" in line, line  # the identity is made: peers are starting
        up.send_signal(signal.SIGTERM)
        said, _ = await asyncio.wait_for(up.communicate(), 30)
    assert up.returncode == 0, said
    assert b"peers up" not in said, said
    assert b"all peers stopped" in said, said


async def test_a_data_directory_that_cannot_be_made_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    """A read-only or full file system gave a traceback (OSError from mkdir, chmod or the
    lock's pid); the reason is one line now, from ``up`` and from ``peer``."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for command in (
        up_command(free_port_block(2), blocker / "data"),
        [sys.executable, "-m", "node", "peer", "--port", str(free_port_block(1)),
         "--data-dir", str(blocker / "data"), "--discovery", "none"],
    ):  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, timeout=60, check=False
        )
        said = (done.stdout + done.stderr).decode()
        assert done.returncode == 1, said
        assert "Traceback" not in said, said
        assert f"cannot use {blocker / 'data'} as a data directory: Not a directory" in said
