"""The validators of what peers send, as pure functions: each bound, both sides of it.

The same inputs through real peers are in ``tests/node/shared/test_peer_input.py``.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest
import xxhash

from node.cluster.membership import MEMBERS_FILE, Membership
from node.cluster.protocol import GossipMessage, MemberRecord, PullOrder, check_member_url
from node.errors import CorruptData, InvalidName, InvalidRequest
from node.model.layout import (
    MAX_BLOCK_SIZE,
    MAX_CHUNKS,
    MIN_BLOCK_SIZE,
    Layout,
    check_block_size,
    check_layout,
)
from node.model.manifest import ChunkRef, Manifest, chunk_owner
from node.model.names import validate_name
from node.model.version import MAX_COUNTER, MAX_SKEW_MS, HybridClock, Version
from ring import MAX_WEIGHT, Member

NOW = 1_700_000_000_000
VERSION = Version(NOW, 0, "peer")


# --- block sizes and layouts --------------------------------------------------------------


@pytest.mark.parametrize("size", [MIN_BLOCK_SIZE, 1024, 4096, 1 << 20, MAX_BLOCK_SIZE])
def test_block_sizes_in_bounds_pass(size: int) -> None:
    assert check_block_size(size) == size


@pytest.mark.parametrize("size", [-1, 0, 1, MIN_BLOCK_SIZE - 1, MAX_BLOCK_SIZE + 1, 2**64])
def test_block_sizes_out_of_bounds_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="block size"):
        check_block_size(size)


@pytest.mark.parametrize(
    "layout",
    [
        Layout(0, 5, 2, 4096),
        Layout(10**12, 5, 2),
        Layout(1, 1, 0, MIN_BLOCK_SIZE),
        Layout(1, 200, MAX_CHUNKS - 200, 1024),
    ],
)
def test_layouts_in_bounds_pass(layout: Layout) -> None:
    assert check_layout(layout) is layout


@pytest.mark.parametrize(
    "layout",
    [
        Layout(100, 5, 10**7, 4096),
        Layout(100, 200, MAX_CHUNKS - 199, 4096),
        Layout(100, 5, 2, 1),
        Layout(2**64, 5, 2, 4096),
    ],
)
def test_layouts_out_of_bounds_are_refused(layout: Layout) -> None:
    with pytest.raises(ValueError, match=r"size|k >= 1"):
        check_layout(layout)


# --- manifests ----------------------------------------------------------------------------


def manifest(**changes: Any) -> Manifest:
    layout = changes.pop("layout", Layout(10_000, 5, 2, 1024))
    refs = tuple(ChunkRef(i, f"holder-{i}", bytes(16 * layout.stripes)) for i in range(7))
    fields: dict[str, Any] = {
        "name": "docs/a",
        "version": VERSION,
        "layout": layout,
        "etag": "e",
        "content_type": "text/plain",
        "chunks": refs,
        **changes,
    }
    return Manifest(**fields)


def resealed(**fields: Any) -> bytes:
    """A valid manifest with raw record fields replaced, sealed with a valid checksum."""
    inner, _ = msgpack.unpackb(manifest().to_bytes())
    record = msgpack.unpackb(inner)
    record.update(fields)
    packed: bytes = msgpack.packb(record)
    sealed: bytes = msgpack.packb([packed, xxhash.xxh3_128_digest(packed)])
    return sealed


def test_a_valid_manifest_decodes() -> None:
    assert Manifest.from_bytes(manifest().to_bytes()) == manifest()


@pytest.mark.parametrize(
    "data",
    [
        resealed(m=10**7),
        resealed(k=0),
        resealed(k=250, m=7),
        resealed(block_size=0),
        resealed(block_size=1),
        resealed(block_size=MAX_BLOCK_SIZE + 1),
        resealed(size=-1),
        resealed(size=2**64 - 1),
        resealed(revision=-1),
        resealed(version=[2**63, 0, "p"]),
        resealed(version=[NOW, 2**64 - 1, "p"]),
        resealed(version=[NOW, 0, "p" * 200]),
        resealed(name="../../etc/passwd"),
        resealed(name="red\x1b[31m"),
        resealed(name="two\nlines"),
        resealed(content_type="text/plain\r\nX-Evil: 1"),
        resealed(etag="x" * 2000),
        resealed(chunks=[[7, "h", bytes(16 * 2)]]),  # index k + m
        resealed(chunks=[[-1, "h", bytes(16 * 2)]]),
        resealed(chunks=[[0, "h", bytes(32)], [0, "h", bytes(32)]]),  # index twice
        resealed(chunks=[[0, "h", bytes(16)]]),  # one digest for two stripes
    ],
)
def test_manifests_out_of_bounds_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptData):
        Manifest.from_bytes(data)


def test_a_bad_manifest_name_says_name() -> None:
    with pytest.raises(CorruptData, match="invalid name"):
        Manifest.from_bytes(resealed(name="a/../b"))


# --- chunk owners -------------------------------------------------------------------------


def test_a_valid_chunk_owner_passes() -> None:
    owner = chunk_owner("docs/a", str(VERSION), 6, 4096)
    assert (owner.name, owner.index, owner.block_size) == ("docs/a", 6, 4096)


@pytest.mark.parametrize(
    ("name", "version", "index", "block_size", "why"),
    [
        ("docs/a", str(VERSION), 0, 0, "block size"),
        ("docs/a", str(VERSION), 0, 1, "block size"),
        ("docs/a", str(VERSION), MAX_CHUNKS, 4096, "index"),
        ("docs/a", str(VERSION), -1, 4096, "index"),
        ("docs/a", "not a version", 0, 4096, "not enough values"),
        ("docs/a", f"{2**63}.0.p", 0, 4096, "<="),
        ("docs/a", "+1.0.p", 0, 4096, "not a version"),
        ("../../etc/passwd", str(VERSION), 0, 4096, "segments"),
        ("a\x1bb", str(VERSION), 0, 4096, "control"),
        ("a\nb", str(VERSION), 0, 4096, "control"),
    ],
)
def test_bad_chunk_owners_are_refused(
    name: str, version: str, index: int, block_size: int, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        chunk_owner(name, version, index, block_size)


@pytest.mark.parametrize("name", ["a\x1b[31m", "a\nb", "a\x7fb", "a\x85b", "../x", "a/./b"])
def test_names_with_controls_or_dot_segments_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)


# --- versions and the clock ---------------------------------------------------------------


class FakeWall:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.mark.parametrize(
    "wire", [[2**63, 0, "p"], [2**64 - 1, 0, "p"], [-1, 0, "p"], [NOW, -1, "p"], [NOW, 2**33, "p"]]
)
def test_versions_out_of_range_do_not_decode(wire: list[object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(wire), type=Version)


def test_a_clock_ahead_within_the_skew_limit_is_observed() -> None:
    clock = HybridClock("me", FakeWall())
    clock.observe(Version(NOW + MAX_SKEW_MS, 5, "them"))
    assert clock.now() == Version(NOW + MAX_SKEW_MS, 6, "me")


@pytest.mark.parametrize("ahead", [MAX_SKEW_MS + 1, 3_600_000, 2**53 - NOW])
def test_a_clock_too_far_ahead_is_refused_and_the_clock_stays(ahead: int) -> None:
    clock = HybridClock("me", FakeWall())
    with pytest.raises(InvalidRequest, match="ahead"):
        clock.observe(Version(NOW + ahead, 0, "them"))
    assert clock.now() == Version(NOW, 0, "me")


def test_a_version_built_out_of_range_is_refused() -> None:
    clock = HybridClock("me", FakeWall())
    with pytest.raises(InvalidRequest, match="bounds"):
        clock.observe(Version(NOW, 2**64, "them"))
    assert clock.now() == Version(NOW, 0, "me")


def test_a_full_counter_carries_into_the_next_millisecond() -> None:
    clock = HybridClock("me", FakeWall())
    clock.observe(Version(NOW, MAX_COUNTER, "them"))
    assert clock.now() == Version(NOW + 1, 0, "me")


# --- members ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "https://peer.example:443", "http://[::1]:8000", "http://a-b.c:1"],
)
def test_member_urls_of_host_and_port_pass(url: str) -> None:
    assert check_member_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000/evil",
        "http://127.0.0.1:8000?x=1",
        "http://127.0.0.1:8000#x",
        "http://user:pw@127.0.0.1:8000",
        "http://127.0.0.1",
        "http://127.0.0.1:0",
        "http://127.0.0.1:70000",
        "ftp://127.0.0.1:21",
        "file:///etc/passwd",
        "http://a b:1",
        "http://a\n:1",
        "",
    ],
)
def test_other_member_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="member URL"):
        check_member_url(url)


@pytest.mark.parametrize(
    ("url", "weight"), [("http://h:1/p", 1), ("http://h:1", 0), ("http://h:1", MAX_WEIGHT + 1)]
)
def test_member_records_out_of_bounds_are_no_members(url: str, weight: int) -> None:
    with pytest.raises(ValueError, match=r"member URL|weight"):
        MemberRecord("id", url, weight).member()


@pytest.mark.parametrize("member_id", ["", "a b", "a\nb", "a\x0bb", "a\x7fb", "é", "x" * 65])
def test_member_ids_unfit_for_a_header_are_no_members(member_id: str) -> None:
    with pytest.raises(ValueError, match="member id"):
        MemberRecord(member_id, "http://h:1", 1).member()


def test_uuids_and_short_names_are_member_ids() -> None:
    for member_id in (str(uuid.uuid4()), "a", "peer-1", "p.2_x", "x" * 64):
        assert MemberRecord(member_id, "http://h:1", 1).member().id == member_id


def test_a_bad_persisted_member_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = [MemberRecord("b", "http://b:1", 1), MemberRecord("c", "http://c:1", MAX_WEIGHT)]
    bad = [
        MemberRecord("d", "http://d:1", 10**6),
        MemberRecord("e", "http://e:1/path", 1),
        {"id": "f", "url": 7, "weight": 1},
        MemberRecord("g\r\nX-Injected: 1", "http://g:1", 1),
    ]
    (tmp_path / MEMBERS_FILE).write_bytes(msgspec.msgpack.encode([good[0], *bad, good[1]]))
    membership = Membership(Member("a", "http://a:1"), tmp_path, vnodes=8, replicas=3)
    with caplog.at_level(logging.WARNING):
        membership.load()
    assert [m.id for m in membership.members()] == ["a", "b", "c"]
    assert sum("skipping a member record" in r.getMessage() for r in caplog.records) == 4


def test_pull_orders_bound_their_numbers_on_decode() -> None:
    order = PullOrder("http://h:1", "id", 10, 4096, b"", "n", "1.0.p")
    for changes in ({"block_size": 0}, {"block_size": 1}, {"size": -1}):
        bad = msgspec.structs.replace(order, **changes)
        with pytest.raises(msgspec.ValidationError):
            msgspec.msgpack.decode(msgspec.msgpack.encode(bad), type=PullOrder)


def test_gossip_clock_out_of_range_does_not_decode() -> None:
    me = MemberRecord("a", "http://a:1", 1)
    message = GossipMessage(sender=me, members=[me], clock=Version(2**63, 0, "a"))
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(message), type=GossipMessage)
