"""S3 through one peer's port against a port every peer of the host shares (``--s3-reuse-port``).

A peer is one event loop: its small requests use at most one core however many the host has
(docs/architecture.md, "One process per peer"). A host with many cores runs one peer per
core, in one zone, and they share one S3 port (SO_REUSEPORT): the kernel hands each new
connection to one of them, so clients that know one address still spread their requests
over every loop. This compares, per round and variants alternating, a fresh cluster of
PEERS real peer processes on 127.0.0.1 where

- ``one``: each peer serves S3 on a port of its own, and every client uses peer 0's;
- ``shared``: every peer serves S3 on the same port, which every client uses.

16 clients (aiohttp, one keep-alive connection each, in ``--client-processes`` processes so
that a many-core machine's load generator is not one core either) PUT objects of SIZE for
SECONDS, then GET them in random order, round after round, for SECONDS, every body compared.
Each phase's connections are opened (a GET of a missing key each) before its clock starts,
and all client processes start at one moment (a late one is reported); in ``shared``, which
peer holds each connection is the kernel's draw. Requests are presigned (Signature V4 in the
query, made with botocore before the clock starts), so the load generator's CPU per request
is aiohttp's, not boto3's. Measured: ops/s, the CPU of all peers per op (user + system,
/proc), the most cores one peer used, how many peers coordinated requests (those whose S3
request counter moved), and the manifest requests the coordinators sent to other peers per
op with the calls each carried (the batching that many requests in flight at one coordinator
allow).

``--peer-cpus 0-7`` pins peer *i* to the *i*-th CPU of the list (one peer per core, as
docs/operations.md runs a many-core host) and ``--client-cpus 8-15`` the clients to theirs:

    python bench/shared_port.py                          # 7 peers, 4 KiB, 10 s phases
    python bench/shared_port.py --sizes 4K,1M --rounds 3 --seconds 8
    python bench/shared_port.py --peers 8 --peer-cpus 0-7 --client-cpus 8-15 \
        --client-processes 4 --sizes 4K,1M --rounds 2   # 16 cores: one peer per core

Figures are printed as a markdown table and saved as JSON + markdown under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import cpu_list, cpu_seconds, pin, publish, run_benchmark
from bench.throughput import label, parse_size
from tests.harness import ProcessCluster, eventually, free_port
from tests.harness.access import ADMIN, ADMIN_HEADERS
from tests.harness.metrics import scrape, value

CLIENTS = 16
MAX_OPS = 20_000  # presigned URLs made per phase (a PUT phase stops there)
BUCKET = "bench"
S3_REQUESTS = "ringstore_http_requests_total"  # with listener="s3"
BATCHES = "ringstore_manifest_batches_total"  # a coordinator's manifest requests to peers
BATCHED = "ringstore_manifest_batched_calls_total"  # the calls they carried
VARIANTS = ("one", "shared")
OPENING = 2.0  # seconds the client processes get to open their connections before the clock


def presigned(s3_url: str, method: str, keys: list[str]) -> list[str]:
    """A Signature V4 presigned URL for ``method`` (put_object, get_object) of each key."""
    signer = boto3.client(
        "s3",
        endpoint_url=s3_url,
        aws_access_key_id=ADMIN[0],
        aws_secret_access_key=ADMIN[1],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    try:
        return [
            signer.generate_presigned_url(method, {"Bucket": BUCKET, "Key": k}, ExpiresIn=3600)
            for k in keys
        ]
    finally:
        signer.close()


async def counters(session: aiohttp.ClientSession, cluster: ProcessCluster) -> list[list[float]]:
    """Each peer's S3 requests answered, manifest requests it sent to other peers and the
    calls those carried, so far (its metrics)."""
    names = (S3_REQUESTS, BATCHES, BATCHED)
    return [
        [
            value(samples, name, **({"listener": "s3"} if name == S3_REQUESTS else {}))
            for name in names
        ]
        for samples in [await scrape(session, url) for url in cluster.urls]
    ]


def load(
    method: str, urls: list[str], misses: list[str], body: bytes, start_at: float, until: float
) -> tuple[int, float]:
    """In a client process: open one keep-alive connection per URL of ``misses`` (a GET of
    a missing key each), then from ``start_at`` to ``until`` (time.time()) send ``method``
    to ``urls`` in turn over them, every body compared; return how many were made (the
    first ones of ``urls``) and how many seconds after ``start_at`` the first one went."""
    return asyncio.run(_load(method, urls, misses, body, start_at, until))


def ready(_: int) -> None:
    """Nothing: run once in each client process, so they exist before the first phase."""


async def _load(
    method: str, urls: list[str], misses: list[str], body: bytes, start_at: float, until: float
) -> tuple[int, float]:
    connector = aiohttp.TCPConnector(limit=len(misses))
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def miss(url: str) -> None:
            async with http.get(url) as answer:
                await answer.read()
                if answer.status != 404:
                    raise RuntimeError(f"GET of a missing key: {answer.status}")

        await asyncio.gather(*(miss(url) for url in misses))
        await asyncio.sleep(max(0.0, start_at - time.time()))  # every process starts at once
        late = time.time() - start_at
        next_url = iter(range(len(urls)))
        done = 0

        async def client() -> None:
            nonlocal done
            for index in next_url:
                if time.time() >= until:
                    return
                data = body if method == "PUT" else None
                async with http.request(method, urls[index], data=data) as answer:
                    got = await answer.read()
                    if answer.status != 200 or (method == "GET" and got != body):
                        raise RuntimeError(f"{method}: {answer.status} {got[:200]!r}")
                done += 1

        await asyncio.gather(*(client() for _ in misses))
        return done, late


class Load:
    """The client processes (``--client-processes``): CLIENTS connections spread over them."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        list(self.pool.map(ready, range(processes)))  # started and imported, outside any clock

    def close(self) -> None:
        self.pool.shutdown()

    async def run(
        self,
        method: str,
        slices: list[list[str]],
        misses: list[str],
        body: bytes,
        start_at: float,
        seconds: float,
    ) -> list[tuple[int, float]]:
        """Each process opens its share of the connections (a GET of one of ``misses``
        each), then sends ``method`` to its slice of URLs from ``start_at`` (time.time())
        for ``seconds``: how many each made, and how late it started."""
        loop = asyncio.get_running_loop()
        share = [
            CLIENTS // self.processes + (i < CLIENTS % self.processes)
            for i in range(self.processes)
        ]
        jobs = [
            loop.run_in_executor(
                self.pool,
                load,
                method,
                urls,
                misses[sum(share[:i]) : sum(share[: i + 1])],
                body,
                start_at,
                start_at + seconds,
            )
            for i, urls in enumerate(slices)
        ]
        return list(await asyncio.gather(*jobs))


