"""Soak: mixed traffic on 7 peer processes while a chaos loop SIGKILLs and restarts peers.

Concurrent clients PUT, GET and DELETE files of 1 KiB-4 MiB for ``--seconds``; every few
seconds a random peer is SIGKILLed and, a few seconds later, restarted (never more than 2
down at once). Every client owns its names, so what each name may hold is known exactly:
an acknowledged PUT or DELETE decides it, a failed one adds its outcome as possible (the
request may have committed before the error). At the end every peer is restarted, repair is
timed until every manifest has all its chunks on up peers, and every file is read back.

Reported: operations and errors by kind, acknowledged files lost and wrong bytes (both must
be 0), stale and false-404 reads, repair time after the last restart, throughput. Printed as
JSON and a markdown table and saved under bench/results/.

    python bench/soak.py                     # 60 s, 32 clients
    python bench/soak.py --seconds 30 --seed 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_benchmark
from bench.throughput import body, label, parse_size
from tests.harness import ProcessCluster
from tests.harness.access import ADMIN_HEADERS

PEERS = 7
MAX_DOWN = 2
ABSENT = None  # the state of a name with no live file
OPS = (("PUT", 0.40), ("GET", 0.45), ("DELETE", 0.15))


async def content(tag: str, size: int, digest: xxhash.xxh3_128) -> AsyncIterator[bytes]:
    """``size`` bytes unique to ``tag``: a 16-byte prefix, then bench.throughput's body."""
    prefix = xxhash.xxh3_128_digest(tag.encode())[:size]
    digest.update(prefix)
    yield prefix
    async for piece in body(size - len(prefix), digest):
        yield piece


@dataclass
class Name:
    """What one name may hold: digests (or ABSENT) that the acknowledged history allows."""

    possible: set[str | None] = field(default_factory=lambda: {ABSENT})
    written: set[str] = field(default_factory=set)  # every digest ever sent for it


@dataclass
class Stats:
    ops: Counter[str] = field(default_factory=Counter)  # "PUT 201", "GET ClientPayloadError"
    errors: Counter[str] = field(default_factory=Counter)
    wrong_bytes: list[str] = field(default_factory=list)
    stale_reads: list[str] = field(default_factory=list)  # an older version of the name
    false_404s: list[str] = field(default_factory=list)  # 404 for a name that must exist
    put_bytes: int = 0
    get_bytes: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def record(self, kind: str, outcome: str, seconds: float, ok: bool) -> None:
        self.ops[f"{kind} {outcome}"] += 1
        if not ok:
            self.errors[f"{kind} {outcome}"] += 1
        else:
            self.latencies.setdefault(kind, []).append(seconds)


class Cluster:
    """Seven peer processes (the test harness's), killed and restarted on their ports."""

    def __init__(self, root: Path, block_size: int) -> None:
        self.processes = ProcessCluster(
            root,
            PEERS,
            f"--block-size={block_size}",
            "--heartbeat-interval=0.5",
            "--peer-timeout=2",
            "--stall-timeout=5",
            "--delete-grace=1",
            "--repair-after=5",
            "--log-level=warning",
        )
        self.peers = self.processes.peers
        self.down: dict[int, float] = {}  # index -> when it was killed
        self.events: list[tuple[float, str, int]] = []

    @property
    def up(self) -> list[int]:
        return [i for i in range(PEERS) if i not in self.down]

    async def start(self, session: aiohttp.ClientSession) -> None:
        await self.processes.start(session)

    async def kill(self, index: int) -> None:
        await self.processes.crash(index)
        self.down[index] = time.monotonic()
        self.events.append((time.monotonic(), "kill", index))

    async def restart(self, session: aiohttp.ClientSession, index: int) -> None:
        await self.processes.restart(index, session)
        del self.down[index]
        self.events.append((time.monotonic(), "restart", index))

    async def view(self, session: aiohttp.ClientSession, index: int) -> dict[str, Any]:
        async with session.get(f"{self.peers[index].url}/cluster") as response:
            view: dict[str, Any] = await response.json()
            return view

    async def converged(self, session: aiohttp.ClientSession) -> bool:
        for index in range(PEERS):
            view = await self.view(session, index)
            if sum(p["state"] == "up" for p in view["peers"]) < PEERS:
                return False
        return True

    async def stop(self) -> None:
        await self.processes.stop()


