"""Small files through one coordinating peer: ops/s, server CPU per op, connections, disk.

For each variant (a source tree: ``--trees base=/tmp/base,new=.``) and round, variants
alternating, a fresh cluster of PEERS real peer processes (production settings) is started
on 127.0.0.1 from that tree. 16 clients (one keep-alive connection each) PUT files of SIZE
through peer 0 for SECONDS (new names, at most 50,000; with ``--conditional`` each
``If-None-Match: *``), then GET random names of that phase for SECONDS, every body compared.
Measured per phase: ops/s, the CPU seconds of all peers per op (user + system from /proc;
the table shows the system part in brackets) and of the 16 clients (this process: the load
generator shares the machine's cores with the peers), the connections to or from the peers
closed per op (sockets in TIME_WAIT before and after: a pooled connection is never closed),
and from the coordinator's metrics the manifest requests it sent to other peers per op and the
calls each carried (batching, with hedged reads: those that asked a third replica). After
the PUT phase: disk allocated (st_blocks) and files on disk per object stored, and over
the logical bytes, and the same less the manifest logs' records no longer current (what
compaction of their segments reclaims; a log keeps up to ~8 MiB of them).
Then IDLE seconds with no requests: the peers' CPU, in cores.

A variant whose peers pack (``packed=.@--pack-after=1@--anti-entropy-interval=2``) waits
after its PUT phase until its peers pack no more files (their
``ringstore_packed_files_total``; the share packed is in the JSON), then measures the disk:
then restarts its peers without those two options and GETs for SECONDS unmeasured (as a
fresh cluster's PUT phase does, this lets the peers' placement history settle), so that
its GET phase reads packed files without a walk over every file every 2 s (one measured up
to 70% of a storage peer's CPU there). (Its walks run during the PUT phase; its idle CPU
is measured without them; its peak RSS is the larger of the two clusters'.)

``--coordinator-cpus 0 0-1`` runs each variant once per CPU list, peer 0 (the coordinator,
every thread) pinned to those CPUs and the other peers and the clients free: how a peer's
throughput scales with the cores it is given. Each phase also says how many cores the
coordinator used (its CPU seconds over the phase's wall time).

``--memory-limits none,1536`` runs each variant once per limit, the peers in a memory
cgroup of that many MiB (``bench.report.memory_limited``; root): on a VM whose free memory
goes back to the host, a PUT phase writing into fresh page cache measures ~5 ms of system
CPU per MiB written that a server whose memory is full (reusing its own pages) does not
pay (``bench/page_cache.py``).

``--get-range 4K`` has each GET ask for 4 KiB at a random offset of its file (a ranged
GET, ``206``), as readers of large files that seek do (video, columnar formats, s3fs).

``--profile DIR`` samples peer 0 (the coordinator) and peer 1 (a storage peer) in each
phase: py-spy's raw collapsed stacks by default (summarise them with ``python
bench/stacks.py DIR/*.txt``), ``--profiler py-spy-gil`` only while holding the GIL (which
leaves out I/O and lock waits that py-spy otherwise counts as busy), ``--profiler perf``
CPU time only, native code and the kernel included (``bench.report.profiled`` says what
each misleads on).

Figures are printed as a markdown table and saved as JSON + markdown under bench/results/.

    python bench/small.py                                 # this tree, 4 KiB, 15 s phases
    git worktree add /tmp/base HEAD~3
    python bench/small.py --trees base=/tmp/base,new=. --rounds 2 --sizes 4K,1M
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import (
    PROFILERS,
    cpu_list,
    cpu_seconds,
    cpu_times,
    memory_limited,
    pin,
    profiled,
    publish,
    rss_mib,
    run_benchmark,
)
from bench.throughput import label, parse_size
from tests.harness import ProcessCluster
from tests.harness.access import ADMIN_HEADERS

CLIENTS = 16
MAX_OPS = 50_000
HEDGED = "ringstore_manifest_hedged_reads_total"  # reads that asked a third replica
BATCHES = "ringstore_manifest_batches_total"  # the coordinator's manifest requests to peers
BATCHED = "ringstore_manifest_batched_calls_total"  # the calls they carried
PACKED = "ringstore_packed_files_total"
PACK_WAIT = 300.0  # seconds a packing variant waits for its files to be packed
PACK_SETTLED = 8.0  # seconds without one more file packed: packing is over
PACKING = ("--pack-after", "--anti-entropy-interval")  # options of a variant that packs


def closed_connections(ports: set[int]) -> int:
    """TCP sockets to or from ``ports`` now in TIME_WAIT (state 06 in /proc/net/tcp): each
    one a connection closed within the last minute."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ends = {int(fields[1].rpartition(":")[2], 16), int(fields[2].rpartition(":")[2], 16)}
        count += fields[3] == "06" and bool(ends & ports)
    return count


