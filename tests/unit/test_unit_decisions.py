"""Upkeep and commit decisions as tables: who may delete a chunk, what to rebuild where, what
a commit retires. Pure functions; every row is a case the loops once got wrong or could."""

from __future__ import annotations

import pytest

from node.datapath.replicas import retired_chunks
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, ChunkRef, Manifest, ReplicaWrite
from node.model.version import Version
from node.upkeep.decisions import Look, collection_verdict, look_owed, repair_targets

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


NOT_FREE = {f"p{i}" for i in range(7)}  # every member up holds a chunk: no room


# (holders, reported, up, seconds down by member, lost chunks with nowhere to go, why)
UNPLACED = [
    ({i: f"p{i}" for i in range(5)}, set(), {f"p{i}" for i in range(5)}, {}, 0, "never stored"),
    (
        {i: f"p{i}" for i in range(7)},
        set(),
        NOT_FREE - {"p4"},
        {"p4": 300.0},
        1,
        "on a member down past repair_after",
    ),
    (
        {i: f"p{i}" for i in range(7)},
        {(4, "p4")},
        NOT_FREE - {"p4"},
        {"p4": 10.0},
        0,
        "reported, its holder down a moment",
    ),
    ({i: f"p{i}" for i in range(7)}, set(), UP - {"p4"}, {"p4": 300.0}, 0, "room on h1"),
]


@pytest.mark.parametrize(("holders", "reported", "up", "down", "unplaced", "why"), UNPLACED)
def test_lost_chunks_with_nowhere_to_go_are_counted(
    holders: dict[int, str],
    reported: set[tuple[int, str]],
    up: set[str],
    down: dict[str, float],
    unplaced: int,
    why: str,
) -> None:
    """The repairer takes its look over every name again when a member comes up only
    where a repair found no room for a lost chunk (``Repairer``): the count must say so."""
    plan = repair_targets(manifest(holders=holders), reported, up, down, 300.0, RING_ORDER)
    assert plan.lost_unplaced == unplaced, why


RING, OTHER_RING = "ring-a", "ring-b"
LOST = frozenset({("p4", 100.0)})
UP_NOW = {"p0", "p1", "p2"}

# (now, last look, members up, room wanted, owed?, why)
LOOKS = [
    ((RING, frozenset()), None, UP_NOW, None, False, "nothing lost"),
    ((RING, LOST), None, UP_NOW, None, True, "a member lost, no look yet"),
    ((RING, LOST), (RING, LOST), UP_NOW, None, False, "looked since it went down"),
    ((OTHER_RING, LOST), (RING, LOST), UP_NOW, None, True, "the ring changed"),
    ((RING, frozenset({("p4", 200.0)})), (RING, LOST), UP_NOW, None, True, "back, lost again"),
    (
        (RING, LOST | {("p5", 150.0)}),
        (RING, LOST),
        UP_NOW,
        None,
        True,
        "another lost",
    ),
    ((RING, LOST), (RING, LOST | {("p5", 150.0)}), UP_NOW, None, False, "one lost is back"),
    ((RING, LOST), (RING, LOST), UP_NOW, frozenset(UP_NOW), False, "no room, nobody new up"),
    (
        (RING, LOST),
        (RING, LOST),
        UP_NOW,
        frozenset({"p0", "p1"}),
        True,
        "no room, and p2 was down then",
    ),
    ((RING, frozenset()), (RING, LOST), UP_NOW, frozenset({"p0"}), False, "the lost is back"),
]


@pytest.mark.parametrize(("now", "last", "up", "wanted", "owed", "why"), LOOKS)
def test_when_a_look_over_every_name_is_owed(
    now: Look,
    last: Look | None,
    up: set[str],
    wanted: frozenset[str] | None,
    owed: bool,
    why: str,
) -> None:
    assert look_owed(now, last, up, wanted) is owed, why


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
