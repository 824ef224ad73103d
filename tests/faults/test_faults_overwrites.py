"""Concurrent overwrites of one name through different peer processes: one whole winner, and
the losers' chunks all deleted."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest

from tests.harness import (
    ProcessCluster,
    chunk_files_in,
    chunk_files_size,
    eventually,
    get_file,
    get_manifest,
    put_file,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BLOCK = 4096
WRITES = 15  # per client


async def test_concurrent_overwrites_leave_one_whole_version_and_no_old_chunks(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = ProcessCluster(  # chunk files: the test finds the losing versions' by theirs
        tmp_path,
        7,
        f"--block-size={BLOCK}",
        "--gc-grace=1",
        "--scrub-interval=1",
        "--scrub-rate=0",
        "--pack-max=0",
    )
    try:
        await cluster.start(http)
        rng = random.Random(6)
        versions = [rng.randbytes(rng.randint(10 * BLOCK, 30 * BLOCK)) for _ in range(2 * WRITES)]

        async def writer(url: str, mine: Sequence[bytes]) -> None:
            for data in mine:
                await put_file(http, url, "overwrites/contended", data)

        written = set(versions)
        reads: list[int] = []

        async def reader(url: str, writing: asyncio.Future[object]) -> None:
            """Reads while the writers run: each answer is one whole version, or an error."""
            for _ in range(500):
                if writing.done():
                    return
                async with http.get(f"{url}/files/overwrites/contended") as response:
                    body = await response.read()
                reads.append(response.status)
                if response.status == 200:
                    assert body in written, "a read returned bytes no writer wrote"

        writing = asyncio.gather(
            writer(cluster.urls[0], versions[:WRITES]), writer(cluster.urls[4], versions[WRITES:])
        )
        await asyncio.gather(writing, reader(cluster.urls[2], writing))
        print(f"reads during the overwrites: {sorted(reads)[:1]}..., {len(reads)} in all")
        final = await get_file(http, cluster.urls[2], "overwrites/contended")
        assert final in versions, "the file is none of the versions written: a mix?"
        for url in cluster.urls:  # every coordinator agrees on the winner
            assert await get_file(http, url, "overwrites/contended") == final

        manifest = await get_manifest(http, cluster.urls[0], "overwrites/contended")
        winner = {(c["holder"], c["id"]) for c in manifest["chunks"]}
        assert len(winner) == 7

        def stored() -> set[tuple[str, str]]:
            return {
                (cluster.peers[i].data_dir.name, path.name)
                for i in range(7)
                for path in chunk_files_in(cluster.peers[i].data_dir)
            }

        wanted = {(cluster.peers[cluster.index_of(h)].data_dir.name, c) for h, c in winner}

        async def only_the_winner() -> bool:
            used = await cluster.used_bytes(http)
            sizes = [chunk_files_size(p.data_dir) for p in cluster.peers]
            return stored() == wanted and used == sizes

        # Deleted after the delete grace by the writes that replaced them, or collected by
        # scrubs once the 1 s gc-grace has passed: either way, nothing else stays.
        await eventually(only_the_winner, 30, "the losing versions' chunks to be deleted")
        assert await get_file(http, cluster.urls[5], "overwrites/contended") == final
    finally:
        await cluster.stop()