async def wait_for(check: Any, timeout: float, what: str) -> float:
    """Poll ``check`` until true; return the seconds it took. Raises RuntimeError on timeout."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def chaos(
    session: aiohttp.ClientSession, cluster: Cluster, rng: random.Random, until: float, every: float
) -> None:
    """Kill a random up peer every ``every`` s (±50%); restart each after 2-8 s down."""
    restart_after: dict[int, float] = {}
    next_kill = time.monotonic() + every * rng.uniform(0.5, 1.5)
    while time.monotonic() < until:
        now = time.monotonic()
        for index, at in list(restart_after.items()):
            if now >= at:
                del restart_after[index]
                await cluster.restart(session, index)
        if now >= next_kill and len(cluster.down) < MAX_DOWN:
            victim = rng.choice(cluster.up)
            await cluster.kill(victim)
            restart_after[victim] = time.monotonic() + rng.uniform(2.0, 8.0)
            next_kill = time.monotonic() + every * rng.uniform(0.5, 1.5)
        await asyncio.sleep(0.1)


def pick_size(rng: random.Random, smallest: int, largest: int) -> int:
    """Log-uniform: as many 1-10 KiB files as 0.4-4 MiB ones."""
    return int(math.exp(rng.uniform(math.log(smallest), math.log(largest))))


async def client(
    number: int,
    session: aiohttp.ClientSession,
    cluster: Cluster,
    names: dict[str, Name],
    stats: Stats,
    args: argparse.Namespace,
    until: float,
) -> None:
    rng = random.Random(args.seed * 1000 + number)
    mine = [f"soak/c{number:02d}/f{j}" for j in range(args.names_per_client)]
    for name in mine:
        names[name] = Name()
    step = 0
    while time.monotonic() < until:
        step += 1
        name = rng.choice(mine)
        state = names[name]
        url = cluster.peers[rng.choice(cluster.up)].url
        kind = rng.choices([k for k, _ in OPS], [w for _, w in OPS])[0]
        started = time.monotonic()
        digest = xxhash.xxh3_128()
        try:
            if kind == "PUT":
                size = pick_size(rng, args.min_size, args.max_size)
                data = content(f"{name}#{step}", size, digest)
                headers = {"Content-Length": str(size)}
                async with session.put(f"{url}/files/{name}", data=data, headers=headers) as r:
                    await r.read()
                    ok = r.status == 201
                    outcome = str(r.status) + _code(r)
                sent = digest.hexdigest()
                state.written.add(sent)
                if ok:
                    state.possible = {sent}
                    stats.put_bytes += size
                else:
                    state.possible.add(sent)  # it may have committed before the error
            elif kind == "DELETE":
                async with session.delete(f"{url}/files/{name}") as r:
                    await r.read()
                    ok = r.status in (204, 404)
                    outcome = str(r.status) + _code(r)
                if r.status == 404 and ABSENT not in state.possible:
                    stats.false_404s.append(f"DELETE {name}")
                if ok:
                    state.possible = {ABSENT}
                else:
                    state.possible.add(ABSENT)
            else:
                got = xxhash.xxh3_128()
                size = 0
                async with session.get(f"{url}/files/{name}") as r:
                    outcome = str(r.status) + _code(r)
                    if r.status == 200:
                        async for piece in r.content.iter_any():
                            got.update(piece)
                            size += len(piece)
                    else:
                        await r.read()
                verdict = check(name, state, r.status, got.hexdigest(), stats, during_run=True)
                ok = r.status == 200 or verdict == "ok"
                stats.get_bytes += size
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            ok, outcome = False, type(exc).__name__
            if kind == "PUT":  # complete if the whole body went out before the error
                state.written.add(digest.hexdigest())
                state.possible.add(digest.hexdigest())
            elif kind == "DELETE":
                state.possible.add(ABSENT)
        stats.record(kind, outcome, time.monotonic() - started, ok)


def _code(response: aiohttp.ClientResponse) -> str:
    code = response.headers.get("X-Ringstore-Error")
    return f" {code}" if code else ""


def check(name: str, state: Name, status: int, digest: str, stats: Stats, during_run: bool) -> str:
    """Classify one read of ``name``: ok, stale, wrong, false_404, lost or unreadable."""
    if status == 200:
        if digest in state.possible:
            return "ok"
        if digest in state.written:
            stats.stale_reads.append(name)
            return "stale"
        stats.wrong_bytes.append(name)
        return "wrong"
    if status == 404:
        if ABSENT in state.possible:
            return "ok"
        if during_run:
            stats.false_404s.append(f"GET {name}")
        return "lost"
    return "unreadable"


async def fully_redundant(
    session: aiohttp.ClientSession, cluster: Cluster, names: dict[str, Name]
) -> bool:
    """Every name that must exist has a manifest with all k+m chunks on up peers."""
    view = await cluster.view(session, 0)
    up = {p["id"] for p in view["peers"] if p["state"] == "up"}
    for name, state in names.items():
        if ABSENT in state.possible:
            continue
        async with session.get(f"{cluster.peers[0].url}/manifests/{name}") as response:
            if response.status != 200:
                return False
            manifest = await response.json()
        holders = {c["holder"] for c in manifest["chunks"]}
        if len(manifest["chunks"]) != manifest["k"] + manifest["m"] or not holders <= up:
            return False
    return True


async def verify(
    session: aiohttp.ClientSession, cluster: Cluster, names: dict[str, Name], stats: Stats
) -> Counter[str]:
    """Read every name once (rotating over peers); a failed read is retried twice."""
    verdicts: Counter[str] = Counter()
    for i, (name, state) in enumerate(sorted(names.items())):
        for attempt in range(3):
            url = cluster.peers[(i + attempt) % PEERS].url
            got = xxhash.xxh3_128()
            try:
                async with session.get(f"{url}/files/{name}") as response:
                    status = response.status
                    if status == 200:
                        async for piece in response.content.iter_any():
                            got.update(piece)
                    else:
                        await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            verdict = check(name, state, status, got.hexdigest(), stats, during_run=False)
            if verdict in ("ok", "stale", "wrong"):
                break
            await asyncio.sleep(1.0)  # a retry a moment later, not waiting for a condition
        must_exist = ABSENT not in state.possible
        verdicts[f"{verdict} ({'live' if must_exist else 'maybe deleted'})"] += 1
    return verdicts


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def soak(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = Cluster(root, args.block_size)
    names: dict[str, Name] = {}
    stats = Stats()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, headers=ADMIN_HEADERS
    ) as session:
        try:
            await cluster.start(session)
            started = time.monotonic()
            until = started + args.seconds
            rng = random.Random(args.seed)
            await asyncio.gather(
                chaos(session, cluster, rng, until, args.chaos_every),
                *(
                    client(n, session, cluster, names, stats, args, until)
                    for n in range(args.clients)
                ),
            )
            run_seconds = time.monotonic() - started
            for index in sorted(cluster.down):
                await cluster.restart(session, index)
            last_restart = time.monotonic()
            await wait_for(lambda: cluster.converged(session), 60, "all peers up")
            try:
                await wait_for(
                    lambda: fully_redundant(session, cluster, names), args.repair_timeout, "repair"
                )
                repair_seconds: float | None = round(time.monotonic() - last_restart, 1)
            except RuntimeError:
                repair_seconds = None
            verdicts = await verify(session, cluster, names, stats)
            scrub = []
            for peer in cluster.peers:
                async with session.get(f"{peer.url}/scrub") as response:
                    scrub.append(await response.json())
            reduced = await reduced_parity(session, cluster, names)
        finally:
            await cluster.stop()
    lost = sum(
        n for v, n in verdicts.items() if v.startswith(("lost", "unreadable")) and "live" in v
    )
    kills = sum(1 for _, what, _ in cluster.events if what == "kill")
    return {
        "seconds": round(run_seconds, 1),
        "clients": args.clients,
        "peers": PEERS,
        "block_size": args.block_size,
        "sizes": f"{label(args.min_size)}-{label(args.max_size)}",
        "kills": kills,
        "operations": dict(sorted(stats.ops.items())),
        "errors": dict(sorted(stats.errors.items())),
        "ops_per_second": round(sum(stats.ops.values()) / run_seconds, 1),
        "put_mb_s": round(stats.put_bytes / run_seconds / 1e6, 1),
        "get_mb_s": round(stats.get_bytes / run_seconds / 1e6, 1),
        "latency_p50_p99_s": {
            kind: [round(percentile(v, 0.5), 3), round(percentile(v, 0.99), 3)]
            for kind, v in sorted(stats.latencies.items())
        },
        "names": len(names),
        "must_exist": sum(ABSENT not in s.possible for s in names.values()),
        "final_reads": dict(sorted(verdicts.items())),
        "acknowledged_lost": lost,
        "wrong_bytes": len(stats.wrong_bytes),
        "stale_reads": len(stats.stale_reads),
        "false_404s_during_run": len(stats.false_404s),
        "reduced_parity_files": reduced,
        "repair_seconds_after_last_restart": repair_seconds,
        "chunks_repaired": sum(s["repair"]["chunks_repaired"] for s in scrub),
        "garbage_removed": sum(s["scrub"]["garbage_removed"] for s in scrub),
    }


async def reduced_parity(
    session: aiohttp.ClientSession, cluster: Cluster, names: dict[str, Name]
) -> int:
    """Live files written while peers were down: fewer than 2 parity chunks."""
    count = 0
    for name, state in names.items():
        if ABSENT in state.possible:
            continue
        async with session.get(f"{cluster.peers[1].url}/manifests/{name}") as response:
            if response.status == 200 and (await response.json())["m"] < 2:
                count += 1
    return count


def markdown(row: dict[str, Any]) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in row["errors"].items()) or "none"
    ops = Counter[str]()
    for key, count in row["operations"].items():
        ops[key.split()[0]] += count
    latency = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in row["latency_p50_p99_s"].items())
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| run | {row['seconds']} s, {row['clients']} clients, {row['peers']} peers, "
        f"files {row['sizes']}, block {label(row['block_size'])} |",
        f"| chaos | {row['kills']} SIGKILLs (at most {MAX_DOWN} down at once) |",
        f"| operations | {', '.join(f'{k} {v}' for k, v in sorted(ops.items()))} "
        f"({row['ops_per_second']} ops/s) |",
        f"| errors | {errors} |",
        f"| throughput | PUT {row['put_mb_s']} MB/s, GET {row['get_mb_s']} MB/s acknowledged |",
        f"| latency p50/p99 (s) | {latency} |",
        f"| files at the end | {row['names']} names, {row['must_exist']} must exist; "
        f"reads: {', '.join(f'{k} {v}' for k, v in row['final_reads'].items())} |",
        f"| **acknowledged files lost** | **{row['acknowledged_lost']}** |",
        f"| **wrong bytes** | **{row['wrong_bytes']}** |",
        f"| stale reads / false 404s during the run | {row['stale_reads']} / "
        f"{row['false_404s_during_run']} |",
        f"| repair after the last restart | {row['repair_seconds_after_last_restart']} s "
        f"({row['chunks_repaired']} chunks repaired, {row['garbage_removed']} garbage chunks "
        f"collected, {row['reduced_parity_files']} live files written with m<2) |",
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--names-per-client", type=int, default=6)
    parser.add_argument("--min-size", type=parse_size, default=parse_size("1K"))
    parser.add_argument("--max-size", type=parse_size, default=parse_size("4M"))
    parser.add_argument("--block-size", type=parse_size, default=parse_size("1M"))
    parser.add_argument("--chaos-every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--repair-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringstore-soak-") as tmp:
        row = await soak(args, Path(tmp))
    row["machine"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(row, indent=2))
    table = markdown(row)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"soak-{stamp}.json").write_text(json.dumps(row, indent=2))
    (args.out / f"soak-{stamp}.md").write_text(table + "\n")
    print(f"saved to {args.out}/soak-{stamp}.{{json,md}}")
    if row["acknowledged_lost"] or row["wrong_bytes"]:
        raise SystemExit(1)


if __name__ == "__main__":
    run_benchmark(main())
