"""Upkeep and commit decisions as tables: who may delete a chunk, what to rebuild where, what
a commit retires. Pure functions; every row is a case the loops once got wrong or could."""

from __future__ import annotations

import pytest

from node.datapath.replicas import retired_chunks
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, ChunkRef, Manifest, ReplicaWrite
from node.model.version import Version
from node.upkeep.decisions import collection_verdict, repair_targets

OLD, CURRENT, NEW = Version(1, 0, "a"), Version(2, 0, "a"), Version(3, 0, "a")
DAY = 86400.0
NOW = 10 * DAY


def manifest(
    version: Version = CURRENT,
    holders: dict[int, str] | None = None,
    deleted: bool = False,
    revision: int = 0,
) -> Manifest:
    held = {i: f"p{i}" for i in range(7)} if holders is None else holders
    chunks = tuple(ChunkRef(i, h, bytes(16)) for i, h in sorted(held.items()))
    layout = Layout(0, 5, 0) if deleted else Layout(5000, 5, 2, 1000)
    return Manifest(
        "f", version, layout, chunks=() if deleted else chunks, deleted=deleted, revision=revision
    )


def sidecar(version: Version = CURRENT, index: int = 3, stored_at: float = NOW - DAY) -> ChunkMeta:
    return ChunkMeta("f", str(version), index, 1000, 1000, bytes(16), stored_at)


# (chunk, manifest on every replica, ring stable for, collect?, why)
COLLECTION = [
    (sidecar(), manifest(), DAY, False, "referenced here"),
    (sidecar(), manifest(NEW), DAY, True, "a newer version replaced it"),
    (sidecar(), manifest(NEW, deleted=True), DAY, True, "a tombstone replaced it"),
    (sidecar(), manifest(holders={3: "elsewhere"}), DAY, True, "moved or repaired away"),
    (sidecar(), manifest(holders={0: "p0"}), DAY, True, "not in the manifest: placed nowhere"),
    (sidecar(stored_at=NOW - DAY / 2), None, 2 * DAY, False, "no manifest, but stored lately"),
    (sidecar(stored_at=NOW - 2 * DAY), None, DAY / 2, False, "no manifest, ring changed lately"),
    (sidecar(stored_at=NOW - 2 * DAY), None, 2 * DAY, True, "an orphan past the grace"),
    (
        sidecar(NEW, stored_at=NOW - 2 * DAY),
        manifest(OLD),
        DAY / 2,
        False,
        "newer than the manifest",
    ),
    (sidecar(NEW, stored_at=NOW - 2 * DAY), manifest(OLD), 2 * DAY, True, "orphan newer than it"),
]


@pytest.mark.parametrize(("chunk", "found", "stable", "collect", "why"), COLLECTION)
def test_collection_verdicts(
    chunk: ChunkMeta, found: Manifest | None, stable: float, collect: bool, why: str
) -> None:
    verdict = collection_verdict(chunk, found, "p3", NOW, stable, DAY)
    assert verdict.collect is collect, why
    assert verdict.reason


UP = {f"p{i}" for i in range(7)} | {"h1", "h2"}
RING_ORDER = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "h1", "h2"]


