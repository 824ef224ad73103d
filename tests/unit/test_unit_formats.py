"""Bytes written by the release before typed records still decode, and re-encode unchanged.

The vectors below were written by ringstore 0.1.0 (hand-encoded msgpack, before msgspec):
a manifest with a missing chunk at revision 3, a tombstone, a chunk sidecar and a member
list. A peer upgraded in place must read every one of them, and what it writes back must be
the same bytes, so that replicas written by old and new peers compare equal.
"""

from __future__ import annotations

import msgspec

from node.cluster.protocol import GossipMessage, MemberRecord
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, Manifest
from node.model.version import Version

PEER = "0b4f6a1e-5a0e-4c39-9a55-5f0c2e0c8d11"

OLD_MANIFEST = bytes.fromhex(
    "92c501738ca6736368656d6101a46e616d65b370686f746f732f323032362f6361742e6a7067a77665727369"
    "6f6e93cf0000019ad16a5cfb02d92430623466366131652d356130652d346333392d396135352d3566306332"
    "65306338643131a473697a65cd3039a16b05a16d02aa626c6f636b5f73697a65cd1000a465746167d9203966"
    "383664303831383834633764363539613266656161306335356164303135ac636f6e74656e745f74797065aa"
    "696d6167652f6a706567a764656c65746564c2a87265766973696f6e03a66368756e6b73969300a670656572"
    "2d30c410000000000000000000000000000000009301a6706565722d31c41001010101010101010101010101"
    "0101019302a6706565722d32c410020202020202020202020202020202029303a6706565722d33c410030303"
    "030303030303030303030303039304a6706565722d34c410040404040404040404040404040404049306a670"
    "6565722d36c41006060606060606060606060606060606c410013fec9ca46077650f453548245d45d6"
)
OLD_TOMBSTONE = bytes.fromhex(
    "92c4958ca6736368656d6101a46e616d65ae70686f746f732f6f6c642e747874a776657273696f6e93cf0000"
    "019ad16a606700a170a473697a6500a16b05a16d00aa626c6f636b5f73697a65ce00100000a465746167a0ac"
    "636f6e74656e745f74797065b86170706c69636174696f6e2f6f637465742d73747265616da764656c657465"
    "64c3a87265766973696f6e00a66368756e6b7390c4100b4046ffcf4cbf91cd5fe94acd34cb2f"
)
OLD_SIDECAR = bytes.fromhex(
    "97b370686f746f732f323032362f6361742e6a7067d934313736343435303030303132332e322e3062346636"
    "6131652d356130652d346333392d396135352d35663063326530633864313106cd1000cd09a5c41000000000"
    "000000000000000000000000cb41da4ad7b4200000"
)
OLD_MEMBERS = bytes.fromhex(
    "9283a26964d92430623466366131652d356130652d346333392d396135352d356630633265306338643131a3"
    "75726cb5687474703a2f2f3132372e302e302e313a38303030a67765696768740183a26964d9243163346636"
    "6131652d356130652d346333392d396135352d356630633265306338643131a375726cb5687474703a2f2f31"
    "32372e302e302e313a38303031a677656967687402"
)


def test_a_manifest_written_by_the_previous_release_decodes() -> None:
    manifest = Manifest.from_bytes(OLD_MANIFEST)
    assert manifest.name == "photos/2026/cat.jpg"
    assert manifest.version == Version(1764450000123, 2, PEER)
    assert manifest.layout == Layout(12345, 5, 2, 4096)
    assert manifest.etag == "9f86d081884c7d659a2feaa0c55ad015"
    assert manifest.content_type == "image/jpeg"
    assert manifest.revision == 3
    assert not manifest.deleted
    assert [(c.index, c.holder) for c in manifest.chunks] == [
        (i, f"peer-{i}") for i in (0, 1, 2, 3, 4, 6)
    ]
    assert all(c.block_digests == bytes([c.index]) * 16 for c in manifest.chunks)
    assert manifest.degraded
    assert manifest.to_bytes() == OLD_MANIFEST


def test_a_tombstone_written_by_the_previous_release_decodes() -> None:
    tombstone = Manifest.from_bytes(OLD_TOMBSTONE)
    assert tombstone.deleted
    assert tombstone.chunks == ()
    assert tombstone.version == Version(1764450000999, 0, "p")
    assert tombstone.to_bytes() == OLD_TOMBSTONE


def test_a_sidecar_written_by_the_previous_release_decodes() -> None:
    meta = ChunkMeta.from_bytes(OLD_SIDECAR)
    assert meta == ChunkMeta(
        "photos/2026/cat.jpg", f"1764450000123.2.{PEER}", 6, 4096, 2469, bytes(16), 1764450000.5
    )
    assert meta.to_bytes() == OLD_SIDECAR


def test_a_member_list_written_by_the_previous_release_decodes() -> None:
    records = msgspec.msgpack.decode(OLD_MEMBERS, type=list[MemberRecord])
    assert [r.member().weight for r in records] == [1, 2]
    assert records[0].url == "http://127.0.0.1:8000"
    assert msgspec.msgpack.encode(records) == OLD_MEMBERS


def test_gossip_of_a_previous_release_peer_is_understood() -> None:
    """A rolling upgrade: an old peer's gossip (hand-built dict, every figure) decodes."""
    old = {
        "used_bytes": 10,
        "chunks": 2,
        "disk_total_bytes": 300,
        "disk_free_bytes": 200,
        "rebalance": {"moves": 1, "last_pass": 1.5},
        "from": {"id": PEER, "url": "http://127.0.0.1:8000", "weight": 1},
        "members": [{"id": PEER, "url": "http://127.0.0.1:8000", "weight": 1}],
        "clock": [1764450000123, 0, PEER],
    }
    message = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=GossipMessage)
    assert message.sender.member().id == PEER
    assert message.clock == Version(1764450000123, 0, PEER)
    assert message.figures().disk_free_bytes == 200
    assert message.rebalance == {"moves": 1, "last_pass": 1.5}
    assert message.wall_ms is None  # not sent before: its clock offset is not measured
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(message))
    assert again.pop("wall_ms") is None
    assert again == old
