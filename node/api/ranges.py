"""HTTP ``Range: bytes=...`` parsing (RFC 9110 section 14), pure and single-range.

Multi-range requests are answered with the whole body (the RFC allows ignoring Range), and
so is an invalid one: malformed (``bytes=abc``) or with its last position before its first
(``bytes=5-3``; RFC 9110 section 14.2 lets a server ignore or reject an invalid
ranges-specifier). Amazon S3 ignores both (``200``, the whole object), and so do Apache and
Swift; clients written against S3 expect it. A
suffix range (``bytes=-N``, N > 0) of an empty file is answered with the whole, empty body
(``200``), as S3 does: RFC 9110 counts it satisfiable, yet no ``206`` can carry an empty
range, and ``whole[-N:]`` of empty bytes is empty bytes.
Positions are ASCII digits only (``node.api.numbers``): ``int()`` would also take ``+1``,
``1_0`` or other scripts' digits, which no HTTP peer means. A position of 2^63 or more is
refused (416) before it is converted, as nginx does: no file is that large, and ``int()`` of
thousands of digits is slow, then an error of its own.
"""

from __future__ import annotations

import re

from node.api.numbers import MAX_INT, decimal, shown
from node.errors import InvalidRange

_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


def parse_range(
    header: str | None, size: int, *, refuse_invalid: bool = False
) -> tuple[int, int] | None:
    """Return the half-open byte range ``(start, end)`` a Range header asks for.

    ``None`` means "send the whole file" (no header, another unit, several ranges, an
    invalid range, or a suffix range of an empty file).
    Raises InvalidRange when the range cannot be satisfied (416): it starts at or past the
    end, is an empty suffix (``bytes=-0``), or names a position of 2^63 or more; and, with
    ``refuse_invalid`` (the peer-to-peer API, whose callers never send one: a bug there must
    not read as the whole chunk), when it is invalid.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _SPEC.fullmatch(spec.strip())
    first, last = match.groups() if match is not None else ("", "")
    if first == last == "" or (first and last and _below(last, first)):
        # malformed, or its last position before its first (RFC 9110 section 14.1.1)
        if refuse_invalid:
            raise InvalidRange(f"invalid range {shown(header)}", size)
        return None
    try:
        start = None if first == "" else decimal(first)
        stop = None if last == "" else decimal(last)
    except ValueError:
        raise InvalidRange(f"range {shown(header)} has a position past {MAX_INT}", size) from None
    if start is None:
        suffix = stop or 0
        if suffix == 0:
            raise InvalidRange(f"range {shown(header)} not satisfiable for {size} bytes", size)
        if size == 0:
            return None  # the last N bytes of nothing: all of it, which is nothing
        return max(0, size - suffix), size
    end = size - 1 if stop is None else min(stop, size - 1)
    if start >= size:
        raise InvalidRange(f"range {shown(header)} not satisfiable for {size} bytes", size)
    return start, end + 1


def _below(a: str, b: str) -> bool:
    """Whether the decimal digits ``a`` name a smaller number than ``b``, compared as text
    (however many digits: an invalid range is ignored before any is converted)."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)
