"""Preconditions (RFC 9110, section 13), pure: parsing of the five fields and the evaluation
order of 13.2.2, as tables."""

from __future__ import annotations

import time

import msgspec
import pytest

from node.errors import InvalidRequest
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.preconditions import (
    ANY,
    MAX_FIELD_LENGTH,
    UNMATCHABLE,
    EntityTag,
    Outcome,
    Preconditions,
    Representation,
    TagList,
    format_http_date,
    parse_http_date,
    parse_preconditions,
    parse_tag_list,
    representation,
)
from node.model.version import Version

NOW = 1_780_000_000.0  # in 2026
T = 784_111_777  # Sun, 06 Nov 1994 08:49:37 GMT: the representation's modification time
DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"  # a second earlier
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"
CURRENT = Representation("abc", T)

PROCEED, NOT_MODIFIED, FAILED = Outcome.PROCEED, Outcome.NOT_MODIFIED, Outcome.FAILED


def parse(*fields: tuple[str, str]) -> Preconditions:
    return parse_preconditions(fields, NOW)


# (fields, current exists, outcome for GET/HEAD, outcome for PUT/DELETE)
EVALUATION = [
    # no preconditions
    ((), True, PROCEED, PROCEED),
    ((), False, PROCEED, PROCEED),
    # If-Match (13.1.1): strong comparison, "*" = any current representation
    ((("If-Match", '"abc"'),), True, PROCEED, PROCEED),
    ((("If-Match", '"xyz"'),), True, FAILED, FAILED),
    ((("If-Match", 'W/"abc"'),), True, FAILED, FAILED),
    ((("If-Match", '"x", "abc"'),), True, PROCEED, PROCEED),
    ((("If-Match", '"x"'), ("If-Match", '"abc"')), True, PROCEED, PROCEED),
    ((("If-Match", "abc"),), True, PROCEED, PROCEED),
    ((("If-Match", "*"),), True, PROCEED, PROCEED),
    ((("If-Match", "*"),), False, FAILED, FAILED),
    ((("If-Match", '"abc"'),), False, FAILED, FAILED),
    ((("If-Match", ""),), True, FAILED, FAILED),
    # If-None-Match (13.1.2): weak comparison; 304 for GET/HEAD, 412 for writes
    ((("If-None-Match", '"abc"'),), True, NOT_MODIFIED, FAILED),
    ((("If-None-Match", 'W/"abc"'),), True, NOT_MODIFIED, FAILED),
    ((("If-None-Match", '"x", "abc"'),), True, NOT_MODIFIED, FAILED),
    ((("If-None-Match", "*"),), True, NOT_MODIFIED, FAILED),
    ((("If-None-Match", "*"),), False, PROCEED, PROCEED),
    ((("If-None-Match", '"x"'),), True, PROCEED, PROCEED),
    ((("If-None-Match", '"abc"'),), False, PROCEED, PROCEED),
    # If-Unmodified-Since (13.1.4): true when modified at or before the date
    ((("If-Unmodified-Since", DATE),), True, PROCEED, PROCEED),
    ((("If-Unmodified-Since", AFTER),), True, PROCEED, PROCEED),
    ((("If-Unmodified-Since", BEFORE),), True, FAILED, FAILED),
    ((("If-Unmodified-Since", BEFORE),), False, PROCEED, PROCEED),  # no date to compare
    ((("If-Unmodified-Since", "yesterday"),), True, PROCEED, PROCEED),  # invalid: ignored
    ((("If-Unmodified-Since", BEFORE), ("If-Unmodified-Since", DATE)), True, PROCEED, PROCEED),
    # If-Modified-Since (13.1.3): GET/HEAD only; false when modified at or before the date
    ((("If-Modified-Since", DATE),), True, NOT_MODIFIED, PROCEED),
    ((("If-Modified-Since", AFTER),), True, NOT_MODIFIED, PROCEED),
    ((("If-Modified-Since", BEFORE),), True, PROCEED, PROCEED),
    ((("If-Modified-Since", "Sunday, 06-Nov-94 08:49:37 GMT"),), True, NOT_MODIFIED, PROCEED),
    ((("If-Modified-Since", "Sun Nov  6 08:49:37 1994"),), True, NOT_MODIFIED, PROCEED),
    ((("If-Modified-Since", DATE.lower()),), True, PROCEED, PROCEED),  # invalid: ignored
    ((("If-Modified-Since", DATE), ("If-Modified-Since", DATE)), True, PROCEED, PROCEED),
    ((("If-Modified-Since", DATE),), False, PROCEED, PROCEED),
    # 13.2.2 order. Step 1 before step 3: a failed If-Match is 412 even beside a 304 cause.
    ((("If-Match", '"x"'), ("If-None-Match", '"abc"')), True, FAILED, FAILED),
    # If-Unmodified-Since is ignored when If-Match is present (13.1.4)...
    ((("If-Match", '"abc"'), ("If-Unmodified-Since", BEFORE)), True, PROCEED, PROCEED),
    # ...and decides before If-None-Match when it is not (step 2 before step 3).
    ((("If-Unmodified-Since", BEFORE), ("If-None-Match", '"abc"')), True, FAILED, FAILED),
    ((("If-Unmodified-Since", DATE), ("If-None-Match", '"abc"')), True, NOT_MODIFIED, FAILED),
    # If-Modified-Since is ignored when If-None-Match is present (13.1.3, step 4).
    ((("If-None-Match", '"x"'), ("If-Modified-Since", DATE)), True, PROCEED, PROCEED),
    ((("If-None-Match", '"abc"'), ("If-Modified-Since", BEFORE)), True, NOT_MODIFIED, FAILED),
    # everything true
    (
        (
            ("If-Match", '"abc"'),
            ("If-None-Match", '"x"'),
            ("If-Modified-Since", BEFORE),
            ("If-Unmodified-Since", DATE),
        ),
        True,
        PROCEED,
        PROCEED,
    ),
]


