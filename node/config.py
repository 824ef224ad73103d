"""Settings of one peer, with the defaults a production peer runs with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.model.layout import DEFAULT_BLOCK_SIZE, DEFAULT_K, DEFAULT_M
from ring import DEFAULT_VNODES


@dataclass(frozen=True)
class PeerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    join: tuple[str, ...] = ()
    weight: int = 1
    k: int = DEFAULT_K
    m: int = DEFAULT_M
    block_size: int = DEFAULT_BLOCK_SIZE
    # Chunks that must be durable before a PUT commits; None means k+1 (or all, below k+2 peers).
    write_quorum: int | None = None
    manifest_replicas: int = 3
    manifest_write_quorum: int = 2
    manifest_read_quorum: int = 2
    heartbeat_interval: float = 1.0
    down_after: int = 2  # consecutive failed exchanges before a member is down
    peer_timeout: float = 10.0  # connect / read timeout of a call to another peer
    stall_timeout: float = 30.0  # a chunk stream that takes no block for this long is dropped
    queue_depth: int = 4  # blocks buffered per chunk stream, each way
    delete_grace: float = 30.0  # seconds before chunks of a replaced version are deleted
    vnodes: int = DEFAULT_VNODES
    # Discovery: "zeroconf" announces and browses mDNS on ``interface`` (default: ``host``);
    # "none" relies on ``join`` seeds. Members found either way are exchanged over HTTP.
    discovery: str = "none"
    cluster: str = "ringstore"
    interface: str | None = None
    service_type: str = "_ringstore._tcp.local."
    # Bytes per second this peer moves when rebalancing after a join (0: unthrottled).
    rebalance_rate: float = 50e6
    rebalance_interval: float = 30.0  # seconds between passes that resume unfinished moves
    # Durability: a chunk whose holder has been down this long is rebuilt elsewhere.
    repair_after: float = 300.0
    repair_interval: float = 30.0  # seconds between sweeps for chunks needing repair
    scrub_rate: float = 20e6  # bytes per second the scrubber re-reads
    scrub_interval: float = 3600.0  # pause between scrub passes
    gc_grace: float = 600.0  # a chunk a newer or moved manifest superseded this long ago goes
    # A chunk no manifest knows at all (a PUT that died before its commit) goes only after
    # this long, and only if the ring did not change meanwhile: a manifest mid-hand-over
    # after joins can look absent.
    orphan_grace: float = 86400.0
    max_bytes: int | None = None  # chunk bytes this peer may hold (None: until the disk is full)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def zeroconf_address(self) -> str:
        """The address mDNS runs on: never a network the peer does not serve."""
        return self.interface or self.host

    def chunk_quorum(self, n: int) -> int:
        """Durable chunks a PUT of ``n`` chunks needs."""
        wanted = self.write_quorum if self.write_quorum is not None else self.k + 1
        return max(self.k, min(wanted, n))
