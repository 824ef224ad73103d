"""Peers find each other with mDNS and no seeds: in-process, as processes, and when it fails.

zeroconf's socket listens on 0.0.0.0:5353 even when bound to 127.0.0.1, so these tests run
only in the private network namespace ``tests/isolated.py`` makes (``RINGSTORE_TEST_NETNS=1``).
Each test browses its own service type, so nothing else on loopback can join its cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.credentials import read_credentials
from node.api.keys import DISCOVERY
from node.cluster.discovery import Discovery
from node.disk.data_dir import CREDENTIALS_FILE
from node.process.supervisor import PeerProcess
from tests.harness import (
    LocalCluster,
    LocalPeer,
    ProcessCluster,
    eventually,
    free_port,
    free_port_block,
)
from tests.harness.watchdog import NAME as WATCHDOG

pytestmark = pytest.mark.skipif(
    os.environ.get("RINGSTORE_TEST_NETNS") != "1",
    reason="mDNS tests run only in a private network namespace: use `tests/isolated.py` as root",
)

CONVERGE = 20.0  # seconds peers may take to find each other
IGMP_MAX = Path("/proc/sys/net/ipv4/igmp_max_memberships")  # per network namespace


def service_type() -> str:
    """A service type no other test (or test run) browses: at most 15 characters of name."""
    return f"_rs{secrets.token_hex(6)}._tcp.local."


def discovery(peer: LocalPeer) -> Discovery:
    assert peer.app is not None
    return peer.app[DISCOVERY]


def sees_all_up(peers: list[LocalPeer]) -> bool:
    ids = {p.id for p in peers}
    return all(ids <= p.membership.up_ids() for p in peers)


@contextlib.contextmanager
def multicast_joins_fail() -> Iterator[None]:
    """Make joining a multicast group fail with ENOBUFS in this (private) namespace.

    zeroconf then only logs a warning and hears nothing, not even itself: the silent failure
    the self-check exists for. Sockets that joined before keep their membership.
    """
    before = IGMP_MAX.read_text()
    IGMP_MAX.write_text("0")
    try:
        yield
    finally:
        IGMP_MAX.write_text(before)


@pytest.fixture
async def stopping() -> AsyncIterator[list[LocalCluster]]:
    """Clusters a test starts, stopped at its end even if it fails."""
    clusters: list[LocalCluster] = []
    yield clusters
    await asyncio.gather(*(c.stop() for c in clusters))


async def test_three_peers_find_each_other_then_a_fourth(
    tmp_path: Path, loop_guard: None, stopping: list[LocalCluster]
) -> None:
    threads_before = set(threading.enumerate())
    cluster = LocalCluster(
        tmp_path, seeded=False, discovery="zeroconf", service_type=service_type()
    )
    stopping.append(cluster)
    started = time.monotonic()
    for _ in range(3):
        await cluster.add_peer()
    assert all(p.membership.members() == [p.membership.me] for p in cluster.peers)
    await eventually(lambda: sees_all_up(cluster.peers), CONVERGE, "3 peers to find each other")
    print(f"3 in-process peers converged in {time.monotonic() - started:.2f}s")

    started = time.monotonic()
    await cluster.add_peer()
    await eventually(lambda: sees_all_up(cluster.peers), CONVERGE, "the 4th peer to be found")
    print(f"a 4th in-process peer was seen by all in {time.monotonic() - started:.2f}s")
    # Gossip may spread a peer first, but every peer also hears every other one over mDNS.
    others = {p.id: {q.id for q in cluster.peers} - {p.id} for p in cluster.peers}
    await eventually(
        lambda: all(
            discovery(p).learned == others[p.id] and discovery(p).state == "working"
            for p in cluster.peers
        ),
        CONVERGE,
        "every peer to hear all others and itself",
    )

    await cluster.stop()
    assert all(d.state == "stopped" for d in map(discovery, cluster.peers))
    leftover = {t for t in asyncio.all_tasks() if t.get_name() != WATCHDOG}
    assert not leftover - {asyncio.current_task()}, leftover  # neither ours nor zeroconf's
    # Zeroconf ran on our loop: no thread of its own (executors' threads aside: the loop's,
    # the chunk store's readers).
    new_threads = set(threading.enumerate()) - threads_before
    ours = ("asyncio_", "chunk-read", WATCHDOG)
    assert not [t for t in new_threads if not t.name.startswith(ours)]


async def test_a_peer_of_another_cluster_is_ignored(
    tmp_path: Path, loop_guard: None, stopping: list[LocalCluster]
) -> None:
    kind = service_type()
    ours = LocalCluster(tmp_path / "ours", seeded=False, discovery="zeroconf", service_type=kind)
    theirs = LocalCluster(
        tmp_path / "theirs", seeded=False, discovery="zeroconf", service_type=kind
    )
    stopping += [ours, theirs]
    await ours.add_peer()
    stranger = await theirs.add_peer()
    await ours.add_peer()
    await eventually(lambda: sees_all_up(ours.peers), CONVERGE, "our 2 peers to meet")
    # Both of ours resolved the stranger's announcement and set it aside.
    stranger_name = f"{stranger.id}.{kind}"
    await eventually(
        lambda: all(stranger_name in discovery(p).ignored for p in ours.peers),
        CONVERGE,
        "the stranger to be ignored",
    )
    for peer in ours.peers:
        assert stranger.id not in {m.id for m in peer.membership.members()}
    assert [m.id for m in stranger.membership.members()] == [stranger.id]


async def test_self_check_warns_and_seeds_still_work(
    tmp_path: Path,
    loop_guard: None,
    stopping: list[LocalCluster],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A peer hears itself within milliseconds.
    monkeypatch.setattr("node.cluster.discovery.SELF_CHECK_TIMEOUT", 2.0)
    caplog.set_level(logging.WARNING, logger="node.cluster.discovery")
    cluster = LocalCluster(tmp_path, discovery="zeroconf", service_type=service_type())
    stopping.append(cluster)
    seed = await cluster.add_peer()
    with multicast_joins_fail():
        deaf = await cluster.add_peer()  # joins through its seed; its mDNS hears nothing
    assert discovery(deaf).state == "announcing"  # the check does not delay start-up
    await cluster.wait_converged()
    await eventually(
        lambda: discovery(deaf).state == "not working", CONVERGE, "the self-check to fail"
    )
    expected = "mDNS discovery is not working on 127.0.0.1; continuing with --join seeds only"
    assert any(expected in r.getMessage() for r in caplog.records), caplog.text
    assert discovery(seed).state == "working"
    async with aiohttp.ClientSession() as http, http.get(f"{deaf.url}/health") as response:
        assert response.status == 200


async def test_an_address_without_multicast_warns_and_seeds_still_work(
    tmp_path: Path, loop_guard: None, stopping: list[LocalCluster], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="node.cluster.discovery")
    cluster = LocalCluster(tmp_path, discovery="zeroconf", service_type=service_type())
    stopping.append(cluster)
    await cluster.add_peer()
    # No interface has this address in our namespace: zeroconf fails to start (ENODEV).
    lost = await cluster.add_peer(interface="10.77.0.99")
    assert discovery(lost).state == "not working"
    assert "mDNS discovery is not working on 10.77.0.99" in caplog.text
    await cluster.wait_converged()


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_processes_find_each_other_then_a_fifth_with_only_the_secret_file(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A LAN of peers provisioned with one secret file finds itself with no other option; a
    peer started with no option at all is a cluster of its own and stays apart."""
    kind = service_type()
    cluster = ProcessCluster(tmp_path, 4, service_type=kind, seeded=False)
    try:
        started = time.monotonic()
        await cluster.start(http)
        print(f"4 peer processes converged in {time.monotonic() - started:.2f}s")
        # A port, a data directory, the secret file and the test's service type: no seeds.
        secret = f"--cluster-secret-file={cluster.secret_file}"
        fifth = PeerProcess(
            tmp_path / "peer-4", "127.0.0.1", free_port(), [], ["--service-type", kind, secret]
        )
        cluster.peers.append(fifth)  # stopped with the others
        started = time.monotonic()
        await fifth.start()
        await fifth.wait_healthy(http, 30.0)
        await cluster.wait_converged(http, CONVERGE)
        print(f"a 5th peer process was seen up by all in {time.monotonic() - started:.2f}s")
        async with http.get(f"{fifth.url}/cluster") as response:
            view = await response.json()
        assert len(view["peers"]) == 5

        loner = PeerProcess(
            tmp_path / "loner", "127.0.0.1", free_port(), [], ["--service-type", kind]
        )
        await loner.start()
        try:
            await loner.wait_healthy(http, 30.0)
            ours = cluster.urls

            async def everyone_heard_the_loner() -> bool:
                for url in ours:
                    async with http.get(f"{url}/cluster") as response:
                        if (await response.json())["discovery"]["ignored"] < 1:
                            return False
                return True

            await eventually(everyone_heard_the_loner, CONVERGE, "the loner to be set aside")
            for url in ours:
                async with http.get(f"{url}/cluster") as response:
                    view = await response.json()
                assert len(view["peers"]) == 5, (url, view["peers"])
            # The loner's own admin key can never be stored (that takes two peers), so no key
            # reads its /cluster: its open /health counts its members.
            async with http.get(f"{loner.url}/health") as response:
                assert (await response.json())["members"] == 1
        finally:
            await loner.stop()
    finally:
        await cluster.stop()


