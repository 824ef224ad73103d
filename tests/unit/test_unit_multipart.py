"""Multipart records and arithmetic: S3's ETag of a multipart object, which segments hold a
range, and segmented manifests on the wire (checked as a replica decodes them)."""

from __future__ import annotations

import dataclasses
import hashlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.datapath.uploads import Upload
from node.errors import CorruptData
from node.model.layout import Layout
from node.model.manifest import SEGMENT_HOLDER, Manifest, parse_segment_id, segment_id
from node.model.multipart import (
    MAX_PARTS,
    InvalidUpload,
    Segment,
    UploadPage,
    UploadRecord,
    after_every_upload_under,
    after_part,
    after_uploads_of,
    check_part_number,
    check_upload_id,
    is_part_name,
    multipart_etag,
    new_attempt_id,
    new_upload_id,
    part_md5,
    part_name,
    part_number,
    segments_covering,
    upload_id_of,
    upload_record_name,
    upload_records,
)
from node.model.representation import Representation
from node.model.version import Version

V = Version(1_700_000_000_000, 0, "peer-a")


def segment(number: int, size: int) -> Segment:
    data = bytes([number]) * size
    return Segment(part_name("a" * 32, number, "0" * 16), V, size, hashlib.md5(data).hexdigest())


def test_the_etag_is_the_md5_of_the_parts_md5s_and_their_count() -> None:
    parts = [b"x" * 10, b"y" * 20, b"z"]
    etags = [hashlib.md5(p).hexdigest() for p in parts]
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    assert multipart_etag(etags) == hashlib.md5(joined).hexdigest() + "-3"


def test_an_etag_that_is_not_an_md5_contributes_the_md5_of_its_text() -> None:
    assert part_md5("not-hex") == hashlib.md5(b"not-hex").digest()
    assert part_md5("AB" * 16) == hashlib.md5(b"AB" * 16).digest()  # (only lower-case hex)
    assert part_md5("ab" * 16) == bytes.fromhex("ab" * 16)


@pytest.mark.parametrize(
    ("start", "end", "wanted"),
    [
        (0, 30, [(1, 0, 10), (2, 0, 10), (3, 0, 10)]),
        (9, 11, [(1, 9, 10), (2, 0, 1)]),
        (10, 20, [(2, 0, 10)]),
        (25, 30, [(3, 5, 10)]),
        (5, 5, []),
    ],
)
def test_segments_covering_a_range(
    start: int, end: int, wanted: list[tuple[int, int, int]]
) -> None:
    segments = [segment(1, 10), segment(2, 10), segment(99, 0), segment(3, 10)]
    got = [(part_number(s.name), a, b) for s, a, b in segments_covering(segments, start, end)]
    assert got == wanted


def test_upload_ids_and_part_numbers_are_checked() -> None:
    assert check_upload_id(new_upload_id(1_700_000_000_000))
    for bad in ("", "A" * 32, "a" * 31, "../" + "a" * 29):
        with pytest.raises(InvalidUpload):
            check_upload_id(bad)
    assert check_part_number("1") == 1
    assert check_part_number(str(MAX_PARTS)) == MAX_PARTS
    for bad in ("0", "10001", "-1", "+1", "1_0", "", "\u0661"):
        with pytest.raises(InvalidUpload):
            check_part_number(bad)
    assert part_name("a" * 32, 7, "b" * 16).endswith("/00007." + "b" * 16)  # in part order
    assert (
        part_name("a" * 32, 7, "f" * 16)
        < after_part("a" * 32, 7)
        < part_name("a" * 32, 8, "0" * 16)
    )
    assert part_number(part_name("a" * 32, 42, new_attempt_id())) == 42
    assert is_part_name(part_name("a" * 32, 42, new_attempt_id()))
    assert not is_part_name("/parts/" + "a" * 32 + "/00042")


def test_an_upload_record_keeps_type_and_metadata() -> None:
    given = Representation.build(content_encoding="gzip", metadata={"owner": "me"})
    record = UploadRecord.of("b", "b/k", 5, "text/plain", given)
    again = UploadRecord.from_bytes(record.to_bytes())
    assert again == record
    assert again.given == given
    with pytest.raises(ValueError, match="undecodable"):
        UploadRecord.from_bytes(b"\x01")


def segmented(segments: tuple[Segment, ...]) -> Manifest:
    size = sum(s.size for s in segments)
    return Manifest("b/k", V, Layout(size, 5, 2, 4096), "e-2", segments=segments)


def test_a_segmented_manifest_round_trips_and_has_nothing_to_repair() -> None:
    manifest = segmented((segment(1, 10), segment(2, 5)))
    again = Manifest.from_bytes(manifest.to_bytes())
    assert again == manifest
    assert again.segmented
    assert not again.degraded
    assert again.missing(2) == 0
    assert not again.stored_inline
    assert not manifest.without_chunks().segments  # listings keep no segments
    refs = manifest.segment_refs()
    assert {parse_segment_id(ref) for holder, ref in refs if holder == SEGMENT_HOLDER} == {
        (s.name, s.version) for s in manifest.segments
    }
    assert segment_id("/parts/x/00001", V) == f"{V} /parts/x/00001"


def test_a_manifest_without_segments_does_not_name_the_field() -> None:
    manifest = Manifest("b/k", V, Layout(0, 5, 2, 4096))
    assert b"segments" not in manifest.to_bytes()


