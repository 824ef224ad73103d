"""Parsing HTTP Structured Field dictionaries (RFC 9651, which extends RFC 8941).

Digest fields (``Repr-Digest``, ``Content-Digest``: RFC 9530) are dictionaries such as
``sha-256=:<base64>:, sha-512=:<base64>:``. ``parse_dictionary`` takes the field's text (its
lines joined with ``,``) and returns every member's value and parameters, or raises
ValueError saying where the text stops being a dictionary: the RFC says a field that fails
to parse is ignored *as a whole*, and a server that was asked to check a digest must not
ignore it, so the caller refuses such a request. Pure: text in, values out.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from decimal import Decimal

_LCALPHA = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_ALPHA = _LCALPHA + _LCALPHA.upper()
_KEY_START = _LCALPHA + "*"
_KEY_CHARS = _LCALPHA + _DIGITS + "_-.*"
_TOKEN_START = _ALPHA + "*"
_TOKEN_CHARS = _ALPHA + _DIGITS + "!#$%&'*+-.^_`|~:/"
_BASE64 = _ALPHA + _DIGITS + "+/="


@dataclass(frozen=True)
class Token:
    """A bare token (``?1`` is a bool, ``abc`` a Token, ``"abc"`` a str)."""

    value: str


@dataclass(frozen=True)
class DisplayString:
    """A display string (``%"..."``): Unicode text, told apart from a plain string."""

    value: str


@dataclass(frozen=True)
class Date:
    """A date (``@1659578233``): seconds since the epoch."""

    seconds: int


BareItem = int | Decimal | str | Token | bytes | bool | Date | DisplayString
Parameters = dict[str, BareItem]


@dataclass(frozen=True)
class Item:
    """A member's value: a bare item, or an inner list of items, and its parameters."""

    value: BareItem | tuple[Item, ...]
    parameters: Parameters


def parse_dictionary(text: str) -> dict[str, Item]:
    """The members of a dictionary field, in order (a repeated key keeps its last value).

    Raises ValueError for text that is not a dictionary.
    """
    return _Parser(text).dictionary()


class _Parser:
    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise ValueError("a structured field is ASCII")
        self._text = text.strip(" ")
        self._at = 0

    def _peek(self) -> str:
        return self._text[self._at] if self._at < len(self._text) else ""

    def _take(self) -> str:
        char = self._peek()
        self._at += 1
        return char

    def _fail(self, what: str) -> ValueError:
        return ValueError(f"{what} at character {self._at} of {self._text!r}")

    def dictionary(self) -> dict[str, Item]:
        members: dict[str, Item] = {}
        while self._peek():
            key = self._key()
            if self._peek() == "=":
                self._at += 1
                members[key] = self._member()
            else:
                members[key] = Item(True, self._parameters())
            while self._peek() in (" ", "\t") and self._peek():
                self._at += 1
            if not self._peek():
                return members
            if self._take() != ",":
                raise self._fail("expected a comma")
            while self._peek() in (" ", "\t") and self._peek():
                self._at += 1
            if not self._peek():
                raise self._fail("a trailing comma")
        return members

    def _member(self) -> Item:
        if self._peek() != "(":
            return Item(self._bare_item(), self._parameters())
        self._at += 1
        items: list[Item] = []
        while True:
            while self._peek() == " ":
                self._at += 1
            if self._peek() == ")":
                self._at += 1
                return Item(tuple(items), self._parameters())
            items.append(Item(self._bare_item(), self._parameters()))
            if self._peek() not in (" ", ")"):
                raise self._fail("expected a space or ')' in an inner list")

    def _parameters(self) -> Parameters:
        parameters: Parameters = {}
        while self._peek() == ";":
            self._at += 1
            while self._peek() == " ":
                self._at += 1
            key = self._key()
            value: BareItem = True
            if self._peek() == "=":
                self._at += 1
                value = self._bare_item()
            parameters[key] = value
        return parameters

    def _key(self) -> str:
        if not self._peek() or self._peek() not in _KEY_START:
            raise self._fail("expected a key")
        start = self._at
        while self._peek() and self._peek() in _KEY_CHARS:
            self._at += 1
        return self._text[start : self._at]

    def _bare_item(self) -> BareItem:
        char = self._peek()
        if char and char in "-" + _DIGITS:
            return self._number()
        if char == '"':
            return self._string()
        if char == ":":
            return self._bytes()
        if char == "?":
            return self._boolean()
        if char == "@":
            self._at += 1
            seconds = self._number()
            if not isinstance(seconds, int):
                raise self._fail("a date is an integer")
            return Date(seconds)
        if char == "%":
            return self._display_string()
        if char and char in _TOKEN_START:
            start = self._at
            while self._peek() and self._peek() in _TOKEN_CHARS:
                self._at += 1
            return Token(self._text[start : self._at])
        raise self._fail("expected an item")

    def _number(self) -> int | Decimal:
        start = self._at
        if self._peek() == "-":
            self._at += 1
        if not self._peek() or self._peek() not in _DIGITS:
            raise self._fail("expected a digit")
        while self._peek() and self._peek() in _DIGITS + ".":
            self._at += 1
        number = self._text[start : self._at]
        whole, dot, fraction = number.lstrip("-").partition(".")
        if not dot:
            if len(whole) > 15:
                raise self._fail("an integer of more than 15 digits")
            return int(number)
        if len(whole) > 12 or not 1 <= len(fraction) <= 3 or "." in fraction:
            raise self._fail("a malformed decimal")
        return Decimal(number)

    def _string(self) -> str:
        self._at += 1
        out: list[str] = []
        while True:
            char = self._take()
            if not char:
                raise self._fail("an unterminated string")
            if char == "\\":
                escaped = self._take()
                if escaped not in ('"', "\\") or not escaped:
                    raise self._fail("a bad escape in a string")
                out.append(escaped)
            elif char == '"':
                return "".join(out)
            elif not " " <= char <= "~":
                raise self._fail("a control character in a string")
            else:
                out.append(char)

    def _display_string(self) -> DisplayString:
        self._at += 1
        if self._take() != '"':
            raise self._fail("expected '\"' after '%'")
        raw = bytearray()
        while True:
            char = self._take()
            if not char:
                raise self._fail("an unterminated display string")
            if char == "%":
                octet = self._text[self._at : self._at + 2]
                if len(octet) != 2 or any(c not in "0123456789abcdef" for c in octet):
                    raise self._fail("a bad percent-encoding in a display string")
                raw.append(int(octet, 16))
                self._at += 2
            elif char == '"':
                try:
                    return DisplayString(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise self._fail("a display string that is not UTF-8") from None
            elif not " " <= char <= "~":
                raise self._fail("a control character in a display string")
            else:
                raw += char.encode()

    def _bytes(self) -> bytes:
        self._at += 1
        start = self._at
        while self._peek() and self._peek() in _BASE64:
            self._at += 1
        if self._take() != ":":
            raise self._fail("a byte sequence not closed by ':'")
        encoded = self._text[start : self._at - 1]
        try:  # RFC 8941 §4.2.7: accept a missing "=" padding
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise self._fail("a byte sequence that is not base64") from None

    def _boolean(self) -> bool:
        self._at += 1
        char = self._take()
        if char not in ("0", "1") or not char:
            raise self._fail("a boolean is ?0 or ?1")
        return char == "1"
