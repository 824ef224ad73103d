"""Conditional requests (RFC 9110, section 13): the five precondition fields, pure.

``parse_preconditions`` reads ``If-Match``, ``If-None-Match``, ``If-Modified-Since``,
``If-Unmodified-Since`` and ``If-Range`` from a request's field lines into a
``Preconditions`` record; ``Preconditions.evaluate`` decides, in the order of section
13.2.2, whether a request goes ahead, is answered ``304`` or fails with ``412``, against the
current representation of the target (``Representation``: its entity tag and modification
time) or its absence. Nothing here does I/O or knows HTTP servers: the public API evaluates
reads, and every manifest replica evaluates a write's condition (``for_write``) against its
own current manifest when it is asked to store a new one, which is what makes a
conditional write atomic (``node.disk.manifest_store``).

Invariants:

* Entity tags compare as section 8.8.3.2 says: If-Match and If-Range strongly (a weak tag
  never matches), If-None-Match weakly (``W/"x"`` matches ``"x"``). Our tags are strong.
* A modification time is whole seconds since the epoch, as ``Last-Modified`` shows it
  (HTTP-dates have no finer resolution).
* Parsing is linear in the field's length and bounded: a precondition field longer than
  ``MAX_FIELD_LENGTH`` (all its lines together) is refused; the record decodes from a peer
  with the same bounds. A malformed If-Match or If-None-Match is refused (``InvalidRequest``)
  rather than ignored, since ignoring a condition on a write would make it unconditional;
  an invalid date is ignored, as sections 13.1.3 and 13.1.4 require.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated

import msgspec

from node.errors import InvalidRequest
from node.model.manifest import Manifest

MAX_FIELD_LENGTH = 64 << 10  # characters of one precondition field, all its lines together
MAX_TAGS = MAX_FIELD_LENGTH // 2  # each tag takes at least two characters ("")
# HTTP-dates of years 1 to 9999, in seconds since the epoch (what a peer may send).
MIN_DATE = -62_135_596_800
MAX_DATE = 253_402_300_799

IF_MATCH = "if-match"
IF_NONE_MATCH = "if-none-match"
IF_MODIFIED_SINCE = "if-modified-since"
IF_UNMODIFIED_SINCE = "if-unmodified-since"
IF_RANGE = "if-range"
_FIELDS = frozenset({IF_MATCH, IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_UNMODIFIED_SINCE, IF_RANGE})

Seconds = Annotated[int, msgspec.Meta(ge=MIN_DATE, le=MAX_DATE)]


class Outcome(enum.Enum):
    """What the preconditions decide (RFC 9110, 13.2.2)."""

    PROCEED = "proceed"  # perform the method
    NOT_MODIFIED = "not_modified"  # 304, for GET and HEAD only
    FAILED = "failed"  # 412 Precondition Failed


@dataclass(frozen=True)
class Representation:
    """The current representation, as preconditions see it: its (strong) entity tag without
    quotes and its modification time in whole seconds since the epoch."""

    etag: str
    modified: int


def representation(manifest: Manifest | None) -> Representation | None:
    """The representation ``manifest`` stands for; None for none or a tombstone."""
    if manifest is None or manifest.deleted:
        return None
    return Representation(manifest.etag, manifest.version.wall_ms // 1000)


class EntityTag(msgspec.Struct, frozen=True, array_like=True):
    """An entity tag (RFC 9110, 8.8.3): the opaque string between the quotes, and whether it
    was marked weak (``W/``)."""

    opaque: Annotated[str, msgspec.Meta(max_length=MAX_FIELD_LENGTH)]
    weak: bool = False

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'

    def strong_match(self, etag: str) -> bool:
        """Strong comparison with our (strong) tag ``etag``: a weak tag never matches."""
        return not self.weak and self.opaque == etag

    def weak_match(self, etag: str) -> bool:
        """Weak comparison with ``etag``: the opaque strings are equal, weak or not."""
        return self.opaque == etag


# An If-Range that is neither an entity tag nor an HTTP-date: it never matches (13.1.5).
UNMATCHABLE = EntityTag("", weak=True)


class TagList(msgspec.Struct, frozen=True, array_like=True):
    """An If-Match or If-None-Match field value: ``*`` (``any``), or a list of entity tags,
    possibly empty (RFC 9110, 13.1.1 and 13.1.2)."""

    any: bool
    tags: Annotated[tuple[EntityTag, ...], msgspec.Meta(max_length=MAX_TAGS)] = ()

    def __str__(self) -> str:
        return "*" if self.any else ", ".join(map(str, self.tags))

    def matches_strongly(self, current: Representation | None) -> bool:
        """If-Match (13.1.1): ``*`` matches any current representation, a list one whose
        tag it names (strong comparison); nothing matches when there is none."""
        if current is None:
            return False
        return self.any or any(tag.strong_match(current.etag) for tag in self.tags)

    def matches_weakly(self, current: Representation | None) -> bool:
        """What makes If-None-Match false (13.1.2): as ``matches_strongly``, but with the
        weak comparison."""
        if current is None:
            return False
        return self.any or any(tag.weak_match(current.etag) for tag in self.tags)


ANY = TagList(True)


class Preconditions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The precondition fields of one request, parsed; None for each one absent (or, for a
    date, ignored as invalid). Dates are seconds since the epoch. Falsy when it holds none.

    It is also what a conditional manifest write carries to each replica (``for_write``),
    so it decodes from a peer with the bounds of its fields."""

    if_match: TagList | None = None
    if_none_match: TagList | None = None
    if_modified_since: Seconds | None = None
    if_unmodified_since: Seconds | None = None
    if_range: EntityTag | Seconds | None = None

    def __bool__(self) -> bool:
        return self != NONE

    def describe(self, limit: int = 300) -> str:
        """The fields as a request would carry them, for messages: cut to ``limit``
        characters (a list may hold thousands of tags)."""
        parts = []
        if self.if_match is not None:
            parts.append(f"If-Match: {self.if_match}")
        if self.if_none_match is not None:
            parts.append(f"If-None-Match: {self.if_none_match}")
        if self.if_unmodified_since is not None:
            parts.append(f"If-Unmodified-Since: {format_http_date(self.if_unmodified_since)}")
        if self.if_modified_since is not None:
            parts.append(f"If-Modified-Since: {format_http_date(self.if_modified_since)}")
        text = "; ".join(parts)
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def for_write(self) -> Preconditions | None:
        """What a PUT or DELETE is conditional on: If-Match, If-None-Match and
        If-Unmodified-Since (If-Modified-Since and If-Range apply to GET and HEAD only,
        13.1.3 and 13.1.5); None when the request carries none of them."""
        write = Preconditions(
            if_match=self.if_match,
            if_none_match=self.if_none_match,
            if_unmodified_since=self.if_unmodified_since,
        )
        return write or None

    def evaluate(self, current: Representation | None, *, safe: bool) -> Outcome:
        """Steps 1 to 4 of RFC 9110, 13.2.2, for a GET or HEAD (``safe``) or a write.

        1. If-Match false: 412. 2. Without If-Match, If-Unmodified-Since false: 412 (it is
        ignored when there is no current representation, whose date it would compare).
        3. If-None-Match false: 304 for GET and HEAD, 412 otherwise. 4. Without
        If-None-Match, for GET and HEAD only, If-Modified-Since false: 304. Otherwise the
        method goes ahead (If-Range, step 5, is ``range_applies``).
        """
        if self.if_match is not None:
            if not self.if_match.matches_strongly(current):
                return Outcome.FAILED
        elif not _unmodified_since(self.if_unmodified_since, current):
            return Outcome.FAILED
        if self.if_none_match is not None:
            if self.if_none_match.matches_weakly(current):
                return Outcome.NOT_MODIFIED if safe else Outcome.FAILED
        elif safe and not _modified_since(self.if_modified_since, current):
            return Outcome.NOT_MODIFIED
        return Outcome.PROCEED

    def allows_write(self, current: Representation | None) -> bool:
        """True when a PUT or DELETE may replace ``current`` (None: there is none)."""
        return self.evaluate(current, safe=False) is Outcome.PROCEED

    def range_applies(self, current: Representation) -> bool:
        """Step 5 of 13.2.2: whether a GET's Range applies, as If-Range says (13.1.5).

        Without If-Range it does. An entity tag must match strongly; a date must equal the
        representation's modification time exactly (this store keeps one date per version,
        to the second, so two versions written within one second share it: send the
        entity tag where it matters). Anything else means: send the whole representation.
        """
        if self.if_range is None:
            return True
        if isinstance(self.if_range, EntityTag):
            return self.if_range.strong_match(current.etag)
        return self.if_range == current.modified


