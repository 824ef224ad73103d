"""Gossip: every peer tells every member what it knows, and so learns who is up.

Each round sends this peer's ``GossipMessage`` (its own record, every member it knows, its
hybrid clock and its storage figures) to every member and to every seed not yet known, and
merges the answers, which are the receivers' own messages. A member learned by one peer is
so learned by all within a round or two, with or without multicast; clocks observed this way
keep versions issued by different peers in causal order within a heartbeat. The exchange is
also the heartbeat: its outcome feeds liveness (through ``Peers``).

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
import logging
from collections.abc import Callable, Iterable

import msgspec

from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.cluster.protocol import GossipMessage, MemberRecord, PeerFigures, check_member_url
from node.errors import PeerUnavailable
from node.model.version import HybridClock

log = logging.getLogger(__name__)

# Addresses found by mDNS kept at most, and failed exchanges before one is dropped.
MAX_FOUND = 256
FOUND_TRIES = 3


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
    ) -> None:
        """Raises ValueError for a seed that is not ``http(s)://host:port``."""
        self._membership = membership
        self._peers = peers
        self._clock = clock
        me = membership.me.url
        urls = [check_member_url(s.rstrip("/")) for s in seeds]
        self._seeds = [url for url in urls if url != me]
        self._found: dict[str, int] = {}  # address found by mDNS -> failed exchanges so far
        self._figures = figures  # this peer's own storage figures, read at every message
        self._interval = interval

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
        self._found[url] = 0
        self._membership.news()

    def own_figures(self) -> PeerFigures:
        """This peer's storage figures now, as it reports them to others."""
        return self._figures()

    def message(self) -> GossipMessage:
        """What this peer tells others now."""
        return GossipMessage(
            sender=MemberRecord.of(self._membership.me),
            members=[MemberRecord.of(m) for m in self._membership.members()],
            clock=self._clock.now(),
            **msgspec.structs.asdict(self._figures()),
        )

    def introduction(self) -> GossipMessage:
        """What this peer tells an address not yet known to be a member's: itself alone."""
        me = MemberRecord.of(self._membership.me)
        return GossipMessage(sender=me, members=[me])

    def receive(self, message: GossipMessage) -> None:
        """Merge a message from another peer; its sender is evidently up.

        Raises ValueError (and changes nothing) when a member record in it cannot be a
        member or its clock is one ``HybridClock.check`` refuses.
        """
        sender = message.sender.member()
        members = [r.member() for r in message.members]
        if message.clock is not None:
            self._clock.check(message.clock)
        membership = self._membership
        membership.learn(sender)
        membership.merge(members)
        if message.clock is not None:
            self._clock.observe(message.clock)
        membership.report_success(sender.id)
        membership.hear(sender.id, message.figures())

    async def _exchange(self, url: str, member_id: str | None, message: GossipMessage) -> None:
        timeout = max(1.0, 2 * self._interval)
        try:
            await self._peers.exchange(url, member_id, message, timeout, self.receive)
        except PeerUnavailable as exc:
            log.debug("gossip with %s failed: %s", url, exc)
            if url in self._found:
                self._found[url] += 1
                if self._found[url] >= FOUND_TRIES:
                    del self._found[url]
                    log.info("mDNS address %s did not answer as a member; dropped", url)

    async def round(self) -> None:
        """Exchange gossip with every member, and introduce this peer to every seed not yet
        known as a member's address."""
        membership = self._membership
        known_urls = {m.url for m in membership.members()}
        for url in known_urls & set(self._found):
            del self._found[url]
        members = [m for m in membership.members() if m.id != membership.me.id]
        seeds = [s for s in self._seeds if s not in known_urls] + list(self._found)
        message = self.message()  # one per round: its figures cost a statvfs
        introduction = self.introduction()
        await asyncio.gather(
            *(self._exchange(m.url, m.id, message) for m in members),
            *(self._exchange(url, None, introduction) for url in seeds),
        )
        await membership.save()
        await membership.refresh_ring()

    async def run(self) -> None:
        """Gossip every ``interval`` seconds, and at once when a member is learned."""
        while True:
            try:
                await self.round()
            except Exception:  # a bug here must not end heartbeats for good
                log.exception("gossip round failed")
            await self._membership.wait_for_news(self._interval)