def disk_usage(root: Path) -> tuple[int, int]:
    """``(allocated bytes, files)`` under ``root``."""
    allocated = files = 0
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                allocated += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except FileNotFoundError:
                continue
            files += 1
    return allocated, files


class Cluster:
    """A process cluster started from one source tree (the peers run ``python -m node``
    in its directory)."""

    def __init__(self, tree: Path, root: Path, peers: int, *options: str) -> None:
        self.tree, self.root = tree, root
        here = Path.cwd()
        os.chdir(tree)  # the child processes import node/ from here
        try:
            self.processes = ProcessCluster(
                root, peers, "--log-level=warning", *options, fast=False
            )
        finally:
            os.chdir(here)

    async def start(self, session: aiohttp.ClientSession) -> None:
        here = Path.cwd()
        os.chdir(self.tree)
        try:
            await self.processes.start(session)
        finally:
            os.chdir(here)

    async def restart_without(self, session: aiohttp.ClientSession, *options: str) -> None:
        """Start the peers again without the ``--name=value`` options named."""
        here = Path.cwd()
        os.chdir(self.tree)
        try:
            await self.processes.restart_without(session, *options)
        finally:
            os.chdir(here)

    def cpu(self) -> float:
        return sum(self.cpu_times())

    def cpu_times(self) -> tuple[float, float]:
        """User and system CPU seconds of all peers so far."""
        times = [cpu_times(pid) for pid in self.pids]
        return sum(t[0] for t in times), sum(t[1] for t in times)

    @property
    def pids(self) -> list[int]:
        return [p.process.pid for p in self.processes.peers if p.process]

    @property
    def coordinator(self) -> int:
        """Peer 0's pid: every client request goes to it."""
        process = self.processes.peers[0].process
        assert process is not None
        return process.pid

    def peak_rss(self) -> float:
        peaks = [rss_mib(pid, "VmHWM") for pid in self.pids]
        return max(peaks)


