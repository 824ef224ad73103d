"""Fill percentages of peers with different disks, simulated with the pure ring functions.

PEERS peers with capacities 1 : 2 : 4 (in turn) receive files of 7 equal chunks, placed as a
PUT places them (``Ring.placement`` of 7, passing over members that are full: past 98% of
their capacity, as ``node.cluster.membership.is_full`` says). Two variants side by side:
every peer weight 1, and ``--weight auto`` (one per TiB: weights 1, 2, 4). At each cluster
fill level the spread of the peers' fill percentages is printed (max - min, in percentage
points), and how many files could not get 7 peers with room (degraded).

Prints a markdown table and saves JSON + markdown under bench/results/.

    python bench/capacity.py --peers 21
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.config import WEIGHT_UNIT, auto_weight
from ring import Member, Ring

CHUNK = 1 << 30  # 1 GiB chunks: 1024 of them fill a 1 TiB peer
LEVELS = (0.25, 0.5, 0.75, 0.9, 0.95)
FULL_FILL = 0.98


def simulate(peers: int, auto: bool, seed: int) -> dict[str, object]:
    rng_ids = [str(uuid.UUID(int=(seed << 64) + i, version=4)) for i in range(peers)]
    capacity = {member: (1, 2, 4)[i % 3] * WEIGHT_UNIT for i, member in enumerate(rng_ids)}
    weights = {m: auto_weight(c) if auto else 1 for m, c in capacity.items()}
    ring = Ring([Member(m, "http://x", weights[m]) for m in rng_ids], 256)
    used = dict.fromkeys(rng_ids, 0)
    total = sum(capacity.values())
    spreads: dict[str, float] = {}
    degraded = 0
    levels = list(LEVELS)
    for number in range(10**7):
        full = {m for m in rng_ids if used[m] + CHUNK > FULL_FILL * capacity[m]}
        holders = ring.placement(f"file-{number}", 7, full)
        if len(holders) < 7:
            degraded += 1
        if not holders:
            break
        for holder in holders:
            used[holder] += CHUNK
        fill = sum(used.values()) / total
        while levels and fill >= levels[0]:
            percents = [100 * used[m] / capacity[m] for m in rng_ids]
            spreads[f"{levels.pop(0):.0%}"] = round(max(percents) - min(percents), 1)
        if len(holders) < 7:
            break
    return {
        "variant": "weight auto (1:2:4)" if auto else "weight 1 for all",
        "peers": peers,
        "spread_points": spreads,
        "files": number + 1,
        "first_degraded_at_fill": round(100 * sum(used.values()) / total, 1),
        "degraded": degraded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[21, 42])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rows = [simulate(p, auto, args.seed) for p in args.peers for auto in (False, True)]
    header = " | ".join(f"spread at {level:.0%}" for level in LEVELS)
    lines = [
        f"| peers | variant | {header} | fill when a file first lacks 7 roomy peers |",
        "|---|---|" + "---|" * len(LEVELS) + "---|",
    ]
    for r in rows:
        spreads = r["spread_points"]
        assert isinstance(spreads, dict)
        cells = " | ".join(f"{spreads.get(f'{lv:.0%}', '-')} pts" for lv in LEVELS)
        lines.append(
            f"| {r['peers']} | {r['variant']} | {cells} | {r['first_degraded_at_fill']}% |"
        )
    table = "\n".join(lines)
    machine = f"{platform.node()}, Python {platform.python_version()}, capacities 1:2:4 TiB"
    print(f"{machine}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"capacity-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (args.out / f"capacity-{stamp}.md").write_text(f"{machine}\n\n{table}\n")


if __name__ == "__main__":
    main()
