"""PUT/GET throughput and peak memory of a local cluster of real peer processes.

For every variant (block size) and file size, a fresh cluster of N peers is started on
127.0.0.1, one file is PUT through peer 0 and read back through peer 1, the bytes are checked
(xxh3-128 of what was sent and received, the etag against the MD5 or xxh3 the client
computed), and each peer's peak RSS (VmHWM) and the PUT coordinator's CPU seconds are read.
Variants run in the same invocation so they are compared on the same noisy machine. Figures
are printed as a markdown table and saved as JSON + markdown under bench/results/.

    python bench/throughput.py                      # 100 MiB and 1 GiB, 1 MiB blocks
    python bench/throughput.py --sizes 100M,2G --block-sizes 256K,1M,4M
    python bench/throughput.py --security off,hmac,tls --small 400   # what security costs

``--security`` compares peer authentication off (``--peer-auth=off``, for this measurement
only), on (the default: HMAC-signed peer calls) and on with TLS, side by side; the variant
``xxh3`` is the default (HMAC) with ``--etag=xxh3``: what MD5 etags cost. ``--small N``
adds a small-file run per variant: N files of 4 KiB PUT, then GET, 8 at a time (files/s).
``--coordinator-cpus 0 0-1`` runs each variant once per CPU list, the two coordinating peers
(peer 0 for the PUT, peer 1 for the GET; every thread) pinned to those CPUs: how one big
transfer scales with the cores its coordinator is given. ``--buffer-memory 64M,16M`` runs
each variant once per peer buffer budget (``--buffer-memory``): what the budget's read-ahead
and queued blocks buy in MB/s, and cost in peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import cpu_list, pin, run_benchmark
from node.model.layout import DEFAULT_BLOCK_SIZE
from node.process.tls import client_context
from tests.harness import ProcessCluster
from tests.harness.access import ADMIN_HEADERS

MIB = 1 << 20
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    if text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def label(size: int) -> str:
    for unit in ("G", "M", "K"):
        if size >= UNITS[unit] and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]} {unit}iB"
    return f"{size} B"


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


async def body(size: int, digests: list[Any]) -> AsyncIterator[bytes]:
    """Pseudo-random bytes, 1 MiB at a time, hashed by every one of ``digests`` as they are
    produced."""
    base = bytearray(xxhash.xxh3_128_digest(b"bench") * (MIB // 16))
    sent = 0
    counter = 0
    while sent < size:
        base[:8] = counter.to_bytes(8, "little")
        piece = bytes(base[: min(MIB, size - sent)])
        for digest in digests:
            digest.update(piece)
        sent += len(piece)
        counter += 1
        yield piece


def session_for(
    root: Path, security: str, timeout: aiohttp.ClientTimeout | None = None
) -> aiohttp.ClientSession:
    """A client session that trusts the cluster's CA under TLS."""
    context: ssl.SSLContext | bool = True
    if security == "tls":
        context = client_context(root / "tls" / "ca.pem")  # what the peers trust, and only it
    connector = aiohttp.TCPConnector(ssl=context)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout or aiohttp.ClientTimeout(total=300),
        headers=ADMIN_HEADERS,  # the admin key every harness cluster stores
    )


async def start_cluster(
    root: Path, count: int, block_size: int, security: str = "hmac", buffers: int | None = None
) -> ProcessCluster:
    """``count`` peers with production timeouts (and ``--buffer-memory=buffers`` when given),
    started and converged (stop it after)."""
    extra = {"off": ["--peer-auth=off"], "xxh3": ["--etag=xxh3"]}.get(security, [])
    if buffers is not None:
        extra.append(f"--buffer-memory={buffers}")
    cluster = ProcessCluster(
        root,
        count,
        f"--block-size={block_size}",
        "--heartbeat-interval=0.5",
        "--peer-timeout=10",
        "--stall-timeout=30",
        "--delete-grace=30",
        "--log-level=warning",
        *extra,
        tls_dir=root / "tls" if security == "tls" else None,
    )
    try:
        async with session_for(root, security) as session:
            await cluster.start(session)
    except BaseException:
        await cluster.stop()
        raise
    return cluster


