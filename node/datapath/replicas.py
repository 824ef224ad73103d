"""Manifest replicas and their quorums: read, write, commit, read repair, retire.

A name's manifest lives on the N members of its replica set (``Membership.replicas``). A
read asks R of them (this peer first when it is one: from its page cache without a call
where it can, ``ManifestStore.read_now``), one more whenever they are slower than
most reads (a hedged request, ``node.datapath.hedging``) and another in place of each that
fails, until R answer (highest ``(version, revision)`` wins); it brings replicas found behind
up to date in the background (read repair; a handoff that stood in for a replica hands its
writes over, ``node.upkeep.rebalancer``). While replicas move (after a join or a member's
return), it also asks the name's replicas under the earlier placements
(``Membership.previous_replicas``), so a manifest not yet handed over is still found. A
write goes to all N and succeeds at W; one that misses W is retracted from the replicas that
took it. A conditional write (a PUT or DELETE with If-Match...) goes to the N home replicas
only, each checking the condition against its own current version, and needs W of them to
accept. A commit is a write followed by retiring what it superseded: chunks no manifest
references any more are deleted after the delete grace, once a fresh read confirms they are
still unreferenced. A segmented manifest's segments (parts of a multipart object: files of
their own) are retired the same way, as ``(SEGMENT_HOLDER, segment id)`` pairs: once due and
still unreferenced, each part gets a tombstone, whose commit retires the part's chunks in
turn. With R + W > N a read after a successful write sees that version or a
newer one (Dynamo, DeCandia et al., SOSP 2007).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.config import PeerConfig
from node.datapath.hedging import HedgeDelay
from node.errors import (
    ChunkNotFound,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    RingstoreError,
    Unavailable,
    Undecided,
    WriteContended,
)
from node.model.layout import Layout
from node.model.manifest import (
    SEGMENT_HOLDER,
    Manifest,
    ReplicaRead,
    ReplicaWrite,
    parse_segment_id,
)
from node.model.preconditions import Preconditions
from node.model.version import HybridClock
from node.waiting import consume

log = logging.getLogger(__name__)
T = TypeVar("T")
E = TypeVar("E")

DELETE_RETRIES = 5  # tries of a delayed delete whose holder does not answer
RETRY_DELAY = 300.0  # seconds before the first retry (doubling after each)


class PendingDeletion(Protocol):
    """A journaled deletion, as ``DeletionJournal`` gives it back after a restart."""

    @property
    def name(self) -> str: ...
    @property
    def due(self) -> float: ...
    @property
    def chunks(self) -> frozenset[tuple[str, str]]: ...


class DeletionJournal(Protocol[E]):
    """Where pending deletions are kept across restarts (``node.disk.deletions``)."""

    def add(self, name: str, chunks: Iterable[tuple[str, str]], due: float) -> E: ...
    def done(self, entry: E) -> None: ...


def retired_chunks(acks: Iterable[ReplicaWrite], manifest: Manifest) -> set[tuple[str, str]]:
    """The ``(holder, chunk id)`` pairs a commit of ``manifest`` left unreferenced (with
    the ``(SEGMENT_HOLDER, segment id)`` pairs of segments: ``Manifest.segment_refs``).

    Chunks of the manifests it replaced go, except those it still references. If no replica
    stored it and every one already held a newer *version*, its own chunks go too; if they
    held the same version at a newer revision (another move won), its own chunks stay.
    """
    acks = list(acks)
    unused = {c for a in acks if a.replaced is not None for c in _referenced(a.replaced)}
    if any(a.stored for a in acks):
        return unused - _referenced(manifest)
    if acks and all(a.current > manifest.version for a in acks):
        return unused | _referenced(manifest)
    return unused


def _behind(replica: Manifest | None, newest: Manifest) -> bool:
    """Whether a replica's answer (None: it has none) needs ``newest`` written over it."""
    return replica is None or replica.precedence < newest.precedence


def _newest(reads: Iterable[ReplicaRead]) -> Manifest | None:
    """The manifest of highest precedence among replicas' answers (None: none has one)."""
    found = [read.manifest for read in reads if read.manifest is not None]
    return max(found, key=lambda m: m.precedence) if found else None


def _undecided(reads: Iterable[ReplicaRead], newest: Manifest) -> ReplicaRead | None:
    """How ``newest`` is provisional if it is on every replica that answered it (overdue
    if on any), else None: a replica that holds it unmarked heard it confirmed (or it never
    was a conditional write)."""
    held = _holding(reads, newest)
    if not all(read.provisional for read in held):
        return None
    return ReplicaRead(newest, True, any(read.overdue for read in held))