async def phase(
    clients: Load,
    s3_url: str,
    admin: aiohttp.ClientSession,
    cluster: ProcessCluster,
    method: str,
    slices: list[list[str]],
    body: bytes,
    seconds: float,
) -> tuple[dict[str, object], list[int]]:
    """The client processes send ``method`` to their slices of URLs for ``seconds``: the
    row's figures and how many requests each made (the first ones of its slice)."""
    pids = [p.process.pid for p in cluster.peers if p.process]
    counted = await counters(admin, cluster)
    misses = await asyncio.to_thread(
        presigned, s3_url, "get_object", [f"none/{i}" for i in range(CLIENTS)]
    )
    start_at = time.time() + OPENING  # the clients open their connections before it
    running = asyncio.ensure_future(clients.run(method, slices, misses, body, start_at, seconds))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    before = [cpu_seconds(pid) for pid in pids]
    results = await running
    wall = time.time() - start_at
    made = [count for count, _ in results]
    late = max(lateness for _, lateness in results)
    if late > 0.1:  # a client process missed the start: the phase is shorter for it
        print(f"warning: a client process started {late:.2f} s late", flush=True)
    done = sum(made)
    used = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    grew = [
        [a - b for a, b in zip(now, then, strict=True)]
        for now, then in zip(await counters(admin, cluster), counted, strict=True)
    ]
    requests, calls = (sum(peer[i] for peer in grew) for i in (1, 2))
    return {
        "ops_s": round(done / wall, 1),
        "cpu_ms_per_op": round(1000 * sum(used) / max(done, 1), 2),
        "busiest_peer_cores": round(max(used) / wall, 2),
        "coordinating_peers": sum(peer[0] > 0 for peer in grew),
        "peer_requests_per_op": round(requests / max(done, 1), 2),
        "calls_per_request": round(calls / max(requests, 1), 2),
        "late_start_s": round(late, 3),
    }, made


