"""A peer process SIGKILLed in the middle of a group commit of its manifest log: every write
it acknowledged is there after its restart, and the batch it was writing is whole or gone."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import aiohttp
import pytest

from node.disk.manifest_log import Damage, scan
from tests.harness import (
    ProcessCluster,
    check_files,
    eventually,
    manifest_replica,
    put_file,
)
from tests.harness.held_commits import HELD, HOLD, hold_commits
from tests.harness.local import INLINE

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
