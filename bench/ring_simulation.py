"""Ring evenness and join movement for clusters too big to run here (pure ``ring/``, no I/O).

For each cluster size N, builds the ring of N equal members, reports placement evenness
(max/mean of each member's share of 7-wide placement sets, exact from the ring's arcs) for
chunks (n=7) and manifests (n=3), then adds one member and counts, over K sampled file keys
with 7 chunks each, how many chunks ``plan_moves`` moves, where to, and how that compares
with the ideal 1/(N+1). A weighted join (weight 2) is measured the same way.

    python bench/ring_simulation.py                  # 6..200 members, 20k keys
    python bench/ring_simulation.py --sizes 6,50 --keys 5000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ring import Member, Ring, plan_moves

WIDTH = 7  # k + m chunks per file


def members(count: int, rng: random.Random, weight: int = 1) -> list[Member]:
    return [
        Member(str(uuid.UUID(int=rng.getrandbits(128), version=4)), f"http://peer-{i}", weight)
        for i in range(count)
    ]


def join(size: int, keys: int, rng: random.Random, weight: int) -> dict[str, float]:
    old = members(size, rng)
    newcomer = members(1, rng, weight)[0]
    started = time.perf_counter()
    before = Ring(old)
    build = time.perf_counter() - started
    after = Ring([*old, newcomer])
    moved = to_newcomer = chunks = 0
    for _ in range(keys):
        key = f"{rng.getrandbits(128):032x}"
        holders = dict(enumerate(before.placement(key, WIDTH)))
        chunks += len(holders)
        for move in plan_moves(holders, after, key):
            moved += 1
            to_newcomer += move.target == newcomer.id
    share = after.ownership(WIDTH)[newcomer.id] / min(WIDTH, len(after))
    ideal = weight / (size + weight)
    return {
        "members": size,
        "join_weight": weight,
        "evenness_chunks": round(before.evenness(WIDTH), 4),
        "evenness_manifests": round(before.evenness(3), 4),
        "ring_build_s": round(build, 3),
        "moved_fraction": round(moved / chunks, 4),
        "moved_over_ideal": round(moved / chunks / ideal, 3),
        "to_newcomer": round(to_newcomer / moved, 4) if moved else 1.0,
        "newcomer_share_over_weight_share": round(share / ideal, 3),
    }


def markdown(rows: list[dict[str, float]]) -> str:
    lines = [
        "| members | join weight | evenness 7 | evenness 3 | build s | moved | moved/ideal "
        "| to newcomer | newcomer share / weight share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['members']} | {r['join_weight']} | {r['evenness_chunks']} "
        f"| {r['evenness_manifests']} | {r['ring_build_s']} | {r['moved_fraction']} "
        f"| {r['moved_over_ideal']} | {r['to_newcomer']} "
        f"| {r['newcomer_share_over_weight_share']} |"
        for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="6,7,10,20,50,100,200")
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for size in map(int, args.sizes.split(",")):
        for weight in (1, 2):
            row = join(size, args.keys, rng, weight)
            print(json.dumps(row), flush=True)
            rows.append(row)
    table = markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"ring-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (args.out / f"ring-{stamp}.md").write_text(table + "\n")
    print(f"saved to {args.out}/ring-{stamp}.{{json,md}}")


if __name__ == "__main__":
    main()
