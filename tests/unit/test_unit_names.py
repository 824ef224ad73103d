"""File names: what validate_name accepts and refuses, and how raw request paths decode."""

from __future__ import annotations

import sys
import unicodedata
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import InvalidName, InvalidRequest
from node.model.names import (
    MAX_NAME_BYTES,
    has_control,
    name_from_raw_path,
    name_key,
    validate_name,
)

fast = settings(max_examples=80, deadline=None)

# Characters that can never make a name invalid on their own: no controls, no surrogates, no "/".
safe_chars = st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="/.")
segments = st.text(safe_chars, min_size=1, max_size=12)
valid_names = st.lists(segments, min_size=1, max_size=6).map("/".join)


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "report.pdf",
        "docs/2024/report final.pdf",
        "ünïcode/日本語/€ and emoji 🎉",
        " leading and trailing spaces ",
        "...",
        ".hidden",
        "a/.x/...",
        "x..y/..z/z..",
        "\u2028line separator is not a control character",
        pytest.param("a" * MAX_NAME_BYTES, id="1024 ASCII bytes"),
        pytest.param("€" * 341 + "a", id="1024 bytes of UTF-8"),  # 341 * 3 + 1
    ],
)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_name(name) == name


INVALID_NAMES = [
    ("", "empty"),
    ("a" * (MAX_NAME_BYTES + 1), "1025 ASCII bytes"),
    ("€" * 342, "342 characters but 1026 bytes of UTF-8"),
    ("€" * 341 + "ab", "1025 bytes of UTF-8"),
    ("/a", "leading slash: empty first segment"),
    ("a/", "trailing slash: empty last segment"),
    ("a//b", "double slash"),
    ("/", "only a slash"),
    (".", "dot segment"),
    ("..", "dot-dot segment"),
    ("a/./b", "dot segment inside"),
    ("a/../b", "dot-dot segment inside"),
    ("a/..", "trailing dot-dot"),
    ("../a", "leading dot-dot"),
    ("a\x00b", "NUL"),
    ("a\tb", "tab"),
    ("a\nb", "newline"),
    ("a\rb", "carriage return"),
    ("a\x1bb", "escape"),
    ("a\x7fb", "DEL"),
    ("a\x85b", "C1 next line"),
    ("a\x9fb", "last C1 control"),
    ("a\ud800b", "lone high surrogate"),
    ("a\udcffb", "lone low surrogate (surrogateescape)"),
]


@pytest.mark.parametrize("name", [pytest.param(name, id=why) for name, why in INVALID_NAMES])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)


def test_invalid_name_is_an_invalid_request_and_a_value_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_name("")
    assert isinstance(caught.value, ValueError)
    assert caught.value.code == "invalid_name"


def test_length_is_counted_in_utf8_bytes_not_characters() -> None:
    assert len("€" * 342) < MAX_NAME_BYTES
    with pytest.raises(InvalidName, match="1026"):
        validate_name("€" * 342)


@fast
@given(name=valid_names)
def test_generated_valid_names_pass(name: str) -> None:
    if len(name.encode()) <= MAX_NAME_BYTES:
        assert validate_name(name) == name


@fast
@given(
    prefix=valid_names,
    suffix=valid_names,
    control=st.characters(categories=["Cc"]),
)
def test_any_control_character_anywhere_is_refused(prefix: str, suffix: str, control: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(prefix + control + suffix)


@fast
@given(name=valid_names)
def test_percent_encoding_round_trips_through_raw_paths(name: str) -> None:
    if len(name.encode()) <= MAX_NAME_BYTES:
        assert name_from_raw_path(quote(name, safe="/")) == name
        assert name_from_raw_path(quote(name, safe="")) == name  # "/" sent as %2F


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("a", "a"),
        ("a%20b", "a b"),
        ("dir/file.txt", "dir/file.txt"),
        ("dir%2Ffile.txt", "dir/file.txt"),
        ("%E2%82%AC", "€"),
        ("%e2%82%ac", "€"),
        ("caf%C3%A9", "café"),
        ("...", "..."),
        ("%2e%2e%2e", "..."),
        ("%2ex", ".x"),
        ("a+b", "a+b"),  # a path is not a query string: '+' stays '+'
        ("100%25", "100%"),
    ],
)
def test_raw_paths_decode_to_names(raw: str, name: str) -> None:
    assert name_from_raw_path(raw) == name


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "%ff",
        "a%ffb",
        "%C3",  # truncated two-byte sequence
        "%C0%AF",  # overlong encoding of '/'
        "%ED%A0%80",  # an encoded surrogate is not UTF-8
        "%2e%2e",
        "%2E%2E",
        "a/%2e%2e/b",
        "%2e",
        "a/%2e",
        "%2F",
        "a%2F%2Fb",
        "a//b",
        "/a",
        "%00",
        "a%0Ab",
        "a%09b",
        "%7F",
        "%C2%85",
        pytest.param("%61" * (MAX_NAME_BYTES + 1), id="1025 bytes percent-encoded"),
    ],
)
def test_bad_raw_paths_are_invalid_names(raw: str) -> None:
    with pytest.raises(InvalidName):
        name_from_raw_path(raw)


def test_raw_path_with_undecodable_raw_byte_is_an_invalid_name() -> None:
    raw = b"a\xffb".decode("utf-8", "surrogateescape")  # what aiohttp hands to the route
    with pytest.raises(InvalidName):
        name_from_raw_path(raw)


def test_name_key_is_blake2b_128_hex_and_pinned() -> None:
    # Pinned: manifests are stored and placed under this key, it must never change.
    assert name_key("a") == "27c35e6e9373877f29e562464e46497e"
    assert name_key("docs/ünïcode €.txt") == "ebb25d943500b088cc4f69593c2ec962"


@fast
@given(first=valid_names, second=valid_names)
def test_name_keys_are_32_hex_digits_and_distinct_for_distinct_names(
    first: str, second: str
) -> None:
    key = name_key(first)
    assert len(key) == 32
    assert set(key) <= set("0123456789abcdef")
    assert key == name_key(first)
    assert (key == name_key(second)) == (first == second)


def test_the_control_character_class_is_unicodes_cc_and_cs_for_every_code_point() -> None:
    """``has_control`` searches a character class instead of asking ``unicodedata`` per
    character: the two agree on all 1,114,112 code points."""
    every = [chr(point) for point in range(sys.maxunicode + 1)]
    assert [c for c in every if has_control(c) != (unicodedata.category(c) in ("Cc", "Cs"))] == []
    assert [
        c for c in every if has_control(c, surrogates=False) != (unicodedata.category(c) == "Cc")
    ] == []
    with pytest.raises(InvalidName, match="valid UTF-8"):
        validate_name("a\udcff\x01")  # the first found says why
    with pytest.raises(InvalidName, match="control characters"):
        validate_name("a\x01\udcff")
