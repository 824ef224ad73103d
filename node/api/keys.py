"""The typed keys under which a peer's components hang on its aiohttp app.

``node.process.wiring`` sets every key once, at start-up, before the first request; the
routes read them. Kept apart from the wiring so that routes never import start-up code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from node.access.guard import Gatekeeper, Principal
from node.access.sessions import Session, Sessions
from node.access.store import AccessStore
from node.api.metrics import Metrics
from node.cluster.auth import Authenticator
from node.cluster.channel import OpenChannels
from node.cluster.gossip import Gossip
from node.cluster.membership import Membership
from node.config import PeerConfig
from node.datapath.coordinator import Coordinator
from node.datapath.holder import Holder
from node.datapath.replicas import ManifestReplicas
from node.datapath.uploads import Uploads
from node.disk.chunk_store import ChunkStore
from node.disk.data_dir import WriteProbe
from node.disk.manifest_store import ManifestStore
from node.model.version import HybridClock
from node.upkeep.anti_entropy import AntiEntropy
from node.upkeep.packer import Packer
from node.upkeep.rebalancer import Rebalancer
from node.upkeep.repairer import Repairer
from node.upkeep.scrubber import Scrubber

if TYPE_CHECKING:  # zeroconf is imported only by peers that use it (node.process.wiring)
    from node.cluster.discovery import Discovery

CONFIG = web.AppKey("config", PeerConfig)
AUTH = web.AppKey("auth", Authenticator)
CHANNELS = web.AppKey("channels", OpenChannels)  # other peers' channels to this one
CHUNKS = web.AppKey("chunks", ChunkStore)
MANIFESTS = web.AppKey("manifests", ManifestStore)
MEMBERSHIP = web.AppKey("membership", Membership)
GOSSIP = web.AppKey("gossip", Gossip)
REPLICAS = web.AppKey("replicas", ManifestReplicas)
COORDINATOR = web.AppKey("coordinator", Coordinator)
HOLDER = web.AppKey("holder", Holder)
REBALANCER = web.AppKey("rebalancer", Rebalancer)
REPAIRER = web.AppKey("repairer", Repairer)
SCRUBBER = web.AppKey("scrubber", Scrubber)
ANTI_ENTROPY = web.AppKey("anti_entropy", AntiEntropy)
PACKER = web.AppKey("packer", Packer)
DISCOVERY: web.AppKey[Discovery] = web.AppKey("discovery")
ACCESS = web.AppKey("access", AccessStore)
UPLOADS = web.AppKey("uploads", Uploads)  # multipart uploads (S3)
GATEKEEPER = web.AppKey("gatekeeper", Gatekeeper)
CLOCK = web.AppKey("clock", HybridClock)  # the peer's clock: versions, and responses' Date
S3_URL = web.AppKey("s3_url", str)  # where this peer serves S3, once it does (--s3-port)
METRICS = web.AppKey("metrics", Metrics)  # the peer's registry: shared by its listeners
LISTENER = web.AppKey("listener", str)  # which one an app is: "public", "s3" or "shared"
WRITE_PROBE = web.AppKey("write_probe", WriteProbe)  # /ready: does the data dir take writes
SESSIONS = web.AppKey("sessions", Sessions)  # the web console's logins on this peer

REQUEST_ID = web.RequestKey("request_id", str)  # node.tracing: set for every request

PRINCIPAL = web.RequestKey("principal", Principal)  # who sent a public request
SESSION = web.RequestKey("session", Session)  # the console session it came with, if any
CSRF_CHECKED = web.RequestKey("csrf_checked", bool)  # its CSRF token came as a header


def principal_of(request: web.Request) -> Principal:
    """Who sent ``request`` (set by the public API's ``identified`` middleware)."""
    return request[PRINCIPAL]
