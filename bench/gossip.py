"""Gossip at scale, simulated with the pure rules of ``node.cluster.epidemic``.

For clusters of 10, 100 and 1000 peers, side by side with all-to-all gossip (every peer asks
every member every round, as before), rounds of 1 s are simulated in process (no sockets):
each peer beats, picks its members for the round (``fanout``/``pick``), and each exchange
merges both sides' member lists (only when their digests differ) and beats (``newer_beats``).
Measured per variant:

- **join convergence**: a newcomer that knows one seed; rounds until every peer knows it and
  has heard a beat of it;
- **failure detection**: a peer stops; seconds until every other peer counts it down: it
  failed ``DOWN_AFTER`` exchanges in a row with that peer, or that peer has had no news of
  it for ``silence_limit``;
- **messages and bytes per peer per second** in a converged cluster: exchanges a peer starts
  and answers, and the bytes of those messages (real ``GossipMessage`` encodings, figures
  left empty).

Prints a markdown table and saves JSON + markdown under bench/results/.

    python bench/gossip.py --sizes 10 100 1000
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.cluster.epidemic import fanout, member_digest, newer_beats, pick, silence_limit
from node.cluster.protocol import GossipMessage, MemberRecord

INTERVAL = 1.0
DOWN_AFTER = 2


@dataclass
class Peer:
    id: str
    known: set[str]
    beats: dict[str, int] = field(default_factory=dict)
    heard_at: dict[str, float] = field(default_factory=dict)  # simulated seconds
    digests: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # failed exchanges in a row
    alive: bool = True
    _cached: tuple[int, str, list[str]] = (0, "", [])  # members count, digest, sorted ids

    def _cache(self) -> tuple[int, str, list[str]]:
        if self._cached[0] != len(self.known):  # members are only ever added
            ids = sorted(self.known)
            self._cached = (len(ids), member_digest(m.encode() for m in ids), ids)
        return self._cached

    def digest(self) -> str:
        return self._cache()[1]

    def ids(self) -> list[str]:
        return self._cache()[2]


def merge(receiver: Peer, sender: Peer, now: float, lists: bool) -> None:
    """What ``receiver`` takes from ``sender``'s message (member list when sent)."""
    if lists:
        receiver.known |= sender.known
    beats = {sender.id: sender.beats.get(sender.id, 0)}
    if receiver.digest() == sender.digest():
        ids = sender.ids()
        beats = {**newer_beats({}, ids, [sender.beats.get(m, 0) for m in ids]), **beats}
    for member, beat in beats.items():
        if beat > receiver.beats.get(member, 0):
            receiver.beats[member], receiver.heard_at[member] = beat, now
    receiver.digests[sender.id] = sender.digest()


def run_round(peers: dict[str, Peer], now: float, all_to_all: bool, rng: random.Random) -> int:
    """One round of every live peer; returns the exchanges made."""
    exchanges = 0
    for peer in peers.values():
        if peer.alive:
            peer.beats[peer.id] = int(now * 1000) + 1
    for peer in list(peers.values()):
        if not peer.alive:
            continue
        others = [m for m in peer.ids() if m != peer.id]
        chosen = others if all_to_all else pick(others, fanout(len(others) + 1), rng)
        for target_id in chosen:
            target = peers[target_id]
            if not target.alive:  # a direct failure: down after DOWN_AFTER in a row
                peer.failures[target_id] = peer.failures.get(target_id, 0) + 1
                continue
            exchanges += 1
            full = peer.digests.get(target_id) != peer.digest()
            merge(target, peer, now, lists=full or all_to_all)
            merge(peer, target, now, lists=target.digest() != peer.digest() or all_to_all)
    return exchanges


def cluster(size: int, rng: random.Random) -> dict[str, Peer]:
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(size)]
    return {i: Peer(i, set(ids)) for i in ids}


def message_bytes(size: int, full: bool, all_to_all: bool) -> int:
    """Bytes of one encoded gossip message in a cluster of ``size``."""
    records = [MemberRecord(str(uuid.uuid4()), "http://10.0.0.1:8000", 1) for _ in range(size)]
    message = GossipMessage(
        sender=records[0],
        members=records if full else [],
        digest="" if all_to_all else "0" * 32,
        beat=0 if all_to_all else 1_767_225_600_000,
        beats=[] if all_to_all else [1_767_225_600_000] * size,
    )
    return len(msgspec.msgpack.encode(message))