NONE = Preconditions()


def _unmodified_since(date: int | None, current: Representation | None) -> bool:
    """If-Unmodified-Since (13.1.4): true when modified at or before ``date``; an absent
    field, or a representation without a date (there is none), is no condition."""
    return date is None or current is None or current.modified <= date


def _modified_since(date: int | None, current: Representation | None) -> bool:
    """If-Modified-Since (13.1.3): true when modified after ``date``; an absent field, or a
    representation without a date, is no condition."""
    return date is None or current is None or current.modified > date


def parse_preconditions(fields: Iterable[tuple[str, str]], now: float) -> Preconditions:
    """The preconditions among a request's field lines ``(name, value)``.

    Lines of one field are combined as a list (RFC 9110, 5.3), so two If-Match lines are
    one list, and two date lines make an invalid date. ``now`` (seconds since the epoch)
    places the two-digit years of RFC 850 dates. Raises InvalidRequest for a malformed
    If-Match or If-None-Match, and for a precondition field over ``MAX_FIELD_LENGTH``.
    """
    lines: dict[str, list[str]] = {}
    length: dict[str, int] = {}
    for name, value in fields:
        key = name.lower()
        if key not in _FIELDS:
            continue
        length[key] = length.get(key, 0) + len(value) + 2
        if length[key] > MAX_FIELD_LENGTH + 2:
            raise InvalidRequest(f"the {name} field is over {MAX_FIELD_LENGTH} characters")
        lines.setdefault(key, []).append(value)
    if not lines:
        return NONE
    combined = {key: ", ".join(values) for key, values in lines.items()}
    year = datetime.fromtimestamp(now, timezone.utc).year
    return Preconditions(
        if_match=_tag_list_of(combined, IF_MATCH),
        if_none_match=_tag_list_of(combined, IF_NONE_MATCH),
        if_modified_since=_date_of(combined, IF_MODIFIED_SINCE, year),
        if_unmodified_since=_date_of(combined, IF_UNMODIFIED_SINCE, year),
        if_range=_if_range(combined[IF_RANGE], year) if IF_RANGE in combined else None,
    )