async def phase(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    method: str,
    names: list[str],
    size: int,
    seconds: float,
    profile: Path | None = None,
    conditional: bool = False,
    profiler: str = "py-spy",
    get_range: int = 0,
) -> dict[str, float]:
    """Run one phase; PUT appends the names it stored to ``names`` (``conditional``: each
    with ``If-None-Match: *``, a create-only write; ``profiler``: as ``profiled``'s;
    ``get_range``: each GET asks for that many bytes at a random offset, not the file)."""
    url = cluster.processes.peers[0].url
    create_only = {"If-None-Match": "*"} if conditional else {}
    deadline = time.monotonic() + seconds
    done = 0
    stored = list(names)

    async def client(number: int) -> None:
        nonlocal done
        rng = random.Random(number)
        while time.monotonic() < deadline and done < MAX_OPS:
            if method == "PUT":
                name = f"small/c{number}-{done}"
                data = name.encode().ljust(size, b".")
                put = session.put(f"{url}/files/{name}", data=data, headers=create_only)
                async with put as response:
                    await response.read()
                    if response.status != 201:
                        raise RuntimeError(f"PUT {name}: {response.status}")
                names.append(name)
            else:
                name = rng.choice(stored)
                first, past, status = 0, size, 200
                if get_range:
                    first = rng.randrange(size - get_range + 1)
                    past, status = first + get_range, 206
                ranged = {"Range": f"bytes={first}-{past - 1}"} if get_range else {}
                async with session.get(f"{url}/files/{name}", headers=ranged) as response:
                    body = await response.read()
                    expected = name.encode().ljust(size, b".")[first:past]
                    if response.status != status or body != expected:
                        raise RuntimeError(f"GET {name}: {response.status}")
            done += 1

    # peer 0 coordinates every request; peer 1 is one of its storage peers
    profiled_pids = [p.process.pid for p in cluster.processes.peers[:2]]  # type: ignore[union-attr]
    ports = {int(p.url.rpartition(":")[2]) for p in cluster.processes.peers}
    before = {m: await counter(session, url, m) for m in (HEDGED, BATCHES, BATCHED)}
    async with profiled(profiled_pids, profile, f"{method.lower()}-{size}", profiler):
        closed, times, started = closed_connections(ports), cluster.cpu_times(), time.monotonic()
        coordinating, clients = cpu_seconds(cluster.coordinator), sum(os.times()[:2])
        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        wall = time.monotonic() - started
        clients = sum(os.times()[:2]) - clients
        user, system = (b - a for a, b in zip(times, cluster.cpu_times(), strict=True))
        closed = closed_connections(ports) - closed
        coordinating = cpu_seconds(cluster.coordinator) - coordinating
    figures = {
        "ops_s": round(done / wall, 1),
        "cpu_ms_per_op": round(1000 * (user + system) / max(done, 1), 2),
        "system_cpu_ms_per_op": round(1000 * system / max(done, 1), 2),
        "coordinator_cores": round(coordinating / wall, 2),
        "client_cpu_ms_per_op": round(1000 * clients / max(done, 1), 2),
        "closed_connections_per_op": round(closed / max(done, 1), 2),
    }
    after = {m: await counter(session, url, m) for m in (HEDGED, BATCHES, BATCHED)}
    grew = {m: after[m] - was for m, was in before.items() if None not in (was, after[m])}
    if HEDGED in grew:  # (a tree from before hedged reads has none)
        figures["hedged_reads_per_op"] = round(grew[HEDGED] / max(done, 1), 3)
    if BATCHES in grew and BATCHED in grew:  # nor before batches
        figures["peer_requests_per_op"] = round(grew[BATCHES] / max(done, 1), 2)
        figures["calls_per_request"] = round(grew[BATCHED] / max(grew[BATCHES], 1), 2)
    return figures


async def summed(session: aiohttp.ClientSession, cluster: Cluster, metric: str) -> float:
    """``metric``'s value summed over every peer (0 where a peer has none)."""
    values = [await counter(session, p.url, metric) for p in cluster.processes.peers]
    return sum(v or 0.0 for v in values)


async def wait_packed(session: aiohttp.ClientSession, cluster: Cluster, files: int) -> float:
    """The share of ``files`` the peers have packed once that has not grown for
    ``PACK_SETTLED`` seconds (a primary leaves fewer than ``MIN_PACK_BYTES`` of files for
    later: the last few written); raises if it is under half after ``PACK_WAIT``."""
    started = last_change = time.monotonic()
    packed = -1.0
    while time.monotonic() - last_change < PACK_SETTLED:
        now = await summed(session, cluster, PACKED)
        if now != packed:
            packed, last_change = now, time.monotonic()
        if time.monotonic() - started > PACK_WAIT:
            break
        await asyncio.sleep(0.5)  # polled: packing ends when the peers' walks get to it
    if packed < files / 2:
        raise RuntimeError(f"{packed:.0f} of {files} files packed in {PACK_WAIT:.0f} s")
    return packed / files


