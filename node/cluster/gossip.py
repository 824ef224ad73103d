"""Gossip: every peer tells every member what it knows, and so learns who is up.

Each round sends this peer's ``GossipMessage`` (its own record, every member it knows, its
hybrid clock and its storage figures) to every member and to every seed not yet known, and
merges the answers, which are the receivers' own messages. A member learned by one peer is
so learned by all within a round or two, with or without multicast; clocks observed this way
keep versions issued by different peers in causal order within a heartbeat. The exchange is
also the heartbeat: its outcome feeds liveness (through ``Peers``).

Clocks (the policy is ``node.model.version``'s): each answer from a member carries its wall
clock, so every round measures how far each member's clock is from this peer's
(``ClockOffset``, kept in its liveness and shown by ``GET /cluster``); a member found past
``MAX_OFFSET_MS`` is logged when it becomes so. A member whose wall clock is past
``MAX_SKEW_MS`` either way is still heard (its members are learned, and it is answered, so
both sides measure each other) but is not followed, and an exchange with it counts as
failed: it is down, to this peer, until its clock is back within the limit. A hybrid clock
past the limit from a member in step is not followed either. A message from a peer of
before the wall clock field is judged by its hybrid clock alone, and refused whole.

Members enter only through gossip, and every exchange is signed both ways with the cluster
secret (``node.cluster.auth``): a member is always vouched for by a peer that holds the
secret. Seeds (``--join``, a join token's URLs, peers found by mDNS) are only addresses to
try; a process there that cannot sign its answer teaches nothing. A seed not yet known as a
member is sent an *introduction* (this peer alone: no member list, no figures), so a
stranger at a seed address learns nothing it could not see in mDNS. Seeds the operator gave
are tried every round until they answer; addresses found by mDNS (anyone on the LAN can
announce the public cluster id) are bounded in number and dropped after a few failures.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec

from node.cluster.epidemic import fanout, newer_beats, pick, silence_limit
from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.cluster.protocol import GossipMessage, MemberRecord, PeerFigures, check_member_url
from node.errors import CredentialsRefused, InvalidRequest, PeerUnavailable
from node.model.version import MAX_OFFSET_MS, MAX_SKEW_MS, ClockOffset, HybridClock

log = logging.getLogger(__name__)

# Addresses found by mDNS kept at most, and failed exchanges before one is dropped.
MAX_FOUND = 256
FOUND_TRIES = 3
# While no other member is up: seconds between two warnings about one address that
# refuses this peer's credentials or does not answer, and how long one must have failed
# before it is warned about (peers started together refuse connections for a moment).
UNJOINED_WARN_EVERY = 60.0
UNJOINED_WARN_AFTER = 30.0


@dataclass
class _Failing:
    """An address whose gossip exchanges fail, in a row (monotonic seconds)."""

    since: float
    last: float
    count: int = 0  # failed exchanges in a row
    warned: float = float("-inf")
    refused: bool = False  # the last failure was a 401: our credentials are not theirs


class Gossip:
    """The gossip loop of one peer, and the merging of what other peers send."""

    def __init__(
        self,
        membership: Membership,
        peers: Peers,
        clock: HybridClock,
        seeds: Iterable[str],
        figures: Callable[[], PeerFigures],
        interval: float = 1.0,
        down_after: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        """Raises ValueError for a seed that is not ``http(s)://host:port``. ``rng`` picks
        the members of each round (tests give a seeded one)."""
        self._membership = membership
        self._peers = peers
        self._clock = clock
        me = membership.me.url
        urls = [check_member_url(s.rstrip("/")) for s in seeds]
        self._seeds = [url for url in urls if url != me]
        self._found: set[str] = set()  # addresses found by mDNS (failures: ``_failing``)
        self._figures = figures  # this peer's own storage figures, read at every message
        self._interval = interval
        self._down_after = down_after
        self._rng = rng or random.Random()
        self._digests: dict[str, str] = {}  # member id -> digest of its member list, as heard
        self._failing: dict[str, _Failing] = {}  # address -> its exchanges failing

    def __repr__(self) -> str:
        return (
            f"Gossip(every {self._interval}s, seeds={len(self._seeds)}, found={len(self._found)})"
        )

    def add_seed(self, url: str) -> None:
        """An address where a member may be (found by mDNS): introduce this peer at once."""
        url = url.rstrip("/")
        known = url == self._membership.me.url or url in self._seeds or url in self._found
        if known or len(self._found) >= MAX_FOUND:
            return
        self._found.add(url)
        self._failing.pop(url, None)  # its failures in a row start again
        self._membership.news()

    @property
    def seeded(self) -> bool:
        """Whether this peer has addresses of others to join through (``--join``, a join
        token, mDNS): a peer without any is a cluster of its own."""
        return bool(self._seeds or self._found)

    def own_figures(self) -> PeerFigures:
        """This peer's storage figures now, as it reports them to others."""
        return self._figures()

    def message(self, full: bool = True) -> GossipMessage:
        """What this peer tells others now; the member list only if ``full``."""
        membership = self._membership
        return GossipMessage(
            sender=MemberRecord.of(membership.me),
            members=[MemberRecord.of(m) for m in membership.members()] if full else [],
            clock=self._clock.now(),
            wall_ms=self._clock.wall_ms(),
            digest=membership.digest,
            beat=membership.liveness(membership.me.id).beat,
            beats=membership.beats(),
            **msgspec.structs.asdict(self._figures()),
        )

    def answer(self, message: GossipMessage) -> GossipMessage:
        """This peer's answer to ``message`` (once received): its member list only when the
        sender's may differ (another digest, or a peer of before digests)."""
        return self.message(full=message.digest != self._membership.digest)

    def _relayed(self) -> bool:
        """Whether news of members comes through others: the fan-out misses some members
        each round (clusters of more than ``fanout(N) + 1`` peers)."""
        members = len(self._membership.members())
        return fanout(members) < members - 1

    def silence(self) -> float:
        """Seconds without news of a member before it counts as down (``silence_limit``,
        with a round's exchanges taking up to their timeout as slack)."""
        members = len(self._membership.members())
        return silence_limit(members, self._interval, self._down_after, self._timeout)

    @property
    def _timeout(self) -> float:
        return max(1.0, 2 * self._interval)

    def introduction(self) -> GossipMessage:
        """What this peer tells an address not yet known to be a member's: itself alone."""
        me = MemberRecord.of(self._membership.me)
        return GossipMessage(sender=me, members=[me])

    def receive(self, message: GossipMessage) -> None:
        """Merge a message another peer sent: its members are learned and, if its clock is
        in step, its sender counts as up and its clock is followed.

        A sender whose wall clock is past the hard limit (``HybridClock.check_wall``) is
        heard but not counted up nor followed; the answer (this peer's message) still lets
        it measure how far off it is. Raises ValueError (and changes nothing) when a member
        record in it cannot be a member or, from a peer of before the wall clock field, its
        hybrid clock is one ``HybridClock.check`` refuses.
        """
        self._merge(message, answered=False)

    def _merge(self, message: GossipMessage, answered: bool) -> str | None:
        """``receive``'s work (``answered``: the message is the answer to this peer's own
        gossip); returns why the sender is out of step, or None if it is not."""
        sender = message.sender.member()
        members = [r.member() for r in message.members]
        out_of_step = None
        if message.wall_ms is not None:
            try:
                self._clock.check_wall(message.wall_ms)
            except InvalidRequest as exc:
                out_of_step = str(exc)
        elif message.clock is not None:
            self._clock.check(message.clock)
        membership = self._membership
        # Beats are read before anything changes (a misaligned list raises ValueError), and
        # only as far as the skew limit past this peer's clock: a member cannot pin another's
        # beat in the future, where no real beat would ever count again.
        beats = {sender.id: message.beat} if message.beat else {}
        if message.beats and message.digest == membership.digest:
            ids = [m.id for m in membership.members()]
            beats = {**newer_beats({}, ids, message.beats), **beats}
        limit = self._clock.wall_ms() + MAX_SKEW_MS
        beats = {member: beat for member, beat in beats.items() if beat <= limit}
        membership.learn(sender)
        membership.merge(members)
        if out_of_step is not None:
            return out_of_step
        if message.clock is not None:
            try:
                self._clock.observe(message.clock)
            except InvalidRequest as exc:  # its own clock is fine; it followed one too far
                log.debug("not following the clock of %s: %s", sender.id, exc)
        if answered:
            membership.report_success(sender.id)
        else:  # it reaches this peer; whether this peer reaches it, its own calls say
            membership.report_heard(sender.id, self.silence())
        membership.hear(sender.id, message.figures())
        self._digests[sender.id] = message.digest
        if not self._relayed():  # every member is asked directly: only its own word counts
            beats = {sender.id: beats[sender.id]} if sender.id in beats else {}
        membership.hear_beats(beats, self.silence())
        return None

    def _answered(self, member_id: str, sent_ms: int, answer: GossipMessage) -> None:
        """Merge a member's answer to this peer's gossip, sent at ``sent_ms``, measuring its
        clock on the way. Raises ValueError, counted as a failed exchange, for an answer
        ``receive`` refuses or one from a member out of step."""
        if answer.wall_ms is not None:
            self._note_offset(
                member_id, ClockOffset.measure(sent_ms, self._clock.wall_ms(), answer.wall_ms)
            )
        out_of_step = self._merge(answer, answered=True)
        if out_of_step is not None:
            raise InvalidRequest(f"out of step: {out_of_step}")

    def _note_offset(self, member_id: str, offset: ClockOffset) -> None:
        """Keep a member's clock offset; log when it becomes skewed, and when it is not."""
        before = self._membership.hear_clock(member_id, offset)
        was_skewed = before is not None and before.skewed
        if offset.skewed and not was_skewed:
            log.warning(
                "member %s's clock is %+.3fs from this peer's (±%.3fs), past the %.1fs "
                "the cluster allows: check time synchronisation (NTP) on both",
                member_id,
                offset.offset_ms / 1000,
                offset.uncertainty_ms / 1000,
                MAX_OFFSET_MS / 1000,
            )
        elif was_skewed and not offset.skewed:
            log.info(
                "member %s's clock is back in step (%+.3fs)", member_id, offset.offset_ms / 1000
            )

    async def _exchange(self, url: str, member_id: str | None, message: GossipMessage) -> None:
        timeout = self._timeout
        merge = self.receive
        if member_id is not None:
            merge = functools.partial(self._answered, member_id, self._clock.wall_ms())
        try:
            await self._peers.exchange(url, member_id, message, timeout, merge)
        except PeerUnavailable as exc:
            log.debug("gossip with %s failed: %s", url, exc)
            self._failed(url, exc)
            if member_id is None and url in self._seeds:
                self._seed_failed(url, exc)
            if url in self._found and self._failing[url].count >= FOUND_TRIES:
                self._found.discard(url)
                log.info("mDNS address %s did not answer as a member; dropped", url)
        else:
            self._failing.pop(url, None)

    def _failed(self, url: str, exc: PeerUnavailable) -> None:
        """Note a failed exchange with ``url``. While no other member is up (a joiner, a
        peer whose secret was rotated away while it was down, one whose TLS trust is not
        the cluster's), say why at WARNING, once every ``UNJOINED_WARN_EVERY`` s an
        address: at once for a refusal of its credentials (401), after
        ``UNJOINED_WARN_AFTER`` s of failures for others. Nothing else tells the operator:
        the peer runs on as a cluster of one. Once joined, a failing member is the
        liveness tracker's news (``Membership.report_failure``)."""
        now = time.monotonic()
        failing = self._failing.setdefault(url, _Failing(now, now))
        failing.last, failing.refused = now, isinstance(exc, CredentialsRefused)
        failing.count += 1
        joined = len(self._membership.up_ids()) > 1  # a refusal then: a rotation under way
        due = failing.refused or now - failing.since >= UNJOINED_WARN_AFTER
        if joined or not due or now - failing.warned < UNJOINED_WARN_EVERY:
            return
        failing.warned = now
        if failing.refused:
            log.warning(
                "%s refused this peer's credentials (HTTP 401): this peer's cluster secret "
                "is not the one there (another cluster's, or one its rotations retired); "
                "start this peer with a new join token (docs/security.md)",
                url,
            )
        else:
            log.warning(
                "%s has not answered this peer's gossip for %.0fs and no other member is up: %s",
                url,
                now - failing.since,
                exc.reason,
            )

    def refused_by(self) -> list[str]:
        """The addresses whose last answer, within ``silence()``, refused this peer's
        credentials (``/ready`` counts them)."""
        self._forget_failing()
        return sorted(u for u, f in self._failing.items() if f.refused)

    def _forget_failing(self) -> None:
        """Forget addresses not failed within ``silence()`` (no longer tried, or answered
        by a process that is no member, which an exchange that succeeds never clears)."""
        recent = time.monotonic() - self.silence()
        for url in [u for u, f in self._failing.items() if f.last < recent]:
            del self._failing[url]

    def _seed_failed(self, url: str, exc: PeerUnavailable) -> None:
        """Drop a seed (``--join``, a token's address) that failed ``FOUND_TRIES`` exchanges
        in a row once this peer knows another member: a seed that is not a member's address
        (another cluster's peer, a typo) was introduced to every round for good, and the
        peer there logged a refusal a second (an attack). Before then it is all there is
        to join through, and is kept."""
        failures = self._failing[url].count  # (``_failed`` counted this one)
        joined = len(self._membership.members()) > 1
        if failures >= FOUND_TRIES and joined:
            self._seeds.remove(url)
            log.warning(
                "join address %s did not answer as a member of this cluster %d times in a "
                "row: no longer tried (%s)",
                url,
                failures,
                exc,
            )

    async def round(self) -> None:
        """Beat, exchange gossip with ``fanout(N)`` members picked at random (every member
        in small clusters), introduce this peer to every seed not yet known as a member's
        address, and count as down the members with no news for ``silence()``."""
        membership = self._membership
        known_urls = {m.url for m in membership.members()}
        self._found -= known_urls
        members = [m for m in membership.members() if m.id != membership.me.id]
        chosen = pick(members, fanout(len(members) + 1), self._rng)
        seeds = [s for s in self._seeds if s not in known_urls] + sorted(self._found)
        membership.beat(self._clock.wall_ms())
        message = self.message()  # one per round: its figures cost a statvfs
        membership.hear(membership.me.id, message.figures())  # its own fullness, too
        light = msgspec.structs.replace(message, members=[])
        digest = message.digest
        introduction = self.introduction()
        await asyncio.gather(
            *(
                self._exchange(m.url, m.id, light if self._digests.get(m.id) == digest else message)
                for m in chosen
            ),
            *(self._exchange(url, None, introduction) for url in seeds),
        )
        if self._relayed():  # else a failed exchange is the only way down, as it always was
            membership.check_silence(self.silence())
        membership.settle_after(self.silence())
        await membership.save()
        await membership.refresh_ring()
        self._forget_failing()

    async def run(self) -> None:
        """Gossip every ``interval`` seconds, and at once when a member is learned."""
        while True:
            try:
                await self.round()
            except Exception:  # a bug here must not end heartbeats for good
                log.exception("gossip round failed")
            await self._membership.wait_for_news(self._interval)
