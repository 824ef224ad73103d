"""A peer's Prometheus metrics: one registry per peer, request figures and a scrape-time view.

``Metrics`` owns the peer's ``CollectorRegistry`` (never prometheus-client's global one:
tests run several peers in one process, and each must show only its own figures). Two kinds
of figures fill it:

- **Counted as requests end** (``observe``, called by ``node.api.access_log.RequestLog``
  once an answer is sent whole): requests by listener, route template, method and status,
  their latency, the bytes received and sent, and the chunk reads and writes this peer
  served as a holder. Labels are route *templates* (``/files/{name}``), never raw paths:
  a label's values are bounded by the routes, not by what clients ask for.
- **Read at scrape time** (``PeerCollector``): the figures the components keep anyway
  (membership, chunk store, disk, the upkeep loops' stats dataclasses, open connections,
  requests in progress) are read when Prometheus scrapes, not counted twice.

Plus the event loop's lag (``sample_loop_lag``: how late a timer fires, the delay every
request on this peer suffers) and the process collector (RSS, CPU, open files). Metric
names are listed in docs/operations.md; docs/alerts.yml and docs/grafana/ringstore.json use
them (a test holds them to what a scrape shows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node.cluster.batching import BatchCounts
from node.cluster.membership import Membership
from node.config import PeerConfig
from node.datapath.chunk_streams import BlockBudget
from node.datapath.coordinator import Coordinator
from node.datapath.hedging import HedgeDelay
from node.disk.chunk_store import ChunkStore
from node.disk.data_dir import disk_usage
from node.disk.deletions import DeletionLog
from node.disk.manifest_store import ManifestStore
from node.model.manifest import ChunkMeta
from node.upkeep.anti_entropy import AntiEntropy
from node.upkeep.packer import Packer
from node.upkeep.rebalancer import Progress
from node.upkeep.repairer import Repairer
from node.upkeep.scrubber import Scrubber
from ring import Ring, RingBalance, ring_balance

PREFIX = "ringstore_"
CHUNK_ROUTE = "/internal/chunks/{chunk_id}"  # node.api.peer.CHUNK: a holder's chunk I/O
# Seconds: from a small GET on an idle peer to a large PUT on a slow disk.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LAG_INTERVAL = 1.0  # seconds between event-loop lag samples
# Methods counted by name (RFC 9110's, PATCH, and what WebDAV clients probe with); others
# are counted as "other".
METHODS = frozenset(
    {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
     "PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"}
)  # fmt: skip


class Metrics:
    """One peer's registry and the figures counted as its requests end."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        request = ("listener", "route", "method")
        self.requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests answered, by listener (public, s3, shared), route template, method "
            "and status.",
            [*request, "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            PREFIX + "http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer.",
            request,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.received = Counter(
            PREFIX + "http_received_bytes",
            "Request body bytes received.",
            request,
            registry=self.registry,
        )
        self.sent = Counter(
            PREFIX + "http_sent_bytes",
            "Answer bytes sent (head and body; a file sent by sendfile: its bytes).",
            request,
            registry=self.registry,
        )
        self.chunk_writes = Counter(
            PREFIX + "chunk_writes", "Chunks this peer stored as a holder.", registry=self.registry
        )
        self.chunk_written_bytes = Counter(
            PREFIX + "chunk_written_bytes",
            "Bytes of chunks this peer stored as a holder.",
            registry=self.registry,
        )
        self.chunk_reads = Counter(
            PREFIX + "chunk_reads",
            "Chunk reads (whole or ranges) this peer served as a holder.",
            registry=self.registry,
        )
        self.chunk_read_bytes = Counter(
            PREFIX + "chunk_read_bytes",
            "Bytes this peer sent of the chunk reads it served (answer heads included).",
            registry=self.registry,
        )
        self.loop_lag = Gauge(
            PREFIX + "event_loop_lag_seconds",
            f"How late the last timer of a {LAG_INTERVAL:g}s sampler fired: the delay the "
            "event loop adds to everything on this peer.",
            registry=self.registry,
        )
        self.handler: Handler = make_aiohttp_handler(self.registry)
        self._servers: dict[str, Callable[[], int]] = {}  # listener -> open connections
        # (listener, route, method, status) -> the request metrics' children for it: a
        # labels() lookup takes a lock and checks its values (observe: 14.8 -> 3.9 µs)
        self._children: dict[
            tuple[str, str, str, int], tuple[Counter, Histogram, Counter, Counter]
        ] = {}

    def serving(self, listener: str, open_connections: Callable[[], int]) -> None:
        """Count ``listener``'s open connections (its server, once it serves) from now on."""
        self._servers[listener] = open_connections

    def open_connections(self) -> dict[str, int]:
        """Open connections by listener (those serving)."""
        return {listener: count() for listener, count in self._servers.items()}

    def __repr__(self) -> str:
        return f"Metrics({len(list(self.registry.collect()))} families)"

    def observe(
        self,
        listener: str,
        route: str,
        method: str,
        status: int,
        seconds: float,
        received: int,
        sent: int,
    ) -> None:
        """Count one answered request (``route``: its template, or ``unmatched``; a method
        outside HTTP's and WebDAV's own is ``other``: a label's values must be bounded,
        and aiohttp's pure-Python parser takes any token)."""
        if method not in METHODS:
            method = "other"
        key = (listener, route, method, status)
        children = self._children.get(key)
        if children is None:  # label values are bounded (routes, methods, statuses)
            children = self._children[key] = (
                self.requests.labels(listener, route, method, str(status)),
                self.latency.labels(listener, route, method),
                self.received.labels(listener, route, method),
                self.sent.labels(listener, route, method),
            )
        requests, latency, received_bytes, sent_bytes = children
        requests.inc()
        latency.observe(seconds)
        received_bytes.inc(received)
        sent_bytes.inc(sent)
        if route == CHUNK_ROUTE and method == "GET" and 200 <= status < 300:
            self.chunk_reads.inc()
            self.chunk_read_bytes.inc(sent)

    def chunk_read(self, size: int) -> None:
        """Count a chunk (or a range of one) read through the holder, ``size`` bytes: this
        peer's own, and those a channel frame asked for; the chunk route counts those it
        sends over HTTP."""
        self.chunk_reads.inc()
        self.chunk_read_bytes.inc(size)

    def chunk_stored(self, meta: ChunkMeta) -> None:
        """Count a chunk this peer stored as a holder (sent by a peer, or its own: the
        holder calls this, so that both count)."""
        self.chunk_writes.inc()
        self.chunk_written_bytes.inc(meta.size)

    async def sample_loop_lag(self, interval: float = LAG_INTERVAL) -> None:
        """Measure the event loop's lag every ``interval`` seconds, forever."""
        loop = asyncio.get_running_loop()
        while True:
            planned = loop.time() + interval
            await asyncio.sleep(interval)
            self.loop_lag.set(max(0.0, loop.time() - planned))


@dataclass(frozen=True)
class Watched:
    """What a peer's ``PeerCollector`` reads at scrape time (built by the wiring)."""

    config: PeerConfig
    membership: Membership
    chunks: ChunkStore
    manifests: ManifestStore
    coordinator: Coordinator
    repairer: Repairer
    scrubber: Scrubber
    rebalance: Progress
    anti_entropy: AntiEntropy
    packer: Packer
    deletions: DeletionLog
    buffers: BlockBudget  # the read-ahead and write-queue budget of its chunk streams
    hedge: HedgeDelay  # when manifest reads ask one more replica
    batches: BatchCounts  # manifest calls to other peers, batched (HttpTransport)
    channels_open: Callable[[], int]  # channels to other peers open now (HttpTransport)
    channels_opened: Callable[[], int]  # and opened since start
    in_progress: Callable[[], int]  # public requests being served (node.api.limits)
    connections: Callable[[], dict[str, int]]  # open connections by listener


class PeerCollector:
    """The figures a peer's components keep, turned into metrics when Prometheus scrapes.

    Counters come from the stats dataclasses of the upkeep loops (``/scrub``'s answer) and
    the coordinator; gauges from the membership, the stores and the disk. Nothing here
    blocks: one statvfs call, the rest from memory.
    """

    def __init__(self, watched: Watched) -> None:
        self._w = watched

    def __repr__(self) -> str:
        return f"PeerCollector({self._w.membership!r})"

    def collect(self) -> Iterator[Metric]:
        w = self._w
        yield from self._cluster(w.membership)
        yield from self._storage(w)
        yield _counter(
            "degraded_writes",
            "Files this peer stored with chunks missing (fewer than k+m holders took their chunk).",
            w.coordinator.degraded_writes,
        )
        yield from self._decoding(w.coordinator)
        yield _counter(
            "manifest_hedged_reads",
            "Manifest reads that asked one more replica than the read quorum because those "
            "asked were slower than the hedge delay (a hung or slow replica).",
            w.hedge.hedged,
        )
        yield _gauge(
            "manifest_hedge_delay_seconds",
            "How long a manifest read waits for its replicas before asking one more: the 95th "
            "percentile of recent replica answers.",
            w.hedge.seconds,
        )
        yield _counter(
            "manifest_batches",
            "Requests of manifest calls (reads, offers, confirmations) this peer sent to other "
            "peers: one per call when idle, fewer under load (calls that queue behind one go "
            "together).",
            w.batches.requests,
        )
        yield _counter(
            "manifest_batched_calls",
            "Manifest calls those requests carried (calls per request = this / batches).",
            w.batches.calls,
        )
        yield _gauge(
            "peer_channels_open",
            "Channels (one WebSocket per peer, node.cluster.channel) this peer has open to "
            "other peers, carrying its batches of manifest calls.",
            w.channels_open(),
        )
        yield _counter(
            "peer_channels_opened",
            "Channels this peer opened since it started: one per peer it calls, plus one "
            "each time a channel broke (a peer restarted, hung or refused a frame).",
            w.channels_opened(),
        )
        yield from self._upkeep(w)
        connections = GaugeMetricFamily(
            PREFIX + "open_connections",
            "Open client connections, by listener.",
            labels=["listener"],
        )
        for listener, count in sorted(w.connections().items()):
            connections.add_metric([listener], count)
        yield connections
        yield _gauge(
            "requests_in_progress",
            "Public requests being served now (at most --max-requests).",
            w.in_progress(),
        )

    @staticmethod
    def _cluster(membership: Membership) -> Iterator[Metric]:
        members = GaugeMetricFamily(
            PREFIX + "members",
            "Cluster members as this peer sees them, by state.",
            labels=["state"],
        )
        up = membership.up_ids()
        members.add_metric(["up"], len(up))
        members.add_metric(["down"], len(membership.members()) - len(up))
        yield members
        yield _gauge("ring_members", "Members on this peer's ring.", len(membership.ring))
        if len(membership.ring):
            yield from _ring_balance(balance_of(membership.ring))

    @staticmethod
    def _decoding(coordinator: Coordinator) -> Iterator[Metric]:
        reads = CounterMetricFamily(
            PREFIX + "decoded_reads",
            "Reads (a GET or a range of one, per file or multipart part) this peer served by "
            "rebuilding at least one stripe from parity, by why the first data chunk it "
            "passed over could not be used: absent (not in the manifest, a degraded write), "
            "down (its holder was seen down), unreachable, not_found, corrupt (failed its "
            "digest), slow (no block within --peer-timeout), failed (anything else).",
            labels=["reason"],
        )
        for reason, count in coordinator.decoded_reads.items():
            reads.add_metric([reason], count)
        yield reads
        yield _counter(
            "decoded_stripes",
            "Stripes those reads rebuilt from parity (Reed-Solomon decoding).",
            coordinator.decoded_stripes,
        )

    @staticmethod
    def _storage(w: Watched) -> Iterator[Metric]:
        total, free = disk_usage(w.config.data_dir)
        yield _gauge("disk_total_bytes", "Size of the data directory's file system.", total)
        yield _gauge("disk_free_bytes", "Free bytes on the data directory's file system.", free)
        yield _gauge(
            "chunk_store_used_bytes", "Bytes of chunks this peer holds.", w.chunks.used_bytes
        )
        yield _gauge("chunk_store_chunks", "Chunks this peer holds.", w.chunks.chunk_count)
        yield _gauge(
            "manifest_log_bytes",
            "Bytes of this peer's manifest log, records no longer current included.",
            w.manifests.log_bytes,
        )
        yield _gauge(
            "manifest_log_live_bytes",
            "Bytes of the manifest log's current records (the rest goes at compaction).",
            w.manifests.live_bytes,
        )
        yield _gauge(
            "chunk_writes_in_progress",
            "Chunks this peer is receiving or writing: begun, not yet stored or failed.",
            w.chunks.writing,
        )
        yield _gauge(
            "block_buffer_bytes",
            "Bytes of --buffer-memory held: blocks in hand of admitted GETs and PUTs, and "
            "blocks chunk streams hold ahead of their consumer (read-ahead, queued blocks).",
            w.buffers.held,
        )
        yield _gauge(
            "block_buffer_admitted_bytes",
            "Bytes of block_buffer_bytes that admitted GETs and PUTs hold in hand.",
            w.buffers.admitted,
        )
        yield _gauge("block_buffer_budget_bytes", "--buffer-memory.", w.buffers.budget)
        yield _counter(
            "block_buffer_refused",
            "Times a chunk stream was refused credit (the budget spent, or requests waiting "
            "to be admitted) and went block by block.",
            w.buffers.refused,
        )
        yield _counter(
            "admission_waits",
            "GETs and PUTs that waited for --buffer-memory before they started.",
            w.buffers.waited,
        )
        yield _counter(
            "admission_refused",
            "GETs and PUTs answered 503 after waiting --admission-wait for --buffer-memory.",
            w.buffers.turned_away,
        )
        yield _gauge(
            "quota_bytes",
            "--max-bytes: the most chunk bytes this peer takes (0: no quota, the disk's size).",
            w.config.max_bytes or 0,
        )

    @staticmethod
    def _upkeep(w: Watched) -> Iterator[Metric]:
        scrub = w.scrubber.stats
        yield _counter("scrub_passes", "Full scrub passes finished.", scrub.passes)
        yield _counter("scrub_checked_chunks", "Chunks re-read by scrubs.", scrub.chunks_checked)
        yield _counter("scrub_checked_bytes", "Bytes re-read by scrubs.", scrub.bytes_checked)
        yield _counter(
            "scrub_errors", "Chunks scrubs found corrupt or unreadable.", scrub.errors_found
        )
        yield _gauge(
            "scrub_last_pass_timestamp_seconds",
            "When the last full scrub pass ended (Unix time; 0: none yet).",
            scrub.last_scrub,
        )
        yield _gauge(
            "scrub_pass_chunks",
            "Chunks the scrub pass under way set out to check (0: none running).",
            scrub.pass_chunks,
        )
        yield _gauge(
            "scrub_pass_checked_chunks",
            "Chunks the scrub pass under way has checked so far.",
            scrub.pass_checked,
        )
        yield _counter("gc_removed_chunks", "Garbage chunks collected.", scrub.garbage_removed)
        yield _counter(
            "gc_removed_bytes", "Bytes of garbage chunks collected.", scrub.garbage_bytes
        )
        repair = w.repairer.stats
        yield _counter(
            "repaired_chunks", "Chunks rebuilt onto new holders.", repair.chunks_repaired
        )
        yield _counter("repaired_bytes", "Bytes of chunks rebuilt.", repair.bytes_repaired)
        yield _counter("repair_failures", "Repairs that failed (retried later).", repair.failures)
        yield _counter("repair_sweeps", "Repair sweeps finished.", repair.sweeps)
        yield _counter("repair_checked_names", "Names repair sweeps read.", repair.names_checked)
        yield _gauge(
            "repair_queued", "Files reported broken and waiting for repair.", repair.queued
        )
        yield _gauge(
            "repair_last_timestamp_seconds",
            "When a chunk was last repaired (Unix time; 0: never).",
            repair.last_repair,
        )
        move = w.rebalance
        yield _counter("rebalance_moves", "Chunks moved by rebalancing.", move.moves)
        yield _counter(
            "rebalance_failed_moves", "Rebalancing moves that failed.", move.failed_moves
        )
        yield _counter("rebalance_moved_bytes", "Bytes moved by rebalancing.", move.moved_bytes)
        yield _counter("rebalance_passes", "Rebalancing passes finished.", move.passes)
        yield _gauge(
            "rebalance_remaining_bytes",
            "Bytes planned to move and not moved yet.",
            move.remaining_bytes,
        )
        yield _gauge(
            "rebalance_pending", "Names queued for the next rebalancing pass.", move.pending
        )
        yield _gauge(
            "deletions_pending",
            "Delayed chunk deletions journaled and not yet carried out (superseded versions, "
            "deleted files: each waits --delete-grace, then is retried on failure).",
            w.deletions.pending,
        )
        yield _gauge(
            "deletions_pending_chunks",
            "Chunks those pending deletions name.",
            w.deletions.pending_chunks,
        )
        packs = w.packer.stats
        yield _counter("packs_written", "Packs of cold small files this peer stored.", packs.packs)
        yield _counter(
            "packed_files",
            "Small files whose manifest this peer rewrote to name their bytes in a pack.",
            packs.files_packed,
        )
        yield _counter("packed_bytes", "Bytes of those files.", packs.bytes_packed)
        yield _counter(
            "packs_deleted",
            "Packs this peer deleted: none of their files was in them any more.",
            packs.packs_deleted,
        )
        yield _counter(
            "pack_failures",
            "Packs not stored, or stored short and deleted unused: their files stay as they were.",
            packs.failures,
        )
        ae = w.anti_entropy.stats
        yield _counter("anti_entropy_passes", "Anti-entropy passes finished.", ae.passes)
        yield _counter(
            "anti_entropy_checked_chunks", "Chunk placements checked.", ae.chunks_checked
        )
        yield _counter(
            "anti_entropy_missing_chunks",
            "Chunks found missing from the holders their manifest names (sent to repair).",
            ae.missing_found,
        )
        yield _counter(
            "anti_entropy_skipped_holders",
            "Holder checks skipped (holder down or failing; the next pass retries).",
            ae.holders_skipped,
        )
        yield _gauge(
            "anti_entropy_last_pass_timestamp_seconds",
            "When the last anti-entropy pass ended (Unix time; 0: none yet).",
            ae.last_pass,
        )


@lru_cache(maxsize=4)
def balance_of(ring: Ring) -> RingBalance:
    """``ring_balance`` computed once per ring (it walks every ring point; a ring is a value)."""
    return ring_balance(ring)


def _ring_balance(balance: RingBalance) -> Iterator[Metric]:
    source = (
        "ratio = token share / (weight / total weight), as OpenStack Swift's ring builder "
        "measures a device's balance"
    )
    share = GaugeMetricFamily(
        PREFIX + "ring_token_share",
        "Fraction of the ring's hash space each member is primary for (the arcs of the "
        "circle ending at its virtual nodes; the shares sum to 1), on this peer's ring.",
        labels=["member"],
    )
    ratio = GaugeMetricFamily(
        PREFIX + "ring_token_share_ratio",
        f"Each member's token share over its weight-fair share: {source}. 1 is fair; 1.05: "
        "it gets 5% more keys (chunks, load) than its weight asks for.",
        labels=["member"],
    )
    for member in balance.members:
        share.add_metric([member.id], member.share)
        ratio.add_metric([member.id], member.ratio)
    yield share
    yield ratio
    yield _gauge(
        "ring_token_share_ratio_max",
        "The largest ring_token_share_ratio: how much more than its fair share the most "
        "loaded member gets.",
        balance.max_ratio,
    )
    yield _gauge(
        "ring_token_share_ratio_min", "The smallest ring_token_share_ratio.", balance.min_ratio
    )
    yield _gauge(
        "ring_token_share_ratio_cv",
        "Coefficient of variation of the members' ring_token_share_ratio (population "
        "standard deviation over mean; 0 is perfectly even): the load-imbalance figure of "
        "DeCandia et al., Dynamo (SOSP 2007), section 6.2.",
        balance.cv,
    )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)
