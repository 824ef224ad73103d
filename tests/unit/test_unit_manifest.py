"""Manifests: lossless msgpack round trip, CorruptData for anything else, stable file ids."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import msgpack
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import CorruptData
from node.model.layout import CODECS, ISAL_CAUCHY, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, Layout
from node.model.manifest import SCHEMA, ChunkRef, Manifest, chunk_id, file_id
from node.model.multipart import new_attempt_id, new_upload_id, part_name
from node.model.representation import Representation
from node.model.version import Version

DIGEST = 16
fast = settings(max_examples=60, deadline=None)

PEER = "0f8e9c3a-1b2c-4d5e-8f90-123456789abc"
VERSION = Version(1700000000000, 0, "peer-1")


def sample(name: str = "docs/report.pdf", version: Version = VERSION, chunks: int = 7) -> Manifest:
    layout = Layout(10_000, 5, 2, 1024)
    refs = tuple(
        ChunkRef(index, f"holder-{index}", bytes([index]) * (DIGEST * layout.stripes))
        for index in range(chunks)
    )
    return Manifest(name, version, layout, "0123abcd", "text/plain", refs)


def tombstone(name: str = "docs/report.pdf") -> Manifest:
    return Manifest(name, Version(1700000000500, 2, PEER), Layout(0, 5, 0), deleted=True)


segments = st.text(
    st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters="/"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
names = st.lists(segments, min_size=1, max_size=3).map("/".join)
labels = st.characters(blacklist_categories=["Cc", "Cs"])
metadata_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)


@st.composite
def representations(draw: st.DrawFn) -> Representation:
    text = st.text(labels, max_size=40)
    return Representation.build(
        content_encoding=draw(text),
        content_disposition=draw(text),
        cache_control=draw(text),
        content_language=draw(text),
        expires=draw(text),
        metadata=draw(st.dictionaries(metadata_names, text, max_size=8)),
    )


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    k = draw(st.integers(1, 6))
    m = draw(st.integers(0, 3))
    block_size = draw(st.integers(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE))
    codec = draw(st.sampled_from(CODECS))
    layout = Layout(draw(st.integers(0, 8 * k * block_size)), k, m, block_size, codec)
    indexes = draw(st.sets(st.integers(0, k + m - 1)))
    digests = DIGEST * layout.stripes  # one per stripe: what a decoded manifest must have
    chunks = tuple(
        ChunkRef(index, draw(st.uuids()).hex, draw(st.binary(min_size=digests, max_size=digests)))
        for index in sorted(indexes)
    )
    return Manifest(
        name=draw(names),
        version=Version(
            draw(st.integers(0, 2**48)), draw(st.integers(0, 2**16)), str(draw(st.uuids()))
        ),
        layout=layout,
        etag=draw(st.text(labels, max_size=32)),
        content_type=draw(st.text(labels, max_size=40)),
        chunks=chunks,
        deleted=draw(st.booleans()),
        revision=draw(st.integers(0, 2**31)),
        representation=draw(representations()),
    )


@pytest.mark.parametrize(
    "manifest", [sample(), sample(chunks=5), tombstone()], ids=["full", "degraded", "tombstone"]
)
def test_round_trip(manifest: Manifest) -> None:
    data = manifest.to_bytes()
    assert isinstance(data, bytes)
    assert Manifest.from_bytes(data) == manifest


@fast
@given(manifest=manifests())
def test_any_manifest_round_trips(manifest: Manifest) -> None:
    again = Manifest.from_bytes(manifest.to_bytes())
    assert again == manifest
    assert again.file_id == manifest.file_id


def test_a_decoded_manifest_answers_with_its_own_bytes_and_a_changed_one_is_encoded() -> None:
    stored = sample().to_bytes()
    decoded = Manifest.from_bytes(stored, keep=True)
    assert decoded.to_bytes() is stored  # a replica's answer: no encoding again
    held = Manifest.from_bytes(stored)  # (a listing's entry: its bytes not kept)
    assert held.to_bytes() == stored
    assert held.to_bytes() is not stored
    moved = dataclasses.replace(decoded, revision=1)  # a move: a new revision of the version
    assert Manifest.from_bytes(moved.to_bytes()).revision == 1
    assert moved.to_bytes() != stored
    assert decoded.with_parity(3).to_bytes() != stored
    assert decoded.without_chunks().to_bytes() != stored
    assert decoded == Manifest.from_bytes(stored) == sample()  # the bytes are never compared
    viewed = Manifest.from_bytes(memoryview(bytearray(stored)), keep=True)  # type: ignore[arg-type]
    assert viewed.to_bytes() == stored
    assert viewed.to_bytes() is not stored


def test_tombstone_round_trip_keeps_it_deleted_and_chunkless() -> None:
    again = Manifest.from_bytes(tombstone().to_bytes())
    assert again.deleted
    assert again.chunks == ()
    assert again.size == 0
    assert not again.degraded


def record(**changes: Any) -> bytes:
    """A sample manifest with some fields changed, sealed with a valid checksum."""
    inner, _ = msgpack.unpackb(sample().to_bytes())
    fields = msgpack.unpackb(inner)
    fields.update(changes)
    packed: bytes = msgpack.packb({k: v for k, v in fields.items() if v is not ...})
    sealed: bytes = msgpack.packb([packed, xxhash.xxh3_128_digest(packed)])
    return sealed


def test_a_flipped_byte_anywhere_fails_the_checksum() -> None:
    data = sample().to_bytes()
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        with pytest.raises(CorruptData):
            Manifest.from_bytes(bytes(flipped))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage that is not msgpack \xc1",
        b"\xc1",  # a byte msgpack never uses
        msgpack.packb(42),
        msgpack.packb("a string"),
        msgpack.packb([1, 2, 3]),
        msgpack.packb({}),
        sample().to_bytes()[:-3],  # truncated
        sample().to_bytes() + b"\x00",  # trailing bytes
        record(schema=SCHEMA + 1),
        record(schema="1"),
        record(schema=...),  # missing
        record(name=...),
        record(version=[1, 2]),
        record(version="1.2.p"),
        record(k=0),
        record(size=-1),
        record(block_size=0),
        record(chunks=[[0, "holder"]]),
        record(chunks=7),
        record(representation="gzip"),
        record(representation={"content_encoding": 7}),
        record(representation={"content_encoding": "gz\x07ip"}),  # a control character
        record(representation={"expires": "x" * 1025}),  # too long
        record(representation={"metadata": {"Upper": "x"}}),  # names are lower-case
        record(representation={"metadata": {"a b": "x"}}),  # and tokens
        record(representation={"metadata": {"a": "x\ny"}}),
        record(representation={"metadata": {"a": "v" * 2048}}),  # past the bound
        record(representation={"metadata": {f"k{i}": "v" * 60 for i in range(40)}}),
        record(representation={"metadata": ["a", "x"]}),
    ],
)
def test_anything_else_raises_corrupt_data(data: bytes) -> None:
    with pytest.raises(CorruptData):
        Manifest.from_bytes(data)


def test_representation_round_trips_and_is_left_out_when_empty() -> None:
    given = Representation.build(
        content_encoding="gzip",
        cache_control="no-cache",
        metadata={"b": "2", "a": "1"},
    )
    manifest = dataclasses.replace(sample(), representation=given)
    again = Manifest.from_bytes(manifest.to_bytes())
    assert again.representation == given
    assert again.representation.metadata == (("a", "1"), ("b", "2"))
    assert again.without_chunks().representation == given
    inner, _ = msgpack.unpackb(manifest.to_bytes())
    assert msgpack.unpackb(inner)["representation"] == {
        "content_encoding": "gzip",
        "cache_control": "no-cache",
        "metadata": {"a": "1", "b": "2"},
    }
    inner, _ = msgpack.unpackb(sample().to_bytes())
    assert "representation" not in msgpack.unpackb(inner)


def test_a_revision_keeps_the_representation() -> None:
    # Moves and repairs build the next revision with dataclasses.replace.
    given = Representation.build(content_language="fr", metadata={"owner": "ops"})
    manifest = dataclasses.replace(sample(), representation=given)
    moved = dataclasses.replace(manifest, chunks=manifest.chunks[1:], revision=1)
    assert Manifest.from_bytes(moved.to_bytes()).representation == given


def test_to_json_shows_the_representation() -> None:
    shown = sample().to_json()
    assert shown["content_encoding"] is None
    assert shown["metadata"] == {}
    given = Representation.build(expires="Thu, 01 Dec 2033 16:00:00 GMT", metadata={"a": "1"})
    shown = dataclasses.replace(sample(), representation=given).to_json()
    assert shown["expires"] == "Thu, 01 Dec 2033 16:00:00 GMT"
    assert shown["content_disposition"] is None
    assert shown["metadata"] == {"a": "1"}


def test_a_cauchy_coded_manifest_is_of_schema_3_and_others_keep_theirs() -> None:
    """The codec rides on the schema (the record has no room for a field): releases before
    ISA-L refuse schema 3 rather than rebuild a chunk with zfec's matrix (wrong bytes)."""
    zfec_coded = sample()
    cauchy = dataclasses.replace(
        zfec_coded, layout=dataclasses.replace(zfec_coded.layout, codec=ISAL_CAUCHY)
    )
    schemas = [
        msgpack.unpackb(msgpack.unpackb(m.to_bytes())[0])["schema"] for m in (zfec_coded, cauchy)
    ]
    assert schemas == [1, 3]
    assert Manifest.from_bytes(cauchy.to_bytes()).layout.codec == ISAL_CAUCHY
    assert Manifest.from_bytes(zfec_coded.to_bytes()).layout.codec == "zfec"
    assert Manifest.from_bytes(cauchy.to_bytes()) == cauchy


