"""What checking a PUT's digests costs, side by side with a PUT that asks for none.

For every round and variant, a fresh cluster of N real peer processes is started on
127.0.0.1 and one file (1 GiB by default) is PUT through peer 0 with a Content-Length:

- ``none``: no digest header (nothing is hashed: the floor);
- ``content-md5``: ``Content-MD5`` (RFC 1864);
- ``repr-sha-256``: ``Repr-Digest: sha-256=:...:`` (RFC 9530);
- ``repr-sha-512``: ``Repr-Digest: sha-512=:...:``;
- ``md5+sha-256``: both of the first two.

The body is the same pseudo-random stream each time; its digests are computed once before
the runs. Measured: the PUT's wall time (MB/s) and the CPU seconds the coordinating peer
spent on it (user + system, from /proc: hashing runs in its worker threads, so this is the
figure that shows the cost on a busy machine). Variants alternate within each round, so the
machine's noise hits all alike. Also printed: this machine's single-thread hashlib speed.
Figures are printed as a markdown table and saved as JSON + markdown under bench/results/.

    python bench/digests.py                       # 1 GiB, 2 rounds, 7 peers
    python bench/digests.py --size 256M --rounds 3 --variants none,repr-sha-256
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_benchmark
from bench.throughput import MIB, label, parse_size, session_for, start_cluster

VARIANTS = ["none", "content-md5", "repr-sha-256", "repr-sha-512", "md5+sha-256"]


def pieces(size: int) -> Iterator[bytes]:
    """The body: pseudo-random bytes, 1 MiB at a time, the same on every call."""
    base = bytearray(hashlib.blake2b(b"bench", digest_size=64).digest() * (MIB // 64))
    sent = 0
    counter = 0
    while sent < size:
        base[:8] = counter.to_bytes(8, "little")
        piece = bytes(base[: min(MIB, size - sent)])
        sent += len(piece)
        counter += 1
        yield piece


async def body(size: int) -> AsyncIterator[bytes]:
    for piece in pieces(size):
        yield piece


def digests_of(size: int) -> dict[str, bytes]:
    hashes = {name: hashlib.new(name) for name in ("md5", "sha256", "sha512")}
    for piece in pieces(size):
        for running in hashes.values():
            running.update(piece)
    return {name: running.digest() for name, running in hashes.items()}


def headers_for(variant: str, digests: dict[str, bytes]) -> dict[str, str]:
    def b64(name: str) -> str:
        return base64.b64encode(digests[name]).decode()

    md5 = {"Content-MD5": b64("md5")}
    sha256 = {"Repr-Digest": f"sha-256=:{b64('sha256')}:"}
    return {
        "none": {},
        "content-md5": md5,
        "repr-sha-256": sha256,
        "repr-sha-512": {"Repr-Digest": f"sha-512=:{b64('sha512')}:"},
        "md5+sha-256": {**md5, **sha256},
    }[variant]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def hashlib_speed() -> dict[str, float]:
    """Single-thread MB/s of each hash over 256 MiB on this machine."""
    data = os.urandom(64 * MIB)
    speeds = {}
    for name in ("md5", "sha256", "sha512"):
        running = hashlib.new(name)
        started = time.perf_counter()
        for _ in range(4):
            running.update(data)
        speeds[name] = round(4 * len(data) / (time.perf_counter() - started) / 1e6, 1)
    return speeds


async def measure(
    count: int, size: int, variant: str, headers: dict[str, str]
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ringstore-bench-") as tmp:
        cluster = await start_cluster(Path(tmp), count, MIB)
        coordinator = cluster.peers[0]
        assert coordinator.process is not None
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
            async with session_for(Path(tmp), "hmac", timeout=timeout) as session:
                url = f"{coordinator.url}/files/bench/digests.bin"
                cpu_before = cpu_seconds(coordinator.process.pid)
                started = time.perf_counter()
                async with session.put(
                    url, data=body(size), headers={"Content-Length": str(size), **headers}
                ) as response:
                    reply = await response.json()
                    if response.status != 201:
                        raise RuntimeError(f"PUT ({variant}) failed: {reply}")
                seconds = time.perf_counter() - started
                cpu = cpu_seconds(coordinator.process.pid) - cpu_before
        finally:
            await cluster.stop()
    return {
        "variant": variant,
        "peers": count,
        "size": size,
        "put_seconds": round(seconds, 3),
        "put_mb_s": round(size / seconds / 1e6, 1),
        "coordinator_cpu_s": round(cpu, 2),
    }


def summary(rows: list[dict[str, object]], variants: list[str]) -> list[dict[str, object]]:
    """Per variant: median MB/s and coordinator CPU seconds, and CPU over ``none``."""
    out = []
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        mb_s = statistics.median(float(str(r["put_mb_s"])) for r in mine)
        cpu = statistics.median(float(str(r["coordinator_cpu_s"])) for r in mine)
        out.append(
            {
                "variant": variant,
                "runs": len(mine),
                "put_mb_s": round(mb_s, 1),
                "cpu_s": round(cpu, 2),
            }
        )
    floor = next((s["cpu_s"] for s in out if s["variant"] == "none"), None)
    for row in out:
        extra = float(str(row["cpu_s"])) - float(str(floor)) if floor is not None else None
        row["extra_cpu_s"] = round(extra, 2) if extra is not None else None
    return out


def markdown(size: int, rows: list[dict[str, object]], speeds: dict[str, float]) -> str:
    lines = [
        f"PUT of {label(size)} with a Content-Length; medians of each variant's runs.",
        "",
        "| digest headers | runs | PUT MB/s | coordinator CPU s | CPU s over none |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        extra = row["extra_cpu_s"]
        lines.append(
            f"| {row['variant']} | {row['runs']} | {row['put_mb_s']} | {row['cpu_s']} "
            f"| {'' if extra is None else f'{float(str(extra)):+.2f}'} |"
        )
    shown = ", ".join(f"{name} {speed} MB/s" for name, speed in speeds.items())
    lines += ["", f"hashlib on one thread of this machine: {shown}."]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    size = parse_size(args.size)
    variants = args.variants.split(",")
    speeds = hashlib_speed()
    print(json.dumps({"hashlib_mb_s": speeds}), flush=True)
    digests = await asyncio.to_thread(digests_of, size)
    rows = []
    for _ in range(args.rounds):
        for variant in variants:  # alternating: the machine's noise hits every variant
            row = await measure(args.peers, size, variant, headers_for(variant, digests))
            print(json.dumps(row), flush=True)
            rows.append(row)
    table = markdown(size, summary(rows, variants), speeds)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    record = {"machine": machine, "hashlib_mb_s": speeds, "rows": rows}
    (args.out / f"digests-{stamp}.json").write_text(json.dumps(record, indent=2))
    (args.out / f"digests-{stamp}.md").write_text(table + "\n")
    print(f"saved to {args.out}/digests-{stamp}.{{json,md}}")


if __name__ == "__main__":
    run_benchmark(main())
