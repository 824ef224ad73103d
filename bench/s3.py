"""The S3 frontend beside the native API, in one cluster and one run (issue 14's figures).

A cluster of N real peer processes (default 7) serves both APIs; every measurement is made
once per round through each, alternating which goes first, so the machine's noise hits
both alike:

- ``big``: one file (1 GiB by default) up and down. S3: ``aws s3 cp`` (awscli, its defaults:
  8 MiB multipart parts, 10 threads) to and from peer 0's S3 port. Native: one streamed
  ``PUT /files/...`` and one ``GET`` through peer 0 (aiohttp). MB/s, and the CPU seconds
  of every peer together (user + system, from /proc) for each transfer.
- ``small``: N files of 4 KiB PUT, then GET, 16 at a time. S3: boto3 ``put_object`` /
  ``get_object`` in 16 threads, one client each. Native: aiohttp with 16 requests in flight.
  ops/s and cluster CPU milliseconds per operation.

Figures are printed as a markdown table and saved as JSON + markdown under bench/results/.

    python bench/s3.py                           # 1 GiB, 2000 small files, 1 round
    python bench/s3.py --size 256M --small 500 --rounds 2
    python bench/s3.py --size 256M --workloads big --profile /tmp/s3-stacks  # py-spy, all peers
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import cpu_seconds, profiled, publish, run_benchmark
from bench.throughput import parse_size
from tests.harness import ProcessCluster
from tests.harness.access import ADMIN, ADMIN_HEADERS

BUCKET = "bench"
THREADS = 16


class Bench:
    """One running cluster: its URLs, and the CPU its peers used around a measurement."""

    def __init__(self, cluster: ProcessCluster, s3_url: str, tmp: Path) -> None:
        self.cluster = cluster
        self.url = cluster.peers[0].url
        self.s3_url = s3_url
        self.tmp = tmp
        self.session: aiohttp.ClientSession | None = None
        self.profile: Path | None = None  # py-spy stacks of every peer per transfer go here

    def cpu(self) -> float:
        return sum(cpu_seconds(p.process.pid) for p in self.cluster.peers if p.process)

    async def timed(
        self, work: Callable[[], Awaitable[None]], label: str
    ) -> tuple[float, float, float]:
        """Wall seconds, cluster CPU seconds and peer 0's (the coordinator's) CPU seconds of
        ``work`` (profiled as ``label``)."""
        pids = [p.process.pid for p in self.cluster.peers if p.process]
        async with profiled(pids, self.profile, label):
            cpu, mine, started = self.cpu(), cpu_seconds(pids[0]), time.perf_counter()
            await work()
            wall = time.perf_counter() - started
            return wall, self.cpu() - cpu, cpu_seconds(pids[0]) - mine

    def aws(self, *args: str) -> None:
        """One awscli command against peer 0's S3 port, the cluster's admin key."""
        config = self.tmp / "aws-config"
        config.write_text("[default]\nregion = us-east-1\n")
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ADMIN[0],
            "AWS_SECRET_ACCESS_KEY": ADMIN[1],
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.tmp / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        command = [sys.executable, "-m", "awscli", "--endpoint-url", self.s3_url, *args]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=1800)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=ADMIN[0],
            aws_secret_access_key=ADMIN[1],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=THREADS),
        )


async def big_s3(bench: Bench, source: Path, size: int) -> dict[str, object]:
    back = bench.tmp / "s3-back.bin"
    key = f"s3://{BUCKET}/big-s3.bin"
    up = await bench.timed(
        lambda: asyncio.to_thread(bench.aws, "s3", "cp", str(source), key), "s3-up"
    )
    down = await bench.timed(
        lambda: asyncio.to_thread(bench.aws, "s3", "cp", key, str(back)), "s3-down"
    )
    if back.stat().st_size != size:
        raise RuntimeError("aws s3 cp brought back a different size")
    back.unlink()
    return _big_row("S3 (aws s3 cp)", size, up, down)


async def big_native(bench: Bench, source: Path, size: int) -> dict[str, object]:
    assert bench.session is not None
    session = bench.session
    url = f"{bench.url}/files/{BUCKET}/big-native.bin"

    async def put() -> None:
        with source.open("rb") as file:
            async with session.put(url, data=file) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"PUT: {answer.status} {await answer.text()}")

    async def get() -> None:
        got = 0
        async with session.get(url) as answer:
            async for piece in answer.content.iter_chunked(1 << 20):
                got += len(piece)
        if got != size:
            raise RuntimeError("GET brought back a different size")

    up, down = await bench.timed(put, "native-up"), await bench.timed(get, "native-down")
    return _big_row("native (PUT/GET)", size, up, down)


def _big_row(
    api: str, size: int, up: tuple[float, float, float], down: tuple[float, float, float]
) -> dict[str, object]:
    return {
        "workload": "big",
        "api": api,
        "size": size,
        "up_mb_s": round(size / up[0] / 1e6, 1),
        "down_mb_s": round(size / down[0] / 1e6, 1),
        "up_cpu_s": round(up[1], 2),
        "down_cpu_s": round(down[1], 2),
        "up_coordinator_cpu_s": round(up[2], 2),
        "down_coordinator_cpu_s": round(down[2], 2),
    }


async def small_s3(bench: Bench, files: int) -> dict[str, object]:
    data = os.urandom(4096)
    local = threading.local()

    def client() -> Any:
        if not hasattr(local, "client"):
            local.client = bench.client()
        return local.client

    def put(i: int) -> None:
        client().put_object(Bucket=BUCKET, Key=f"small-s3/{i:06d}", Body=data)

    def get(i: int) -> None:
        body = client().get_object(Bucket=BUCKET, Key=f"small-s3/{i:06d}")["Body"].read()
        if body != data:
            raise RuntimeError("GetObject brought back other bytes")

    with ThreadPoolExecutor(THREADS) as pool:

        async def run(call: Callable[[int], None]) -> None:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(pool, call, i) for i in range(files)))

        await asyncio.to_thread(lambda: list(pool.map(lambda _: client(), range(THREADS))))
        put_time = await bench.timed(lambda: run(put), "s3-small-put")
        get_time = await bench.timed(lambda: run(get), "s3-small-get")
    return _small_row("S3 (boto3)", files, put_time, get_time)


async def small_native(bench: Bench, files: int) -> dict[str, object]:
    assert bench.session is not None
    session = bench.session
    data = os.urandom(4096)
    gate = asyncio.Semaphore(THREADS)

    async def one(method: str, i: int) -> None:
        url = f"{bench.url}/files/{BUCKET}/small-native/{i:06d}"
        async with gate, session.request(method, url, data=data if method == "PUT" else None) as r:
            got = await r.read()
            if r.status not in (200, 201) or (method == "GET" and got != data):
                raise RuntimeError(f"{method} {url}: {r.status}")

    async def run(method: str) -> None:
        await asyncio.gather(*(one(method, i) for i in range(files)))

    put_time = await bench.timed(lambda: run("PUT"), "native-small-put")
    get_time = await bench.timed(lambda: run("GET"), "native-small-get")
    return _small_row("native (aiohttp)", files, put_time, get_time)


def _small_row(
    api: str, files: int, put: tuple[float, float, float], get: tuple[float, float, float]
) -> dict[str, object]:
    return {
        "workload": "small",
        "api": api,
        "files": files,
        "put_ops_s": round(files / put[0], 1),
        "get_ops_s": round(files / get[0], 1),
        "put_cpu_ms_op": round(put[1] / files * 1000, 2),
        "get_cpu_ms_op": round(get[1] / files * 1000, 2),
    }


async def s3_url_of(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/cluster") as answer:
        view = await answer.json()
    for peer in view["peers"]:
        if peer["id"] == view["self"] and peer["s3_url"]:
            return str(peer["s3_url"])
    raise RuntimeError("peer 0 does not show its S3 URL")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="the big file's size")
    parser.add_argument("--small", type=int, default=2000, help="4 KiB files per API")
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--workloads", default="big,small", help="which to run: big, small or both (big,small)"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy raw stacks of every peer, per transfer, go here"
    )
    args = parser.parse_args()
    workloads = set(args.workloads.split(","))
    size = parse_size(args.size)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="ringstore-bench-") as tmp:
        root = Path(tmp)
        source = root / "big.bin"
        with source.open("wb") as file:  # incompressible, written once for both APIs
            for _ in range(0, size, 1 << 20):
                file.write(os.urandom(min(1 << 20, size - file.tell())))
        cluster = ProcessCluster(root / "cluster", args.peers, "--s3-port=0", fast=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
        async with aiohttp.ClientSession(headers=ADMIN_HEADERS, timeout=timeout) as session:
            await cluster.start(session)
            try:
                async with session.put(f"{cluster.peers[0].url}/namespaces/{BUCKET}") as made:
                    if made.status != 201:
                        raise RuntimeError(f"namespace: {made.status}")
                bench = Bench(cluster, await s3_url_of(session, cluster.peers[0].url), root)
                bench.session = session
                bench.profile = args.profile
                for round_ in range(args.rounds):
                    pairs = [
                        pair
                        for workload, pair in (
                            ("big", (big_s3, big_native)),
                            ("small", (small_s3, small_native)),
                        )
                        if workload in workloads
                    ]
                    for s3_way, native_way in pairs:
                        ways = [s3_way, native_way] if round_ % 2 == 0 else [native_way, s3_way]
                        for way in ways:
                            extra = (source, size) if way in (big_s3, big_native) else (args.small,)
                            row = await way(bench, *extra)  # type: ignore[operator]
                            print(row, flush=True)
                            rows.append(row)
            finally:
                await cluster.stop()
    publish("s3", rows, markdown(rows), note=f"{args.peers} peers; 16 clients for small files")


def markdown(rows: list[dict[str, object]]) -> str:
    lines = []
    for workload, head in (
        (
            "big",
            "| big file | API | up MB/s | down MB/s | cluster CPU s up / down "
            "| of which the coordinator's |",
        ),
        ("small", "| 4 KiB files | API | PUT ops/s | GET ops/s | cluster CPU ms/op PUT / GET |"),
    ):
        apis = sorted({str(r["api"]) for r in rows if r["workload"] == workload})
        if apis:
            lines += [head, "|---" * (head.count("|") - 1) + "|"]
        for api in apis:
            mine = [r for r in rows if r["workload"] == workload and r["api"] == api]

            def med(field: str, mine: list[dict[str, object]] = mine) -> float:
                return round(statistics.median(float(str(r[field])) for r in mine), 2)

            if workload == "big":
                lines.append(
                    f"| {mine[0]['size']} B | {api} | {med('up_mb_s')} | {med('down_mb_s')} "
                    f"| {med('up_cpu_s')} / {med('down_cpu_s')} "
                    f"| {med('up_coordinator_cpu_s')} / {med('down_coordinator_cpu_s')} |"
                )
            else:
                lines.append(
                    f"| {mine[0]['files']} files | {api} | {med('put_ops_s')} "
                    f"| {med('get_ops_s')} | {med('put_cpu_ms_op')} / {med('get_cpu_ms_op')} |"
                )
        lines.append("")
    return "\n".join(lines).rstrip()


if __name__ == "__main__":
    run_benchmark(main())