async def measure_small(count: int, security: str, files: int) -> dict[str, object]:
    """PUT then GET ``files`` files of 4 KiB, 8 at a time; files per second each way."""
    data = os.urandom(4096)
    with tempfile.TemporaryDirectory(prefix="ringstore-bench-") as tmp:
        cluster = await start_cluster(Path(tmp), count, 1 << 20, security)
        urls = cluster.urls
        try:
            async with session_for(Path(tmp), security) as session:
                gate = asyncio.Semaphore(8)

                async def one(method: str, i: int) -> None:
                    url = f"{urls[i % len(urls)]}/files/small/{i:06d}"
                    async with (
                        gate,
                        session.request(
                            method, url, data=data if method == "PUT" else None
                        ) as response,
                    ):
                        got = await response.read()
                        if response.status not in (200, 201) or (method == "GET" and got != data):
                            raise RuntimeError(f"{method} {url}: {response.status}")

                seconds = {}
                for method in ("PUT", "GET"):
                    started = time.perf_counter()
                    await asyncio.gather(*(one(method, i) for i in range(files)))
                    seconds[method] = time.perf_counter() - started
        finally:
            await cluster.stop()
    return {
        "security": security,
        "peers": count,
        "small_files": files,
        "put_files_s": round(files / seconds["PUT"], 1),
        "get_files_s": round(files / seconds["GET"], 1),
    }


