"""A peer process SIGKILLed in the middle of a group commit of its manifest log or its chunk
volumes: every write it acknowledged is there after its restart, and the batch it was writing
is whole or gone."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.disk.chunk_store import VOLUMES_DIR
from node.disk.chunk_volumes import Damage as VolumeDamage
from node.disk.chunk_volumes import scan as scan_volume
from node.disk.manifest_log import Damage, scan
from tests.harness import (
    ProcessCluster,
    check_files,
    eventually,
    manifest_replica,
    put_file,
)
from tests.harness.disk import scanned
from tests.harness.held_commits import HELD, HOLD, HOLD_CHUNKS, hold_commits
from tests.harness.local import INLINE

BLOCK = 4096  # small blocks: every chunk of these files is packed, across stripes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def newest_segment_damage(data_dir: Path) -> list[Damage]:
    newest = sorted((data_dir / "manifests" / "log").glob("*.log"))[-1]
    return [
        event for event in scanned(newest, lambda fd, _: scan(fd, 0)) if isinstance(event, Damage)
    ]


async def put_status(http: aiohttp.ClientSession, url: str, name: str, data: bytes) -> int:
    async with http.put(f"{url}/files/{name}", data=data) as response:
        await response.read()
        return response.status


def small_files(rng: random.Random, prefix: str, count: int, largest: int) -> dict[str, bytes]:
    return {f"{prefix}/{i}": rng.randbytes(rng.randint(1, largest)) for i in range(count)}


async def put_through_two(
    http: aiohttp.ClientSession, cluster: ProcessCluster, files: dict[str, bytes]
) -> None:
    """PUT ``files`` at once, alternately through peers 0 and 1 (never the victim, 2)."""
    await asyncio.gather(
        *(put_file(http, cluster.urls[i % 2], n, d) for i, (n, d) in enumerate(files.items()))
    )


async def crash_in_held_commit(
    http: aiohttp.ClientSession,
    cluster: ProcessCluster,
    hold: str,
    during: dict[str, bytes],
    quorum: str,
) -> dict[str, Any]:
    """Hold peer 2's next group commit halfway written (``hold``: ``HOLD`` or
    ``HOLD_CHUNKS``, ``tests.harness.held_commits``), PUT ``during`` through peers 0 and 1
    meanwhile, SIGKILL peer 2 inside the batch, and assert every one of those PUTs was
    still answered 201 (``quorum`` says why); what the held batch was (its report)."""
    victim = cluster.peers[2]
    (victim.data_dir / hold).touch()
    puts = [
        asyncio.ensure_future(put_status(http, cluster.urls[i % 2], n, d))
        for i, (n, d) in enumerate(during.items())
    ]
    held = victim.data_dir / HELD
    await eventually(held.exists, 20, "a group commit to be held halfway written")
    report: dict[str, Any] = json.loads(held.read_bytes())
    await cluster.crash(2)  # SIGKILL inside the batch: half of it is in the file
    statuses = await asyncio.gather(*puts)
    assert statuses == [201] * len(during), quorum
    held.unlink()
    return report


async def read_right_everywhere(
    http: aiohttp.ClientSession, cluster: ProcessCluster, files: dict[str, bytes], within: float
) -> None:
    async def all_read_right() -> bool:
        await check_files(http, cluster.urls, files)
        return True

    await eventually(all_read_right, within, "every acknowledged file to read right everywhere")


async def test_a_peer_killed_in_the_middle_of_a_group_commit_keeps_every_acknowledged_write(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # Three peers, three manifest replicas: every peer holds every small file's manifest,
    # and with all three up a PUT is answered once all three acknowledged it.
    cluster = ProcessCluster(tmp_path, 3, f"--inline-max={INLINE['inline_max']}")
    victim = cluster.peers[2]
    hold_commits(victim)
    try:
        await cluster.start(http)
        rng = random.Random(13)
        before = small_files(rng, "group/before", 30, 16 << 10)
        await put_through_two(http, cluster, before)
        during = small_files(rng, "group/during", 12, 16 << 10)
        quorum = "two replicas of three are a write quorum"
        report = await crash_in_held_commit(http, cluster, HOLD, during, quorum)
        torn = newest_segment_damage(victim.data_dir)
        assert [d.tail for d in torn] == [True], f"the kill did not land mid-append: {torn}"
        print(f"killed with a batch of {len(report['names'])} records half written: {report}")

        await cluster.restart(2, http)
        assert newest_segment_damage(victim.data_dir) == [], "the torn tail was cut off"
        for name, data in before.items():  # acknowledged by the victim before the kill
            kept = manifest_replica(victim.data_dir, name)
            assert kept is not None, f"{name}: an acknowledged replica was lost"
            assert kept.inline == data
        for name in report["names"]:  # never acknowledged: whole (it decodes), or not there
            kept = manifest_replica(victim.data_dir, name)
            if kept is not None and name in during:
                assert kept.inline == during[name]
        await cluster.wait_converged(http)
        await read_right_everywhere(http, cluster, {**before, **during}, 20)
    finally:
        await cluster.stop()


def volume_records(data_dir: Path) -> tuple[list[str], int]:
    """The chunk ids of the whole records in a peer's newest chunk volume, and the bytes
    after them (a torn tail), read without changing it."""
    newest = sorted((data_dir / VOLUMES_DIR).glob("*.vol"))[-1]
    ids, torn = [], 0
    for event in scanned(newest, scan_volume):
        if isinstance(event, VolumeDamage):
            assert event.tail, f"damage before the end of the volume: {event}"
            torn = event.end - event.start
        else:
            ids.append(event.chunk_id)
    return ids, torn


async def test_a_peer_killed_in_the_middle_of_a_chunk_volume_commit_keeps_every_acknowledged_chunk(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Seven peers packing their chunks (a real peer's default): one is SIGKILLed with a
    batch of chunk records half written. PUTs through the others still succeed (6 of 7
    chunks are a write quorum); after its restart the torn record is cut off, every chunk
    it acknowledged before is in its volume, and every file reads right everywhere."""
    cluster = ProcessCluster(tmp_path, 7, f"--block-size={BLOCK}")
    victim = cluster.peers[2]
    hold_commits(victim)
    try:
        await cluster.start(http)
        rng = random.Random(17)
        before = small_files(rng, "packed/before", 24, 40 << 10)
        await put_through_two(http, cluster, before)
        kept_before, _ = volume_records(victim.data_dir)
        during = small_files(rng, "packed/during", 12, 40 << 10)
        quorum = "six chunks of seven are a write quorum"
        report = await crash_in_held_commit(http, cluster, HOLD_CHUNKS, during, quorum)
        kept, torn = volume_records(victim.data_dir)
        assert kept[: len(kept_before)] == kept_before, "appends only"
        assert torn > 0 or len(kept) > len(kept_before), "the kill did not land mid-append"
        print(f"killed with a batch of {len(report['names'])} chunk records half written")

        await cluster.restart(2, http)
        kept_after, torn_after = volume_records(victim.data_dir)
        assert torn_after == 0, "the torn tail was cut off"
        assert set(kept_before) <= set(kept_after), "an acknowledged chunk was lost"
        await cluster.wait_converged(http)
        await read_right_everywhere(http, cluster, {**before, **during}, 30)
    finally:
        await cluster.stop()