async def counter(session: aiohttp.ClientSession, url: str, metric: str) -> float | None:
    """A counter's value on the peer at ``url`` (its ``/metrics``), or None if it has none."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    return None


async def run(
    tree: Path,
    variant: str,
    size: int,
    args: argparse.Namespace,
    cpus: str | None = None,
    options: Sequence[str] = (),
    memory: int | None = None,
) -> dict[str, object]:
    """One round of ``variant`` (the tree at ``tree``, its peers started with ``options``)
    with files of ``size`` bytes; the coordinator pinned to the CPU list ``cpus`` when
    given, the peers' memory limited to ``memory`` MiB when given (``memory_limited``)."""
    with tempfile.TemporaryDirectory(prefix="ringstore-small-") as tmp:
        cluster = Cluster(tree, Path(tmp), args.peers, *options)
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=ADMIN_HEADERS
        ) as session:
            limited = contextlib.ExitStack()
            try:
                await cluster.start(session)
                group = limited.enter_context(memory_limited(cluster.pids, memory))

                def confine() -> None:  # (again once the peers are restarted)
                    if cpus is not None:
                        pin(cluster.coordinator, cpu_list(cpus))
                    if group is not None:
                        for pid in cluster.pids:
                            group.add(pid)

                confine()
                empty = disk_usage(Path(tmp))
                names: list[str] = []
                put = await phase(
                    session,
                    cluster,
                    "PUT",
                    names,
                    size,
                    args.seconds,
                    args.profile,
                    args.conditional,
                    args.profiler,
                )
                packing = any(o.startswith(PACKING[0]) for o in options)
                share = await wait_packed(session, cluster, len(names)) if packing else 0.0
                allocated, files = (
                    a - b for a, b in zip(disk_usage(Path(tmp)), empty, strict=True)
                )
                dead = await summed(session, cluster, "ringstore_manifest_log_bytes")
                dead -= await summed(session, cluster, "ringstore_manifest_log_live_bytes")
                rss = cluster.peak_rss()
                if packing:  # read with the peers' own walks, not one every 2 s
                    await cluster.restart_without(session, *PACKING)
                    confine()
                    await phase(session, cluster, "GET", names, size, args.seconds)  # warm-up
                get = await phase(
                    session,
                    cluster,
                    "GET",
                    names,
                    size,
                    args.seconds,
                    args.profile,
                    profiler=args.profiler,
                    get_range=args.get_range,
                )
                cpu, started = cluster.cpu(), time.monotonic()
                await asyncio.sleep(args.idle)  # idle: nothing to wait for, a measured span
                idle = (cluster.cpu() - cpu) / (time.monotonic() - started)
                rss = max(rss, cluster.peak_rss())
            finally:
                await cluster.processes.stop()
                limited.close()
    stored = len(names)
    if cpus is not None:
        variant += f", coordinator on CPUs {cpus}"
    if memory is not None:
        variant += f", peers' memory limited to {memory} MiB"
    if args.get_range:
        variant += f", GETs of {label(args.get_range)} ranges"
    return {
        "variant": variant,
        "size": size,
        "objects": stored,
        "put": put,
        "get": get,
        "disk_per_logical": round(allocated / (stored * size), 2),
        "disk_per_logical_compacted": round((allocated - dead) / (stored * size), 2),
        "packed_share": round(share, 4),
        "files_per_object": round(files / stored, 2),
        "idle_cores": round(idle, 3),
        "idle_cores_per_peer": round(idle / args.peers, 4),
        "peak_rss_mib": round(rss, 1),
    }


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| variant | size | PUT ops/s | PUT CPU ms/op | PUT conns closed/op | GET ops/s "
        "| GET CPU ms/op | GET conns closed/op | disk ÷ logical (logs compacted) "
        "| files/object "
        "| idle cores (all peers) | peak RSS MiB | hedged reads/op (PUT, GET) "
        "| coordinator cores used (PUT, GET) | manifest requests to peers per op (PUT, GET) "
        "| calls per request (PUT, GET) | client CPU ms/op (PUT, GET) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(str(r["variant"]), int(str(r["size"]))) for r in rows}, key=lambda k: k[1])
    for variant, size in keys:
        mine = [r for r in rows if (r["variant"], r["size"]) == (variant, size)]

        def median(*path: str, mine: list[dict[str, object]] = mine) -> float:
            values = []
            for row in mine:
                value: object = row
                for step in path:
                    assert isinstance(value, dict)
                    value = value[step]
                values.append(float(str(value)))
            return round(statistics.median(values), 2)

        lines.append(
            f"| {variant} | {label(size)} | {median('put', 'ops_s')} "
            f"| {median('put', 'cpu_ms_per_op')}{system(mine, 'put')} "
            f"| {median('put', 'closed_connections_per_op')} "
            f"| {median('get', 'ops_s')} | {median('get', 'cpu_ms_per_op')}{system(mine, 'get')} "
            f"| {median('get', 'closed_connections_per_op')} | {median('disk_per_logical')} "
            f"({median('disk_per_logical_compacted')}) "
            f"| {median('files_per_object')} | {median('idle_cores')} | {median('peak_rss_mib')} "
            f"| {both_phases(mine, 'hedged_reads_per_op')} "
            f"| {both_phases(mine, 'coordinator_cores')} "
            f"| {both_phases(mine, 'peer_requests_per_op')} "
            f"| {both_phases(mine, 'calls_per_request')} "
            f"| {both_phases(mine, 'client_cpu_ms_per_op')} |"
        )
    return "\n".join(lines)


