"""Numbers in client input (headers, query parameters): ASCII digits only, bounded first.

``int()`` takes a sign, ``_`` separators, whitespace and other scripts' digits, none of which
an HTTP client means, and refuses more than 4300 digits with a ValueError that a route may not
expect (a ``Range`` of 5000 digits once answered ``500``). Here the text is checked before it
is converted, so a number is either a small non-negative int or a ``ValueError`` that says
why, never echoing more than a few characters of the input.
"""

from __future__ import annotations

import re

MAX_INT = 2**63 - 1  # file sizes, offsets and revisions all stay below it
_DIGITS = re.compile(r"[0-9]+")


def shown(text: str, limit: int = 40) -> str:
    """``text`` as it may appear in an error message: repr'd, cut to ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def decimal(text: str, high: int = MAX_INT) -> int:
    """The value of ``text``, ASCII digits only, at most ``high``; raises ValueError."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{shown(text)} is not a number")
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(high)) or int(significant) > high:
        raise ValueError(f"{shown(text)} is larger than {high}")
    return int(significant)