def analytic_all_to_all(size: int) -> dict[str, object]:
    """All-to-all gossip needs no simulation (and 10^6 exchanges a round are slow to run):
    every peer asks every member each round, so a newcomer's seed tells everyone in the
    next round, and every peer sees a stopped one fail ``DOWN_AFTER`` times in a row."""
    per_peer = 2 * (size - 1)
    full = message_bytes(size, full=True, all_to_all=True)
    return {
        "peers": size,
        "variant": "all-to-all (analytic)",
        "join_rounds": 2,
        "join_seconds": 2 * INTERVAL,
        "detect_seconds": DOWN_AFTER * INTERVAL,
        "silence_limit_s": None,
        "messages_per_peer_per_s": per_peer,
        "message_bytes": full,
        "bytes_per_peer_per_s": per_peer * full,
        "since_join_s": None,
    }


def simulate(size: int, all_to_all: bool, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    peers = cluster(size, rng)
    now = 0.0
    for _ in range(3):  # settle: digests known, beats heard
        now += INTERVAL
        run_round(peers, now, all_to_all, rng)
    # Messages in a converged cluster.
    rounds, exchanges = 5, 0
    for _ in range(rounds):
        now += INTERVAL
        exchanges += run_round(peers, now, all_to_all, rng)
    per_peer = 2 * exchanges / rounds / size  # requests started + answers given, per second
    light = message_bytes(size, full=all_to_all, all_to_all=all_to_all)
    # Join: a newcomer that knows itself and one seed.
    newcomer = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    seed_id = next(iter(peers))
    peers[newcomer] = Peer(newcomer, {newcomer, seed_id})
    joined_at = now
    join_rounds = None
    for step in range(1, 200):
        now += INTERVAL
        run_round(peers, now, all_to_all, rng)
        if all(newcomer in p.known and p.beats.get(newcomer, 0) for p in peers.values()):
            join_rounds = step
            break
    # Failure: a peer stops.
    victim = next(p for p in peers if p not in (newcomer, seed_id))
    peers[victim].alive = False
    limit = silence_limit(len(peers), INTERVAL, DOWN_AFTER, max(1.0, 2 * INTERVAL))
    stopped_at, detected = now, None
    for _ in range(500):
        now += INTERVAL
        run_round(peers, now, all_to_all, rng)
        live = [p for p in peers.values() if p.alive]
        if all(
            now - p.heard_at.get(victim, 0.0) > limit or p.failures.get(victim, 0) >= DOWN_AFTER
            for p in live
        ):
            detected = now - stopped_at
            break
    return {
        "peers": size,
        "variant": "all-to-all" if all_to_all else f"fan-out {fanout(size)}",
        "join_rounds": join_rounds,
        "join_seconds": None if join_rounds is None else join_rounds * INTERVAL,
        "detect_seconds": detected,
        "silence_limit_s": round(limit, 1),
        "messages_per_peer_per_s": round(per_peer, 1),
        "message_bytes": light,
        "bytes_per_peer_per_s": round(per_peer * light),
        "since_join_s": round(joined_at, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        for all_to_all in (True, False):
            started = time.perf_counter()
            if all_to_all and size > 200:
                row = analytic_all_to_all(size)
            else:
                row = simulate(size, all_to_all, args.seed)
            row["simulated_in_s"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(row, file=sys.stderr)
    lines = [
        "| peers | variant | join: rounds | failure seen by all: s | messages/peer/s "
        "| bytes/message | kB/peer/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kbytes = int(str(r["bytes_per_peer_per_s"])) / 1000
        lines.append(
            f"| {r['peers']} | {r['variant']} | {r['join_rounds']} | {r['detect_seconds']} "
            f"| {r['messages_per_peer_per_s']} | {r['message_bytes']} | {kbytes:.1f} |"
        )
    table = "\n".join(lines)
    machine = (
        f"{platform.node()}, Python {platform.python_version()}, rounds of {INTERVAL} s, "
        f"down after {DOWN_AFTER} silent epidemic spans (log2 N rounds each, "
        f"{math.ceil(math.log2(max(args.sizes)))} at {max(args.sizes)} peers)"
    )
    print(f"{machine}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"gossip-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (args.out / f"gossip-{stamp}.md").write_text(f"{machine}\n\n{table}\n")


if __name__ == "__main__":
    main()
