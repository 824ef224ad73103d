"""The in-memory manifest index: an entry gives back exactly the summary it was given."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.disk import manifest_index
from node.disk.manifest_index import ManifestIndex
from node.disk.manifest_log import Location
from node.model.layout import Layout
from node.model.manifest import MAX_REVISION, ChunkRef, Manifest
from node.model.representation import Checksum, Representation
from node.model.version import MAX_COUNTER, MAX_PEER_LENGTH, MAX_WALL_MS, Version

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
PEER = "7e70de01-1181-4371-8063-fdc591baf1f0"


def manifest(name: str = "a/b", **changes: Any) -> Manifest:
    layout = Layout(10_000, 5, 2, 4096)
    chunks = tuple(ChunkRef(i, f"holder-{i}", bytes(16 * layout.stripes)) for i in range(7))
    base = Manifest(name, Version(1_764_000_000_123, 7, PEER), layout, MD5, "text/plain", chunks)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "etag",
    [
        MD5,
        "",
        "abc",  # odd length
        "D41D8CD98F00B204E9800998ECF8427E",  # hex, but not lowercase: kept as it is
        "d41d 8cd9",  # fromhex skips spaces; the etag must come back with its own
        f"{MD5}-3",  # a multipart upload's
        "xxh3-00ff",
        "é" * 20,
    ],
)
def test_an_entry_gives_back_its_summary(etag: str) -> None:
    index = ManifestIndex()
    kept = manifest(etag=etag, revision=3, content_type='image/png; q="ü"')
    assert index.keep(kept, Location(2, 1 << 40, 70_000)) is None
    assert index["a/b"] == kept.without_chunks()
    assert index["a/b"].etag == etag
    assert index.where("a/b") == Location(2, 1 << 40, 70_000)
    assert not index.deleted("a/b")


def test_a_hex_etag_is_kept_as_the_bytes_it_spells() -> None:
    """The saving itself: 16 bytes for an MD5's 32 hex digits."""
    index = ManifestIndex()
    index.keep(manifest("hex", etag=MD5), Location(1, 0, 1))
    index.keep(manifest("text", etag=MD5.upper()), Location(1, 0, 1))
    assert len(index._entries["text"]) - len(index._entries["hex"]) == 32 - 16  # msgpack bin8


@settings(max_examples=200, deadline=None)
@given(
    wall=st.integers(0, MAX_WALL_MS),
    counter=st.integers(0, MAX_COUNTER),
    peer=st.text(max_size=MAX_PEER_LENGTH),
    revision=st.integers(0, MAX_REVISION),
    size=st.integers(0, 1 << 42),
    etag=st.one_of(st.text(max_size=64), st.binary(max_size=32).map(bytes.hex)),
    content_type=st.text(max_size=64),
    deleted=st.booleans(),
    where=st.tuples(
        st.integers(0, (1 << 63) - 1), st.integers(0, (1 << 63) - 1), st.integers(0, (1 << 32) - 1)
    ),
)
def test_every_summary_comes_back(
    wall: int,
    counter: int,
    peer: str,
    revision: int,
    size: int,
    etag: str,
    content_type: str,
    deleted: bool,
    where: tuple[int, int, int],
) -> None:
    index = ManifestIndex()
    kept = manifest(
        version=Version(wall, counter, peer),
        revision=revision,
        layout=Layout(size, 5, 2, 1 << 20),
        etag=etag,
        content_type=content_type,
        deleted=deleted,
    )
    index.keep(kept, Location(*where))
    assert index["a/b"] == kept.without_chunks()
    assert index.where("a/b") == Location(*where)
    assert index.deleted("a/b") == deleted


def test_tombstones_representations_and_inline_bytes() -> None:
    index = ManifestIndex()
    given = Representation(
        content_encoding="gzip",
        cache_control="no-cache",
        metadata=(("colour", "blue"), ("size", "ü")),
        checksum=Checksum("crc32", "AAAAAA=="),
    )
    gone = manifest("gone", deleted=True, chunks=(), layout=Layout(0, 5, 0))
    described = manifest("described", representation=given)
    small = manifest("small", inline=b"x" * 100, chunks=(), layout=Layout(100, 5, 2, 100))
    record = manifest("/cluster/record", inline=b"record", chunks=(), layout=Layout(6, 5, 2))
    for number, kept in enumerate([gone, described, small, record]):
        index.keep(kept, Location(1, number, 10))
    assert index.deleted("gone")
    assert index["gone"] == gone.without_chunks()
    assert index["described"].representation == given
    assert index["small"].inline == b""  # a file's bytes stay in its record
    assert index["/cluster/record"].inline == b"record"  # a cluster record's are kept
    assert not index.deleted("small")


def test_moves_keep_the_summary_and_forgetting_gives_the_location() -> None:
    index = ManifestIndex()
    index.keep(manifest("t", deleted=True, chunks=()), Location(1, 0, 10))
    index.move("t", Location(5, 99, 10))
    assert index.where("t") == Location(5, 99, 10)
    assert index.deleted("t")
    assert index["t"] == manifest("t", deleted=True).without_chunks()
    replaced = index.keep(manifest("t"), Location(6, 0, 10))
    assert replaced == Location(5, 99, 10)
    assert not index.deleted("t")
    assert index.forget("t") == Location(6, 0, 10)
    assert "t" not in index
    assert index.get("t") is None
    assert index.where("t") is None
    with pytest.raises(KeyError):
        index.forget("t")


def test_names_are_sorted_once_then_kept_in_order() -> None:
    index = ManifestIndex()
    for name in ["c", "a", "b"]:
        index.keep(manifest(name), Location(1, 0, 1))
    index.sort()
    assert index.names == ["a", "b", "c"]
    index.keep(manifest("ab"), Location(1, 1, 1))
    index.keep(manifest("a"), Location(1, 2, 1))  # again: not listed twice
    index.forget("b")
    assert index.names == ["a", "ab", "c"] == sorted(index)


def test_shared_strings_stop_at_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients choose content types: past SHARED_STRINGS distinct ones, each entry keeps its
    own, and every entry still reads back right."""
    monkeypatch.setattr(manifest_index, "SHARED_STRINGS", 3)  # 3 peer ids, 3 content types
    index = ManifestIndex()
    for number in range(6):
        index.keep(manifest(f"f{number}", content_type=f"type/{number}"), Location(1, 0, 1))
    assert [index[f"f{n}"].content_type for n in range(6)] == [f"type/{n}" for n in range(6)]
    assert index["f0"].content_type is index["f0"].content_type  # shared
    assert index["f5"].content_type is not index["f5"].content_type  # its own, decoded
    assert {index[f"f{n}"].version.peer for n in range(6)} == {PEER}
    assert "peer_ids=1, content_types=3" in repr(index)