def _holding(reads: Iterable[ReplicaRead], newest: Manifest) -> list[ReplicaRead]:
    """The reads that hold ``newest`` itself (its version and revision)."""
    return [
        r for r in reads if r.manifest is not None and r.manifest.precedence == newest.precedence
    ]


def _referenced(manifest: Manifest) -> set[tuple[str, str]]:
    return manifest.placed_chunks() | manifest.segment_refs()


class Verdict(enum.Enum):
    """What the home replicas' answers to a conditional write decide."""

    STORED = "stored"  # a write quorum took it: committed
    REFUSED = "refused"  # 412: a version the condition does not hold for is committed
    UNDECIDED = "undecided"  # 503: too few answers, or writers racing without a winner


def conditional_verdict(answers: Iterable[ReplicaWrite], quorum: int) -> Verdict:
    """Decide a conditional write from its home replicas' answers.

    Stored when ``quorum`` replicas took it. Refused (412) when ``quorum`` replicas refused
    it while holding one same version: that version is on a write quorum, so it is
    committed, and the condition does not hold for it (or it supersedes the write).
    Otherwise undecided (503): too few replicas answered, or the refusals came from
    replicas holding different versions, such as writes racing this one that may all be
    retracted in turn (three writers each taking one replica), after which the condition
    may hold again; the client tries again. A replica that holds nothing answers the
    offered version, so refusals for "there is no file" agree with each other.
    """
    answers = list(answers)
    if sum(answer.stored for answer in answers) >= quorum:
        return Verdict.STORED
    held = collections.Counter(answer.current for answer in answers if not answer.stored)
    if held and max(held.values()) >= quorum:
        return Verdict.REFUSED
    return Verdict.UNDECIDED


class _Refusals:
    """Why the replicas asked for a manifest write failed: out of room (InsufficientStorage)
    or otherwise (unreachable, slow, broken)."""

    def __init__(self) -> None:
        self.full: set[str] = set()
        self.failed: set[str] = set()

    @contextlib.contextmanager
    def noting(self, member: str) -> Iterator[None]:
        """Note ``member``'s failure if the call in the block raises one."""
        try:
            yield
        except InsufficientStorage:
            self.full.add(member)
            raise
        except RingstoreError:
            self.failed.add(member)
            raise

    def check_room(self, stored: int, declined: int, quorum: int) -> None:
        """Raise InsufficientStorage (507) when room is all a manifest write lacked: it was
        ``stored`` by fewer than ``quorum`` replicas, would have been by enough had the
        full ones had room, and no replica failed otherwise nor ``declined`` it (a
        condition, or a base that moved on: its refusal is not for want of room). Where
        one did, the write is 503 (or a 412, or contended): trying again may succeed."""
        if self.full and not self.failed and not declined and stored + len(self.full) >= quorum:
            raise InsufficientStorage(
                f"{len(self.full)} manifest replicas have no room left and {stored} of the "
                f"{quorum} needed took the write, which was not committed"
            )


