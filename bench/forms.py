"""What a form upload costs, side by side with a PUT of the same bytes.

For every round and variant, a fresh cluster of N real peer processes is started on
127.0.0.1 and one file (256 MiB by default) is sent through peer 0 with a Content-Length:

- ``put``: ``PUT /files/bench/form.bin``, the body as it is;
- ``form``: ``POST /files/bench/`` with ``multipart/form-data``: a ``name`` field, then the
  file part (what ``curl -F name=form.bin -F file=@x`` sends).

Measured: wall time (MB/s), the coordinating peer's CPU seconds (user + system, from /proc)
and its peak RSS (VmHWM). Variants alternate within each round, so the machine's noise hits
both alike. Figures are printed as a markdown table and saved under bench/results/.

    python bench/forms.py                       # 256 MiB, 2 rounds, 7 peers
    python bench/forms.py --size 1G --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.digests import cpu_seconds, pieces
from bench.report import run_benchmark
from bench.throughput import label, parse_size, peak_rss_mib, session_for, start_cluster

VARIANTS = ["put", "form"]
BOUNDARY = "bench-form-boundary-0123456789"
HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\nform.bin\r\n'
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="form.bin"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()
TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


async def body(size: int, variant: str) -> AsyncIterator[bytes]:
    if variant == "form":
        yield HEAD
    for piece in pieces(size):
        yield piece
    if variant == "form":
        yield TAIL


async def measure(count: int, size: int, variant: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ringstore-bench-") as tmp:
        cluster = await start_cluster(Path(tmp), count, 1 << 20)
        coordinator = cluster.peers[0]
        assert coordinator.process is not None
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
            async with session_for(Path(tmp), "hmac", timeout=timeout) as session:
                if variant == "form":
                    url = f"{coordinator.url}/files/bench/"
                    length = size + len(HEAD) + len(TAIL)
                    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
                else:
                    url, length, headers = f"{coordinator.url}/files/bench/form.bin", size, {}
                headers["Content-Length"] = str(length)
                cpu_before = cpu_seconds(coordinator.process.pid)
                started = time.perf_counter()
                async with session.request(
                    "POST" if variant == "form" else "PUT",
                    url,
                    data=body(size, variant),
                    headers=headers,
                ) as response:
                    reply = await response.json()
                    if response.status != 201 or reply["size"] != size:
                        raise RuntimeError(f"{variant} failed: {reply}")
                seconds = time.perf_counter() - started
                cpu = cpu_seconds(coordinator.process.pid) - cpu_before
                rss = peak_rss_mib(coordinator.process.pid)
        finally:
            await cluster.stop()
    return {
        "variant": variant,
        "peers": count,
        "size": size,
        "mb_s": round(size / seconds / 1e6, 1),
        "coordinator_cpu_s": round(cpu, 2),
        "coordinator_peak_rss_mib": round(rss, 1),
    }


def markdown(size: int, rows: list[dict[str, object]]) -> str:
    lines = [
        f"{label(size)} through one peer with a Content-Length; medians of each variant's runs.",
        "",
        "| upload | runs | MB/s | coordinator CPU s | coordinator peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue

        def median(key: str, runs: list[dict[str, object]] = mine) -> float:
            return statistics.median(float(str(r[key])) for r in runs)

        lines.append(
            f"| {variant} | {len(mine)} | {median('mb_s'):.1f} "
            f"| {median('coordinator_cpu_s'):.2f} | {median('coordinator_peak_rss_mib'):.0f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256M")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peers", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    size = parse_size(args.size)
    rows = []
    for _ in range(args.rounds):
        for variant in VARIANTS:  # alternating: the machine's noise hits both
            row = await measure(args.peers, size, variant)
            print(json.dumps(row), flush=True)
            rows.append(row)
    table = markdown(size, rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"forms-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (args.out / f"forms-{stamp}.md").write_text(table + "\n")
    print(f"saved to {args.out}/forms-{stamp}.{{json,md}}")


if __name__ == "__main__":
    run_benchmark(main())
