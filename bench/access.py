"""What checking an access key costs a request, side by side with a request that needs none.

An in-process cluster of N peers on 127.0.0.1 (real aiohttp servers, one event loop). In one
run, for each variant, the same number of sequential requests go to one peer:

- ``health``: ``GET /health`` (no key: the floor of a request here);
- ``warm key``: ``HEAD /files/bench/x`` with a key the peer has cached (a grant check and
  the file's manifest read);
- ``cold key``: the same with a key the peer has not seen yet (one quorum read of the key
  record first): each request uses a different fresh key;
- ``anonymous public``: the same file in a public-read namespace, without a key.

Prints a markdown table of per-request latency (median and p90, ms) and saves JSON +
markdown under bench/results/.

    python bench/access.py --requests 300
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_benchmark
from client.credentials import Credentials
from tests.harness import LocalCluster
from tests.harness.access import ADMIN_HEADERS


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 2),
    }


async def timed(count: int, request: Callable[[int], Awaitable[int]]) -> list[float]:
    samples = []
    for index in range(count):
        started = time.perf_counter()
        status = await request(index)
        samples.append(time.perf_counter() - started)
        if status >= 400:
            raise RuntimeError(f"request {index} answered {status}")
    return samples


async def run(peers: int, count: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="ringstore-access-") as tmp:
        cluster = LocalCluster(Path(tmp))
        await cluster.start(peers)
        try:
            async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as admin:
                url = cluster[0].url
                for namespace, public in (("bench", False), ("bench-public", True)):
                    body = {"public_read": public}
                    async with admin.put(f"{url}/namespaces/{namespace}", json=body) as r:
                        assert r.status == 201, await r.text()
                    async with admin.put(f"{url}/files/{namespace}/x", data=b"x" * 4096) as r:
                        assert r.status == 201, await r.text()
                keys = []
                for _ in range(count + 1):
                    async with admin.post(f"{url}/keys", json={"read": ["bench"]}) as r:
                        made = await r.json()
                    credentials = Credentials(made["access_key"], made["secret_key"])
                    keys.append({"Authorization": credentials.authorization})
            target = cluster[1].url
            async with aiohttp.ClientSession() as http:

                async def call(path: str, headers: dict[str, str]) -> int:
                    async with http.request(
                        "GET" if path == "/health" else "HEAD", target + path, headers=headers
                    ) as response:
                        await response.read()
                        return response.status

                variants = {
                    "health (no key)": lambda i: call("/health", {}),
                    "warm key": lambda i: call("/files/bench/x", keys[-1]),
                    "cold key": lambda i: call("/files/bench/x", keys[i]),
                    "anonymous, public-read": lambda i: call("/files/bench-public/x", {}),
                }
                await call("/files/bench/x", keys[-1])  # warm the last key
                rows: list[dict[str, object]] = []
                for name, request in variants.items():
                    samples = await timed(count, request)
                    rows.append({"variant": name, "requests": count, **quantiles(samples)})
                return rows
        finally:
            await cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rows = run_benchmark(run(args.peers, args.requests))
    table = "\n".join(
        ["| variant | requests | median ms | p90 ms |", "|---|---|---|---|"]
        + [f"| {r['variant']} | {r['requests']} | {r['median_ms']} | {r['p90_ms']} |" for r in rows]
    )
    machine = f"{platform.node()}, Python {platform.python_version()}, {args.peers} peers"
    print(f"{machine}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"access-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (args.out / f"access-{stamp}.md").write_text(f"{machine}\n\n{table}\n")


if __name__ == "__main__":
    main()
