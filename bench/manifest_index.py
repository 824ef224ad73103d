"""What one peer's in-memory manifest index costs per name, and how long opening a store takes.

For each count N (``--objects``) one manifest log of N inline 4 KiB files is synthesised
as a peer writes it (``bench.idle.synthesise``: names in random order), then each source
tree (``--trees base=/tmp/base,new=.``, alternated per round) opens it in a process of its
own: ``ManifestStore.open`` timed (wall and CPU seconds, the log's replay and the index
built; no hint files at first, so each tree reads the whole log), the process's resident
memory after it (collected), a first listing page of 1,000 names, a second open timed (a
restart: from the hint files the first wrote, where the tree writes them), and, in a third
open under tracemalloc, the bytes of Python objects the store holds per name.

Figures are printed as a markdown table and saved as JSON + markdown under bench/results/.

    python bench/manifest_index.py --objects 100000 --trees base=/tmp/base,new=. --rounds 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def measure(data_dir: Path) -> dict[str, float]:
    """Open the store in ``data_dir`` (imported from the tree on ``sys.path``), as above."""
    from bench.report import rss_mib
    from node.disk.manifest_store import ManifestStore

    store = ManifestStore(data_dir)
    wall, cpu = time.perf_counter(), time.process_time()
    await store.open()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    names = len(store)
    listed = time.perf_counter()
    page, _ = store.list("", "", 1000)
    listed = time.perf_counter() - listed
    gc.collect()
    rss = rss_mib(os.getpid())
    await store.close()
    del store, page
    gc.collect()
    store = ManifestStore(data_dir)  # a restart: from hint files where the tree writes them
    again, again_cpu = time.perf_counter(), time.process_time()
    await store.open()
    again, again_cpu = time.perf_counter() - again, time.process_time() - again_cpu
    await store.close()
    del store
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = ManifestStore(data_dir)
    await store.open()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    await store.close()
    return {
        "names": names,
        "open_s": wall,
        "open_cpu_s": cpu,
        "restart_s": again,
        "restart_cpu_s": again_cpu,
        "rss_mib": rss,
        "list_1000_ms": listed * 1000,
        "bytes_per_name": held / max(names, 1),
    }


def one(tree: Path, data_dir: Path) -> dict[str, float]:
    """``measure`` in a fresh process importing ``node`` from ``tree``, with no hint files
    at first (each tree's first open reads the whole log)."""
    shutil.rmtree(data_dir / "manifests" / "hints", ignore_errors=True)
    code = (  # ``node`` from ``tree``, this very file's ``measure`` (an older tree's differs)
        f"import asyncio, json, sys, runpy; sys.path[:0] = [{str(tree)!r}, {str(ROOT)!r}]; "
        f"measure = runpy.run_path({__file__!r})['measure']; from pathlib import Path; "
        f"print(json.dumps(asyncio.run(measure(Path({str(data_dir)!r})))))"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode:
        raise RuntimeError(f"{tree}: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", default="100000", help="counts, comma-separated")
    parser.add_argument("--trees", default="this=.", help="name=path,... source trees")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.idle import synthesise
    from bench.report import publish

    trees = [(n, Path(p).resolve()) for n, p in (t.split("=", 1) for t in args.trees.split(","))]
    rows: list[dict[str, object]] = []
    for count in (int(c) for c in args.objects.split(",")):
        with tempfile.TemporaryDirectory(prefix="ringstore-index-") as tmp:
            synthesise([Path(tmp)], count)
            for round_ in range(args.rounds):
                for name, tree in trees:  # alternated: the machine's noise hits all alike
                    rows.append(
                        {"objects": count, "tree": name, "round": round_, **one(tree, Path(tmp))}
                    )
                    print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| files | tree | first open s (CPU s) | restart s (CPU s) | RSS MiB after "
            "| bytes per name | list 1,000 ms |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {r['objects']:,} | {r['tree']} | {r['open_s']:.1f} ({r['open_cpu_s']:.1f}) "
                f"| {r['restart_s']:.1f} ({r['restart_cpu_s']:.1f}) "
                f"| {r['rss_mib']:.0f} | {r['bytes_per_name']:.0f} | {r['list_1000_ms']:.1f} |"
                for r in rows
            ),
        ]
    )
    publish("manifest_index", rows, table)


if __name__ == "__main__":
    main()
