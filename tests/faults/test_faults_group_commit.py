"""A peer process SIGKILLed in the middle of a group commit of its manifest log or its chunk
volumes: every write it acknowledged is there after its restart, and the batch it was writing
is whole or gone."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

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
from tests.harness.held_commits import HELD, HOLD, HOLD_CHUNKS, hold_commits
from tests.harness.local import INLINE

BLOCK = 4096  # small blocks: every chunk of these files is packed, across stripes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def newest_segment_damage(data_dir: Path) -> list[Damage]:
    newest = sorted((data_dir / "manifests" / "log").glob("*.log"))[-1]
    fd = os.open(newest, os.O_RDONLY)
    try:
        return [event for event in scan(fd, 0) if isinstance(event, Damage)]
    finally:
        os.close(fd)


async def put_status(http: aiohttp.ClientSession, url: str, name: str, data: bytes) -> int:
    async with http.put(f"{url}/files/{name}", data=data) as response:
        await response.read()
        return response.status


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
        before = {f"group/before/{i}": rng.randbytes(rng.randint(1, 16 << 10)) for i in range(30)}
        await asyncio.gather(
            *(put_file(http, cluster.urls[i % 2], n, d) for i, (n, d) in enumerate(before.items()))
        )
        (victim.data_dir / HOLD).touch()
        during = {f"group/during/{i}": rng.randbytes(rng.randint(1, 16 << 10)) for i in range(12)}
        puts = [
            asyncio.ensure_future(put_status(http, cluster.urls[i % 2], n, d))
            for i, (n, d) in enumerate(during.items())
        ]
        held = victim.data_dir / HELD
        await eventually(held.exists, 20, "a group commit to be held halfway written")
        report = json.loads(held.read_bytes())
        await cluster.crash(2)  # SIGKILL inside the batch: half of it is in the file
        statuses = await asyncio.gather(*puts)
        assert statuses == [201] * len(during), "two replicas of three are a write quorum"
        torn = newest_segment_damage(victim.data_dir)
        assert [d.tail for d in torn] == [True], f"the kill did not land mid-append: {torn}"
        print(f"killed with a batch of {len(report['names'])} records half written: {report}")

        held.unlink()
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

        async def all_read_right() -> bool:
            await check_files(http, cluster.urls, {**before, **during})
            return True

        await eventually(all_read_right, 20, "every acknowledged file to read right everywhere")
    finally:
        await cluster.stop()


def volume_records(data_dir: Path) -> tuple[list[str], int]:
    """The chunk ids of the whole records in a peer's newest chunk volume, and the bytes
    after them (a torn tail), read without changing it."""
    newest = sorted((data_dir / VOLUMES_DIR).glob("*.vol"))[-1]
    ids, torn = [], 0
    fd = os.open(newest, os.O_RDONLY)
    try:
        for event in scan_volume(fd, os.fstat(fd).st_size):
            if isinstance(event, VolumeDamage):
                assert event.tail, f"damage before the end of the volume: {event}"
                torn = event.end - event.start
            else:
                ids.append(event.chunk_id)
    finally:
        os.close(fd)
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
        before = {f"packed/before/{i}": rng.randbytes(rng.randint(1, 40 << 10)) for i in range(24)}
        await asyncio.gather(
            *(put_file(http, cluster.urls[i % 2], n, d) for i, (n, d) in enumerate(before.items()))
        )
        kept_before, _ = volume_records(victim.data_dir)
        (victim.data_dir / HOLD_CHUNKS).touch()
        during = {f"packed/during/{i}": rng.randbytes(rng.randint(1, 40 << 10)) for i in range(12)}
        puts = [
            asyncio.ensure_future(put_status(http, cluster.urls[i % 2], n, d))
            for i, (n, d) in enumerate(during.items())
        ]
        held = victim.data_dir / HELD
        await eventually(held.exists, 20, "a chunk volume commit to be held halfway written")
        report = json.loads(held.read_bytes())
        await cluster.crash(2)  # SIGKILL inside the batch: half of it is in the volume
        statuses = await asyncio.gather(*puts)
        assert statuses == [201] * len(during), "six chunks of seven are a write quorum"
        kept, torn = volume_records(victim.data_dir)
        assert kept[: len(kept_before)] == kept_before, "appends only"
        assert torn > 0 or len(kept) > len(kept_before), "the kill did not land mid-append"
        print(f"killed with a batch of {len(report['names'])} chunk records half written")

        held.unlink()
        await cluster.restart(2, http)
        kept_after, torn_after = volume_records(victim.data_dir)
        assert torn_after == 0, "the torn tail was cut off"
        assert set(kept_before) <= set(kept_after), "an acknowledged chunk was lost"
        await cluster.wait_converged(http)

        async def all_read_right() -> bool:
            await check_files(http, cluster.urls, {**before, **during})
            return True

        await eventually(all_read_right, 30, "every acknowledged file to read right everywhere")
    finally:
        await cluster.stop()
