"""Crashes of real peer processes: SIGKILL under traffic, a coordinator killed mid-PUT, and a
whole-cluster restart. Every acknowledged file is read back byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from node.model.names import name_key
from ring import Member, Ring
from tests.harness import (
    ProcessCluster,
    check_files,
    chunk_files_in,
    eventually,
    get_manifest,
    incoming_files_in,
    own_record,
    peer_id_of,
    put_file,
    sidecar_of,
)
from tests.harness.access import ADMIN_HEADERS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BLOCK = 4096


@dataclass
class Traffic:
    """What concurrent clients saw: acknowledged files and every kind of outcome."""

    acked: dict[str, bytes] = field(default_factory=dict)
    acked_after_kill: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    wrong_bytes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # 404 for an acknowledged file
    done: bool = False


async def client(
    session: aiohttp.ClientSession,
    urls: list[str],  # the peers not killed (yet): updated in place
    traffic: Traffic,
    killed: asyncio.Event,
    number: int,
    stop_at: float,
) -> None:
    """PUT new small files and GET acknowledged ones through random peers until ``stop_at``."""
    rng = random.Random(number)
    for step in range(400):
        if traffic.done or time.monotonic() >= stop_at:
            return
        url = rng.choice(urls)
        try:
            if traffic.acked and rng.random() < 0.5:
                name = rng.choice(sorted(traffic.acked))
                async with session.get(f"{url}/files/{name}") as response:
                    body = await response.read()
                    traffic.outcomes[f"GET {response.status}"] += 1
                    if response.status == 404:
                        traffic.missing.append(name)
                    elif response.status == 200 and body != traffic.acked[name]:
                        traffic.wrong_bytes.append(name)
            else:
                name = f"stream/{number}/{step}"
                small = rng.random() < 0.5  # kept inline with seven_inline's settings
                data = rng.randbytes(rng.randint(1, 16 << 10 if small else 12 * 5 * BLOCK))
                async with session.put(f"{url}/files/{name}", data=data) as response:
                    traffic.outcomes[f"PUT {response.status}"] += 1
                    if response.status == 201:
                        traffic.acked[name] = data
                        traffic.acked_after_kill += killed.is_set()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # A request in flight to (or through) a killed peer may fail; it must not lie.
            traffic.outcomes[type(exc).__name__] += 1


async def test_sigkill_of_two_peers_under_traffic_loses_no_acknowledged_file(
    seven_inline: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    """Half the files small enough to be kept inline (in manifests), half in chunks."""
    seven = seven_inline
    traffic = Traffic()
    killed = asyncio.Event()
    victims = sorted(random.Random(1).sample(range(7), 2))
    timeout = aiohttp.ClientTimeout(total=30)
    live = list(seven.urls)
    survivors = [p.url for i, p in enumerate(seven.peers) if i not in victims]
    async with aiohttp.ClientSession(timeout=timeout, headers=ADMIN_HEADERS) as session:
        stop_at = time.monotonic() + 30  # a bound; the clients stop once enough was seen
        clients = [
            asyncio.ensure_future(client(session, live, traffic, killed, n, stop_at))
            for n in range(6)
        ]
        try:
            await eventually(lambda: len(traffic.acked) >= 30, 20, "30 acknowledged PUTs")
            for victim in victims:
                await seven.crash(victim)
            killed.set()
            live[:] = survivors  # requests already in flight to the victims still fail
            await eventually(
                lambda: traffic.acked_after_kill >= 40, 20, "40 PUTs acknowledged after the kill"
            )
        finally:
            traffic.done = True
            await asyncio.gather(*clients)
    print(
        f"killed peers {victims}; {len(traffic.acked)} PUTs acknowledged "
        f"({traffic.acked_after_kill} after the kill); outcomes {dict(traffic.outcomes)}; "
        f"404 for acknowledged files while peers died: {traffic.missing}"
    )
    assert not traffic.wrong_bytes, f"wrong bytes served for {traffic.wrong_bytes}"

    await seven.wait_seen_down(http, {peer_id_of(seven.peers[v].data_dir) for v in victims})
    # Through the survivors no acknowledged file is ever missing (404) or wrong, even one
    # whose manifest had 2 of its 3 replicas on the killed peers. A file written while one
    # victim was already seen down has a single parity chunk and may be unreadable (503)
    # until the victims return (docs/durability.md: parity is fixed at write time).
    outage_404s = await read_back(http, survivors, traffic.acked, allow_unavailable=True)
    assert not outage_404s, f"acknowledged files answered 404: {outage_404s}"

    for victim in victims:
        await seven.restart(victim, http)
    await seven.wait_converged(http)
    for victim in victims:  # killed mid-commit or not, every chunk kept its whole sidecar
        for path in chunk_files_in(seven.peers[victim].data_dir):
            with contextlib.suppress(FileNotFoundError):  # collected meanwhile
                sidecar_of(path)  # raises CorruptData for a chunk without its whole sidecar
    # With the victims back every replica set is whole again: all files read right through
    # every peer (after manifests written to standbys are handed back).
    late_404s: list[str] = []

    async def all_right() -> bool:
        missing = await read_back(http, seven.urls, traffic.acked)
        late_404s.extend(missing)
        return not missing

    await eventually(all_right, 30, "every acknowledged file to read right on every peer")
    print(
        f"404s for acknowledged files: with 2 peers down {sorted(set(outage_404s))}, "
        f"right after their restart {sorted(set(late_404s))}"
    )


async def read_back(
    http: aiohttp.ClientSession,
    urls: list[str],
    files: dict[str, bytes],
    allow_unavailable: bool = False,
) -> list[str]:
    """Read every file once through ``urls`` in turn; return the names that answered 404.

    Fails the test on wrong bytes or any status but 200 and 404 (and 503 if allowed).
    """
    not_found = []
    for i, (name, data) in enumerate(sorted(files.items())):
        async with http.get(f"{urls[i % len(urls)]}/files/{name}") as response:
            if response.status == 404:
                not_found.append(name)
                continue
            if response.status == 503 and allow_unavailable:
                continue
            assert response.status == 200, f"GET {name}: {await response.text()}"
            assert await response.read() == data, f"{name}: wrong bytes"
    return not_found


async def slow_body(size: int, sent: list[int]) -> AsyncIterator[bytes]:
    """``size`` random bytes in 20 KiB pieces, paced so the upload takes a few seconds."""
    rng = random.Random(2)
    while sent[0] < size:
        piece = rng.randbytes(min(5 * BLOCK, size - sent[0]))
        sent[0] += len(piece)
        yield piece
        await asyncio.sleep(0.02)  # pacing the upload, not waiting for a condition


def chunks_of(cluster: ProcessCluster, name: str) -> list[Path]:
    """Complete chunk files of ``name`` on every peer, found through their sidecars."""
    found = []
    for peer in cluster.peers:
        for path in chunk_files_in(peer.data_dir):
            try:
                meta = sidecar_of(path)
            except FileNotFoundError:
                continue  # deleted while we looked
            if meta.name == name:
                found.append(path)
    return found


async def test_a_coordinator_killed_mid_put_leaves_no_file_and_no_chunks(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = ProcessCluster(
        tmp_path, 7, f"--block-size={BLOCK}", "--gc-grace=1", "--scrub-interval=1", "--scrub-rate=0"
    )
    try:
        await cluster.start(http)
        x = 3
        size = 6 << 20  # chunks of 1.2 MiB: past one write batch (WRITE_BATCH)
        sent = [0]
        url = f"{cluster.urls[x]}/files/cut/short"

        async def upload() -> int:
            headers = {"Content-Length": str(size)}
            async with http.put(url, data=slow_body(size, sent), headers=headers) as response:
                return response.status

        put = asyncio.ensure_future(upload())
        try:
            # Chunk streams are open on every holder, each past its first MiB, so written
            # into incoming/ (a chunk's first MiB is held in memory)...
            await eventually(
                lambda: all(incoming_files_in(p.data_dir) for p in cluster.peers),
                60,
                "every holder to write its chunk",
            )
            assert 0 < sent[0] < size
            await cluster.crash(x)  # ...when the coordinator dies.
            try:
                status: int | str = await asyncio.wait_for(put, 30)
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            assert isinstance(status, str), f"a killed coordinator answered {status}"
        finally:
            put.cancel()
        print(f"coordinator killed after {sent[0]} of {size} bytes; the client saw {status}")
        others = [u for i, u in enumerate(cluster.urls) if i != x]
        async with http.get(f"{others[0]}/files/cut/short") as response:
            assert response.status == 404

        # Survivors throw away what they were receiving; nothing complete is left anywhere.
        await eventually(
            lambda: not any(incoming_files_in(p.data_dir) for p in cluster.peers if p.running),
            20,
            "survivors to discard their partial chunks",
        )
        assert incoming_files_in(cluster.peers[x].data_dir), "the killed peer left nothing?"
        await cluster.restart(x, http)
        assert not incoming_files_in(cluster.peers[x].data_dir)
        await cluster.wait_converged(http)
        scrubs = await cluster.scrub_stats(http)
        passes = [s["scrub"]["passes"] for s in scrubs]
        # Two more scrub passes on every peer: any chunk past the 1 s gc-grace is judged.
        await eventually(
            lambda: _passes_beyond(http, cluster, [p + 2 for p in passes]), 30, "scrub passes"
        )
        assert not chunks_of(cluster, "cut/short")
        for url in cluster.urls:
            async with http.get(f"{url}/files/cut/short") as response:
                assert response.status == 404
    finally:
        await cluster.stop()


async def _passes_beyond(
    http: aiohttp.ClientSession, cluster: ProcessCluster, wanted: list[int]
) -> bool:
    scrubs = await cluster.scrub_stats(http)
    return all(s["scrub"]["passes"] >= w for s, w in zip(scrubs, wanted, strict=True))


async def test_restarting_the_whole_cluster_keeps_every_file_and_moves_nothing(
    seven: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(5)
    files = {f"restart/{i}": rng.randbytes(rng.randint(1, 40 * BLOCK)) for i in range(40)}
    for i, (name, data) in enumerate(files.items()):
        await put_file(http, seven.urls[i % 7], name, data)
    used_before = await seven.settle(http)  # writes may still be moving back into place
    chunks_before = [chunk_files_in(p.data_dir) for p in seven.peers]
    manifests_before = {n: await get_manifest(http, seven.urls[0], n) for n in files}

    await seven.stop()  # SIGTERM to every pid, SIGKILL after 5 s
    assert not any(p.running for p in seven.peers)
    await seven.start(http)

    async def settled() -> bool:
        """Each peer ran a rebalance pass since the last peer came up, and found nothing."""
        for view in await seven.views(http):
            progress = own_record(view)["rebalance"]
            if progress["passes"] < 1 or progress["pending"] or progress["moves"]:
                return False
        return True

    await eventually(settled, 30, "rebalance passes after the restart")
    await check_files(http, seven.urls, files)
    assert await seven.used_bytes(http) == used_before
    assert [chunk_files_in(p.data_dir) for p in seven.peers] == chunks_before
    for i, (name, manifest) in enumerate(manifests_before.items()):
        assert await get_manifest(http, seven.urls[i % 7], name) == manifest


async def test_a_file_is_found_when_two_of_its_manifest_replicas_are_killed(
    seven: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    view = (await seven.views(http))[0]
    ring = Ring(Member(p["id"], p["url"], p["weight"], p["zone"]) for p in view["peers"])
    assert ring.digest == view["ring"]["digest"]
    victims = {seven.index_of(i) for i in ring.placement(name_key("x"), 3)[1:]}
    victim_ids = {peer_id_of(seven.peers[v].data_dir) for v in victims}
    # Names whose 2nd and 3rd manifest replicas are the victims: one replica survives.
    names = [
        name
        for name in (f"orphaned/{i}" for i in range(20_000))
        if set(ring.placement(name_key(name), 3)[1:]) == victim_ids
    ][:20]
    assert len(names) == 20
    rng = random.Random(6)
    files = {name: rng.randbytes(rng.randint(1, 10 * BLOCK)) for name in names}
    survivors = [p.url for i, p in enumerate(seven.peers) if i not in victims]
    for i, (name, data) in enumerate(files.items()):
        await put_file(http, survivors[i % len(survivors)], name, data)
    for victim in victims:
        await seven.crash(victim)
    await seven.wait_seen_down(http, victim_ids)
    statuses = Counter()
    for i, name in enumerate(names):  # one read per name: a successful one repairs replicas
        async with http.get(f"{survivors[i % len(survivors)]}/files/{name}") as response:
            statuses[response.status] += 1
            if response.status == 200:
                assert await response.read() == files[name]
    print(f"GETs of 20 acknowledged files with 2 of 3 manifest replicas killed: {statuses}")
    assert statuses == {200: len(names)}