def test_segments_that_do_not_add_up_are_refused() -> None:
    manifest = segmented((segment(1, 10),))
    wrong = dataclasses.replace(manifest, layout=Layout(11, 5, 2, 4096))
    with pytest.raises(CorruptData, match="add up"):
        Manifest.from_bytes(wrong.to_bytes())
    bad_name = segmented((Segment("a//b", V, 10, "e"),))
    with pytest.raises(CorruptData, match="segment name"):
        Manifest.from_bytes(bad_name.to_bytes())
    many = segmented(tuple(segment(1, 0) for _ in range(MAX_PARTS + 1)))
    with pytest.raises(CorruptData):
        Manifest.from_bytes(many.to_bytes())


def test_ten_thousand_segments_fit_a_manifest() -> None:
    segments = tuple(
        Segment(part_name("f" * 32, n, "0" * 16), V, 5 << 30, "0" * 32)
        for n in range(1, MAX_PARTS + 1)
    )
    manifest = segmented(segments)
    data = manifest.to_bytes()
    assert len(data) < 2 << 20  # well inside a peer request body (256 MiB)
    assert Manifest.from_bytes(data).size == MAX_PARTS * (5 << 30)
    assert msgspec.msgpack.decode(data)  # (plain msgpack)


def uploads_of(*keys: str) -> list[tuple[str, Upload]]:
    return [
        (key, Upload(f"{n:032x}", UploadRecord(bucket="b", name=f"b/{key}", initiated_ms=n)))
        for n, key in enumerate(keys)
    ]


def upload_page(
    listed: list[tuple[str, Upload]],
    prefix: str,
    delimiter: str,
    key_marker: str,
    id_marker: str,
    limit: int,
) -> tuple[list[tuple[str, Upload | None]], bool]:
    """What ``Uploads.listing`` walks, over records held in a list: from the markers' start
    name, in record-name order, skipping a rolled-up prefix."""
    names = sorted((upload_record_name("b", key, u.upload_id), key, u) for key, u in listed)
    if key_marker and id_marker:
        cursor = upload_record_name("b", key_marker, id_marker)
    else:
        cursor = after_uploads_of("b", key_marker) if key_marker else ""
    scope = upload_records("b", prefix)
    made: UploadPage[Upload] = UploadPage(prefix, delimiter, key_marker, limit)
    for name, key, upload in names:
        if name <= cursor or not name.startswith(scope):
            continue
        common = made.feed(key, upload)
        if made.truncated:
            break
        if common is not None:
            cursor = after_every_upload_under("b", common)
    return made.entries, made.truncated


def page(entries: list[tuple[str, Upload | None]]) -> list[str]:
    return [
        key if upload is None else f"{key}@{int(upload.upload_id, 16)}" for key, upload in entries
    ]


KEY_CHARACTERS = st.sampled_from([" ", "!", "/", "a", "b", "~", "\u00e9", "\U0001f600"])


@given(
    keys=st.lists(st.text(KEY_CHARACTERS, min_size=1, max_size=6), min_size=1, max_size=20),
    prefix=st.text(KEY_CHARACTERS, max_size=3),
)
def test_record_names_sort_as_key_then_upload_id(keys: list[str], prefix: str) -> None:
    """ListMultipartUploads lists by key, then upload id: the record names sort so, and a
    key prefix is a record-name prefix, whatever spaces the keys hold."""
    ids = [f"{n:032x}" for n in range(len(keys))]
    by_name = sorted(zip(keys, ids, strict=True), key=lambda k: upload_record_name("b", *k))
    assert by_name == sorted(zip(keys, ids, strict=True), key=lambda k: (k[0].encode(), k[1]))
    for key, upload_id in by_name:
        name = upload_record_name("b", key, upload_id)
        assert name.startswith(upload_records("b", prefix)) == key.startswith(prefix)
        assert upload_id_of(name) == upload_id
        for other in keys:
            after = after_uploads_of("b", other)
            assert (name > after) == (key.encode() > other.encode())
            if other and key.startswith(other):
                assert name < after_every_upload_under("b", other)


def test_upload_ids_sort_by_start_time() -> None:
    ids = [new_upload_id(ms) for ms in (1, 2, 1_700_000_000_000, 1_800_000_000_000)]
    assert ids == sorted(ids)
    assert all(check_upload_id(upload_id) for upload_id in ids)


def test_an_upload_page_follows_markers_within_a_key() -> None:
    listed = uploads_of("a", "k", "k", "k", "z")
    assert page(upload_page(listed, "", "", "", "", 10)[0]) == ["a@0", "k@1", "k@2", "k@3", "z@4"]
    first, truncated = upload_page(listed, "", "", "", "", 2)
    assert (page(first), truncated) == (["a@0", "k@1"], True)
    rest, truncated = upload_page(listed, "", "", "k", f"{1:032x}", 2)
    assert (page(rest), truncated) == (["k@2", "k@3"], True)
    rest, truncated = upload_page(listed, "", "", "k", f"{3:032x}", 2)
    assert (page(rest), truncated) == (["z@4"], False)
    assert page(upload_page(listed, "", "", "k", "", 10)[0]) == ["z@4"]  # (no id: after k)


def test_an_upload_page_rolls_keys_up_at_a_delimiter() -> None:
    listed = uploads_of("a/1", "a/2", "b", "c/d/e", "c/x")
    assert page(upload_page(listed, "", "/", "", "", 10)[0]) == ["a/", "b@2", "c/"]
    assert page(upload_page(listed, "c/", "/", "", "", 10)[0]) == ["c/d/", "c/x@4"]
    first, truncated = upload_page(listed, "", "/", "", "", 1)
    assert (page(first), truncated) == (["a/"], True)
    assert page(upload_page(listed, "", "/", "a/", "", 10)[0]) == ["b@2", "c/"]