@pytest.mark.parametrize(("fields", "exists", "read", "write"), EVALUATION)
def test_evaluation_follows_rfc_9110_13_2_2(
    fields: tuple[tuple[str, str], ...], exists: bool, read: Outcome, write: Outcome
) -> None:
    conditions = parse(*fields)
    current = CURRENT if exists else None
    assert conditions.evaluate(current, safe=True) is read
    assert conditions.evaluate(current, safe=False) is write
    assert conditions.allows_write(current) is (write is PROCEED)
    # What a replica checks at commit decides a write exactly as the whole request would.
    for_write = conditions.for_write()
    assert (for_write or Preconditions()).evaluate(current, safe=False) is write


# (If-Range value, whether the Range applies) against CURRENT (13.1.5)
IF_RANGE = [
    (None, True),
    ('"abc"', True),
    ("abc", True),
    ('W/"abc"', False),  # a weak tag never matches strongly
    ('"xyz"', False),
    (DATE, True),
    ("Sunday, 06-Nov-94 08:49:37 GMT", True),
    (BEFORE, False),
    (AFTER, False),  # only an exact date matches
    ("not a validator at all", False),
    ('"abc", "def"', False),
    ("", False),
]


@pytest.mark.parametrize(("value", "applies"), IF_RANGE)
def test_if_range_lets_the_range_apply_only_on_a_strong_match(
    value: str | None, applies: bool
) -> None:
    conditions = parse(("If-Range", value)) if value is not None else parse()
    assert conditions.range_applies(CURRENT) is applies
    assert conditions.evaluate(CURRENT, safe=True) is PROCEED  # If-Range never refuses


def test_if_range_is_not_part_of_a_write_condition() -> None:
    conditions = parse(("If-Range", '"x"'), ("If-Modified-Since", DATE))
    assert conditions.for_write() is None
    assert not Preconditions()
    assert conditions


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("*", ANY),
        (" * ", ANY),
        ('"a"', TagList(False, (EntityTag("a"),))),
        ('W/"a"', TagList(False, (EntityTag("a", weak=True),))),
        ('"a", W/"b",, "c" ,', TagList(False, tuple(EntityTag(x, x == "b") for x in "abc"))),
        ('"a,b"', TagList(False, (EntityTag("a,b"),))),  # a comma inside quotes is the tag's
        ('""', TagList(False, (EntityTag(""),))),
        ("bare, W/x", TagList(False, (EntityTag("bare"), EntityTag("W/x")))),
        ("", TagList(False, ())),
        (" , ,", TagList(False, ())),
    ],
)
def test_entity_tag_lists(value: str, parsed: TagList) -> None:
    assert parse_tag_list(value) == parsed