async def test_two_default_up_clusters_on_one_host_stay_apart(
    tmp_path: Path, anonymous: aiohttp.ClientSession
) -> None:
    """Two `ringstore up` with every default but ports and data directories (mDNS on the
    default service type: this runs in a private network namespace) hear each other and
    stay two clusters."""
    ups = []
    block = free_port_block(6)  # one block: two calls before anything binds return the same
    bases = [block, block + 3]
    try:
        for i, base in enumerate(bases):
            command = [sys.executable, "-m", "node", "up", "-n", "3", "--port", str(base),
                       "--data-dir", str(tmp_path / f"up-{i}")]  # fmt: skip
            ups.append(
                await asyncio.create_subprocess_exec(
                    *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                )
            )
        urls = [[f"http://127.0.0.1:{base + i}" for i in range(3)] for base in bases]

        async def views() -> list[dict[str, Any]] | None:
            """Every peer's view, asked with its own cluster's admin key (which each `up`
            writes to its DATA/credentials once its peers are up)."""
            found = []
            for i, own in enumerate(urls):
                try:
                    key = read_credentials(tmp_path / f"up-{i}" / CREDENTIALS_FILE)
                except OSError:
                    return None
                for url in own:
                    headers = {"Authorization": key.authorization}
                    try:
                        async with anonymous.get(f"{url}/cluster", headers=headers) as response:
                            if response.status != 200:  # a 503 while keys cannot be read yet
                                return None
                            found.append(await response.json())
                    except aiohttp.ClientError:
                        return None
            return found

        async def heard_each_other() -> bool:
            seen = await views()
            return seen is not None and all(
                v["discovery"]["ignored"] >= 3 and sum(p["state"] == "up" for p in v["peers"]) == 3
                for v in seen
            )

        await eventually(heard_each_other, 60, "each up to set the other's peers aside")
        seen = await views()
        assert seen is not None
        clusters = [{v["cluster"] for v in seen[:3]}, {v["cluster"] for v in seen[3:]}]
        assert len(clusters[0]) == len(clusters[1]) == 1
        assert clusters[0] != clusters[1]
        for view, own in zip(seen, [urls[0]] * 3 + [urls[1]] * 3, strict=True):
            assert sorted(p["url"] for p in view["peers"]) == own
    finally:
        for up in ups:
            up.send_signal(signal.SIGTERM)
        for up in ups:
            assert await asyncio.wait_for(up.wait(), 30) == 0
