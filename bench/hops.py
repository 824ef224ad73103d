"""What handing a blocking call to another thread costs: CPU and wall time per hop.

Each variant awaits CALLS calls of nothing, one at a time, in a fresh event loop: through
``asyncio.to_thread`` (the loop's pool), through a ``node.disk.serial.SerialThread`` (the
manifest log's own thread), and on the loop itself (the floor). Variants alternate, ROUNDS
times, so the machine's noise hits all alike; ``--cpus 0`` pins the process to one core
first (no wake-up crosses cores). Figures are printed as a markdown table and saved as
JSON + markdown under bench/results/.

    python bench/hops.py
    python bench/hops.py --cpus 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import cpu_list, publish
from node.disk.serial import SerialThread


def nothing() -> None:
    return None


async def through_pool(calls: int) -> None:
    for _ in range(calls):
        await asyncio.to_thread(nothing)


async def through_serial_thread(calls: int) -> None:
    thread = SerialThread("bench")
    try:
        for _ in range(calls):
            await thread.run(nothing)
    finally:
        await thread.stop()


async def on_the_loop(calls: int) -> None:
    for _ in range(calls):
        nothing()
        await asyncio.sleep(0)


VARIANTS: dict[str, Callable[[int], Coroutine[Any, Any, None]]] = {
    "asyncio.to_thread": through_pool,
    "SerialThread": through_serial_thread,
    "on the loop": on_the_loop,
}


def measure(variant: str, calls: int) -> tuple[float, float]:
    """CPU and wall microseconds per hop of one run of ``variant``."""
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(VARIANTS[variant](calls))
    return (
        (time.process_time() - cpu) / calls * 1e6,
        (time.perf_counter() - wall) / calls * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", help="pin the process to this CPU list first (0)")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, cpu_list(args.cpus))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            runs[name].append(measure(name, args.calls))
    rows: list[dict[str, object]] = []
    lines = [
        "| hop | CPU µs per hop (median, range) | wall µs per hop (median) |",
        "|---|---|---|",
    ]
    for name, got in runs.items():
        cpu = [c for c, _ in got]
        wall = [w for _, w in got]
        rows.append({"variant": name, "cpu_us": cpu, "wall_us": wall, "cpus": args.cpus})
        lines.append(
            f"| {name} | {statistics.median(cpu):.1f} ({min(cpu):.1f}-{max(cpu):.1f}) "
            f"| {statistics.median(wall):.1f} |"
        )
    where = f", pinned to CPUs {args.cpus}" if args.cpus else ""
    publish(
        "hops",
        rows,
        "\n".join(lines),
        f"{args.calls} calls of nothing per run, {args.rounds} rounds alternated{where}",
    )


if __name__ == "__main__":
    main()