# (holders, reported, up, seconds down by member, targets, why)
REPAIRS = [
    ({i: f"p{i}" for i in range(7)}, set(), UP, {}, {}, "nothing wrong"),
    ({i: f"p{i}" for i in range(7)}, {(2, "p2")}, UP, {}, {2: "p2"}, "corrupt copy: in place"),
    ({i: f"p{i}" for i in range(7)}, {(2, "p9")}, UP, {}, {}, "report of another holder"),
    (
        {**{i: f"p{i}" for i in range(6)}, 6: "stranger"},
        set(),
        UP,
        {},
        {},
        "a holder this peer never heard of is not counted down: it may be a newcomer",
    ),
    (
        {i: f"p{i}" for i in range(7)},
        {(2, "p2")},
        UP - {"p2"},
        {"p2": 1.0},
        {2: "h1"},
        "reported, holder down: a handoff",
    ),
    (
        {i: f"p{i}" for i in range(7)},
        set(),
        UP - {"p4"},
        {"p4": 299.0},
        {},
        "down, but not yet for repair_after",
    ),
    (
        {i: f"p{i}" for i in range(7)},
        set(),
        UP - {"p4", "p5"},
        {"p4": 300.0, "p5": 900.0},
        {4: "h1", 5: "h2"},
        "down long: handoffs in ring order",
    ),
    (
        {i: f"p{i}" for i in range(6)},
        set(),
        UP,
        {},
        {6: "p6"},
        "written degraded: on the first free member",
    ),
    (
        {i: f"p{i}" for i in range(5)},
        set(),
        {f"p{i}" for i in range(5)},
        {},
        {},
        "nowhere to put it: a later sweep retries",
    ),
]


@pytest.mark.parametrize(("holders", "reported", "up", "down", "targets", "why"), REPAIRS)
def test_repair_targets(
    holders: dict[int, str],
    reported: set[tuple[int, str]],
    up: set[str],
    down: dict[str, float],
    targets: dict[int, str],
    why: str,
) -> None:
    plan = repair_targets(manifest(holders=holders), reported, up, down, 300.0, RING_ORDER)
    chosen = plan.targets
    assert chosen == targets, why
    assert len(set(chosen.values()) | {h for i, h in holders.items() if i not in chosen}) == len(
        set(chosen) | set(holders)
    ), "never two chunks of a file on one member"


@pytest.mark.parametrize(
    ("holders", "up", "unplaced"),
    [
        ({i: f"p{i}" for i in range(5)}, {f"p{i}" for i in range(5)}, 2),
        ({i: f"p{i}" for i in range(5)}, {f"p{i}" for i in range(5)} | {"h2"}, 1),
        ({i: f"p{i}" for i in range(5)}, UP, 0),
    ],
)
def test_chunks_with_nowhere_to_go_are_counted(
    holders: dict[int, str], up: set[str], unplaced: int
) -> None:
    """The repairer takes its look over every name again when a member comes up only if a
    repair found no room (``Repairer``): the count must say so."""
    plan = repair_targets(manifest(holders=holders), set(), up, {}, 300.0, RING_ORDER)
    assert plan.unplaced == unplaced
    assert len(plan.targets) == 2 - unplaced


def ack(stored: bool, current: Version, replaced: Manifest | None = None) -> ReplicaWrite:
    return ReplicaWrite(stored, current, replaced)


def test_a_commit_retires_what_it_replaced_but_not_what_it_keeps() -> None:
    old = manifest(OLD, {0: "p0", 1: "p1"})
    new = manifest(CURRENT, {0: "p0", 1: "p9"})
    retired = retired_chunks([ack(True, CURRENT, old), ack(True, CURRENT, None)], new)
    assert retired == {("p0", old.chunk_id(0)), ("p1", old.chunk_id(1))}
    moved = manifest(CURRENT, {0: "p0", 1: "p1"})
    again = manifest(CURRENT, {0: "p0", 1: "p9"}, revision=1)
    assert retired_chunks([ack(True, CURRENT, moved)], again) == {("p1", moved.chunk_id(1))}


def test_a_write_every_replica_refused_as_older_retires_its_own_chunks() -> None:
    late = manifest(OLD, {0: "p0"})
    assert retired_chunks([ack(False, CURRENT), ack(False, NEW)], late) == late.placed_chunks()


def test_a_revision_that_lost_to_another_retires_nothing() -> None:
    """Two moves of one version: the loser's replicas hold the same version, newer revision."""
    loser = manifest(CURRENT, {0: "p8"}, revision=1)
    assert retired_chunks([ack(False, CURRENT), ack(False, CURRENT)], loser) == set()