@pytest.mark.parametrize(
    "value",
    ['*, "a"', '"a", *', '"unclosed', '"a" "b"', "a b", '"a b"', 'w/"a"x', '"a"b', 'W/ "a"'],
)
def test_malformed_entity_tag_lists_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="malformed If-None-Match"):
        parse_tag_list(value, "If-None-Match")
    with pytest.raises(InvalidRequest):
        parse(("If-Match", value))


def test_parsing_is_bounded_and_linear() -> None:
    most = ('"a",' * (MAX_FIELD_LENGTH // 4))[: MAX_FIELD_LENGTH - 1]
    started = time.monotonic()
    parsed = parse(("If-None-Match", most), ("If-Match", most))
    assert parsed.if_none_match is not None
    assert len(parsed.if_none_match.tags) > 16_000
    assert time.monotonic() - started < 2.0, "a quadratic parser takes minutes here"
    with pytest.raises(InvalidRequest, match="over"):
        parse(("If-None-Match", most), ("If-None-Match", most))
    with pytest.raises(InvalidRequest, match="over"):
        parse(("If-Modified-Since", "x" * (MAX_FIELD_LENGTH + 1)))
    # other fields are not precondition fields: no bound here
    assert not parse(("X-Other", "x" * (MAX_FIELD_LENGTH + 1)))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (DATE, T),
        ("Sunday, 06-Nov-94 08:49:37 GMT", T),
        ("Sun Nov  6 08:49:37 1994", T),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
        ("  Sun, 06 Nov 1994 08:49:37 GMT ", T),  # optional whitespace around a field value
        ("Sun, 06 Nov 1994 08:49:60 GMT", T + 23),  # a leap second is the next minute's first
        ("Mon, 06 Nov 1994 08:49:37 GMT", T),  # the day name is not checked against the date
        ("Fri, 29 Feb 2008 00:00:00 GMT", 1_204_243_200),
        ("Friday, 31-Dec-76 00:00:00 GMT", 3_376_598_400),  # 2076: 50 years ahead, no more
        ("Friday, 31-Dec-77 00:00:00 GMT", 252_374_400),  # 2077 is more: 1977
    ],
)
def test_http_dates_in_all_three_forms(value: str, seconds: int) -> None:
    assert parse_http_date(value, 2026) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        DATE.lower(),
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",  # Arabic-Indic digits
        f"{DATE}, {DATE}",
        "784111777",
    ],
)
def test_invalid_http_dates_are_none(value: str) -> None:
    assert parse_http_date(value, 2026) is None


@pytest.mark.parametrize("seconds", [0, T, 1_204_243_200, 4_102_444_799])
def test_formatted_dates_parse_back(seconds: int) -> None:
    text = format_http_date(seconds)
    assert parse_http_date(text, 2026) == seconds
    assert time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds)) == text


def test_the_write_condition_travels_as_msgpack_within_bounds() -> None:
    conditions = parse(
        ("If-Match", 'W/"a", "b"'), ("If-Unmodified-Since", DATE), ("If-Range", '"c"')
    )
    write = conditions.for_write()
    assert write is not None
    assert write.if_range is None
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(write), type=Preconditions)
    assert decoded == write
    assert write.describe() == f'If-Match: W/"a", "b"; If-Unmodified-Since: {DATE}'
    long_list = parse(("If-None-Match", ", ".join(f'"tag-{i}"' for i in range(1000))))
    assert len(long_list.describe()) == 300
    assert long_list.describe().endswith("...")
    too_many = msgspec.msgpack.encode({"if_match": [False, [["a", False]] * 40_000]})
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(too_many, type=Preconditions)
    far = msgspec.msgpack.encode({"if_unmodified_since": 1 << 40})
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(far, type=Preconditions)


def test_the_representation_of_a_manifest() -> None:
    version = Version(T * 1000 + 999, 0, "p")
    live = Manifest("ns/f", version, Layout(3, 5, 2), etag="e")
    assert representation(live) == Representation("e", T)
    assert representation(Manifest("ns/f", version, Layout(0, 5, 0), deleted=True)) is None
    assert representation(None) is None


def test_an_unusable_if_range_never_matches() -> None:
    assert not UNMATCHABLE.strong_match("")
    assert parse(("If-Range", "no such validator")).if_range == UNMATCHABLE