def _tag_list_of(combined: dict[str, str], key: str) -> TagList | None:
    value = combined.get(key)
    return None if value is None else parse_tag_list(value, key)


def _date_of(combined: dict[str, str], key: str, year: int) -> int | None:
    value = combined.get(key)
    return None if value is None else parse_http_date(value, year)


# An entity tag (8.8.3): an optional W/, then quoted etagc characters. Leniently (as S3 takes
# them), a bare run of etagc without quotes or commas is a strong tag too.
_TAG = r'(W/)?"([^"\x00-\x20\x7f]*)"'
_BARE = r"([!#-+\--~\x80-\U0010ffff]+)"
# One list element and the separator after it; an element may be empty (5.6.1). No two
# parts can take the same character, so matching a whole list is linear in its length.
_ELEMENT = re.compile(rf"[ \t]*(?:{_TAG}|{_BARE})?[ \t]*(?:,|\Z)")
_SINGLE = re.compile(rf"{_TAG}|{_BARE}")


def parse_tag_list(value: str, field: str = "If-Match") -> TagList:
    """An If-Match or If-None-Match value: ``*`` or a comma-separated list of entity tags
    (``"x"``, ``W/"x"``; bare ``x`` is taken as ``"x"``). Empty elements are skipped, as
    RFC 9110, 5.6.1 requires; an empty value is an empty list (which nothing matches).

    Raises InvalidRequest for anything else (``*`` inside a list, an unclosed quote, two
    tags without a comma between them).
    """
    if value.strip(" \t") == "*":
        return ANY
    tags: list[EntityTag] = []
    position, end = 0, len(value)
    while True:
        found = _ELEMENT.match(value, position)
        if found is None:
            raise InvalidRequest(f"malformed {field}: {value[:200]!r} (at character {position})")
        weak, quoted, bare = found.groups()
        if quoted is not None:
            tags.append(EntityTag(quoted, weak is not None))
        elif bare == "*":
            raise InvalidRequest(f"malformed {field}: * stands alone, never in a list")
        elif bare is not None:
            tags.append(EntityTag(bare))
        position = found.end()
        if position >= end:
            return TagList(False, tuple(tags))


