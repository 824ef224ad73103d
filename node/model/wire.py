"""The msgpack encoding of peer-to-peer bodies (manifests, listings, gossip)."""

from __future__ import annotations

from typing import Any

import msgpack

from node.errors import CorruptData

MSGPACK = "application/msgpack"

# Headers of a chunk upload saying whose chunk it is (the name percent-encoded).
CHUNK_NAME = "X-Ringstore-Name"
CHUNK_VERSION = "X-Ringstore-Version"
CHUNK_BLOCK_SIZE = "X-Ringstore-Block-Size"
# The peer a peer-to-peer call is meant for; any other peer answers 421.
PEER_HEADER = "X-Ringstore-Peer"


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    """Decode msgpack; raises CorruptData if ``data`` is not msgpack."""
    try:
        return msgpack.unpackb(data, raw=False)
    except ValueError as exc:
        raise CorruptData(f"undecodable msgpack: {exc}") from exc
