"""File names: what the public API accepts, decided in one place.

A name is 1-1024 bytes of UTF-8 made of ``/``-separated segments. Segments are never empty,
``.`` or ``..``, and no character is a control character (C0, DEL or C1), so a name can be
shown, logged and mapped to a path without surprises.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import unquote_to_bytes

from node.errors import InvalidName

MAX_NAME_BYTES = 1024
RESERVED = "/"  # what starts the names of cluster records (never a file's: empty segment)
# The longest name a manifest may carry: a reserved one (``validate_stored_name``).
MAX_STORED_NAME_BYTES = len(RESERVED) + MAX_NAME_BYTES

# Unicode's general categories Cc (controls: C0, DEL, C1) and Cs (surrogates: in a str, an
# undecodable byte escaped), as one character class. Both sets are immutable under Unicode's
# stability policy (https://www.unicode.org/policies/stability_policy.html), so this is
# ``unicodedata.category(char) in ("Cc", "Cs")``, searched in C: 0.4 µs for a 35-character
# name where a loop over the characters took 7 µs (every manifest decoded checks its name).
_CONTROL = "\x00-\x1f\x7f-\x9f"
_CONTROL_OR_SURROGATE = re.compile(f"[{_CONTROL}\ud800-\udfff]")
_CONTROL_ONLY = re.compile(f"[{_CONTROL}]")


def has_control(text: str, surrogates: bool = True) -> bool:
    """Whether ``text`` has a control character (Unicode category Cc), or, unless
    ``surrogates`` is False, a surrogate (Cs: an undecodable byte escaped)."""
    found = (_CONTROL_OR_SURROGATE if surrogates else _CONTROL_ONLY).search(text)
    return found is not None


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid file name; raise InvalidName saying why otherwise."""
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if not 1 <= size <= MAX_NAME_BYTES:
        raise InvalidName(f"a name is 1-{MAX_NAME_BYTES} bytes of UTF-8, this one is {size}")
    if (found := _CONTROL_OR_SURROGATE.search(name)) is not None:
        char = found.group()
        if unicodedata.category(char) == "Cs":
            raise InvalidName("names must be valid UTF-8")
        raise InvalidName(f"names may not contain control characters (found {char!r})")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidName(f"empty, '.' and '..' segments are not allowed: {name!r}")
    return name


def validate_stored_name(name: str) -> str:
    """Return ``name`` if a manifest may carry it: a file name, or a reserved name (``/``
    and a valid name: cluster records such as access keys, which no file name can take).
    Raises InvalidName otherwise."""
    return validate_name(name[1:] if name.startswith(RESERVED) else name)


def is_stored_name(name: str) -> bool:
    """Whether a manifest may carry ``name`` (``validate_stored_name`` holds): a record name
    made from a caller's input (a namespace's, an upload's) may be too long to be one, and
    then no replica holds it."""
    try:
        validate_stored_name(name)
    except InvalidName:
        return False
    return True


def name_from_raw_path(raw: str) -> str:
    """Decode a percent-encoded path remainder into a validated name.

    Works on the raw request path so that ``..`` or ``//`` a proxy or URL library would have
    normalised away still reach validation.
    """
    try:
        # aiohttp's pure-Python parser hands undecodable bytes over as surrogate escapes.
        name = unquote_to_bytes(raw.encode("utf-8", "surrogateescape")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName("names must be valid UTF-8") from None
    return validate_name(name)


def name_key(name: str) -> str:
    """The ring key and on-disk key of a name's manifest (blake2b-128, hex)."""
    return hashlib.blake2b(name.encode("utf-8"), digest_size=16).hexdigest()
