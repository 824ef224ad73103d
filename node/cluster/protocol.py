"""The peer-to-peer protocol: routes, headers and the typed bodies peers exchange.

Bodies other than chunk bytes are msgpack (``application/msgpack``) encodings of the records
below; decoding validates every field's type, and unknown fields are ignored so that a newer
peer can add one. Chunk bytes travel raw, with the chunk's owner in headers.

    route                                  body -> answer
    PUT    /internal/chunks/{id}           chunk bytes, owner headers -> JSON {"size"}
    GET    /internal/chunks/{id}           (Range) -> chunk bytes
    DELETE /internal/chunks/{id}           -> 204
    POST   /internal/chunks/{id}/pull      PullOrder -> JSON {"size"}
    GET    /internal/manifests?name=       -> sealed manifest bytes (404: none)
    PUT    /internal/manifests?expect=     sealed manifest -> ReplicaWriteReply
    PUT    /internal/manifests/conditional ConditionalManifest -> ReplicaWriteReply
    DELETE /internal/manifests?name=&version=&revision=   [sealed manifest to put back] -> 204
    GET    /internal/manifests/list?prefix=&start_after=&limit=[&delimiter=&base=]
                                           -> ManifestList (folders: node.model.folders)
    POST   /internal/manifests/batch       ManifestCalls -> ManifestAnswers (one per call)
    POST   /internal/manifests/confirmed?name=&version=&revision=   -> 204
    POST   /internal/manifests/confirmed/batch   ManifestConfirmations -> ManifestAnswers
    POST   /internal/gossip                GossipMessage -> GossipMessage (the receiver's own)
    GET    /internal/manifests/channel     WebSocket upgrade: frames of ManifestCalls and
                                           ManifestConfirmations, each answered with
                                           ManifestAnswers (node.cluster.channel)

What a peer sends is bounded where it is decoded, even from an authenticated peer: a member
URL is exactly ``http(s)://host:port`` (``check_member_url``; the same rule for gossip,
mDNS records, the persisted member list and ``--join`` seeds), a member id is at most 64
letters, digits, ``.``, ``_`` and ``-`` (``check_member_id``: it is sent in a header of
every call to that member; peers make UUIDs), a weight is within
``ring.MIN_WEIGHT`` .. ``ring.MAX_WEIGHT``, versions within ``node.model.version``'s bounds,
block sizes and sizes within ``node.model.layout``'s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

import msgspec

from node.errors import CorruptData
from node.model.access import MAX_KEY_NAME, Grants
from node.model.layout import MAX_BLOCK_SIZE, MAX_SIZE, MIN_BLOCK_SIZE
from node.model.manifest import MAX_REVISION
from node.model.names import MAX_STORED_NAME_BYTES  # (in characters here: never more than bytes)
from node.model.preconditions import Preconditions
from node.model.version import MAX_WALL_MS, Version
from node.model.zones import check_zone, default_zone
from node.tracing import MAX_ID
from ring import Member

MSGPACK = "application/msgpack"
PEER_PREFIX = "/internal/"  # every peer route is under it, no public route is

# Headers of a chunk upload saying whose chunk it is (the name percent-encoded).
CHUNK_NAME = "X-Ringstore-Name"
CHUNK_VERSION = "X-Ringstore-Version"
CHUNK_BLOCK_SIZE = "X-Ringstore-Block-Size"
# The peer a peer-to-peer call is meant for; any other peer answers 421.
PEER_HEADER = "X-Ringstore-Peer"

T = TypeVar("T")

# A host name or IPv4 address, or an IPv6 address in brackets; then a port. Nothing else:
# no path (peer calls are appended to the URL), query, fragment or user info.
_MEMBER_URL = re.compile(r"https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")
# What a peer makes is a UUID (``load_peer_id``); an id travels in the X-Ringstore-Peer
# header of every call to its member, so no control character, space or other oddity.
_MEMBER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_member_url(url: str) -> str:
    """Return ``url`` if it is exactly ``http://host:port`` or ``https://host:port``;
    raise ValueError saying so otherwise."""
    match = _MEMBER_URL.fullmatch(url)
    if match is None or not 1 <= int(match[1]) <= 65535:
        raise ValueError(f"a member URL is http(s)://host:port and nothing more, not {url!r}")
    return url


def check_member_id(member_id: str) -> str:
    """Return ``member_id`` if it is 1 to 64 letters, digits, ``.``, ``_`` or ``-``; raise
    ValueError saying so otherwise."""
    if _MEMBER_ID.fullmatch(member_id) is None:
        raise ValueError(
            f"a member id is 1 to 64 letters, digits, '.', '_' or '-', not {member_id[:80]!r}"
        )
    return member_id


class MemberRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A member as gossip and the persisted member list carry it. ``zone`` is left out
    when it is the URL's host (``default_zone``), so records keep their old bytes."""

    id: str
    url: str
    weight: int
    zone: str = ""

    @classmethod
    def of(cls, member: Member) -> MemberRecord:
        zone = "" if member.zone == default_zone(member.url) else member.zone
        return cls(member.id, member.url, member.weight, zone)

    def member(self) -> Member:
        """The ring member; raises ValueError if the record cannot be one (an id that is not
        ``check_member_id``'s, a URL that is not ``check_member_url``'s, a weight out of
        range, a zone that is not ``check_zone``'s)."""
        url = check_member_url(self.url)
        zone = check_zone(self.zone) if self.zone else default_zone(url)
        return Member(check_member_id(self.id), url, self.weight, zone)