async def measure(
    root: Path,
    variant: str,
    args: argparse.Namespace,
    size: int,
    clients: Load,
) -> dict[str, object]:
    port = free_port()
    options = [f"--s3-port={port}", "--s3-reuse-port"] if variant == "shared" else ["--s3-port=0"]
    cluster = ProcessCluster(root, args.peers, "--log-level=warning", *options, fast=False)
    body = os.urandom(size)
    keys = [f"{variant}/{i:06d}" for i in range(MAX_OPS)]
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as admin:
        try:
            await cluster.start(admin)
            if args.peer_cpus:  # peer i on the i-th CPU of the list (round robin)
                cpus = sorted(cpu_list(args.peer_cpus))
                for i, peer in enumerate(cluster.peers):
                    assert peer.process is not None
                    pin(peer.process.pid, {cpus[i % len(cpus)]})
            async with admin.put(f"{cluster.urls[0]}/namespaces/{BUCKET}") as made:
                if made.status != 201:
                    raise RuntimeError(f"namespace: {made.status}")
            shared = f"http://127.0.0.1:{port}"
            s3_url = shared if variant == "shared" else await own_s3(admin, cluster)
            if variant == "shared":  # each peer listens once ready: wait for all of them
                await eventually(lambda: all_serve_s3(admin, cluster), 30, "S3 on every peer")
            puts = await asyncio.to_thread(presigned, s3_url, "put_object", keys)
            slices = [puts[i :: clients.processes] for i in range(clients.processes)]
            put, per_process = await phase(
                clients, s3_url, admin, cluster, "PUT", slices, body, args.seconds
            )
            written = [
                k for i, n in enumerate(per_process) for k in keys[i :: clients.processes][:n]
            ]
            order = random.sample(written, len(written))  # then again: GETs last the phase
            cycled = [order[i % len(order)] for i in range(MAX_OPS)]
            gets = await asyncio.to_thread(presigned, s3_url, "get_object", cycled)
            slices = [gets[i :: clients.processes] for i in range(clients.processes)]
            get, _ = await phase(clients, s3_url, admin, cluster, "GET", slices, body, args.seconds)
        finally:
            await cluster.stop()
    return {"variant": variant, "size": size, "put": put, "get": get}


async def all_serve_s3(admin: aiohttp.ClientSession, cluster: ProcessCluster) -> bool:
    """Whether every peer says it serves S3 (``/cluster``: each member's ``s3_url``)."""
    async with admin.get(f"{cluster.urls[0]}/cluster") as answer:
        view = await answer.json()
    return all(peer["s3_url"] for peer in view["peers"])


async def own_s3(admin: aiohttp.ClientSession, cluster: ProcessCluster) -> str:
    """Peer 0's own S3 URL (``/cluster``'s ``s3_url`` for it)."""
    async with admin.get(f"{cluster.urls[0]}/cluster") as answer:
        view = await answer.json()
    (mine,) = (p for p in view["peers"] if p["id"] == view["self"])
    return str(mine["s3_url"])


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| S3 port | size | PUT ops/s | GET ops/s | peers' CPU ms/op (PUT, GET) "
        "| busiest peer's cores (PUT, GET) | peers coordinating (PUT, GET) "
        "| manifest requests to peers per op (PUT, GET) | calls per request (PUT, GET) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for size in sorted({r["size"] for r in rows}):
            mine = [r for r in rows if r["variant"] == variant and r["size"] == size]
            if not mine:
                continue

            def med(phase: str, key: str, mine: list[dict[str, Any]] = mine) -> float:
                return round(statistics.median(float(r[phase][key]) for r in mine), 2)

            lines.append(
                f"| {variant} | {label(size)} | {med('put', 'ops_s')} | {med('get', 'ops_s')} "
                f"| {med('put', 'cpu_ms_per_op')}, {med('get', 'cpu_ms_per_op')} "
                f"| {med('put', 'busiest_peer_cores')}, {med('get', 'busiest_peer_cores')} "
                f"| {med('put', 'coordinating_peers')}, {med('get', 'coordinating_peers')} "
                f"| {med('put', 'peer_requests_per_op')}, {med('get', 'peer_requests_per_op')} "
                f"| {med('put', 'calls_per_request')}, {med('get', 'calls_per_request')} |"
            )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4K")
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument(
        "--client-processes", type=int, default=1, help="processes the 16 clients run in"
    )
    parser.add_argument("--peer-cpus", help="CPU list (0-7): peer i pinned to its i-th CPU")
    parser.add_argument("--client-cpus", help="CPU list (8-15) for the clients (and this)")
    args = parser.parse_args()
    if args.client_cpus:  # before the client processes start: they inherit it
        os.sched_setaffinity(0, cpu_list(args.client_cpus))
    rows: list[dict[str, object]] = []
    clients = Load(args.client_processes)
    try:
        with tempfile.TemporaryDirectory(prefix="ringstore-bench-") as tmp:
            for round_ in range(args.rounds):
                for size in map(parse_size, args.sizes.split(",")):
                    order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
                    for variant in order:
                        root = Path(tmp) / f"{variant}-{round_}-{size}"
                        row = await measure(root, variant, args, size, clients)
                        print(row, flush=True)
                        rows.append(row)
    finally:
        clients.close()
    note = (
        f"{args.peers} peers; {CLIENTS} clients in {args.client_processes} process(es); "
        f"medians over {args.rounds} round(s); --sizes {args.sizes} --seconds {args.seconds:g}"
        + (f" --peer-cpus {args.peer_cpus}" if args.peer_cpus else "")
        + (f" --client-cpus {args.client_cpus}" if args.client_cpus else "")
    )
    publish("shared_port", rows, table(rows), note=note)


if __name__ == "__main__":
    run_benchmark(main())
