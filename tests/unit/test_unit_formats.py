"""Bytes written by the release before typed records still decode, and re-encode unchanged.

The vectors below were written by ringstore 0.1.0 (hand-encoded msgpack, before msgspec):
a manifest with a missing chunk at revision 3, a tombstone, a chunk sidecar and a member
list. A peer upgraded in place must read every one of them, and what it writes back must be
the same bytes, so that replicas written by old and new peers compare equal.

``META_MANIFEST`` was written when manifests began to keep representation metadata (a
``representation`` map, left out when empty, which is why the older vectors keep their
bytes): it pins that map's encoding the same way. A checksum (S3's) came later inside that
map, left out when none was kept, so ``META_MANIFEST`` keeps its bytes; a reader of before
skips it.
"""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from node.cluster.protocol import GossipMessage, MemberRecord
from node.errors import CorruptData
from node.model.layout import Layout
from node.model.manifest import ChunkMeta, Manifest, ManifestRecord
from node.model.representation import Checksum, Representation
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
META_MANIFEST = bytes.fromhex(
    "92c5026e8da6736368656d6101a46e616d65b670686f746f732f323032362f6361742e6a70672e677aa77665"
    "7273696f6e93cf0000019ad16a5f8901d92430623466366131652d356130652d346333392d396135352d3566"
    "30633265306338643131a473697a65cd10e1a16b05a16d02aa626c6f636b5f73697a65cd1000a465746167d9"
    "203564343134303261626334623261373662393731396439313130313763353932ac636f6e74656e745f7479"
    "7065aa696d6167652f6a706567a764656c65746564c2a87265766973696f6e00a66368756e6b73979300a670"
    "6565722d30c410000000000000000000000000000000009301a6706565722d31c41001010101010101010101"
    "0101010101019302a6706565722d32c410020202020202020202020202020202029303a6706565722d33c410"
    "030303030303030303030303030303039304a6706565722d34c4100404040404040404040404040404040493"
    "05a6706565722d35c410050505050505050505050505050505059306a6706565722d36c41006060606060606"
    "060606060606060606ae726570726573656e746174696f6e86b0636f6e74656e745f656e636f64696e67a467"
    "7a6970b3636f6e74656e745f646973706f736974696f6ed9216174746163686d656e743b2066696c656e616d"
    "653d226361742e6a70672e677a22ad63616368655f636f6e74726f6cb57075626c69632c206d61782d616765"
    "3d3836343030b0636f6e74656e745f6c616e6775616765a2656ea765787069726573bd5468752c2030312044"
    "656320323033332031363a30303a303020474d54a86d6574616461746182a5616c62756da432303236a66361"
    "6d657261a55831303056c4100991b58787e7c462e5f49ff1f6bcfbcd"
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

MULTIPART_MANIFEST = bytes.fromhex(
    "92c5020d8da6736368656d6101a46e616d65b06275636b65742f766964656f2e6d7034a776657273696f6e93"
    "cf0000019ad16a606804d92430623466366131652d356130652d346333392d396135352d3566306332653063"
    "38643131a473697a65ce005003e8a16b05a16d02aa626c6f636b5f73697a65ce00080000a465746167d92263"
    "636363636363636363636363636363636363636363636363636363636363632d32ac636f6e74656e745f7479"
    "7065a9766964656f2f6d7034a764656c65746564c2a87265766973696f6e00a66368756e6b7390a87365676d"
    "656e74739294d93e2f70617274732f6162616261626162616261626162616261626162616261626162616261"
    "6261622f30303030312e3031303130313031303130313031303193cf0000019ad16a5ce400d9243062346636"
    "6131652d356130652d346333392d396135352d356630633265306338643131ce00500000d920303030303030"
    "303030303030303030303030303030303030303030303030303094d93e2f70617274732f6162616261626162"
    "6162616261626162616261626162616261626162616261622f30303030322e30323032303230323032303230"
    "32303293cf0000019ad16a5d4801d92430623466366131652d356130652d346333392d396135352d35663063"
    "3265306338643131cd03e8d92031313131313131313131313131313131313131313131313131313131313131"
    "31c410dfd3044af11e2e0689bfc9e2c4f97edc"
)
PACKED_MANIFEST = bytes.fromhex(
    "92c501848da6736368656d6102a46e616d65b070686f746f732f7468756d622e6a7067a776657273696f6e93"
    "cf0000019ad16a5dac02d92430623466366131652d356130652d346333392d396135352d3566306332653063"
    "38643131a473697a65cd1004a16b05a16d02aa626c6f636b5f73697a65ce00080000a465746167d920646464"
    "6464646464646464646464646464646464646464646464646464646464ac636f6e74656e745f74797065aa69"
    "6d6167652f6a706567a764656c65746564c2a87265766973696f6e01a66368756e6b7390a87365676d656e74"
    "739195d94c2f7061636b732f303132333435363738396162636465662f313736343435303030323030302e30"
    "2e30623466366131652d356130652d346333392d396135352d35663063326530633864313193cf0000019ad1"
    "6a645100d92430623466366131652d356130652d346333392d396135352d356630633265306338643131cd10"
    "04d9206464646464646464646464646464646464646464646464646464646464646464ce00014000c4105140"
    "1c6846de148cfcc8c4b8d13430a0"
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


def test_a_manifest_with_representation_metadata_decodes() -> None:
    manifest = Manifest.from_bytes(META_MANIFEST)
    assert manifest.name == "photos/2026/cat.jpg.gz"
    assert manifest.version == Version(1764450000777, 1, PEER)
    assert manifest.layout == Layout(4321, 5, 2, 4096)
    assert manifest.content_type == "image/jpeg"
    assert len(manifest.chunks) == 7
    assert manifest.representation == Representation(
        content_encoding="gzip",
        content_disposition='attachment; filename="cat.jpg.gz"',
        cache_control="public, max-age=86400",
        content_language="en",
        expires="Thu, 01 Dec 2033 16:00:00 GMT",
        metadata=(("album", "2026"), ("camera", "X100V")),
    )
    assert manifest.to_bytes() == META_MANIFEST


def test_manifests_without_representation_metadata_keep_their_bytes() -> None:
    for old in (OLD_MANIFEST, OLD_TOMBSTONE):
        manifest = Manifest.from_bytes(old)
        assert not manifest.representation
        assert b"representation" not in manifest.to_bytes()


def test_the_manifest_record_keeps_a_fixmap_header() -> None:
    """msgspec gives a struct of more than 15 fields a map16 header even when fewer are
    present: one more top-level field would change the bytes of every manifest above."""
    assert len(ManifestRecord.__struct_fields__) <= 15


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
    assert again.pop("settled_ring") == ""  # not sent before: it never vouches for a hand-over
    assert (again.pop("digest"), again.pop("beat"), again.pop("beats")) == ("", 0, [])
    assert again.pop("max_bytes") == 0  # not sent before: no cap known
    assert again.pop("s3_url") == ""  # not sent before: no S3 port shown for it
    upkeep = ("repair_queued", "scrub_pass_chunks", "scrub_pass_checked", "deletions_pending")
    assert [again.pop(name) for name in upkeep] == [0, 0, 0, 0]  # not sent before: idle
    assert again.pop("reads_packs") is False  # a release of before cannot read packs
    assert again.pop("reads_cauchy") is False  # nor code with ISA-L's Cauchy code
    assert again == old


class RepresentationBeforeChecksums(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``RepresentationRecord`` as the release before kept checksums declared it."""

    content_encoding: str = ""
    content_disposition: str = ""
    cache_control: str = ""
    content_language: str = ""
    expires: str = ""
    metadata: dict[str, str] = {}


class RecordBeforeChecksums(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    representation: RepresentationBeforeChecksums | None = None


def test_a_kept_checksum_round_trips_and_a_reader_that_predates_it_ignores_it() -> None:
    old = Manifest.from_bytes(META_MANIFEST)
    checksum = Checksum("sha256", "arcu6553sHVAiX4MjW0j7I7vD4w6R+Gz9Ok0Q9lTa+0=")
    given = dataclasses.replace(old.representation, checksum=checksum)
    data = dataclasses.replace(old, representation=given).to_bytes()
    assert Manifest.from_bytes(data).representation == given
    sealed = msgspec.msgpack.decode(data)
    before = msgspec.msgpack.decode(sealed[0], type=RecordBeforeChecksums)
    assert before.representation is not None
    assert before.representation.metadata == {"album": "2026", "camera": "X100V"}
    only = dataclasses.replace(old, representation=Representation(checksum=checksum))
    assert Manifest.from_bytes(only.to_bytes()).representation.checksum == checksum


def test_a_checksum_that_cannot_be_one_is_a_corrupt_manifest() -> None:
    old = Manifest.from_bytes(META_MANIFEST)
    for wrong in (Checksum("md4", "AAAAAA=="), Checksum("crc32", "AAAA"), Checksum("sha1", "!")):
        data = dataclasses.replace(old, representation=Representation(checksum=wrong)).to_bytes()
        with pytest.raises(CorruptData):
            Manifest.from_bytes(data)


def test_a_multipart_manifest_of_before_packs_keeps_its_bytes() -> None:
    manifest = Manifest.from_bytes(MULTIPART_MANIFEST)
    assert manifest.segmented
    assert not manifest.packed
    assert [s.size for s in manifest.segments] == [5 << 20, 1000]
    assert all(s.offset == 0 for s in manifest.segments)
    assert manifest.to_bytes() == MULTIPART_MANIFEST


def test_a_packed_manifest_keeps_its_bytes() -> None:
    manifest = Manifest.from_bytes(PACKED_MANIFEST)
    assert manifest.packed
    assert (manifest.segments[0].offset, manifest.segments[0].size) == (81920, 4100)
    assert dataclasses.replace(manifest).to_bytes() == PACKED_MANIFEST