def _if_range(value: str, year: int) -> EntityTag | int:
    """An If-Range value (13.1.5): an entity tag, else an HTTP-date, else ``UNMATCHABLE``."""
    text = value.strip(" \t")
    found = _SINGLE.fullmatch(text)
    if found is not None:
        weak, quoted, bare = found.groups()
        return EntityTag(quoted, weak is not None) if quoted is not None else EntityTag(bare)
    date = parse_http_date(text, year)
    return UNMATCHABLE if date is None else date


_DAY = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = "(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = f"({'|'.join(_MONTHS)})"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110, 5.6.7: the preferred IMF-fixdate and the two obsolete forms a recipient must
# still accept. Case-sensitive, as the grammar is; [0-9], not \d (which takes any script).
_IMF_FIXDATE = re.compile(f"{_DAY}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(f"{_LONG_DAY}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME_DATE = re.compile(f"{_DAY} {_MONTH} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_http_date(value: str, year_now: int) -> int | None:
    """An HTTP-date (RFC 9110, 5.6.7) as seconds since the epoch; None if it is not one.

    Takes the IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), the RFC 850 form
    (``Sunday, 06-Nov-94 08:49:37 GMT``, whose year is the latest with those two digits
    not more than 50 years after ``year_now``) and asctime's (``Sun Nov  6 08:49:37 1994``).
    A second of 60 (a leap second) is the next minute's first. The day name is not checked
    against the date, which is what a recipient relies on.
    """
    text = value.strip(" \t")
    if found := _IMF_FIXDATE.fullmatch(text):
        _, day, month, year, hour, minute, second = found.groups()
        full_year = int(year)
    elif found := _RFC850_DATE.fullmatch(text):
        _, day, month, year, hour, minute, second = found.groups()
        full_year = year_now - year_now % 100 + int(year)
        if full_year > year_now + 50:
            full_year -= 100
    elif found := _ASCTIME_DATE.fullmatch(text):
        _, month, day, hour, minute, second, year = found.groups()
        full_year = int(year)
    else:
        return None
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60:
        return None
    try:
        midnight = datetime(full_year, _MONTHS.index(month) + 1, int(day), tzinfo=timezone.utc)
    except ValueError:  # the 30th of February, year 0
        return None
    moment = midnight - _EPOCH + timedelta(hours=int(hour), minutes=int(minute))
    return min(int(moment.total_seconds()) + int(second), MAX_DATE)


def format_http_date(seconds: int) -> str:
    """Seconds since the epoch as an IMF-fixdate (RFC 9110, 5.6.7)."""
    moment = _EPOCH + timedelta(seconds=seconds)
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[moment.weekday()]
    month = _MONTHS[moment.month - 1]
    return f"{day}, {moment.day:02d} {month} {moment.year:04d} {moment:%H:%M:%S} GMT"
