"""Fill percentages of peers with different disks, simulated with the pure ring functions.

PEERS peers with capacities 1 : 2 : 4 (in turn) receive files of 7 equal chunks, placed as a
PUT places them (``Ring.placement`` of 7, passing over members that are full: past 98% of
their capacity, as ``node.cluster.membership.is_full`` says). Three variants side by side:
every peer weight 1; ``--weight auto`` (one per TiB: weights 1, 2, 4); and ``--weight auto``
passing over every crowded member as a PUT does (``node.cluster.membership.crowded``: full,
or more than 2 points past the cluster's fill). At each cluster fill level the spread of
the peers' fill percentages is printed (max - min, in percentage points), and the fill at
which a file first could not get 7 peers with room.

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

from node.cluster.membership import FILL_SLACK, crowded
from node.cluster.placement import place_roomy
from node.cluster.protocol import PeerFigures
from node.config import WEIGHT_UNIT, auto_weight
from ring import Member, Ring

CHUNK = 1 << 30  # 1 GiB chunks: 1024 of them fill a 1 TiB peer
LEVELS = (0.25, 0.5, 0.75, 0.9, 0.95)
FULL_FILL = 0.98


VARIANTS = ("weight 1 for all", "weight auto (1:2:4)", "weight auto + bounded fill")


def simulate(peers: int, variant: str, seed: int, slack: float) -> dict[str, object]:
    auto, bounded = variant != VARIANTS[0], variant == VARIANTS[2]
    rng_ids = [str(uuid.UUID(int=(seed << 64) + i, version=4)) for i in range(peers)]
    capacity = {member: (1, 2, 4)[i % 3] * WEIGHT_UNIT for i, member in enumerate(rng_ids)}
    weights = {m: auto_weight(c) if auto else 1 for m, c in capacity.items()}
    ring = Ring([Member(m, "http://x", weights[m]) for m in rng_ids], 256)
    used = dict.fromkeys(rng_ids, 0)
    total = sum(capacity.values())
    spreads: dict[str, float] = {}
    passed_over = 0
    levels = list(LEVELS)
    for number in range(10**7):
        full = [m for m in rng_ids if used[m] + CHUNK > FULL_FILL * capacity[m]]
        if len(ring.placement(f"file-{number}", 7, full)) < 7:
            break  # fewer than 7 members with room: the cluster is full
        if bounded:  # as Membership.write_placement
            figures = {m: PeerFigures(used_bytes=used[m], max_bytes=capacity[m]) for m in used}
            full = [m for m in crowded(figures, slack) if m not in full] + full
        holders = place_roomy(ring, f"file-{number}", 7, (), full).members
        passed_over += len(set(holders) - set(ring.placement(f"file-{number}", 7)))
        for holder in holders:
            used[holder] += CHUNK
        fill = sum(used.values()) / total
        while levels and fill >= levels[0]:
            percents = [100 * used[m] / capacity[m] for m in rng_ids]
            spreads[f"{levels.pop(0):.0%}"] = round(max(percents) - min(percents), 1)
    return {
        "variant": variant,
        "peers": peers,
        "spread_points": spreads,
        "files": number + 1,
        "first_degraded_at_fill": round(100 * sum(used.values()) / total, 1),
        "passed_over_percent": round(100 * passed_over / (7 * (number + 1)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[21, 42])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slack", type=float, default=FILL_SLACK, help="crowded past this")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rows = [simulate(p, v, args.seed, args.slack) for p in args.peers for v in VARIANTS]
    header = " | ".join(f"spread at {level:.0%}" for level in LEVELS)
    lines = [
        f"| peers | variant | {header} | full at | chunks passed over |",
        "|---|---|" + "---|" * len(LEVELS) + "---|---|",
    ]
    for r in rows:
        spreads = r["spread_points"]
        assert isinstance(spreads, dict)
        cells = " | ".join(f"{spreads.get(f'{lv:.0%}', '-')} pts" for lv in LEVELS)
        lines.append(
            f"| {r['peers']} | {r['variant']} | {cells} | {r['first_degraded_at_fill']}% "
            f"| {r['passed_over_percent']}% |"
        )
    table = "\n".join(lines)
    machine = (
        f"{platform.node()}, Python {platform.python_version()}, capacities 1:2:4 TiB, "
        f"crowded past the cluster's fill + {args.slack:.1%}"
    )
    print(f"{machine}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"capacity-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (args.out / f"capacity-{stamp}.md").write_text(f"{machine}\n\n{table}\n")


if __name__ == "__main__":
    main()
