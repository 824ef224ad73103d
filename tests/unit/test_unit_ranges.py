"""Range header parsing (RFC 9110 section 14): the forms, clamping, 416 and ignored headers
(another unit, several ranges, or an invalid range: the whole file, as S3 answers)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.api.ranges import parse_range
from node.errors import InvalidRange, InvalidRequest

fast = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        # first-last: inclusive on the wire, half-open here
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=0-9", 10, (0, 10)),
        ("bytes=2-5", 10, (2, 6)),
        ("bytes=9-9", 10, (9, 10)),
        # a last position past the end is clamped
        ("bytes=0-10", 10, (0, 10)),
        ("bytes=5-1000000", 10, (5, 10)),
        ("bytes=0-0", 1, (0, 1)),
        # first-: to the end
        ("bytes=0-", 10, (0, 10)),
        ("bytes=7-", 10, (7, 10)),
        ("bytes=9-", 10, (9, 10)),
        # -suffix: the last n bytes, the whole file if n is larger
        ("bytes=-1", 10, (9, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-10", 10, (0, 10)),
        ("bytes=-11", 10, (0, 10)),
        ("bytes=-500", 1, (0, 1)),
        # the unit is case-insensitive and whitespace around the spec is tolerated
        ("Bytes=1-2", 10, (1, 3)),
        ("BYTES=1-2", 10, (1, 3)),
        ("bytes= 1-2 ", 10, (1, 3)),
    ],
)
def test_satisfiable_ranges(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),  # start at the size
        ("bytes=10-20", 10),
        ("bytes=11-11", 10),
        ("bytes=-0", 10),  # empty suffix
        ("bytes=0-", 0),  # nothing is satisfiable in an empty file
        ("bytes=0-0", 0),
        ("bytes=-0", 0),
    ],
)
def test_unsatisfiable_ranges_raise_invalid_range_with_the_size(header: str, size: int) -> None:
    with pytest.raises(InvalidRange) as caught:
        parse_range(header, size)
    assert caught.value.size == size  # for Content-Range: bytes */size
    assert isinstance(caught.value, InvalidRequest)


@pytest.mark.parametrize(
    "header",
    [
        "bytes=",
        "bytes",
        "bytes=5",
        "bytes=-",
        "bytes=a-b",
        "bytes=1-b",
        "bytes=a-",
        "bytes=-a",
        "bytes=0x1-2",
        "bytes=1.5-2",
        "bytes=1-2-3",
        "bytes=--5",
        "bytes=0--1",
    ],
)
def test_malformed_ranges_mean_the_whole_file(header: str) -> None:
    # Ignored, as S3, Apache and Swift do (RFC 9110 section 14.2 lets a server ignore an
    # invalid ranges-specifier): a 416 would say no range of the file is there to be had.
    assert parse_range(header, 100) is None


@pytest.mark.parametrize(
    "header",
    ["bytes=+1-2", "bytes=1_0-20", "bytes=-+3", "bytes=\u0661-\u0662", "bytes=1 - 2", "bytes=-1_0"],
)
def test_positions_must_be_ascii_digits(header: str) -> None:
    # int() alone would take a sign, "_" separators and other scripts' digits: malformed.
    assert parse_range(header, 100) is None


@pytest.mark.parametrize("header", ["bytes=-1", "bytes=-5", "bytes=-99999999999"])
def test_a_suffix_of_an_empty_file_is_the_whole_empty_file(header: str) -> None:
    # 200 with an empty body, as S3 answers: ``b""[-5:]`` is ``b""``, not an error.
    assert parse_range(header, 0) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "items=0-5",  # another unit must be ignored
        "bits=0-5",
        "=0-5",
        "bytes=0-1,3-4",  # several ranges: answered with the whole body
        "bytes=0-1, 3-4",
        "bytes=0-1,",
        "bytes=-1,-2",
        "items=garbage",
        "bytes=5-3",  # last before first: invalid (RFC 9110 section 14.1.1), ignored
        "bytes=1-0",
        "bytes=99-0",
    ],
)
def test_headers_that_mean_the_whole_file(header: str | None) -> None:
    assert parse_range(header, 100) is None


@fast
@given(size=st.integers(1, 10**12), data=st.data())
def test_first_last_ranges_land_inside_the_file(size: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(0, size - 1), label="first")
    last = data.draw(st.integers(first, size * 2), label="last")
    start, end = parse_range(f"bytes={first}-{last}", size) or (-1, -1)
    assert (start, end) == (first, min(last + 1, size))
    assert 0 <= start < end <= size


@fast
@given(size=st.integers(1, 10**12), data=st.data())
def test_open_ended_ranges_run_to_the_end(size: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(0, size - 1), label="first")
    assert parse_range(f"bytes={first}-", size) == (first, size)


@fast
@given(size=st.integers(1, 10**12), suffix=st.integers(1, 10**13))
def test_suffix_ranges_are_the_last_bytes(size: int, suffix: int) -> None:
    start, end = parse_range(f"bytes=-{suffix}", size) or (-1, -1)
    assert end == size
    assert end - start == min(suffix, size)


@fast
@given(size=st.integers(0, 10**6), first=st.integers(0, 10**7), last=st.integers(0, 10**7))
def test_any_first_last_is_either_inside_the_file_or_refused(
    size: int, first: int, last: int
) -> None:
    try:
        wanted = parse_range(f"bytes={first}-{last}", size)
    except InvalidRange:
        assert size <= first <= last
    else:
        if wanted is None:
            assert last < first
        else:
            start, end = wanted
            assert 0 <= start < end <= size
            assert first < size
            assert last >= first


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-" + "9" * 5000,  # once a 500: int() refuses more than 4300 digits
        "bytes=" + "9" * 5000 + "-",
        "bytes=-" + "9" * 5000,
        "bytes=0-9223372036854775808",  # 2^63: no file is that large
        "bytes=9223372036854775808-",
        "bytes=-99999999999999999999",
    ],
)
def test_absurdly_large_positions_are_refused_not_converted(header: str) -> None:
    with pytest.raises(InvalidRange) as caught:
        parse_range(header, 100)
    assert "past" in caught.value.message
    assert len(caught.value.message) < 200, "the header is not echoed whole"


def test_large_positions_within_bounds_are_clamped_as_the_rfc_says() -> None:
    assert parse_range("bytes=0-9223372036854775807", 100) == (0, 100)
    assert parse_range("bytes=-9223372036854775807", 100) == (0, 100)
    assert parse_range("bytes=" + "0" * 5000 + "1-2", 100) == (1, 3)  # leading zeros are fine


@fast
@given(header=st.text(max_size=60) | st.from_regex(r"bytes=[0-9]{0,30}-[0-9]{0,30}"))
def test_any_header_is_a_range_the_whole_file_or_invalid_range(header: str) -> None:
    try:
        wanted = parse_range(header, 1000)
    except InvalidRange:
        return
    if wanted is not None:
        start, end = wanted
        assert 0 <= start < end <= 1000


@pytest.mark.parametrize(
    "header", ["bytes=99999999999999999999-5", "bytes=0100-99", "bytes=" + "9" * 5000 + "-1"]
)
def test_a_reversed_range_is_ignored_however_large_its_first_position(header: str) -> None:
    # Decided on the digits, before any is converted: not a 416 for its size.
    assert parse_range(header, 100) is None


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-3", "bytes=-", "bytes=+1-2"])
def test_the_peer_api_refuses_invalid_ranges(header: str) -> None:
    # Its callers send none: one would be a bug, and the whole chunk read as the range.
    with pytest.raises(InvalidRange, match="invalid range"):
        parse_range(header, 100, refuse_invalid=True)
    assert parse_range("bytes=1-2", 100, refuse_invalid=True) == (1, 3)