async def measure(
    count: int,
    block_size: int,
    size: int,
    security: str = "hmac",
    cpus: str | None = None,
    buffers: int | None = None,
) -> dict[str, object]:
    """PUT one file of ``size`` bytes through peer 0 and GET it through peer 1 (both pinned
    to the CPU list ``cpus`` when given; every peer's ``--buffer-memory`` ``buffers`` bytes
    when given): MB/s, the coordinators' CPU and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="ringstore-bench-") as tmp:
        cluster = await start_cluster(Path(tmp), count, block_size, security, buffers)
        peers = cluster.peers
        try:
            if cpus is not None:
                for peer in peers[:2]:
                    assert peer.process is not None
                    pin(peer.process.pid, cpu_list(cpus))
            timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
            async with session_for(Path(tmp), security, timeout=timeout) as session:
                sent, sent_md5 = xxhash.xxh3_128(), hashlib.md5()
                url = f"{peers[0].url}/files/bench/bench.bin"
                coordinator = psutil.Process(cluster.peers[0].process.pid)
                cpu_before = sum(coordinator.cpu_times()[:2])
                started = time.perf_counter()
                async with session.put(
                    url, data=body(size, [sent, sent_md5]), headers={"Content-Length": str(size)}
                ) as response:
                    reply = await response.json()
                    if response.status != 201:
                        raise RuntimeError(f"PUT failed: {reply}")
                put_seconds = time.perf_counter() - started
                put_cpu = sum(coordinator.cpu_times()[:2]) - cpu_before

                received = xxhash.xxh3_128()
                got = 0
                reader = psutil.Process(cluster.peers[1].process.pid)
                cpu_before = sum(reader.cpu_times()[:2])
                started = time.perf_counter()
                async with session.get(f"{peers[1].url}/files/bench/bench.bin") as response:
                    async for piece in response.content.iter_any():
                        received.update(piece)
                        got += len(piece)
                get_seconds = time.perf_counter() - started
                get_cpu = sum(reader.cpu_times()[:2]) - cpu_before
            etag = f"xxh3-{sent.hexdigest()}" if security == "xxh3" else sent_md5.hexdigest()
            if got != size or received.hexdigest() != sent.hexdigest():
                raise RuntimeError("GET returned different bytes")
            if reply["etag"] != etag:
                raise RuntimeError(f"etag {reply['etag']}, expected {etag}")
            rss = [peak_rss_mib(p.process.pid) for p in peers if p.process]
        finally:
            await cluster.stop()
    variant = security if cpus is None else f"{security}, coordinators on CPUs {cpus}"
    if buffers is not None:
        variant += f", --buffer-memory {label(buffers)}"
    return {
        "security": variant,
        "peers": count,
        "block_size": block_size,
        "size": size,
        "chunks": reply["chunks"],
        "degraded": reply["degraded"],
        "put_seconds": round(put_seconds, 3),
        "get_seconds": round(get_seconds, 3),
        "put_mb_s": round(size / put_seconds / 1e6, 1),
        "put_coordinator_cpu_s": round(put_cpu, 2),
        "get_mb_s": round(size / get_seconds / 1e6, 1),
        "get_coordinator_cpu_s": round(get_cpu, 2),
        "put_coordinator_cores": round(put_cpu / put_seconds, 2),
        "get_coordinator_cores": round(get_cpu / get_seconds, 2),
        "peak_rss_mib": [round(r, 1) for r in rss],
        "put_coordinator_rss_mib": round(rss[0], 1),
        "get_coordinator_rss_mib": round(rss[1], 1),
    }


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| variant | block | file | PUT MB/s | PUT coord. CPU s | GET MB/s | peak RSS PUT coord. "
        "| peak RSS GET coord. | peak RSS max / min (MiB) | coord. cores used (PUT, GET) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "small_files" in row:
            lines.append(
                f"| {row['security']} | | {row['small_files']} files of 4 KiB, 8 at a time "
                f"| {row['put_files_s']} files/s | | {row['get_files_s']} files/s | | | | |"
            )
            continue
        rss = row["peak_rss_mib"]
        assert isinstance(rss, list)
        lines.append(
            f"| {row['security']} | {label(int(str(row['block_size'])))} "
            f"| {label(int(str(row['size'])))} "
            f"| {row['put_mb_s']} | {row['put_coordinator_cpu_s']} | {row['get_mb_s']} "
            f"| {row['put_coordinator_rss_mib']} "
            f"| {row['get_coordinator_rss_mib']} | {max(rss)} / {min(rss)} "
            f"| {row['put_coordinator_cores']}, {row['get_coordinator_cores']} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100M,1G")
    parser.add_argument("--block-sizes", default=f"{DEFAULT_BLOCK_SIZE}")
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--security", default="hmac", help="off,hmac,tls,xxh3: variants to compare")
    parser.add_argument("--small", type=int, default=0, help="small files per variant (0: none)")
    parser.add_argument(
        "--coordinator-cpus",
        nargs="+",
        metavar="CPUS",
        help="CPU lists (0 0-1): each variant with its coordinators pinned to each",
    )
    parser.add_argument(
        "--buffer-memory", help="peer buffer budgets (64M,16M): each variant with each"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    budgets = (
        [parse_size(b) for b in args.buffer_memory.split(",")] if args.buffer_memory else [None]
    )
    rows = []
    variants = args.security.split(",")
    for block_size in map(parse_size, args.block_sizes.split(",")):
        for size in map(parse_size, args.sizes.split(",")):
            for security in variants:  # side by side, so the machine's noise hits all alike
                for cpus in args.coordinator_cpus or [None]:
                    for buffers in budgets:
                        row = await measure(args.peers, block_size, size, security, cpus, buffers)
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    if args.small:
        for security in variants:
            row = await measure_small(args.peers, security, args.small)
            print(json.dumps(row), flush=True)
            rows.append(row)
    table = markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    (args.out / f"throughput-{stamp}.json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=2)
    )
    (args.out / f"throughput-{stamp}.md").write_text(table + "\n")
    print(f"saved to {args.out}/throughput-{stamp}.{{json,md}}")


if __name__ == "__main__":
    run_benchmark(main())
