"""What an idle peer costs as the number of files it holds grows.

For each count N (``--objects 0,10000,100000``) a fresh cluster of 3 peer processes is
started on 127.0.0.1 from this tree, every peer's data directory first filled with the
manifest replicas of N small files (4 KiB inline: with 3 peers each peer holds every
name's replica), synthesised on disk as a peer writes them. Measured per peer: seconds
from start until its first rebalance pass (over every manifest, as after any start) is
done (and until every peer answers: a peer answers once it has read its manifest log),
resident memory then, its CPU over SECONDS of idleness after that, in cores (with the
rebalance passes any peer made meanwhile: a pass there, after a liveness change, explains
idle CPU), and, every peer stopped and started again, the seconds until every peer answers
(a restart: closed segments of the log are read from their hint files, written at the
first start).

``--lost-member`` kills the last peer once the cluster has settled (by its pid; never
restarted: a member lost for good, which stays a member) with the peers started with
``--repair-after=1``, waits until the others have swept for repair twice since (the
first sweep after a loss looks for chunks on it), and measures the survivors' idle CPU
then: what a cluster pays, for as long as it runs, for a member it will never see again
(no restart measured); and what the loss cost until then: the most CPU seconds a
survivor spent from the kill, and the names the survivors' sweeps read (a quorum read
each).

Figures are printed as a markdown table and saved as JSON + markdown under bench/results/.

    python bench/idle.py --objects 0,10000,100000 --seconds 30
    python bench/idle.py --objects 100000 --seconds 90 --lost-member
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import cpu_seconds, publish, rss_mib, run_benchmark
from node.disk.manifest_log import KEEP, LogRecord, ManifestLog, SegmentIO, frame
from node.disk.manifest_store import SEGMENT_BYTES
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.version import Version
from tests.harness import ProcessCluster
from tests.harness.access import ADMIN_HEADERS
from tests.harness.processes import peer_id_of

PEERS = 3


def synthesise(data_dirs: list[Path], count: int) -> None:
    """``count`` inline 4 KiB files' manifests in every data directory's manifest log, in a
    shuffled order (appended in batches of 4096, as a peer's group commit would)."""
    body = bytes(4096)
    now_ms = int(time.time() * 1000) - 3_600_000
    logs = []
    for data_dir in data_dirs:
        manifest_log = ManifestLog(data_dir / "manifests" / "log", SEGMENT_BYTES, SegmentIO())
        for _ in manifest_log.replay():
            pass
        logs.append(manifest_log)
    order = list(range(count))  # names arrive in no order (a sorted log hid a quadratic load)
    random.Random(count).shuffle(order)
    for start in range(0, count, 4096):
        frames = []
        for written, number in enumerate(order[start : start + 4096], start):
            name = f"idle/{number:08d}"
            version = Version(now_ms + written, 0, "bench")
            manifest = Manifest(name, version, Layout(4096, 5, 2), "0" * 32, inline=body)
            frames.append(frame(LogRecord(KEEP, name, manifest.to_bytes())))
        for manifest_log in logs:
            manifest_log.append(frames)
    for manifest_log in logs:
        manifest_log.close()


async def rebalancing(session: aiohttp.ClientSession, url: str) -> list[dict[str, int]]:
    """Every peer's rebalancing progress as ``url`` last heard it."""
    async with session.get(f"{url}/cluster") as response:
        view = await response.json()
    return [p.get("rebalance", {}) for p in view["peers"]]


def all_settled(progress: list[dict[str, int]]) -> bool:
    """Whether every peer finished a rebalance pass and has no name pending (a peer
    reports nothing pending before its first pass too)."""
    return len(progress) == PEERS and all(
        int(p.get("passes", 0)) >= 1 and int(p.get("pending", 0)) == 0 for p in progress
    )


def passes(progress: list[dict[str, int]]) -> int:
    """Rebalance passes done, all peers together."""
    return sum(int(p.get("passes", 0)) for p in progress)


async def sweeps(session: aiohttp.ClientSession, cluster: ProcessCluster) -> list[int]:
    """Repair sweeps finished, per running peer."""
    return [int(s["repair"]["sweeps"]) for s in await cluster.scrub_stats(session)]


async def checked_names(session: aiohttp.ClientSession, cluster: ProcessCluster) -> int:
    """Names the running peers' repair sweeps read (a quorum read each), all together."""
    return sum(int(s["repair"]["names_checked"]) for s in await cluster.scrub_stats(session))


async def lose_member(session: aiohttp.ClientSession, cluster: ProcessCluster) -> dict[str, float]:
    """Kill the last peer for good; return once the others saw it down and swept twice,
    with what that cost them: CPU seconds per surviving peer from the kill, and the names
    their sweeps read."""
    lost = cluster.peers[-1]
    lost_id = peer_id_of(lost.data_dir)
    survivors = [p.process.pid for p in cluster.peers[:-1] if p.process]
    cpu, checked = [cpu_seconds(pid) for pid in survivors], await checked_names(session, cluster)
    await cluster.crash(len(cluster.peers) - 1)
    await cluster.wait_seen_down(session, {lost_id}, timeout=60)
    before = await sweeps(session, cluster)
    for _ in range(2400):  # bounded: 10 minutes at most
        if all(
            now >= then + 2
            for now, then in zip(await sweeps(session, cluster), before, strict=True)
        ):
            spent = [cpu_seconds(pid) - c for pid, c in zip(survivors, cpu, strict=True)]
            return {
                "loss_cpu_s_per_peer": round(max(spent), 2),
                "loss_names_checked": await checked_names(session, cluster) - checked,
            }
        await asyncio.sleep(0.25)  # polling the peers' own figures
    raise TimeoutError("the peers did not sweep for repair twice within 10 minutes")


async def measure(count: int, seconds: float, lost_member: bool = False) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ringstore-idle-") as tmp:
        options = ["--log-level=warning", *(["--repair-after=1"] if lost_member else [])]
        cluster = ProcessCluster(Path(tmp), PEERS, *options, fast=False)
        data_dirs = [p.data_dir for p in cluster.peers]
        for data_dir in data_dirs:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        await asyncio.to_thread(synthesise, data_dirs, count)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, headers=ADMIN_HEADERS) as session:
            started = time.monotonic()
            try:
                await cluster.start(session, healthy_within=max(30.0, count / 1000))
                healthy = time.monotonic() - started
                url = cluster.peers[0].url
                for _ in range(14400):  # bounded: an hour at most
                    if all_settled(await rebalancing(session, url)):
                        break
                    await asyncio.sleep(0.25)  # polling the peers' own progress
                settled = time.monotonic() - started
                loss: dict[str, float] = {}
                if lost_member:
                    loss = await lose_member(session, cluster)
                passes_before = passes(await rebalancing(session, url))
                pids = [p.process.pid for p in cluster.peers if p.process and p.running]
                rss = [rss_mib(pid) for pid in pids]
                cpu = [cpu_seconds(pid) for pid in pids]
                began = time.monotonic()
                await asyncio.sleep(seconds)  # the idle span measured
                span = time.monotonic() - began
                cores = [(cpu_seconds(pid) - c) / span for pid, c in zip(pids, cpu, strict=True)]
                passes_idle = passes(await rebalancing(session, url)) - passes_before
                restarted = float("nan")
                if not lost_member:
                    await cluster.stop()
                    restarted = time.monotonic()
                    await cluster.start(session, healthy_within=max(30.0, count / 1000))
                    restarted = time.monotonic() - restarted
            finally:
                await cluster.stop()
    return {
        "objects": count,
        "peers": PEERS,
        "lost_member": lost_member,
        "healthy_after_s": round(healthy, 1),
        "settled_after_s": round(settled, 1),
        "restart_healthy_after_s": round(restarted, 1),
        "rss_mib": [round(r, 1) for r in rss],
        "idle_cores_per_peer": [round(c, 4) for c in cores],
        "passes_while_idle": passes_idle,  # rebalance passes in the idle span, all peers
        **loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", default="0,10000,100000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--lost-member", action="store_true", help="one peer killed for good")
    args = parser.parse_args()
    rows = []
    for count in map(int, args.objects.split(",")):
        row = run_benchmark(measure(count, args.seconds, args.lost_member))
        print(row, flush=True)
        rows.append(row)
    lines = [
        "| files held per peer | start until all answer (s) | start until settled (s) "
        "| RSS per peer (MiB) | idle CPU per peer (cores) | rebalance passes while idle "
        "| restart until all answer (s) | loss: CPU s per survivor, names read |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rss, cores = r["rss_mib"], r["idle_cores_per_peer"]
        assert isinstance(rss, list)
        assert isinstance(cores, list)
        lines.append(
            f"| {r['objects']:,}{' (a member lost)' if r['lost_member'] else ''} "
            f"| {r['healthy_after_s']} | {r['settled_after_s']} | {max(rss)} "
            f"| {min(cores)}-{max(cores)} | {r['passes_while_idle']} "
            f"| {r['restart_healthy_after_s']} "
            f"| {r.get('loss_cpu_s_per_peer', '-')}, {r.get('loss_names_checked', '-')} |"
        )
    publish("idle", rows, "\n".join(lines))


if __name__ == "__main__":
    main()
