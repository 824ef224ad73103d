"""What an anti-entropy pass costs, scaled to a million chunks, for two batch sizes.

An in-process cluster of N peers on 127.0.0.1 (real aiohttp servers, one event loop, so
the process's CPU time is the whole cluster's). FILES small files are stored (7 chunks
each), one unmeasured pass warms the page cache, then ROUNDS times, alternating the
variants, every peer runs one pass (``AntiEntropy.check_pass``) one
after the other, with chunk ids checked in batches of the variant's size. Measured per
variant: wall time of all passes, CPU time of the process, requests, request bytes and
chunks checked (medians over the rounds); then the same figures per million chunks.

Prints a markdown table and saves JSON + markdown under bench/results/.

    python bench/anti_entropy.py --files 1000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_benchmark
from tests.harness import LocalCluster
from tests.harness.access import ADMIN_HEADERS

VARIANTS = {"batch 65536 (default)": 1 << 16, "batch 1024": 1024}


async def store(url: str, files: int) -> None:
    slots = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as http:

        async def put(index: int) -> None:
            async with slots, http.put(f"{url}/files/bench/{index:06d}", data=b"x") as r:
                if r.status != 201:
                    raise RuntimeError(f"PUT {index}: {r.status} {await r.text()}")

        await asyncio.gather(*(put(i) for i in range(files)))


async def one_pass(cluster: LocalCluster, batch: int) -> dict[str, float]:
    """Every peer's pass, one after the other, with ``batch`` ids per check."""
    checkers = [p.anti_entropy for p in cluster.peers]
    before = [dataclasses.replace(c.stats) for c in checkers]
    wall, cpu = time.perf_counter(), time.process_time()
    for checker in checkers:
        checker.batch = batch
        await checker.check_pass()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pairs = list(zip(checkers, before, strict=True))
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "requests": sum(c.stats.requests - b.requests for c, b in pairs),
        "request_bytes": sum(c.stats.request_bytes - b.request_bytes for c, b in pairs),
        "chunks": sum(c.stats.chunks_checked - b.chunks_checked for c, b in pairs),
        "missing": sum(c.stats.missing_found - b.missing_found for c, b in pairs),
    }


async def run(peers: int, files: int, rounds: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="ringstore-entropy-") as tmp:
        cluster = LocalCluster(Path(tmp), anti_entropy_interval=86400)
        await cluster.start(peers)
        try:
            await store(cluster[0].url, files)
            await one_pass(cluster, 1 << 16)  # warm-up: manifests into the page cache
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
            for _ in range(rounds):  # alternated, so drift hits every variant alike
                for name, batch in VARIANTS.items():
                    samples[name].append(await one_pass(cluster, batch))
            rows: list[dict[str, object]] = []
            for name, runs in samples.items():
                median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                scale = 1e6 / median["chunks"]
                rows.append(
                    {
                        "variant": name,
                        "rounds": rounds,
                        **{k: round(v, 3) for k, v in median.items()},
                        "per_million": {
                            "wall_s": round(median["wall_s"] * scale, 1),
                            "cpu_s": round(median["cpu_s"] * scale, 1),
                            "request_mb": round(median["request_bytes"] * scale / 1e6, 1),
                        },
                    }
                )
            return rows
        finally:
            await cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rows = run_benchmark(run(args.peers, args.files, args.rounds))
    lines = [
        "| variant | chunks | missing | wall s | CPU s | requests | request bytes "
        "| per 1M chunks: wall s / CPU s / MB sent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["per_million"]
        assert isinstance(m, dict)
        lines.append(
            f"| {r['variant']} | {r['chunks']} | {r['missing']} | {r['wall_s']} | {r['cpu_s']} "
            f"| {r['requests']} | {r['request_bytes']} "
            f"| {m['wall_s']} / {m['cpu_s']} / {m['request_mb']} |"
        )
    table = "\n".join(lines)
    machine = (
        f"{platform.node()}, Python {platform.python_version()}, {args.peers} in-process "
        f"peers, {args.files} files"
    )
    print(f"{machine}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"anti-entropy-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (args.out / f"anti-entropy-{stamp}.md").write_text(f"{machine}\n\n{table}\n")


if __name__ == "__main__":
    main()
