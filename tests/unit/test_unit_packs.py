"""Packs on the wire: a packed file's manifest (schema 2, one segment with an offset), what
a release before packs makes of it, the pack's directory, and which files are packed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from node.config import PeerConfig
from node.errors import CorruptData, Unavailable
from node.model.layout import Layout
from node.model.manifest import (
    PACKED_SCHEMA,
    SCHEMA,
    ChunkRef,
    Manifest,
    ManifestRecord,
    SealedManifest,
)
from node.model.multipart import Segment, part_name
from node.model.packs import PackEntry, is_pack_name, pack_name, pack_trailer, read_directory
from node.model.version import Version
from node.upkeep.packer import Packer

V = Version(1_700_000_000_000, 3, "peer-a")
PACK = pack_name(Version(1_700_000_100_000, 0, "peer-b"))


def packed(offset: int = 4096, size: int = 300) -> Manifest:
    return Manifest(
        "b/small",
        V,
        Layout(size, 5, 2, 512 << 10),
        "e" * 32,
        revision=1,
        segments=(Segment(PACK, Version(1_700_000_100_001, 0, "peer-b"), size, "e" * 32, offset),),
    )


def record_of(manifest: Manifest) -> dict[str, Any]:
    sealed = msgspec.msgpack.decode(manifest.to_bytes(), type=SealedManifest)
    return msgspec.msgpack.decode(sealed.record)  # type: ignore[no-any-return]


def test_a_packed_manifest_round_trips_at_schema_two() -> None:
    manifest = packed()
    again = Manifest.from_bytes(manifest.to_bytes())
    assert again == manifest
    assert again.packed
    assert again.segmented
    assert not again.stored_inline
    assert not again.chunked
    assert again.segment_refs() == set()  # a pack is never retired by its members
    assert record_of(manifest)["schema"] == PACKED_SCHEMA
    assert again.to_json()["packed"] is True


def test_a_release_before_packs_refuses_a_packed_manifest_rather_than_misread_it() -> None:
    """What the schema field protects: a reader that knows only schema 1 takes the segment's
    offset for an extra element and ignores it (msgspec), so it would serve the pack from its
    first byte. It checks the schema first."""
    sealed_manifest = msgspec.msgpack.decode(packed().to_bytes(), type=SealedManifest)
    record = msgspec.msgpack.decode(sealed_manifest.record, type=ManifestRecord)
    assert record.schema != SCHEMA
    segment = msgspec.msgpack.decode(msgspec.msgpack.encode(record.segments), type=list[Segment])
    assert segment[0].offset == 4096  # (a new reader sees it)


def test_schema_and_segments_must_agree() -> None:
    multipart = Segment(part_name("a" * 32, 1, "0" * 16), V, 300, "e")
    at_offset = msgspec.structs.replace(multipart, offset=5)  # a part read from its middle
    with pytest.raises(CorruptData):
        Manifest.from_bytes(dataclasses.replace(packed(), segments=(at_offset,)).to_bytes())
    record = record_of(packed())  # forged: a schema-1 record naming a pack; schema 2 without
    for changed in ({"schema": SCHEMA}, {"schema": PACKED_SCHEMA, "segments": None}):
        bad = {**record, **changed}
        if bad["segments"] is None:
            del bad["segments"]
        data = msgspec.msgpack.encode(bad)
        forged = msgspec.msgpack.encode(SealedManifest(data, xxhash.xxh3_128_digest(data)))
        with pytest.raises(CorruptData):
            Manifest.from_bytes(forged)
    two = dataclasses.replace(packed(), segments=packed().segments * 2, layout=Layout(600, 5, 2))
    with pytest.raises(CorruptData):
        Manifest.from_bytes(two.to_bytes())


def test_a_multipart_segment_keeps_its_bytes() -> None:
    segment = Segment(part_name("a" * 32, 1, "0" * 16), V, 10, "e")
    manifest = Manifest("b/k", V, Layout(10, 5, 2), "e-1", segments=(segment,))
    assert [len(s) for s in record_of(manifest)["segments"]] == [4]
    assert record_of(manifest)["schema"] == SCHEMA
    assert [len(s) for s in record_of(packed())["segments"]] == [5]


def test_pack_names() -> None:
    assert is_pack_name(PACK)
    assert not is_pack_name("/packs/")
    assert not is_pack_name("/packs/not-a-version")
    assert not is_pack_name("packs/" + str(V))
    assert not is_pack_name(part_name("a" * 32, 1, "0" * 16))


@given(st.lists(st.binary(max_size=300), max_size=40))
def test_a_pack_directory_reads_back_from_the_pack_bytes(members: list[bytes]) -> None:
    entries, offset = [], 0
    for n, member in enumerate(members):
        entries.append(PackEntry(f"f/{n}", V, offset, len(member), n % 3))
        offset += len(member)
    pack = b"".join(members) + pack_trailer(entries)
    assert read_directory(pack) == entries
    for entry, member in zip(entries, members, strict=True):
        assert pack[entry.offset : entry.offset + entry.size] == member


@pytest.mark.parametrize("pack", [b"", b"\x00" * 7, b"\xff" * 8, b"\x01" + b"\x00" * 7])
def test_a_pack_without_a_directory_is_refused(pack: bytes) -> None:
    with pytest.raises(ValueError, match="directory"):
        read_directory(pack)


def test_which_files_are_packed() -> None:
    packer = Packer(PeerConfig(Path("."), pack_after=60), None, None, None, None)  # type: ignore[arg-type]
    now = V.wall_ms / 1000
    small = Manifest("b/k", V, Layout(3, 5, 2), "e", inline=b"abc")
    assert packer.wants(small, now + 60)
    assert not packer.wants(small, now + 59)  # changed too recently
    assert not packer.wants(dataclasses.replace(small, name="/keys/k"), now + 60)  # a record
    assert not packer.wants(dataclasses.replace(small, inline=b"", layout=Layout(0, 5, 2)), 1e12)
    assert not packer.wants(packed(), 1e12)  # packed already
    never = Packer(PeerConfig(Path("."), pack_after=0), None, None, None, None)  # type: ignore[arg-type]
    assert not never.wants(small, 1e12)


def test_each_pack_is_checked_once_a_period_and_a_restart_misses_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = PeerConfig(Path("."), pack_check_interval=86400, anti_entropy_interval=3600)
    packs = [
        Manifest(
            pack_name(Version(1_000_000 + n, 0, "p")),
            Version(1_000_001 + n, 0, "p"),
            Layout(1 << 20, 5, 2, 16 << 10),
            chunks=tuple(ChunkRef(i, "h", bytes(16 * 13)) for i in range(7)),
        )
        for n in range(200)
    ]
    clock = [1_800_000_000.0]
    monkeypatch.setattr("node.upkeep.packer.time.time", lambda: clock[0])
    packer = Packer(config, None, None, None, None)  # type: ignore[arg-type]
    checks: dict[str, int] = dict.fromkeys((p.name for p in packs), 0)
    for walk in range(48):  # two days of hourly walks, a restart after the 30th
        if walk == 30:
            packer = Packer(config, None, None, None, None)  # type: ignore[arg-type]
        packer.walk_started()
        for pack in packs:
            checks[pack.name] += packer.due(pack)
        clock[0] += 3600
    assert set(checks.values()) == {2}


class UpPeers:
    """The part of a membership the packer asks before it packs: ``up`` peers up."""

    def __init__(self, up: int) -> None:
        self.up = up

    def up_ids(self) -> set[str]:
        return {f"peer-{i}" for i in range(self.up)}

    def all_read_packs(self) -> bool:
        return True


class Replicas:
    """Manifest replicas that record which names the packer asked about, and answer none."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def read_committed(self, name: str) -> Manifest:
        self.asked.append(name)
        raise Unavailable("not now")


@pytest.mark.parametrize(
    ("up", "parity", "packs"),
    [(6, 2, False), (7, 1, False), (7, 2, True), (6, 3, False), (7, 3, True)],
)
async def test_nothing_is_packed_where_a_pack_would_be_less_safe_than_three_copies(
    up: int, parity: int, packs: bool
) -> None:
    """A pack must keep k + 2 chunks (the losses three inline copies survive): with fewer
    peers up, or fewer parity chunks, its files stay inline, and nothing else is asked."""
    config = PeerConfig(Path("."), pack_after=60, m=parity)
    replicas = Replicas()
    packer = Packer(config, UpPeers(up), None, replicas, None)  # type: ignore[arg-type]
    packer.walk_started()
    await packer.offer(Manifest("b/k", V, Layout(3, 5, parity), "e", inline=b"abc"))
    await packer.flush(at_least=0)
    assert replicas.asked == (["b/k"] if packs else [])  # (asked first whether it is newest)
    assert packer.stats.files_passed == 1