def test_unknown_schema_says_so() -> None:
    with pytest.raises(CorruptData, match="schema"):
        Manifest.from_bytes(record(schema=99))


@fast
@given(data=st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_corrupt_data(data: bytes) -> None:
    with contextlib.suppress(CorruptData):
        Manifest.from_bytes(data)


def test_revision_round_trips_and_orders_after_the_version() -> None:
    moved = dataclasses.replace(sample(), revision=3)
    assert Manifest.from_bytes(moved.to_bytes()).revision == 3
    assert moved.to_json()["revision"] == 3
    assert moved.precedence > sample().precedence
    newer = sample(version=Version(VERSION.wall_ms + 1, 0, "peer-1"))
    assert newer.precedence > moved.precedence  # any revision of an older version loses
    assert moved.file_id == sample().file_id  # a revision moves chunks, it does not rename them


def test_placed_chunks_pairs_holders_with_chunk_ids() -> None:
    manifest = sample(chunks=3)
    assert manifest.placed_chunks() == {
        (f"holder-{index}", manifest.chunk_id(index)) for index in range(3)
    }
    assert tombstone().placed_chunks() == set()


def test_file_id_is_pinned() -> None:
    # Chunk ids on every disk derive from this: it must not change between releases.
    assert file_id("a", VERSION) == "0d580ce104d721664b827c18401c49b9"


def test_file_id_differs_across_names_and_versions() -> None:
    ids = {
        file_id("a", VERSION),
        file_id("b", VERSION),
        file_id("a", Version(VERSION.wall_ms + 1, 0, "peer-1")),
        file_id("a", Version(VERSION.wall_ms, 1, "peer-1")),
        file_id("a", Version(VERSION.wall_ms, 0, "peer-2")),
    }
    assert len(ids) == 5


@fast
@given(
    names=st.lists(st.text(min_size=1, max_size=10), min_size=2, max_size=2, unique=True),
    counter=st.integers(0, 100),
)
def test_file_id_is_stable_and_32_hex(names: list[str], counter: int) -> None:
    version = Version(1, counter, PEER)
    first = file_id(names[0], version)
    assert first == file_id(names[0], Version(1, counter, PEER))
    assert len(first) == 32
    assert int(first, 16) >= 0
    assert first != file_id(names[1], version)


def test_chunk_ids_join_file_id_and_index() -> None:
    manifest = sample()
    assert manifest.file_id == file_id(manifest.name, manifest.version)
    assert manifest.chunk_id(3) == chunk_id(manifest.file_id, 3) == f"{manifest.file_id}-3"


def test_to_json_describes_data_and_parity_chunks_of_equal_size() -> None:
    manifest = sample()
    shown = manifest.to_json()
    assert shown["name"] == manifest.name
    assert shown["version"] == str(VERSION)
    assert (shown["size"], shown["k"], shown["m"]) == (10_000, 5, 2)
    assert shown["chunk_size"] == manifest.layout.chunk_size
    assert shown["stripes"] == manifest.layout.stripes
    assert [c["kind"] for c in shown["chunks"]] == ["data"] * 5 + ["parity"] * 2
    assert {c["size"] for c in shown["chunks"]} == {manifest.layout.chunk_size}
    assert [c["id"] for c in shown["chunks"]] == [manifest.chunk_id(i) for i in range(7)]
    assert [c["holder"] for c in shown["chunks"]] == [f"holder-{i}" for i in range(7)]
    assert all(len(c["digest"]) == 2 * DIGEST for c in shown["chunks"])
    assert shown["deleted"] is False
    assert shown["degraded"] is False


def test_fewer_chunks_than_the_layout_is_degraded() -> None:
    assert sample(chunks=6).degraded
    assert sample(chunks=6).to_json()["degraded"] is True
    assert not sample(chunks=7).degraded
    assert sample(chunks=6).holders() == {i: f"holder-{i}" for i in range(6)}


def test_summary_shows_no_chunks() -> None:
    summary = sample().summary()
    assert summary == {
        "name": "docs/report.pdf",
        "version": str(VERSION),
        "modified": "2023-11-14T22:13:20.000Z",  # VERSION's wall clock, in RFC 3339
        "size": 10_000,
        "etag": "0123abcd",
        "content_type": "text/plain",
        "deleted": False,
    }


def test_block_digest_slices_16_bytes_per_stripe() -> None:
    digests = b"".join(bytes([stripe]) * DIGEST for stripe in range(4))
    ref = ChunkRef(0, PEER, digests)
    for stripe in range(4):
        assert ref.block_digest(stripe) == bytes([stripe]) * DIGEST
    assert ref.block_digest(4) == b""  # past the end: nothing, never a wrong digest


def test_chunk_digest_covers_every_block_digest() -> None:
    ref = ChunkRef(0, PEER, bytes(64))
    changed = ChunkRef(0, PEER, bytes(63) + b"\x01")
    assert len(ref.digest) == DIGEST
    assert ref.digest != changed.digest
    assert ref.digest == ChunkRef(5, "elsewhere", bytes(64)).digest


def test_an_index_entry_drops_a_files_bytes_and_keeps_a_records() -> None:
    version = Version(1, 0, "p")
    small = Manifest("ns/f", version, Layout(3, 5, 2), inline=b"abc")
    assert small.stored_inline
    assert not small.degraded
    assert small.missing(2) == 0
    assert small.without_chunks().inline == b""
    record = Manifest("/keys/k", version, Layout(0, 5, 0), inline=b"record")
    assert record.without_chunks().inline == b"record"
    name = part_name(new_upload_id(1), 3, new_attempt_id())
    part = Manifest(name, version, Layout(3, 5, 2), inline=b"abc")
    assert part.without_chunks().inline == b""  # a part is read whole when needed
    empty = Manifest("ns/e", version, Layout(0, 5, 2))
    assert empty.stored_inline
    assert not empty.degraded
    large = Manifest("ns/l", version, Layout(100_000, 5, 2))
    assert not large.stored_inline
    assert large.degraded  # no chunks yet: all 7 missing