class PeerFigures(msgspec.Struct, frozen=True, kw_only=True):
    """What a peer reports about its own storage in every gossip message."""

    used_bytes: int = 0
    chunks: int = 0
    disk_total_bytes: int = 0
    disk_free_bytes: int = 0
    max_bytes: int = 0  # --max-bytes (0: none, the disk is the limit)
    rebalance: dict[str, int | float] = {}
    # The ring digest under which this peer's rebalancer last ended a pass with nothing
    # pending or failed: every manifest it held for another replica set was handed over.
    settled_ring: str = ""
    # Where the peer serves S3 (--s3-port; "" when it does not), shown in /cluster.
    s3_url: Annotated[str, msgspec.Meta(max_length=256)] = ""
    # Upkeep under way, shown in /cluster (0 from peers of before them): files queued for
    # repair, the scrub pass under way (chunks it set out to check, and checked so far)
    # and delayed chunk deletions pending.
    repair_queued: Annotated[int, msgspec.Meta(ge=0)] = 0
    scrub_pass_chunks: Annotated[int, msgspec.Meta(ge=0)] = 0
    scrub_pass_checked: Annotated[int, msgspec.Meta(ge=0)] = 0
    deletions_pending: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Whether the peer's release reads packed files (manifest schema 2, node.model.packs):
    # absent (False) from releases before packs, which refuse those manifests, so no peer
    # packs a file until every member has said it can read one.
    reads_packs: bool = False
    # Whether the peer can code files with ISA-L's Cauchy code (manifest schema 3,
    # node.datapath.isal): absent (False) from releases before it and from peers without
    # ISA-L, so files are written with zfec until every member has said it can.
    reads_cauchy: bool = False


class GossipMessage(PeerFigures, frozen=True, kw_only=True, rename={"sender": "from"}):
    """One gossip message: the sender, the members it knows, its clock, heartbeats and
    figures.

    The answer to a gossip POST is the receiver's own message, so one exchange teaches both
    sides. ``clock`` lets the receiver's hybrid clock move past the sender's; ``wall_ms``,
    the sender's wall clock as it wrote the message, lets the receiver measure how far the
    two clocks are apart (absent from peers of before it: they are not measured).
    """

    sender: MemberRecord
    members: list[MemberRecord] = []
    clock: Version | None = None
    wall_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_WALL_MS)] | None = None
    # Gossip at scale (node.cluster.epidemic), absent from peers of before it: the digest
    # of the sender's member list (``members`` is then sent only when the receiver's may
    # differ), the sender's own heartbeat, and the newest beat it heard of each member,
    # aligned to its member list in id order.
    digest: str = ""
    beat: Annotated[int, msgspec.Meta(ge=0, le=MAX_WALL_MS)] = 0
    beats: list[Annotated[int, msgspec.Meta(ge=0, le=MAX_WALL_MS)]] = []

    def figures(self) -> PeerFigures:
        """The sender's storage figures alone."""
        return PeerFigures(**{name: getattr(self, name) for name in PeerFigures.__struct_fields__})


class PullOrder(msgspec.Struct, frozen=True):
    """Asks a peer to copy chunk ``id`` from ``source`` (a member's URL and id) and keep it
    only if its block digests hash to ``digest``. ``name``/``version`` own the chunk."""

    source: str
    source_id: str | None
    size: Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE)]
    block_size: Annotated[int, msgspec.Meta(ge=MIN_BLOCK_SIZE, le=MAX_BLOCK_SIZE)]
    digest: bytes
    name: str
    version: str


