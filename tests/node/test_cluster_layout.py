"""One layout for every file (k=5, m=2): written with peers down, or by a release that wrote
less parity, a file is brought to its full layout in the background (issue 12)."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import LocalCluster, eventually
from tests.harness.files import fully_redundant
from tests.node.shared.test_cluster_files import get, payload, put
from tests.node.test_cluster_faults import manifest_of


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    """Repair sweeps often: the upgrade of an older file waits for one. The delete grace
    outlasts the upgrade, so the deletion of chunk 6 that committing the 5+1 manifest
    schedules reads the upgraded manifest and keeps the rebuilt chunk (a delete whose
    manifest read came before the rebuild's write could remove it: anti-entropy would then
    find it missing; see the note on issue 12)."""
    return {"repair_interval": 0.5, "delete_grace": 5.0}


async def test_a_file_written_with_peers_down_gets_its_full_layout_when_they_return(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """Issue 12's sequence in process: files written while 6 and then 5 peers were up are
    5+2 all the same, with the chunks they could not place missing; once the peers return,
    repair places those, and every file then survives two *other* lost peers."""
    await cluster[6].stop()
    await cluster.wait_down(cluster[6])
    reply = await put(http, cluster[0].url, "faults/six", payload(50_000))
    assert (reply["chunks"], reply["degraded"]) == (6, True)
    manifest = await manifest_of(http, cluster[1].url, "faults/six")
    assert (manifest["k"], manifest["m"], len(manifest["chunks"])) == (5, 2, 6)
    await cluster[5].stop()
    await cluster.wait_down(cluster[5])
    await put(http, cluster[0].url, "faults/five", payload(60_000, seed=3))
    manifest = await manifest_of(http, cluster[1].url, "faults/five")
    assert (manifest["m"], len(manifest["chunks"])) == (2, 5)
    assert await get(http, cluster[2].url, "faults/five") == payload(60_000, seed=3)
    await cluster[5].start()
    await cluster[6].start()
    names = ["faults/six", "faults/five"]
    await eventually(
        lambda: fully_redundant(http, cluster[0].url, names),
        timeout=30,
        what="7 chunks of each file on 7 up peers",
    )
    for name in names:
        holders = [c["holder"] for c in (await manifest_of(http, cluster[0].url, name))["chunks"]]
        assert sorted(holders) == sorted(p.id for p in cluster.peers), name
    for victim in cluster.peers[:2]:  # two peers that were up all along
        await victim.stop()
    for victim in cluster.peers[:2]:
        await cluster.wait_down(victim)
    assert await get(http, cluster[3].url, "faults/six") == payload(50_000)
    assert await get(http, cluster[4].url, "faults/five") == payload(60_000, seed=3)


async def test_a_file_with_less_parity_is_upgraded_in_place_to_the_clusters_layout(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A 5+1 file (as the release before issue 12 wrote with 6 peers up) gets a 7th chunk
    rebuilt and a new revision with m=2; its six chunks stay where and what they were."""
    data = payload(70_000, seed=5)
    await put(http, cluster[0].url, "layout/old", data)
    replicas = cluster[0].replicas
    current = await replicas.read("layout/old")
    assert current is not None
    old = dataclasses.replace(
        current,
        layout=dataclasses.replace(current.layout, m=1),
        chunks=current.chunks[:6],
        revision=current.revision + 1,
    )
    await replicas.commit(old, base=current)
    cluster.holder(current.chunks[6].holder).chunks.path(current.chunk_id(6)).unlink()

    async def upgraded() -> bool:
        manifest = await manifest_of(http, cluster[2].url, "layout/old")
        return manifest["m"] == 2 and len(manifest["chunks"]) == 7

    await eventually(upgraded, timeout=30, what="the 5+1 file laid out 5+2")
    manifest = await manifest_of(http, cluster[2].url, "layout/old")
    assert manifest["revision"] == old.revision + 1
    before = {ref.index: (ref.holder, ref.digest.hex()) for ref in current.chunks}
    after = {c["index"]: (c["holder"], c["digest"]) for c in manifest["chunks"]}
    assert {i: after[i] for i in range(6)} == {i: before[i] for i in range(6)}
    assert after[6][1] == before[6][1], "the rebuilt parity chunk is the one m=2 encodes"
    for chunk in manifest["chunks"][:2]:  # two data chunks gone: the new parity is needed
        cluster.holder(chunk["holder"]).chunks.path(chunk["id"]).unlink()
    assert await get(http, cluster[4].url, "layout/old") == data


async def test_losing_every_peer_of_one_zone_loses_no_file(
    tmp_path: Path, http: aiohttp.ClientSession, loop_guard: None
) -> None:
    """4 zones of 2 peers: a file's 7 chunks are at most 2 per zone, so a whole zone down
    (a machine with two disks) leaves 5 of them."""
    cluster = LocalCluster(tmp_path, block_size=4096)
    try:
        await cluster.start(8, zones=[f"host-{i // 2}" for i in range(8)])
        files = {f"zones/{i}": payload(30_000 + i, seed=i) for i in range(12)}
        for i, (name, data) in enumerate(files.items()):
            await put(http, cluster[i % 8].url, name, data)
        zone_of = {p.id: f"host-{i // 2}" for i, p in enumerate(cluster.peers)}
        for name in files:
            holders = [
                c["holder"] for c in (await manifest_of(http, cluster[0].url, name))["chunks"]
            ]
            per_zone = Counter(zone_of[h] for h in holders)
            assert len(holders) == 7
            assert max(per_zone.values()) <= 2, (name, per_zone)
        await cluster[2].stop()
        await cluster[3].stop()
        up = [cluster[i].url for i in (0, 1, 4, 5, 6, 7)]
        for i, (name, data) in enumerate(files.items()):
            assert await get(http, up[i % len(up)], name) == data
    finally:
        await cluster.stop()


