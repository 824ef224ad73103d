"""Summarise py-spy raw (collapsed) stacks: the functions with the most samples, on the
stack anywhere (inclusive) and at the top (self), as percentages of all samples.

    python bench/stacks.py profile/put-4096-1234.txt --top 30
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [
            f.split(" (")[0] + " " + f.rpartition("/")[2].split(":")[0] for f in stack.split(";")
        ]
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    lines = [
        f"{path.name}: {total} samples",
        "",
        "| inclusive % | self % | function |",
        "|---|---|---|",
    ]
    for frame, samples in inclusive.most_common(top):
        lines.append(f"| {100 * samples / total:.1f} | {100 * own[frame] / total:.1f} | {frame} |")
    lines += ["", "| self % | function |", "|---|---|"]
    lines += [f"| {100 * s / total:.1f} | {f} |" for f, s in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top), end="\n\n")


if __name__ == "__main__":
    main()
