"""The chunk store alone: chunk writes per second, their latency, and the files and disk each
chunk takes, side by side for source trees.

Each round runs every tree (``--trees base=/tmp/base,new=.``) in turn, in a process of its own
with that tree first on ``sys.path``: it opens a fresh store under ``--dir`` and has
``--writers`` writers each write chunks of ``--size`` bytes (as a holder does for a peer's
``PUT /internal/chunks/<id>``: a stream of pieces, then the commit) for ``--seconds``. The
figures are medians over the rounds; latency is from the first piece to the commit's end,
CPU is the process's (user + system) over the writes.

    python bench/chunk_store.py --trees base=/tmp/base,new=. --size 200K --writers 1,16

``--packed`` adds a variant per tree whose store packs chunks of up to 1 MiB in volumes with
group commit (``node.disk.chunk_volumes``; trees from 2026-12-03 on); the plain variant stores
every chunk as a file (``pack_max`` 0, a store's default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

PIECE = 64 << 10  # bytes per piece of a chunk's stream


async def one_tree(
    size: int, writers: int, seconds: float, directory: Path, packed: bool = False
) -> dict[str, float]:
    """Run in the tree's own process: write chunks, measure, count what is on disk."""
    from node.disk.chunk_store import ChunkStore
    from node.model.manifest import ChunkMeta

    store = ChunkStore(directory, pack_max=1 << 20) if packed else ChunkStore(directory)
    await store.open()
    body = os.urandom(size)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, size, PIECE):
            yield body[start : start + PIECE]

    async def writer(number: int) -> None:
        step = 0
        while time.monotonic() < deadline:
            chunk_id = f"{number:08x}{step:024x}-0"
            owner = ChunkMeta(f"bench/{number}/{step}", "1.0.bench", 0, 1 << 20)
            started = time.perf_counter()
            await store.write(chunk_id, pieces(), size, owner)
            latencies.append(time.perf_counter() - started)
            step += 1

    started, cpu = time.monotonic(), os.times()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    wall, ended = time.monotonic() - started, os.times()
    cpu_s = (ended.user - cpu.user) + (ended.system - cpu.system)
    if hasattr(store, "close"):  # (trees before packed chunks have none)
        await store.close()
    files, allocated = await asyncio.to_thread(on_disk, directory)
    latencies.sort()
    return {
        "writes_s": len(latencies) / wall,
        "median_ms": 1000 * statistics.median(latencies),
        "p90_ms": 1000 * latencies[int(0.9 * (len(latencies) - 1))],
        "cpu_ms": 1000 * cpu_s / len(latencies),
        "files_per_chunk": files / len(latencies),
        "allocated_per_byte": allocated / (len(latencies) * size),
    }


def on_disk(directory: Path) -> tuple[int, int]:
    """The files a store under ``directory`` holds, and the bytes they take on disk (the
    chunk directory's name differs between trees: all but ``incoming/``)."""
    files = [p for p in directory.rglob("*") if p.is_file() and "incoming" not in p.parts]
    return len(files), sum(p.stat().st_blocks * 512 for p in files)


def run_tree(
    tree: Path, size: int, writers: int, seconds: float, under: Path, packed: bool = False
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ringstore-chunks-", dir=under) as tmp:
        # This file loaded by its path (importing it changes no sys.path), the tree's node.
        code = (
            f"import sys, json, asyncio, importlib.util; sys.path.insert(0, {str(tree)!r}); "
            f"spec = importlib.util.spec_from_file_location('chunk_bench', {__file__!r}); "
            "bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench); "
            "from pathlib import Path; print(json.dumps(asyncio.run("
            f"bench.one_tree({size}, {writers}, {seconds}, Path({tmp!r}), {packed}))))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
        if done.returncode:
            raise RuntimeError(f"{tree}: {done.stderr[-2000:]}")
        return dict(json.loads(done.stdout.splitlines()[-1]))


def size_of(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


async def main() -> None:
    from bench.report import publish
    from bench.small import variants

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default="this=.", help="name=path,... source trees")
    parser.add_argument("--size", default="200K", help="bytes per chunk (200K: a 1 MiB file's)")
    parser.add_argument("--writers", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the stores go")
    parser.add_argument("--packed", action="store_true", help="add a packed variant per tree")
    args = parser.parse_args()
    size = size_of(args.size)
    trees = [(name, tree, False) for name, tree, _ in variants(args.trees)]
    if args.packed:
        trees += [(f"{name}+packed", tree, True) for name, tree, _ in trees]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for writers in map(int, args.writers.split(",")):
            for name, tree, packed in trees:  # alternating: the machine's noise hits all alike
                got = await asyncio.to_thread(
                    run_tree, tree, size, writers, args.seconds, args.dir, packed
                )
                print(name, writers, got, flush=True)
                runs.setdefault((name, writers), []).append(got)
    rows: list[dict[str, object]] = []
    for (name, writers), got in runs.items():
        row: dict[str, object] = {"variant": name, "size": size, "writers": writers}
        for key in got[0]:
            row[key] = round(statistics.median(g[key] for g in got), 3)
        rows.append(row)
    table = "\n".join(
        [
            "| variant | chunk bytes | writers | writes/s | median ms | p90 ms | CPU ms per write "
            "| files per chunk | allocated ÷ bytes |",
            "|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['variant']} | {r['size']} | {r['writers']} | {r['writes_s']} "
                f"| {r['median_ms']} | {r['p90_ms']} | {r['cpu_ms']} | {r['files_per_chunk']} "
                f"| {r['allocated_per_byte']} |"
                for r in rows
            ),
        ]
    )
    publish("chunk-store", rows, table, f"medians of {args.rounds} alternated rounds")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.report import run_benchmark

    run_benchmark(main())
