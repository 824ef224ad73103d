"""A network partition: one peer process cut off in a network namespace of its own, then healed.

Runs only inside the private network namespace that ``tests/isolated.py`` makes as root
(``RINGSTORE_TEST_NETNS=1``): it adds a namespace, a bridge and a veth pair, which must
never touch the machine's real network. Six peers serve on 10.77.0.1 (a bridge in the test's
namespace), the seventh on 10.77.0.2 inside namespace P, joined to the bridge by a veth pair.
Setting the bridge's end of the pair down is a clean partition; setting it up heals it.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from node.model.manifest import file_id
from node.model.version import Version
from node.process.supervisor import PeerProcess
from ring import Member, Ring
from tests.harness import (
    NetnsPeerProcess,
    ProcessCluster,
    check_files,
    eventually,
    free_ports,
    fully_redundant,
    get_file,
    get_manifest,
    own_record,
    peer_id_of,
    put_file,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BLOCK = 4096
MAJORITY, MINORITY = "10.77.0.1", "10.77.0.2"


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def network() -> Iterator[tuple[str, str]]:
    """Namespace P and the bridge port that cuts it off; everything is removed on exit."""
    tag = secrets.token_hex(3)
    netns, bridge, keeper, keeper_end = f"rsp{tag}", f"rsb{tag}", f"rsk{tag}", f"rsl{tag}"
    port, inside = f"rsh{tag}", f"rsn{tag}"
    try:
        ip("netns", "add", netns)
        ip("link", "add", bridge, "type", "bridge")
        # A second port (a veth pair going nowhere) keeps the bridge's carrier, and so
        # 10.77.0.1, up while P's port is down.
        ip("link", "add", keeper, "type", "veth", "peer", "name", keeper_end)
        ip("link", "set", keeper, "master", bridge, "up")
        ip("link", "set", keeper_end, "up")
        ip("addr", "add", f"{MAJORITY}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        ip("link", "add", port, "type", "veth", "peer", "name", inside)
        ip("link", "set", port, "master", bridge, "up")
        ip("link", "set", inside, "netns", netns)
        ip("-n", netns, "addr", "add", f"{MINORITY}/24", "dev", inside)
        ip("-n", netns, "link", "set", inside, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        yield netns, port
    finally:
        for command in (
            ("netns", "del", netns),  # takes the veth pair with it
            ("link", "del", port),
            ("link", "del", keeper),
            ("link", "del", bridge),
        ):
            subprocess.run(["ip", *command], capture_output=True, check=False, timeout=10)


def skip_reason() -> str | None:
    if os.environ.get("RINGSTORE_TEST_NETNS") != "1":
        return "needs the private network namespace of tests/isolated.py (run it as root)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    return None


@dataclass
class Partitionable:
    """Six peers on the bridge, peer 6 in namespace P behind ``cut_here``."""

    cluster: ProcessCluster
    cut_here: str
    lonely: str  # peer 6's id

    @property
    def majority(self) -> list[str]:
        return self.cluster.urls[:6]

    def cut(self) -> None:
        ip("link", "set", self.cut_here, "down")

    def heal(self) -> None:
        ip("link", "set", self.cut_here, "up")

    async def wait_cut_off(self, http: aiohttp.ClientSession) -> None:
        """Wait until the six see peer 6 down (the test cannot reach peer 6 to ask it)."""

        async def seen() -> bool:
            for url in self.majority:
                async with http.get(f"{url}/cluster") as response:
                    view = await response.json()
                if any(p["id"] == self.lonely and p["state"] == "up" for p in view["peers"]):
                    return False
            return True

        await eventually(seen, 20, "peer 6 to be seen down")


@pytest.fixture
async def partitionable(
    tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[Partitionable]:
    reason = skip_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    args = [
        "--heartbeat-interval=0.2",
        "--peer-timeout=2",
        "--stall-timeout=3",
        "--delete-grace=0.2",
        "--discovery=none",
        "--rebalance-rate=0",
        "--repair-interval=2",  # a sweep soon after the heal, not up to 30 s later
        "--inline-max=0",  # chunks for every size, as the counts below expect
        f"--block-size={BLOCK}",
    ]
    with network() as (netns, cut_here):
        cluster = ProcessCluster(tmp_path, 0)  # its helpers, with peers of our own
        args.append(f"--cluster-secret-file={cluster.secret_file}")
        ports = free_ports(6)
        seed = f"http://{MAJORITY}:{ports[0]}"
        for i, port in enumerate(ports):
            join = [seed] if i else []
            cluster.peers.append(PeerProcess(tmp_path / f"peer-{i}", MAJORITY, port, join, args))
        cluster.peers.append(
            NetnsPeerProcess(netns, tmp_path / "peer-6", MINORITY, 8000, [seed], args)
        )
        try:
            await cluster.start(http)
            yield Partitionable(cluster, cut_here, peer_id_of(cluster.peers[6].data_dir))
        finally:
            await cluster.stop()


async def test_a_partitioned_peer_costs_redundancy_not_data_and_the_cluster_heals(
    partitionable: Partitionable, http: aiohttp.ClientSession
) -> None:
    net, cluster, majority = partitionable, partitionable.cluster, partitionable.majority
    rng = random.Random(8)
    before = {f"partition/before/{i}": rng.randbytes(rng.randint(1, 20 * BLOCK)) for i in range(20)}
    for i, (name, data) in enumerate(before.items()):
        await put_file(http, majority[i % 6], name, data)

    net.cut()
    # Written before anyone noticed: P's chunk stream times out, the PUT commits degraded
    # with 6 of 7 chunks. Into the namespace the files above made: a new one would be
    # created first, its record waiting on P until P is seen down, and no PUT degraded.
    early = {
        f"partition/early/{i}": rng.randbytes(rng.randint(BLOCK, 20 * BLOCK)) for i in range(3)
    }
    replies = await asyncio.gather(
        *(put_file(http, majority[i], n, d) for i, (n, d) in enumerate(early.items()))
    )
    assert all(r["degraded"] for r in replies), replies
    await net.wait_cut_off(http)
    # Written once P is known down: 6 peers up, so 5 data chunks and 1 parity chunk.
    during = {f"partition/during/{i}": rng.randbytes(rng.randint(1, 20 * BLOCK)) for i in range(10)}
    for i, (name, data) in enumerate(during.items()):
        assert (await put_file(http, majority[i % 6], name, data))["chunks"] == 6
    # Reads work on the majority side (a sample of the older files keeps the test short).
    sample = dict(list(before.items())[:4])
    await check_files(http, majority, {**sample, **early, **during})

    net.heal()
    await cluster.wait_converged(http, timeout=30)
    files = {**before, **early, **during}
    names = sorted(files)
    # Chunks written to handoffs move back to P (rebalancing, at once); degraded writes are
    # completed by the repair sweep (one when P is seen back, then every 2 s here: at the
    # default 30 s, a sweep that came too early left the rest to one 30 s later, and 60 s
    # was not always enough).
    await eventually(lambda: placed_as_the_ring_says(http, cluster, names), 60, "convergence")
    assert await fully_redundant(http, cluster.urls[6], names)
    async with http.get(f"{cluster.urls[6]}/cluster") as response:
        print(f"after healing P holds {own_record(await response.json())['chunks']} chunks")
    await check_files(http, cluster.urls, files)


async def test_a_read_does_not_wait_for_a_holder_known_to_be_down(
    partitionable: Partitionable, http: aiohttp.ClientSession
) -> None:
    net, majority = partitionable, partitionable.majority
    rng = random.Random(9)
    for i in range(20):  # P holds one chunk of every file; find a file where it is data
        name, data = f"probe/{i}", rng.randbytes(10 * BLOCK)
        await put_file(http, majority[0], name, data)
        chunks = (await get_manifest(http, majority[0], name))["chunks"]
        if any(c["holder"] == net.lonely and c["kind"] == "data" for c in chunks):
            break
    else:
        pytest.fail("P held no data chunk of 20 files")
    net.cut()
    await net.wait_cut_off(http)
    started = time.monotonic()
    assert await get_file(http, majority[1], name) == data
    elapsed = time.monotonic() - started
    print(f"GET with a data chunk on a peer known down took {elapsed:.2f}s (peer timeout 2 s)")
    assert elapsed < 1.0


async def placed_as_the_ring_says(
    http: aiohttp.ClientSession, cluster: ProcessCluster, names: list[str]
) -> bool:
    """Every file has all its chunks, on exactly the members the ring places them on."""
    async with http.get(f"{cluster.urls[0]}/cluster") as response:
        view = await response.json()
    ring = Ring(Member(p["id"], p["url"], p["weight"], p["zone"]) for p in view["peers"])
    for name in names:
        manifest = await get_manifest(http, cluster.urls[0], name)
        n = manifest["k"] + manifest["m"]
        holders = {c["holder"] for c in manifest["chunks"]}
        where = set(ring.placement(file_id(name, Version.parse(manifest["version"])), n))
        if len(manifest["chunks"]) != n or holders != where:
            return False
    return True
