"""Settings of one peer: every option, its default, its range and its help, in one place.

``PeerConfig`` is the single source of truth: ``ringstore peer``'s command-line options are
generated from its fields (``node.process.cli``), so a default cannot differ between the
command line and code that builds a config directly (tests, ``ringstore up``). A field's
``Option`` metadata says how it appears on the command line; fields without one are
settings for tests and experiments only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.model.digests import ETAG_HASHES
from node.model.layout import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_K,
    DEFAULT_M,
    MAX_BLOCK_SIZE,
    MAX_SIZE,
    MIN_BLOCK_SIZE,
)
from node.model.manifest import MAX_INLINE
from node.model.zones import check_zone
from ring import DEFAULT_VNODES, MAX_WEIGHT, MIN_WEIGHT

# Files up to this size live inside their manifest: a PUT is 3 peer calls instead of 10, a
# GET 1-2 instead of 6-7. On ext4 (4 KiB blocks) the 3 replicas take more disk than 7 chunk
# files (each a block, sidecar inside) from about 9 KiB; speed is what this default buys.
DEFAULT_INLINE_MAX = 16 << 10
# Blocks queued on a peer's chunk streams beyond one each (node.datapath.chunk_streams.
# BlockBudget): a few fast GETs read 4 blocks ahead on each of 5 chunks, or a few PUTs queue
# 4 blocks for each of 7 holders; past it, streams go block by block.
DEFAULT_BUFFER_MEMORY = 64 << 20


@dataclass(frozen=True)
class Option:
    """How a config field appears as a ``ringstore peer`` option.

    ``flag`` overrides the option name (default: the field name with dashes); ``low`` and
    ``high`` bound numbers (inclusive); ``scale`` converts the value typed (e.g. MB/s) into
    the field's unit (bytes/s); ``choices`` restricts text; ``metavar`` names the value;
    ``file`` makes a ``Path`` an existing, readable file (default: a directory).
    """

    help: str
    flag: str | None = None
    low: float | None = None
    high: float | None = None
    scale: float = 1.0
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    hidden: bool = False
    envvar: str | None = None
    auto: int | None = None
    """The value the word ``auto`` stands for (an int option that can be derived)."""
    secret: bool = False  # never shown as a default or echoed
    file: bool = False
    """A ``Path`` field names an existing file, not a directory."""


AUTO_WEIGHT = 0  # --weight auto: derived from capacity when the peer starts
WEIGHT_UNIT = 1 << 40  # bytes of capacity per unit of --weight auto (1 TiB, as Ceph's)


def auto_weight(capacity_bytes: int) -> int:
    """``--weight auto``: one per TiB of capacity, rounded, within 1..``MAX_WEIGHT``."""
    return max(MIN_WEIGHT, min(MAX_WEIGHT, round(capacity_bytes / WEIGHT_UNIT)))


def option(help: str, **kwargs: Any) -> dict[str, Option]:
    """Field metadata that makes a config field a command-line option."""
    return {"option": Option(help, **kwargs)}


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class PeerConfig:
    data_dir: Path = field(
        metadata=option("Where this peer keeps its id, members, chunks and manifests.")
    )
    host: str = field(default="127.0.0.1", metadata=option("Address to serve on."))
    port: int = field(default=8000, metadata=option("Port to serve on.", low=1, high=65535))
    s3_port: int | None = field(
        default=None,
        metadata=option(
            "Also serve the S3 API on this port (path-style; docs/s3.md); off when unset, "
            "0: any free port.",
            low=0,
            high=65535,
            metavar="PORT",
        ),
    )
    s3_reuse_port: bool = field(
        default=False,
        metadata=option(
            "Bind --s3-port with SO_REUSEPORT, so that the peers of one host (one per core: "
            "docs/operations.md) all serve S3 on that one port, the kernel spreading "
            "connections over them; only processes of the same user can share it.",
        ),
    )
    shared_port: int | None = field(
        default=None,
        metadata=option(
            "Also serve the files API (files, manifests, listings, /cluster, /scrub, keys, "
            "namespaces, /health, /ready, /metrics) on this port, bound with SO_REUSEPORT and "
            "shared with the host's other peers (one per core: docs/operations.md), the kernel "
            "spreading connections over them; not the peer-to-peer API nor the web console "
            "(on --port only).",
            low=1,
            high=65535,
            metavar="PORT",
        ),
    )
    s3_domain: str | None = field(
        default=None,
        metadata=option(
            "Also take S3 requests to Host <bucket>.DOMAIN as virtual-hosted style "
            "(a wildcard DNS name for the peers); path-style always works.",
            metavar="DOMAIN",
        ),
    )
    join: tuple[str, ...] = field(
        default=(),
        metadata=option(
            "Where to find the cluster (repeatable); admits nothing without its secret.",
            metavar="URL",
        ),
    )
    join_token: str | None = field(
        default=None,
        repr=False,  # a secret: never in a repr, a log line or a traceback's locals
        metadata=option(
            "Join the cluster of this token (from `ringstore token`).",
            metavar="TOKEN",
            envvar="RINGSTORE_JOIN_TOKEN",
            secret=True,
        ),
    )
    join_token_file: Path | None = field(
        default=None,
        metadata=option("Read the join token from this file.", metavar="FILE", file=True),
    )
    cluster_secret_file: Path | None = field(
        default=None,
        metadata=option(
            "The cluster's secret file (mode 0600); addresses come from mDNS or --join.",
            metavar="FILE",
            file=True,
        ),
    )
    peer_auth: str = field(
        default="hmac",
        metadata=option(
            "Sign peer calls (hmac); off only to measure its cost, on loopback only.",
            choices=("hmac", "off"),
            hidden=True,
        ),
    )
    metrics_auth: str = field(
        default="key",
        metadata=option(
            "Who may read /metrics: holders of any access key (key), or anyone (public).",
            choices=("key", "public"),
        ),
    )
    weight: int = field(
        default=1,
        metadata=option(
            "Share of the data relative to weight-1 peers; 'auto': one per TiB of "
            "--max-bytes, or of the data directory's disk.",
            low=MIN_WEIGHT,
            high=MAX_WEIGHT,
            auto=AUTO_WEIGHT,
            metavar="1..1000|auto",
        ),
    )
    zone: str = field(
        default="",
        metadata=option(
            "Failure domain of this peer (a machine, a rack): a file's chunks go to distinct "
            "zones first (default: the host of its URL)."
        ),
    )
    k: int = DEFAULT_K
    m: int = field(
        default=DEFAULT_M,
        metadata=option("Parity chunks per file (k is 5).", flag="--parity", low=0, high=10),
    )
    block_size: int = field(
        default=DEFAULT_BLOCK_SIZE,
        metadata=option("Bytes per block of a stripe.", low=MIN_BLOCK_SIZE, high=MAX_BLOCK_SIZE),
    )
    inline_max: int = field(
        default=DEFAULT_INLINE_MAX,
        metadata=option(
            "Files up to this many bytes are kept inside their manifest (3 replicas), "
            "not cut into chunks (0: never).",
            low=0,
            high=MAX_INLINE,
        ),
    )
    etag: str = field(
        default="md5",
        metadata=option(
            "How files' etags are computed: the MD5 of the content, as S3 clients expect, "
            "or xxh3-128 (cheaper; shown as xxh3-<hex>, which no client takes for an MD5).",
            choices=ETAG_HASHES,
        ),
    )
    # Chunks that must be durable before a PUT commits; None means k+1 (or all, below k+2 peers).
    write_quorum: int | None = None
    manifest_replicas: int = 3
    manifest_write_quorum: int = 2
    manifest_read_quorum: int = 2
    heartbeat_interval: float = field(
        default=1.0, metadata=option("Seconds between gossip rounds.", low=0.05)
    )
    down_after: int = 2  # consecutive failed exchanges before a member is down
    # Seconds a peer trusts an access key or namespace it looked up: a revocation is seen
    # everywhere within this plus one quorum read.
    access_cache_ttl: float = 2.0
    peer_timeout: float = field(
        default=10.0, metadata=option("Connect and read timeout of peer calls (s).", low=0.1)
    )
    stall_timeout: float = field(
        default=30.0,
        metadata=option("Seconds a chunk stream may take no block before it is dropped.", low=0.1),
    )
    # Blocks buffered per chunk stream, each way (GET read-ahead, rebuilt blocks for a slow
    # holder). 2, not 4: a 1 GiB GET through one of 7 peers here measured as fast (warm
    # 473-515 vs 385-499 MB/s, cold 295-365 vs 291-440) and 6-8 MiB lower at its peak; 3 MiB
    # in hand or queued per stream is far above a LAN's bandwidth-delay product.
    queue_depth: int = 2
    buffer_memory: int = field(
        default=DEFAULT_BUFFER_MEMORY,
        metadata=option(
            "Bytes of blocks this peer's GETs and PUTs may hold: each waits until its blocks "
            "in hand fit, and read-ahead takes what is left (0: no limit, no read-ahead).",
            low=0,
            metavar="BYTES",
        ),
    )
    admission_wait: float = field(
        default=10.0,
        metadata=option(
            "Seconds a GET or PUT may wait for --buffer-memory before it is answered 503.",
            low=0,
        ),
    )
    delete_grace: float = field(
        default=30.0,
        metadata=option("Seconds before chunks of a replaced version are deleted.", low=0),
    )
    multipart_grace: float = field(
        default=7 * 86400.0,
        metadata=option(
            "Seconds a multipart upload may stay neither completed nor aborted before its "
            "parts are collected (S3 API).",
            low=0,
        ),
    )
    vnodes: int = DEFAULT_VNODES
    discovery: str = field(
        default="zeroconf",
        metadata=option(
            "Find peers with mDNS on the serving address, or only through --join.",
            choices=("zeroconf", "none"),
        ),
    )
    interface: str | None = field(
        default=None, metadata=option("Address for mDNS (default: --host).", metavar="ADDR")
    )
    service_type: str = field(
        default="_ringstore._tcp.local.", metadata=option("mDNS service type.", hidden=True)
    )
    rebalance_rate: float = field(
        default=50e6,
        metadata=option("MB/s this peer moves after a join (0: unthrottled).", low=0, scale=1e6),
    )
    repair_rate: float = field(
        default=50e6,
        metadata=option("MB/s of chunks this peer rebuilds (0: unthrottled).", low=0, scale=1e6),
    )
    rebalance_interval: float = field(
        default=30.0,
        metadata=option(
            "Seconds between retries of moves that failed or wait for a crowded target.", low=0.1
        ),
    )
    repair_after: float = field(
        default=300.0,
        metadata=option(
            "Seconds a holder may be down before its chunks are rebuilt elsewhere.", low=0
        ),
    )
    repair_interval: float = field(
        default=30.0, metadata=option("Seconds between sweeps for chunks needing repair.", low=0.1)
    )
    scrub_rate: float = field(
        default=20e6, metadata=option("MB/s the scrubber re-reads.", low=0, scale=1e6)
    )
    scrub_interval: float = field(
        default=3600.0, metadata=option("Seconds between scrub passes.", low=0)
    )
    anti_entropy_interval: float = field(
        default=3600.0,
        metadata=option(
            "Seconds between anti-entropy passes (every placed chunk confirmed on its holder).",
            low=1,
        ),
    )
    pack_after: float = field(
        default=86400.0,
        metadata=option(
            "Seconds a file kept in its manifest (--inline-max) stays unchanged before the "
            "anti-entropy walk packs it with others into an erasure-coded pack, while k + 2 "
            "peers are up (0: never).",
            low=0,
        ),
    )
    pack_check_interval: float = field(
        default=86400.0,
        metadata=option(
            "Seconds between checks of each pack for files changed since they were packed "
            "(a pack none of whose files is left is deleted; one half dead is repacked).",
            low=1,
        ),
    )
    tombstone_grace: float = field(
        default=7 * 86400.0,
        metadata=option(
            "Seconds a deletion's tombstone is kept before it may be purged (a peer down "
            "longer must rejoin with an empty data directory).",
            low=3600,
        ),
    )
    gc_grace: float = field(
        default=600.0,
        metadata=option("Seconds before an unreferenced chunk is garbage.", low=0),
    )
    # A chunk no manifest knows at all (a PUT that died before its commit) goes only after
    # this long, and only if the ring did not change meanwhile: a manifest mid-hand-over
    # after joins can look absent.
    orphan_grace: float = field(
        default=86400.0,
        metadata=option("Seconds before a chunk no manifest knows is garbage.", low=0),
    )
    pack_max: int = field(
        default=1 << 20,
        metadata=option(
            "Chunks of known size up to this many bytes are appended to packed volume files "
            "with group commit, not stored as files of their own (0: every chunk a file; at "
            "most 1 MiB).",
            low=0,
            high=1 << 20,
        ),
    )
    max_bytes: int | None = field(
        default=None,
        metadata=option(
            "Bytes of chunk files (with their sidecars) this peer may hold (default: the disk).",
            low=0,
        ),
    )
    reserve_bytes: int = field(
        default=64 << 20,
        metadata=option(
            "Free bytes kept on the data directory's disk for deletions, manifests and "
            "compaction: a chunk write that would leave fewer is refused (507), so a full "
            "disk can still be freed (0: none kept).",
            low=0,
            metavar="BYTES",
        ),
    )
    # Limits on what clients can take of a peer (docs/security.md, "Limits").
    max_file_size: int = field(
        default=5 << 40,
        metadata=option(
            "Largest file a PUT may store, in bytes (default 5 TiB).",
            low=0,
            high=MAX_SIZE,
            metavar="BYTES",
        ),
    )
    client_timeout: float = field(
        default=60.0,
        metadata=option(
            "Seconds a client may send no byte of a request body before it is refused (408).",
            low=0.01,
        ),
    )
    client_min_rate: float = field(
        default=500.0,
        metadata=option(
            "Bytes a second a request body must come at: the time a peer waits for a body in "
            "all may be --client-timeout plus a second per this many bytes received; past "
            "it, 408 (0: no rate; Apache's mod_reqtimeout MinRate).",
            low=0,
            metavar="BYTES",
        ),
    )
    header_timeout: float = field(
        default=20.0,
        metadata=option(
            "Seconds a request head may take, from its first byte (or the connection's "
            "start) to its end (408).",
            low=0.01,
        ),
    )
    idle_timeout: float = field(
        default=60.0,
        metadata=option("Seconds a keep-alive connection may wait for a request.", low=0.01),
    )
    send_timeout: float = field(
        default=60.0,
        metadata=option(
            "Seconds a client may take nothing of a response before it is dropped.", low=0.01
        ),
    )
    max_connections: int = field(
        default=1024,
        metadata=option(
            "Open connections this peer keeps; past it, idle ones are closed, then 503.",
            low=1,
        ),
    )
    max_requests: int = field(
        default=64,
        metadata=option(
            "Public requests this peer serves at once; past it, 503 (peer calls are not counted).",
            low=1,
        ),
    )
    # TLS: all three or none. With them the peer serves HTTPS only, presents tls_cert to the
    # peers it calls, and trusts only certificates signed by tls_ca (node.process.tls).
    tls_cert: Path | None = field(
        default=None,
        metadata=option(
            "This peer's certificate (PEM, chain allowed); with --tls-key and --tls-ca, "
            "serve HTTPS and call peers over HTTPS.",
            metavar="FILE",
            file=True,
        ),
    )
    tls_key: Path | None = field(
        default=None,
        metadata=option("The private key of --tls-cert (PEM).", metavar="FILE", file=True),
    )
    tls_ca: Path | None = field(
        default=None,
        metadata=option(
            "The cluster's CA certificate (PEM): peers must present certificates it signed.",
            metavar="FILE",
            file=True,
        ),
    )

    def __post_init__(self) -> None:
        """Raises ValueError for a half-given TLS set-up (it would silently serve plain HTTP),
        for peer authentication off on an address other machines can reach, for a zone
        that is not a valid label, for --s3-reuse-port without a --s3-port (0 included), and
        for an --s3-port that is the --port."""
        if self.zone:
            check_zone(self.zone)
        if self.s3_reuse_port and not self.s3_port:
            raise ValueError("--s3-reuse-port shares the port --s3-port names: give one (not 0)")
        if self.s3_port and self.s3_port == self.port:
            raise ValueError(f"--s3-port must differ from --port ({self.port}): S3 has its own")
        if self.shared_port is not None and self.shared_port in (self.port, self.s3_port):
            raise ValueError("--shared-port must differ from --port and --s3-port")
        if self.peer_auth == "off" and not _loopback(self.host):
            raise ValueError("--peer-auth=off is for measurements on a loopback address only")
        given = {"--tls-cert": self.tls_cert, "--tls-key": self.tls_key, "--tls-ca": self.tls_ca}
        missing = [flag for flag, path in given.items() if path is None]
        if 0 < len(missing) < len(given):
            raise ValueError(
                "TLS needs --tls-cert, --tls-key and --tls-ca together; "
                f"missing {', '.join(missing)}"
            )

    @property
    def tls(self) -> bool:
        """True when the peer serves and calls HTTPS."""
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        return self.url_at(self.port)

    def url_at(self, port: int) -> str:
        """The URL of this peer's host at ``port``, its scheme the peer's (an IPv6 address in
        brackets, RFC 3986 section 3.2.2)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def zeroconf_address(self) -> str:
        """The address mDNS runs on: never a network the peer does not serve."""
        return self.interface or self.host

    @property
    def upload_stall(self) -> float:
        """Seconds a peer's chunk upload may send nothing before the holder drops it: its
        coordinator itself waits at most client_timeout for its client, then stall_timeout
        for a slow holder, before it ends the stream."""
        return self.client_timeout + self.stall_timeout

    def chunk_quorum(self, n: int) -> int:
        """Durable chunks a PUT of ``n`` chunks needs."""
        wanted = self.write_quorum if self.write_quorum is not None else self.k + 1
        return max(self.k, min(wanted, n))