class ReplicaWriteReply(msgspec.Struct, frozen=True):
    """What a replica did with a manifest: kept it or not, the version it now holds, and the
    sealed bytes of the manifest it replaced (or None)."""

    stored: bool
    current: Version
    replaced: bytes | None


class ConditionalManifest(msgspec.Struct, frozen=True):
    """A manifest (sealed bytes) offered to a replica on ``condition``, the If-Match,
    If-None-Match and If-Unmodified-Since of a PUT or DELETE: the replica keeps it only if
    the condition holds for its own current version. A route of its own, so that a peer too
    old to check conditions refuses the call (404) instead of keeping it unconditionally."""

    manifest: bytes
    condition: Preconditions


MANIFEST_BATCH = "/internal/manifests/batch"
CONFIRMED = "/internal/manifests/confirmed"  # POST: a conditional write kept there committed
CONFIRMED_BATCH = (
    "/internal/manifests/confirmed/batch"  # POST: several such (ManifestConfirmations)
)
PROVISIONAL = "Ringstore-Provisional"  # on a replica read: "pending" or "overdue" (verdict)
MAX_MANIFEST_CALLS = 256  # calls a peer takes in one batch (peers send up to 64)
Revision = Annotated[int, msgspec.Meta(ge=0, le=MAX_REVISION)]
RequestId = Annotated[str, msgspec.Meta(max_length=MAX_ID)]  # checked for sanity on use


# A call of a batch refuses fields it does not know (the whole batch is a 400), unlike the
# other records here: ignored, a future field of a write (a new condition) would be dropped,
# which is why conditional writes got a route of their own. A new field is a new call type.
class ManifestRead(msgspec.Struct, frozen=True, tag="get", forbid_unknown_fields=True):
    """A batched manifest read: the replica of ``name`` (``GET /internal/manifests``)."""

    name: Annotated[str, msgspec.Meta(max_length=MAX_STORED_NAME_BYTES)]
    request_id: RequestId | None = None  # the public request it serves (its log lines)


class ManifestOffer(msgspec.Struct, frozen=True, tag="put", forbid_unknown_fields=True):
    """A batched manifest write: sealed bytes offered as ``PUT /internal/manifests`` offers
    them, kept only over exactly ``expect`` (a move) and only if ``condition`` holds."""

    manifest: bytes
    expect: tuple[Version, Revision] | None = None
    condition: Preconditions | None = None
    request_id: RequestId | None = None


ManifestCall = ManifestRead | ManifestOffer


class ManifestConfirm(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A batched confirmation: the conditional write ``version``/``revision`` of ``name``
    the replica kept was committed (``POST /internal/manifests/confirmed``). A route of its
    own (``CONFIRMED_BATCH``), not a call type of ``ManifestCalls``: a peer of the release
    before refuses the route (404, then each goes alone), where an unknown call type would
    have failed the whole batch of reads and offers it rode in."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STORED_NAME_BYTES)]
    version: Version
    revision: Revision
    request_id: RequestId | None = None


class ManifestConfirmations(msgspec.Struct, frozen=True):
    """Confirmations to one replica in one request, answered one ``ManifestAnswer`` each
    (empty, or the call's failure), in order; at most ``MAX_MANIFEST_CALLS``."""

    confirmations: Annotated[
        list[ManifestConfirm],
        msgspec.Meta(min_length=1, max_length=MAX_MANIFEST_CALLS),
    ]


class ManifestCalls(msgspec.Struct, frozen=True):
    """Manifest reads and offers to one replica in one request: what one peer had queued for
    another while its earlier calls were out, or made in one turn of its event loop
    (``node.cluster.batching``). Each is answered
    on its own, in order, as if it came alone; at most ``MAX_MANIFEST_CALLS``."""

    calls: Annotated[
        list[ManifestCall],
        msgspec.Meta(min_length=1, max_length=MAX_MANIFEST_CALLS),
    ]


class CallFailure(msgspec.Struct, frozen=True):
    """Why one call of a batch failed: an error code of ``node.errors`` and its message, as
    the JSON body of a failed single call carries them (``internal``: unexplained)."""

    code: str
    message: str


class ManifestAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    """The answer to one call of a batch: a read's sealed replica (None: none here), an
    offer's outcome, or the call's failure."""

    manifest: bytes | None = None
    provisional: bool = False  # the replica read is a conditional write not yet decided
    overdue: bool = False  # ...whose verdict is overdue
    written: ReplicaWriteReply | None = None
    failure: CallFailure | None = None


class ManifestAnswers(msgspec.Struct, frozen=True):
    """The answers to a ``ManifestCalls`` or ``ManifestConfirmations``, one per call, in
    its order."""

    answers: list[ManifestAnswer]


FRAME_CHUNK_MAX = 1 << 20  # bytes of a chunk (or of a range of one) sent as one frame


class ChunkWrite(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A whole chunk of at most ``FRAME_CHUNK_MAX`` bytes to store, in one channel frame:
    ``PUT /internal/chunks/<chunk_id>`` with its owner's headers (``CHUNK_NAME``...) and
    ``data`` as its body. Answered by a ``ChunkAnswer`` with the size stored."""

    chunk_id: Annotated[str, msgspec.Meta(max_length=64)]
    name: Annotated[str, msgspec.Meta(max_length=MAX_STORED_NAME_BYTES)]
    version: Annotated[str, msgspec.Meta(max_length=64)]
    block_size: int
    data: Annotated[memoryview, msgspec.Meta(max_length=FRAME_CHUNK_MAX)]
    request_id: RequestId | None = None


class ChunkRead(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bytes ``[offset, offset+length)`` of a chunk, in one channel frame: ``GET
    /internal/chunks/<chunk_id>`` with a ``Range``. Answered by a ``ChunkAnswer`` with the
    bytes, fewer where the chunk ends first."""

    chunk_id: Annotated[str, msgspec.Meta(max_length=64)]
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE)]
    length: Annotated[int, msgspec.Meta(ge=1, le=FRAME_CHUNK_MAX)]
    request_id: RequestId | None = None


class ChunkAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    """The answer to a ``ChunkWrite`` (``size`` stored) or a ``ChunkRead`` (``data``), or
    the call's failure, as a single call's error body carries it."""

    data: memoryview | None = None
    size: int | None = None
    failure: CallFailure | None = None


class ManifestList(msgspec.Struct, frozen=True):
    """One page of a replica's manifests (sealed, without chunks), and whether more remain."""

    manifests: list[bytes]
    truncated: bool


class KeyOrder(msgspec.Struct, frozen=True):
    """Asks a peer to create an access key: the way in for whoever holds the cluster secret
    (``ringstore up``, ``ringstore key create --data-dir``), before any admin key exists."""

    name: Annotated[str, msgspec.Meta(max_length=MAX_KEY_NAME)]
    grants: Grants


class KeyCreated(msgspec.Struct, frozen=True):
    """A new access key and its secret (shown once)."""

    access_key: str
    secret_key: str


MAX_INVENTORY = 1 << 16  # chunk ids in one inventory check
PACKED_ID = 17  # bytes of a packed chunk id: 16 of file id, 1 of index


class InventoryCheck(msgspec.Struct, frozen=True):
    """Chunks a manifest places on the peer asked (anti-entropy), packed: 17 bytes each
    (the 16-byte file id, the chunk index), at most ``MAX_INVENTORY``; its answer is one
    too, of the chunks it does not hold."""

    chunks: bytes


def pack_chunk_ids(chunk_ids: Sequence[str]) -> InventoryCheck:
    """Pack chunk ids (``<32 hex>-<index>``, index < 256); raises ValueError otherwise."""
    packed = bytearray()
    for chunk_id in chunk_ids:
        file, _, index = chunk_id.partition("-")
        if len(file) != 32 or not index.isdigit() or int(index) > 255:
            raise ValueError(f"not a chunk id: {chunk_id!r}")
        packed += bytes.fromhex(file) + bytes((int(index),))
    return InventoryCheck(bytes(packed))


def unpack_chunk_ids(check: InventoryCheck) -> list[str]:
    """The chunk ids of a packed check; raises ValueError for a malformed or oversized one."""
    data = check.chunks
    if len(data) % PACKED_ID or len(data) > MAX_INVENTORY * PACKED_ID:
        raise ValueError(
            f"an inventory is up to {MAX_INVENTORY} records of {PACKED_ID} bytes, "
            f"not {len(data)} bytes"
        )
    return [f"{data[at : at + 16].hex()}-{data[at + 16]}" for at in range(0, len(data), PACKED_ID)]


class ChunkStored(msgspec.Struct, frozen=True):
    """The answer to a chunk upload or pull: the bytes now stored."""

    size: int


def encode(record: Any) -> bytes:
    """The msgpack body of a record."""
    return msgspec.msgpack.encode(record)


def decode(data: bytes | memoryview, kind: type[T]) -> T:
    """Decode a msgpack body as ``kind``; raises CorruptData naming what is wrong."""
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise CorruptData(f"malformed {kind.__name__}: {exc}") from exc