def system(rows: list[dict[str, Any]], method: str) -> str:
    """`` (sys N)``: the median system CPU ms per op of ``method``'s phase, where counted."""
    values = [row[method].get("system_cpu_ms_per_op") for row in rows]
    if not values or None in values:
        return ""
    return f" (sys {statistics.median(values):g})"


def both_phases(rows: list[dict[str, Any]], key: str) -> str:
    """The medians of a phase figure ``key`` in PUT and in GET, or "-" for rows without it
    (a tree from before it was counted)."""
    values = [[row[method].get(key) for row in rows] for method in ("put", "get")]
    if None in values[0] + values[1] or not values[0]:
        return "-"
    return ", ".join(f"{statistics.median(v):g}" for v in values)


def variants(spec: str) -> list[tuple[str, Path, list[str]]]:
    """``name=path[@--option...],...``: each variant's name, source tree and peer options
    (``new=.@--buffer-memory=0`` runs this tree's peers with that option)."""
    found = []
    for item in spec.split(","):
        name, _, rest = item.partition("=")
        path, *options = rest.split("@")
        found.append((name, Path.cwd() / path, options))
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default="this=.", help="name=path,... source trees")
    parser.add_argument("--sizes", default="4K")
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--idle", type=float, default=10.0, help="idle span measured")
    parser.add_argument("--profile", type=Path, help="samples of peers 0 and 1 go here")
    parser.add_argument(
        "--profiler", choices=PROFILERS, default="py-spy", help="what samples (--profile)"
    )
    parser.add_argument(
        "--conditional", action="store_true", help="PUT with If-None-Match: * (create-only)"
    )
    parser.add_argument(
        "--get-range",
        type=parse_size,
        default=0,
        metavar="BYTES",
        help="each GET asks for BYTES at a random offset of its file (a Range), not all of it",
    )
    parser.add_argument(
        "--coordinator-cpus",
        nargs="+",
        metavar="CPUS",
        help="CPU lists (0 0-1): each variant with the coordinator pinned to each",
    )
    parser.add_argument(
        "--memory-limits",
        help="MiB,... (none: no limit): each variant with its peers' memory, page cache"
        " included, limited to each (root; see bench/page_cache.py for why)",
    )
    args = parser.parse_args()
    trees = variants(args.trees)
    limits = [
        None if limit == "none" else int(limit)
        for limit in (args.memory_limits or "none").split(",")
    ]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for _ in range(args.rounds):
        for size in map(parse_size, args.sizes.split(",")):
            for variant, tree, options in trees:  # alternating: noise hits all alike
                for cpus in args.coordinator_cpus or [None]:
                    for memory in limits:
                        row = await run(tree, variant, size, args, cpus, options, memory)
                        print(row, flush=True)
                        rows.append(row)
    text = table(rows)
    publish("small", rows, text, f"medians over {args.rounds} round(s)")


if __name__ == "__main__":
    run_benchmark(main())