async def test_repair_keeps_to_its_rate(
    tmp_path: Path, http: aiohttp.ClientSession, loop_guard: None
) -> None:
    """--repair-rate paces rebuilt bytes: two files' lost chunks of 20 kB each at 20 kB/s
    take at least a second (the first goes at once, the second waits its turn)."""
    cluster = LocalCluster(tmp_path, block_size=4096, repair_rate=20_000, repair_interval=60)
    try:
        await cluster.start(7)
        names = ["paced/a", "paced/b"]
        for name in names:
            await put(http, cluster[0].url, name, payload(100_000, seed=len(name)))
        primary = cluster[0]
        lost = []
        for name in names:
            manifest = await primary.replicas.read(name)
            assert manifest is not None
            assert manifest.layout.chunk_size >= 20_000
            path = cluster.holder(manifest.chunks[6].holder).chunks.path(manifest.chunk_id(6))
            path.unlink()
            lost.append((manifest, path))
        started = time.monotonic()  # both reported at once: the first goes, the second waits
        for manifest, _ in lost:
            primary.repairer.report(manifest, {6})
        await eventually(lambda: all(p.is_file() for _, p in lost), timeout=30, what="rebuilt")
        assert time.monotonic() - started >= 1.0
    finally:
        await cluster.stop()


@pytest.mark.parametrize("cap", [24_000, 400_000])
async def test_a_crowded_peer_gets_no_new_chunks_while_others_have_room(
    tmp_path: Path, http: aiohttp.ClientSession, loop_guard: None, cap: int
) -> None:
    """8 peers, 7 capped at 100 MB and one at ``cap``: once gossip says it is crowded (at
    24 kB it may be full too; at 400 kB it is only filled more than FILL_SLACK past the
    cluster's fill), new files go whole to the other 7 (no degraded write, no refused
    chunk)."""
    cluster = LocalCluster(tmp_path, block_size=4096)
    try:
        await cluster.start(7, each=[{"max_bytes": 100_000_000}] * 7)
        small = await cluster.add_peer(max_bytes=cap)
        await cluster.wait_converged()
        first = {f"full/a{i}": payload(40_000, seed=i) for i in range(8)}
        for name, data in first.items():
            await put(http, cluster[0].url, name, data)
        await eventually(
            lambda: all(small.id in p.membership.crowded_ids() for p in cluster.peers),
            timeout=10,
            what="every peer to see the small one crowded",
        )
        if cap == 400_000:  # crowded, not full: at most 8 chunks of 8 kB
            assert small.id not in cluster[0].membership.full_ids()
        later = {f"full/b{i}": payload(40_000, seed=100 + i) for i in range(8)}
        for name, data in later.items():
            reply = await put(http, cluster[1].url, name, data)
            assert (reply["chunks"], reply["degraded"]) == (7, False), name
            holders = {
                c["holder"] for c in (await manifest_of(http, cluster[2].url, name))["chunks"]
            }
            assert small.id not in holders
        for name, data in {**first, **later}.items():
            assert await get(http, cluster[3].url, name) == data
    finally:
        await cluster.stop()


async def test_files_are_coded_with_isa_l_once_every_member_can_and_keep_their_codec(
    cluster: LocalCluster, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator codes parity with ISA-L's Cauchy code only when every member said it
    can (``reads_cauchy``), else with zfec; reads and repairs rebuild a file's chunks with
    its own codec, whichever peer does it (the codes differ: rebuilt with the other one, a
    chunk comes back wrong and fails its digests)."""
    files = {"codec/cauchy": payload(90_000, seed=7), "codec/zfec": payload(90_000, seed=8)}
    await put(http, cluster[0].url, "codec/cauchy", files["codec/cauchy"])
    monkeypatch.setattr(cluster[1].membership, "all_read_cauchy", lambda: False)
    await put(http, cluster[1].url, "codec/zfec", files["codec/zfec"])
    for name, codec in [("codec/cauchy", "isa-l-cauchy"), ("codec/zfec", "zfec")]:
        manifest = await manifest_of(http, cluster[2].url, name)
        assert manifest["codec"] == codec
        digests = {c["index"]: c["digest"] for c in manifest["chunks"]}
        for chunk in manifest["chunks"][0::5]:  # a data and a parity chunk gone: rebuilt
            cluster.holder(chunk["holder"]).chunks.path(chunk["id"]).unlink()
        assert await get(http, cluster[3].url, name) == files[name]

        async def repaired(name: str = name, revision: int = manifest["revision"]) -> bool:
            return (await manifest_of(http, cluster[2].url, name))["revision"] > revision

        await eventually(repaired, timeout=30, what=f"{name}'s two chunks rebuilt")
        manifest = await manifest_of(http, cluster[2].url, name)
        assert {c["index"]: c["digest"] for c in manifest["chunks"]} == digests
        assert manifest["codec"] == codec
        for chunk in manifest["chunks"][1:3]:  # two others gone: the rebuilt ones are read
            cluster.holder(chunk["holder"]).chunks.path(chunk["id"]).unlink()
        assert await get(http, cluster[4].url, name) == files[name]