class ManifestReplicas:
    """Quorum reads and writes of manifests, and the background work they leave."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        peers: Peers,
        clock: HybridClock,
        journal: DeletionJournal[Any] | None = None,
        own: Callable[[str], ReplicaRead | None] | None = None,
    ) -> None:
        """``journal`` keeps pending deletions across restarts (none: memory only). ``own``
        answers a read of this peer's own replica of a name where it can without waiting
        (``ManifestStore.read_now``; None: it is asked as any replica is)."""
        self._config = config
        self._membership = membership
        self._peers = peers
        self._clock = clock
        self._journal = journal
        self._own = own
        self._background: set[asyncio.Task[None]] = set()
        self._undecidable: dict[str, float] = {}  # name -> when to try deciding it again
        self._undecidable_sweep = 1024  # entries before the expired ones are forgotten
        self.hedge = HedgeDelay()  # when a read asks one more replica than it needs

    def __repr__(self) -> str:
        return (
            f"ManifestReplicas(N={self._config.manifest_replicas}, "
            f"background={len(self._background)})"
        )

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Cancel the read repairs and delayed deletions still pending."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _ask(
        self,
        name: str,
        call: Callable[[str], Awaitable[T]],
        wanted: int,
        home_only: bool = False,
        pending: dict[asyncio.Future[T], str] | None = None,
        hedge: HedgeDelay | None = None,
        heard: Collection[str] = (),
        own: Callable[[], T | None] | None = None,
    ) -> dict[str, T]:
        """Call the replicas of ``name`` until ``wanted`` of them have answered.

        Starts with the N members of the name's replica set; each one that fails is replaced
        by the next handoff, so a peer that died a moment ago (not yet seen down) costs an
        extra call, not the request. With ``home_only``, asks the N home replicas, up or
        down, and no handoff. Given ``hedge``, asks only ``wanted`` of the N at first (this
        peer first when it is one: no network), the others standing by before the handoffs,
        and one more of the N each time ``hedge.seconds`` pass without an answer while too
        few have answered (``node.datapath.hedging``). A hedge never goes to a handoff: a
        handoff holds only what was written while a replica was down, so its "none" stands
        in for a replica that failed, never for one that is merely slow. Returns the
        answers by member (more than ``wanted`` when several come at once). Calls still out
        are cancelled, or, given ``pending``, left running in it (by member) for the caller
        to hear out. Members in ``heard`` (they answered already, or are not to be asked)
        are not asked. Given ``own``, this peer, when among those asked first, takes its
        answer from it where it gives one, with no call (None: it is called as the others
        are; never as a hedge or a standby, which are called).
        """
        if home_only:
            replicas = self._membership.home_replicas(name)
            handoffs: Iterator[str] = iter(())
        else:
            replicas = self._membership.replicas(name)
            handoffs = (member for member in replicas.handoffs() if member not in heard)
        first = [member for member in replicas.members if member not in heard]
        spare: Iterator[str] = iter(())  # replicas not asked yet: for a hedge or a failure
        me = self._membership.me.id
        if hedge is not None:
            ordered = sorted(first, key=lambda member: member != me)  # stable: ring order
            first = ordered[:wanted]
            spare = iter(ordered[wanted:])
        standbys = itertools.chain(spare, handoffs)
        asking: dict[asyncio.Future[T], str] = {}

        def ask(member: str) -> None:
            asking[asyncio.ensure_future(call(member))] = member

        answers: dict[str, T] = {}
        try:
            for member in first:
                if member == me and own is not None and (answer := own()) is not None:
                    answers[member] = answer
                else:
                    ask(member)
            while asking and len(answers) < wanted:
                wait = None if hedge is None else hedge.seconds
                done, _ = await asyncio.wait(
                    asking, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if not done and hedge is not None:  # nothing answered in its time
                    if (replica := next(spare, None)) is None:
                        hedge = None  # no replica left to ask: wait for those asked
                    else:
                        hedge.hedged += 1
                        ask(replica)
                for task in done:
                    member = asking.pop(task)
                    error = task.exception()
                    if error is None:
                        answers[member] = task.result()
                    elif not isinstance(error, RingstoreError):
                        raise error
                    elif (standby := next(standbys, None)) is not None:
                        ask(standby)
            if pending is not None:
                pending.update(asking)
                asking.clear()
        finally:
            for task in asking:
                task.cancel()
                task.add_done_callback(consume)
        return answers

    async def read(
        self, name: str, every_replica: bool = False, decided: bool = False
    ) -> Manifest | None:
        """The newest manifest of ``name`` among R replicas (``_ask`` with a hedge).

        Tombstones included. With ``every_replica``, all N replicas must answer (for
        decisions that destroy data). A provisional newest (``ReplicaRead``: a conditional
        write not yet decided, maybe a loser about to be retracted) is passed over for the
        newest manifest an answer holds decided, and never copied: it would outlive its
        retraction and bury the winner; one whose verdict is overdue is decided first
        (``decide``). Replicas found behind are brought up to date in the background.
        None only where enough home replicas themselves hold none (``_check_absent``):
        where the replicas asked hold none, homes the membership sees down (for less than
        ``repair_after``) are asked too, within the peer timeout (gossip's word of a peer
        under load can be wrong).
        Raises Unavailable when too few replicas answer, or, with ``decided`` (for work
        that copies or destroys on the manifest's word), Undecided when the newest found
        is provisional, and Unavailable for a "none" while a hand-over of the name is under
        way (``_check_handing_over``).
        """
        found = await self.read_state(name, every_replica)
        if found.provisional and decided:  # (what a decision would act on may not be it)
            raise Undecided(
                f"the newest manifest of {name!r} is a conditional write not yet decided; try again"
            )
        if decided and found.manifest is None:
            self._check_handing_over(name)
        return found.manifest

    def _check_handing_over(self, name: str) -> None:
        """Raise Unavailable while a member of an earlier placement, up or down, is not a
        replica of ``name`` now (``Membership.handing_over``): it may hold what no current
        replica does (a write a handoff took while a home was down, gone down since), so
        "none" is no proof for work that destroys data."""
        if self._membership.handing_over(name):
            raise Unavailable(f"a hand-over of {name!r} may be under way")

    async def read_state(self, name: str, every_replica: bool = False) -> ReplicaRead:
        """``read``'s manifest, and whether the newest found is provisional (returned, or
        passed over for the one returned) and overdue."""
        found, overdue = await self._read(name, every_replica)
        if overdue is not None and await self.decide(name, overdue):
            found, _ = await self._read(name, every_replica)
        return found

    async def _read(self, name: str, every_replica: bool) -> tuple[ReplicaRead, Manifest | None]:
        """``read``'s manifest: the newest the replicas that answered hold, unless that is
        provisional on each of them; then the newest one of them holds decided (a write
        not yet committed is not read, and a loser never), or, when none holds any, the
        provisional one; marked provisional either way. With it, the provisional newest if
        its verdict is overdue (for ``decide``), else None."""
        config = self._config
        quorum = config.manifest_replicas if every_replica else config.manifest_read_quorum
        me = self._membership.me.id

        failed: set[str] = set()  # members whose call failed in this read

        async def get(member: str) -> ReplicaRead:
            started = time.monotonic()
            try:
                found = await self._peers.get_manifest(member, name)
            except RingstoreError:
                failed.add(member)
                raise
            if member != me:  # this peer's own replica answers without the network
                self.hedge.observe(time.monotonic() - started)
            return found

        # Replicas that answer after the quorum are heard out, not cancelled: a call cancelled
        # mid-answer closes its connection (a new TCP connection for a quarter of the small
        # GETs, bench/small.py), and a late replica found behind is repaired like the others.
        pending: dict[asyncio.Future[ReplicaRead], str] = {}
        copyable: Manifest | None = None  # what replicas found behind are repaired with
        try:
            own = None if self._own is None else functools.partial(self._own, name)
            found = await self._ask(name, get, quorum, pending=pending, hedge=self.hedge, own=own)
            if len(found) < quorum:
                raise Unavailable(f"only {len(found)} of {quorum} manifest replicas answered")
            reads = list(found.values())
            if not any(read.manifest for read in reads) and quorum < config.manifest_replicas:
                # The first "none"s may come from stand-ins for replicas that are down, which
                # answer faster than a surviving replica reading its file: hear all N first.
                # (Not those that failed: a hung one would cost a second peer timeout.)
                rest = config.manifest_replicas - len(found)
                found.update(await self._ask(name, get, rest, heard={*found, *failed}))
                reads = list(found.values())
            if not any(read.manifest for read in reads) and (
                short := self._homes_short(name, found)
            ):
                # Homes seen down were not asked (stand-ins were), and gossip's word may be
                # wrong (a peer under load misses heartbeats): ask them before a 503. Not
                # those that failed in this read, nor those down past --repair-after (lost,
                # maybe for good: a call to a host gone waits out the connect timeout).
                skipped = {*found, *failed, *self._membership.long_down_ids(config.repair_after)}
                found.update(await self._ask(name, get, short, home_only=True, heard=skipped))
                reads = list(found.values())
            reads += await self._read_previous(name, set(found))
            newest = _newest(reads)
            if newest is None:
                self._check_absent(name, found)
                return ReplicaRead(None), None
            try:
                self._clock.observe(newest.version)
            except InvalidRequest as exc:  # a replica's word: our clock does not follow it
                log.warning("manifest of %r read from replicas: %s", name, exc)
            overdue = None
            undecided = _undecided(reads, newest)
            if undecided is not None:
                overdue = newest if undecided.overdue else None
                decided = _newest(read for read in reads if not read.provisional)
                if decided is None:
                    return undecided, overdue
                newest = decided
            copyable = newest
            for replica, read in found.items():
                if _behind(read.manifest, newest):
                    self._spawn(self._repair(replica, newest))
            if undecided is not None:
                return ReplicaRead(newest, True, undecided.overdue), overdue
            return ReplicaRead(newest), overdue
        finally:
            for call, replica in pending.items():
                self._spawn(self._hear_out(call, replica, copyable))

    def _check_absent(self, name: str, found: Collection[str]) -> None:
        """Raise Unavailable unless the members in ``found``, which all answered that they
        hold no manifest of ``name``, include enough of its home replicas to say that it
        has none: N - W + 1 of them (of fewer homes, all), so that every write quorum
        meets one of them. Stand-ins for homes out of reach (handoffs) do not count: they
        hold only what was written while a home was seen down, and a write acknowledged by
        two homes now out of reach (or merely slow: a peer seen down under load) would read
        as "no such file", a 404 a client may act on. (A sloppy quorum, as in Dynamo:
        DeCandia et al., SOSP 2007, section 4.6, gives up that every read quorum meets
        every write quorum; only the home replicas keep it.)"""
        if self._homes_short(name, found):
            homes = self._membership.home_replicas(name).members
            answered = sum(member in found for member in homes)
            raise Unavailable(
                f"{answered} of the {len(homes)} home replicas of {name!r} answered (none "
                f"holds it), too few to say it does not exist; try again"
            )

    def _homes_short(self, name: str, found: Collection[str]) -> int:
        """How many more home replicas of ``name`` than those in ``found`` must answer for
        their word to say it does not exist (``_check_absent``); 0 when enough did."""
        homes = self._membership.home_replicas(name).members
        config = self._config
        needed = min(len(homes), config.manifest_replicas - config.manifest_write_quorum + 1)
        return max(0, needed - sum(member in found for member in homes))

    async def decide(self, name: str, newest: Manifest) -> bool:
        """Decide a provisional ``newest`` whose verdict is overdue (its coordinator died,
        or its verdict was lost) as its coordinator would have: from every member that was
        a home replica of ``name`` since the placement history began
        (``Membership.home_replicas_since``: it may have been offered under an earlier
        ring). Held by W of them, it was committed: confirmed on each holder. Held by too
        few for W even counting every one that did not answer, it was not: retracted from
        each holder, which puts back what it replaced there. Otherwise it stays undecided,
        and is not tried again for a peer timeout. True if a verdict reached a holder.

        A committed write a holder lost since (a damaged record written off) would be taken
        for a loser here; it takes that, and every confirmation lost, at once.
        """
        now = time.monotonic()
        if self._undecidable.get(name, 0.0) > now:
            return False
        config = self._config
        members = self._membership.home_replicas_since(name)
        answers = await asyncio.gather(
            *(self._peers.get_manifest(member, name) for member in members),
            return_exceptions=True,
        )
        holders, silent = [], 0
        for member, answer in zip(members, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, RingstoreError):
                    raise answer
                silent += 1
            elif answer.manifest is None or answer.manifest.precedence < newest.precedence:
                continue
            elif answer.manifest.precedence == newest.precedence:
                holders.append(member)
            else:
                silent += 1  # a newer write over it: it may be under, and come back
        if not holders:  # gone meanwhile, or only where it never was a home replica
            self._wait_to_decide(name, now + config.peer_timeout)
            return False
        if len(holders) >= config.manifest_write_quorum:
            verdict, calls = "confirmed", [self._peers.confirm_manifest(r, newest) for r in holders]
        elif len(holders) + silent < config.manifest_write_quorum:
            verdict, calls = "retracted", [self._peers.retract_manifest(r, newest) for r in holders]
        else:
            self._wait_to_decide(name, now + config.peer_timeout)
            return False
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, RingstoreError):
                raise result
        reached = sum(not isinstance(result, BaseException) for result in results)
        log.warning(
            "the verdict on a conditional write of %r (%s) never came: %s on %d of its %d "
            "holders (of %d replicas asked, %d silent)",
            name,
            newest.version,
            verdict,
            reached,
            len(holders),
            len(members),
            silent,
        )
        if not reached:
            self._wait_to_decide(name, now + config.peer_timeout)
            return False
        self._undecidable.pop(name, None)
        return True

    def _wait_to_decide(self, name: str, until: float) -> None:
        """Try deciding ``name`` again only after ``until`` (monotonic seconds)."""
        if len(self._undecidable) >= self._undecidable_sweep:  # forget the expired
            now = time.monotonic()
            self._undecidable = {n: t for n, t in self._undecidable.items() if t > now}
            self._undecidable_sweep = max(1024, 2 * len(self._undecidable))
        self._undecidable[name] = until

    async def _hear_out(
        self, call: asyncio.Future[ReplicaRead], replica: str, newest: Manifest | None
    ) -> None:
        """Wait for a replica's answer that came after the read was decided (bounded by the
        peer timeout), and repair the replica if it is behind ``newest`` (None: nothing to
        repair with)."""
        try:
            found = await call
        except RingstoreError:
            return  # counted against the replica's liveness by the call itself
        if newest is not None and _behind(found.manifest, newest):
            await self._repair(replica, newest)

    async def _read_previous(self, name: str, asked: set[str]) -> list[ReplicaRead]:
        """The manifests of ``name`` held by its replicas under earlier placements (while
        a hand-over after a ring change or a return is under way: ``previous_replicas``);
        those that fail are left out, as a replica that does not answer is."""
        previous = [m for m in self._membership.previous_replicas(name) if m not in asked]
        if not previous:
            return []
        answers = await asyncio.gather(
            *(self._peers.get_manifest(member, name) for member in previous),
            return_exceptions=True,
        )
        found = []
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, RingstoreError):
                    raise answer
            elif answer.manifest is not None:
                found.append(answer)
        return found

    async def read_committed(self, name: str) -> Manifest | None:
        """The newest manifest of ``name`` once it is certainly committed: every replica
        answers (as ``read`` with ``every_replica``) and the newest among them is held by a
        write quorum of them and decided: unmarked on one holder at least (it heard the
        verdict; the others' confirmations may have been lost), or, once overdue, decided
        by ``decide`` here for the next call to find. A newest held by fewer may be a write that
        reached one replica and was never retracted (its coordinator died), which the next
        quorum read may or may not see: a decision that destroys data must not rest on it.
        None only where every home replica itself answered none and no hand-over is under
        way (stand-ins answering for homes out of reach hold nothing).
        Replicas found behind are repaired in the background, so asking again later may
        succeed. Raises Unavailable (Undecided: a conditional write not yet decided)."""
        n, quorum = self._config.manifest_replicas, self._config.manifest_write_quorum

        async def get(member: str) -> ReplicaRead:
            return await self._peers.get_manifest(member, name)

        found = await self._ask(name, get, n)
        if len(found) < n:
            raise Unavailable(f"only {len(found)} of the {n} replicas of {name!r} answered")
        reads = list(found.values()) + await self._read_previous(name, set(found))
        newest = _newest(reads)
        if newest is None:  # "none" only from the home replicas themselves, nothing moving
            homes = self._membership.home_replicas(name).members
            if not set(homes) <= set(found):
                raise Unavailable(f"not every home replica of {name!r} answered")
            self._check_handing_over(name)
            return None
        held = _holding(reads, newest)
        undecided = _undecided(reads, newest)  # (one holder unmarked: it was confirmed)
        if undecided is not None:
            if undecided.overdue:  # decided here, as a read would, for the next pass
                await self.decide(name, newest)
            raise Undecided(f"the newest manifest of {name!r} is not yet decided")
        for replica, read in found.items():
            if _behind(read.manifest, newest):
                self._spawn(self._repair(replica, newest))
        if len(held) < quorum:
            raise Unavailable(f"the newest manifest of {name!r} is on {len(held)} replicas")
        return newest

    async def purge_tombstone(self, tombstone: Manifest) -> bool:
        """Drop ``tombstone`` from the N *home* replicas if each of them holds exactly it and
        no hand-over is under way for its name; True if it was purged. (A handoff's copy, if
        any, is handed back by its rebalancer and purged on a later pass.)

        A home replica that is down or behind (it might hold an older live version, which
        would come back once the tombstone is gone) stops the purge. A retraction that
        fails leaves the tombstone on that replica, and the next read repairs it back onto
        the others; a later pass purges it again.
        """
        name = tombstone.name
        if not tombstone.deleted or self._membership.handing_over(name):
            return False

        async def get(member: str) -> Manifest | None:
            found = await self._peers.get_manifest(member, name)
            # A provisional tombstone retracted would put back what it deleted: decide first.
            return None if found.provisional else found.manifest

        found = await self._ask(name, get, self._config.manifest_replicas, home_only=True)
        if len(found) < self._config.manifest_replicas:
            return False
        if any(m is None or m.precedence != tombstone.precedence for m in found.values()):
            return False  # reads repair replicas behind; a later pass tries again
        results = await asyncio.gather(
            *(self._peers.retract_manifest(replica, tombstone) for replica in found),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, RingstoreError):
                raise result
        return not any(isinstance(result, BaseException) for result in results)

    async def _repair(self, replica: str, manifest: Manifest) -> None:
        try:
            await self._peers.put_manifest(replica, manifest)
        except RingstoreError as exc:
            log.warning("read repair of %r on %s failed: %s", manifest.name, replica, exc)

    async def _write(self, manifest: Manifest, base: Manifest | None) -> list[ReplicaWrite]:
        """Write a manifest to its N replicas; raises Unavailable below the write quorum.

        A write that misses the quorum is retracted from the replicas that took it, so a
        failed PUT or DELETE does not surface later through them (as far as they answer).
        """
        expect = None if base is None else base.precedence
        refusals = _Refusals()

        async def put(member: str) -> ReplicaWrite:
            with refusals.noting(member):
                return await self._peers.put_manifest(member, manifest, expect)

        answers = await self._ask(manifest.name, put, self._config.manifest_replicas)
        quorum = self._config.manifest_write_quorum
        counted = answers if base is None else {r: a for r, a in answers.items() if a.stored}
        if len(counted) < quorum:
            await self._retract(manifest, answers)
            refusals.check_room(len(counted), len(answers) - len(counted), quorum)
            raise Unavailable(
                f"manifest of {manifest.name!r} reached {len(counted)} of the {quorum} "
                "replicas needed"
            )
        return list(answers.values())

    async def _write_on_condition(
        self, manifest: Manifest, condition: Preconditions
    ) -> list[ReplicaWrite]:
        """Write a manifest to its N home replicas, each keeping it only if ``condition``
        holds for its own current version; raises PreconditionFailed or Unavailable below
        the write quorum.

        Each replica checks under its lock and keeps the first of two writes conditional on
        the same state, so at most one of them reaches W. Only the home replicas count: a
        handoff standing in for a down one has not seen the name's history, and would take
        ``If-None-Match: *`` for a name that exists. A replica holds the write provisional
        (read, never copied: ``ReplicaRead``) until it hears the verdict: a committed write
        is confirmed on each replica that kept it before this returns; one that misses W
        is retracted from each replica that took it or did not answer (its answer may have
        been lost: the replica puts back what the write replaced, if it kept it). See
        ``conditional_verdict`` for when that is a 412 and when a 503. Once every one of
        them has let go, its own chunks are deleted; if a retraction failed they are left
        to garbage collection, since that replica may still show the manifest.
        """
        config = self._config
        refusals = _Refusals()

        async def put(member: str) -> ReplicaWrite:
            with refusals.noting(member):
                return await self._peers.put_manifest(member, manifest, None, condition)

        answers = await self._ask(manifest.name, put, config.manifest_replicas, home_only=True)
        verdict = conditional_verdict(answers.values(), config.manifest_write_quorum)
        if verdict is Verdict.STORED:
            await self._confirm(manifest, answers)
            return list(answers.values())
        homes = self._membership.home_replicas(manifest.name).members
        unheard = [replica for replica in homes if replica not in answers]
        if await self._retract(manifest, answers, unheard) and manifest.chunks:
            self.delete_later(manifest.name, manifest.placed_chunks(), 0)
        stored = sum(answer.stored for answer in answers.values())
        if verdict is Verdict.REFUSED:
            raise PreconditionFailed(
                f"{manifest.name!r}: {condition.describe()} does not hold for its current "
                "version; nothing was changed"
            )
        # Enough replicas answered, but held racing writes: contended. Too few: unavailable,
        # or short of room when full disks were all that kept it from its quorum.
        refusals.check_room(stored, len(answers) - stored, config.manifest_write_quorum)
        undecided = WriteContended if len(answers) >= config.manifest_write_quorum else Unavailable
        raise undecided(
            f"conditional write of {manifest.name!r}: {len(answers)} of its "
            f"{config.manifest_replicas} replicas answered and {stored} accepted, with no "
            f"{config.manifest_write_quorum} agreeing; nothing was changed, try again"
        )

    async def _confirm(self, manifest: Manifest, answers: dict[str, ReplicaWrite]) -> None:
        """Tell each replica that kept a committed conditional write so, before its client
        hears: from then on reads repair the replicas behind with it. Where that fails the
        write stays provisional until a read finds its verdict overdue and decides it
        (``decide``), which only delays repairs."""
        results = await asyncio.gather(
            *(
                self._peers.confirm_manifest(replica, manifest)
                for replica, answer in answers.items()
                if answer.stored
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, NotFound):  # a peer of a release before confirmations
                log.info("%r not confirmed on a replica: %s", manifest.name, result)
            elif isinstance(result, BaseException):
                if not isinstance(result, RingstoreError):
                    raise result
                log.warning("confirming %r on a replica failed: %s", manifest.name, result)

    async def _retract(
        self, manifest: Manifest, answers: dict[str, ReplicaWrite], unheard: Iterable[str] = ()
    ) -> bool:
        """Take a write that missed its quorum back from each replica that stored it,
        putting back what it replaced there, and from the ``unheard`` (replicas whose
        answer is unknown: a provisional replica puts back what it replaced itself); True
        if every one did.

        Putting back matters: with several writers each stored on one replica and refused
        by the others, dropping their writes would leave the name without a replica.
        """
        stored = [(r, a.replaced) for r, a in answers.items() if a.stored]
        results = await asyncio.gather(
            *(
                self._peers.retract_manifest(replica, manifest, replaced)
                for replica, replaced in [*stored, *((r, None) for r in unheard)]
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, RingstoreError):
                raise result
        return not any(isinstance(result, BaseException) for result in results)

    async def commit(
        self,
        manifest: Manifest,
        base: Manifest | None = None,
        condition: Preconditions | None = None,
    ) -> None:
        """Write ``manifest`` to a quorum of its replicas, then retire what it superseded.

        ``base`` is the manifest a move or repair started from: the new revision is then
        kept only by replicas still holding ``base``, and only if a quorum of them took it
        does it count. ``condition`` is a conditional PUT's or DELETE's (If-Match...): see
        ``_write_on_condition``. Raises Unavailable below the quorum (nothing is retired
        then), PreconditionFailed when the condition does not hold.
        """
        if condition is not None:
            acks = await self._write_on_condition(manifest, condition)
        else:
            acks = await self._write(manifest, base)
        unused = retired_chunks(acks, manifest)
        if unused:
            self.delete_later(manifest.name, unused, self._config.delete_grace)

    def delete_later(
        self, name: str, chunks: set[tuple[str, str]], delay: float, attempt: int = 1
    ) -> None:
        """Delete ``(holder, chunk id)`` pairs of ``name`` after ``delay`` seconds, in the
        background, unless the current manifest references them by then. Journaled first,
        so a restart of this peer resumes it (``resume``)."""
        entry = None
        if self._journal is not None:
            entry = self._journal.add(name, chunks, time.time() + delay)
        self._spawn(self._delete(name, chunks, delay, entry, attempt))

    async def _retire_segment(self, segment: str) -> None:
        """Commit a tombstone for the part a retired segment names, if that part still is
        the version the segment named (a newer one is someone else's). Raises
        Unavailable."""
        try:
            name, version = parse_segment_id(segment)
        except ValueError:
            log.error("not a segment id in the deletion journal: %r", segment)
            return
        current = await self.read(name, decided=True)
        if current is None or current.deleted or current.version != version:
            return
        tombstone = Manifest(name, self._clock.now(), Layout(0, current.layout.k, 0), deleted=True)
        await self.commit(tombstone)

    def resume(self, pending: Iterable[PendingDeletion]) -> None:
        """Carry out deletions journaled before a restart: each when it was due, but not
        before ``delete_grace`` from now (the peer must first find its members)."""
        now = time.time()
        for entry in pending:
            delay = max(entry.due - now, self._config.delete_grace)
            self._spawn(self._delete(entry.name, set(entry.chunks), delay, entry, 1))

    async def _delete(
        self,
        name: str,
        chunks: set[tuple[str, str]],
        delay: float,
        entry: object,
        attempt: int,
    ) -> None:
        # What to delete was decided ``delay`` ago; since then a move or repair may have put
        # the same chunk back on the same holder. So the current manifest is read first and
        # whatever it references stays; if it cannot be read (or is not yet decided),
        # nothing is deleted now: it is tried again later, and the journal keeps it for the
        # next start after the last try (garbage collection decides otherwise). Chunks
        # whose holder does not answer are tried again later, DELETE_RETRIES times in all.
        await asyncio.sleep(delay)
        retry = max(self._config.delete_grace, RETRY_DELAY) * 2 ** (attempt - 1)
        try:
            current = await self.read(name, decided=True)
        except RingstoreError as exc:
            log.info("not deleting chunks of %r now: %s", name, exc)
            if isinstance(exc, Undecided):  # a verdict comes in ms, or is overdue in 3 timeouts
                retry = self._config.peer_timeout / 8 * 2 ** (attempt - 1)
            if attempt < DELETE_RETRIES:
                if self._journal is not None and entry is not None:
                    self._journal.done(entry)  # journaled again, with its new time
                self.delete_later(name, chunks, retry, attempt + 1)
            return
        if current is not None:
            chunks = chunks - _referenced(current)
        unreached = set()
        for holder, chunk in sorted(chunks):
            try:
                if holder == SEGMENT_HOLDER:
                    await self._retire_segment(chunk)
                    continue
                await self._peers.delete_chunk(holder, chunk)
            except ChunkNotFound:
                pass  # already gone
            except (RingstoreError, KeyError) as exc:
                log.info("chunk %s not deleted from %s: %s", chunk, holder, exc)
                unreached.add((holder, chunk))
        if self._journal is not None and entry is not None:
            self._journal.done(entry)
        if unreached and attempt < DELETE_RETRIES:
            self.delete_later(name, unreached, retry, attempt + 1)
