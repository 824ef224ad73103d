"""Upkeep decisions as data: pure functions from what is known to what to do.

The loops (repairer, scrubber) gather facts and carry out what these return; the rules
themselves are tested with tables, no sockets involved.

- ``collection_verdict``: may this peer delete a chunk it holds? Only on proof that nothing
  will ever read it here: a newer version or a tombstone replaced it, or its version's
  manifest places its index on another peer. A chunk no manifest knows (a PUT that died
  before its commit) goes only after the orphan grace, on a ring stable that long: after
  joins a manifest mid-hand-over can look absent.
- ``repair_targets``: which chunks of a file version to rebuild, and onto which members;
  how many lost ones had nowhere to go.
- ``look_owed``: whether the repairer owes a look for chunks on members lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from node.model.manifest import ChunkMeta, Manifest
from node.model.version import Version


@dataclass(frozen=True)
class Verdict:
    """Whether to delete a chunk, and why (for the log)."""

    collect: bool
    reason: str


KEEP_REFERENCED = Verdict(False, "its manifest places it here")
KEEP_UNPROVEN = Verdict(False, "no manifest proves it dead yet")
REPLACED = Verdict(True, "a newer version or a tombstone replaced it")  # final: no read undoes it


def collection_verdict(
    chunk: ChunkMeta,
    manifest: Manifest | None,
    me: str,
    now: float,
    ring_stable_for: float,
    orphan_grace: float,
) -> Verdict:
    """Whether the chunk ``chunk`` (its sidecar) held by member ``me`` is garbage.

    ``manifest`` is the newest manifest of the chunk's name read from *every* replica
    (None: no replica has one); ``now`` is wall-clock seconds (``chunk.stored_at`` is one
    too); ``ring_stable_for`` is how long the ring has been unchanged, in seconds.
    """
    version = Version.parse(chunk.version)
    if manifest is not None and manifest.version > version:
        return REPLACED
    if manifest is not None and manifest.version == version:
        if manifest.holders().get(chunk.index) == me:
            return KEEP_REFERENCED
        return Verdict(True, "its manifest places it on another peer")
    if now - chunk.stored_at >= orphan_grace and ring_stable_for >= orphan_grace:
        return Verdict(True, "no manifest has referenced it for the orphan grace")
    return KEEP_UNPROVEN


@dataclass(frozen=True)
class RepairPlan:
    """The chunks of a file to rebuild (index -> member), and how many chunks on holders
    down past ``repair_after`` need rebuilding but have nowhere to go: no candidate (a
    member up, not crowded, ``place_roomy``) that holds no chunk of the file. (Chunks never
    stored, of a degraded write, are not counted: the sweep of degraded files retries them.)"""

    targets: dict[int, str]
    lost_unplaced: int


def repair_targets(
    manifest: Manifest,
    reported: set[tuple[int, str]],
    up: set[str],
    down_for: Mapping[str, float],
    repair_after: float,
    candidates: Iterable[str],
) -> RepairPlan:
    """Which chunks of ``manifest`` to rebuild, and where (``RepairPlan``).

    A chunk is rebuilt when it was reported missing or corrupt (``reported``: index, holder),
    when its holder has been down for ``repair_after`` seconds or more (``down_for``: seconds
    down by member), or when the file was written degraded and it was never stored. A
    reported chunk whose holder is up is rebuilt in place (only the copy was bad); the others
    go to the first ``candidates`` (up members in ring order from the file id) that hold no
    other chunk of the file. Chunks with nowhere to go are left out: a later sweep retries.
    """
    holders = manifest.holders()
    targets: dict[int, str] = {}
    for index, holder in holders.items():
        if (index, holder) in reported:
            targets[index] = holder if holder in up else ""
        elif holder not in up and down_for.get(holder, 0.0) >= repair_after:
            targets[index] = ""
    for index in range(manifest.layout.n):
        if index not in holders:
            targets[index] = ""  # written degraded: never stored
    taken = {h for i, h in holders.items() if i not in targets} | set(targets.values())
    handoffs = (m for m in candidates if m in up and m not in taken)
    lost_unplaced = 0
    for index in sorted(targets):
        if not targets[index]:
            handoff = next(handoffs, None)
            if handoff is None:
                del targets[index]
                was_on = holders.get(index)  # (None: never stored)
                if was_on is not None and was_on not in up:
                    lost_unplaced += down_for.get(was_on, 0.0) >= repair_after
            else:
                targets[index] = handoff
    return RepairPlan(targets, lost_unplaced)


# What a look for chunks on members lost was taken under: the ring's digest, and the members
# down past repair_after, each with when it went down (``Membership.long_down_spells``).
Look = tuple[str, frozenset[tuple[str, float]]]


def look_owed(
    now: Look, last: Look | None, up: set[str], room_wanted: frozenset[str] | None
) -> bool:
    """Whether the repairer owes a look through the names it is primary for (a quorum read
    of each whose replica places a chunk on one) for chunks on members down past
    ``repair_after``: while any is (``now``'s spells), when no look was taken under this
    ring since each went down (``last``: the last whole look), or when a repair since that
    look found no room for such a chunk with the members ``room_wanted`` up (those up at
    every such repair) and a member is up now that was down at one of them: it may be
    that room. A member that was down a moment (not past ``repair_after``) and is back
    owes none."""
    ring, spells = now
    if not spells:
        return False
    if last is None or last[0] != ring or spells - last[1]:
        return True
    return room_wanted is not None and bool(up - room_wanted)
