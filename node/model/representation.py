"""Representation metadata: what a client said about the bytes it stored, kept with them.

A file version is stored as the bytes it was sent; how to read them (``Content-Encoding``),
how to present them (``Content-Disposition``, ``Content-Language``), how long to cache them
(``Cache-Control``, ``Expires``) and the user's own ``name: value`` pairs (sent as
``X-Ringstore-Meta-<name>``) travel in the manifest and are given back on every read.

Every value is checked the same way when a client sends it and when a manifest carrying it
is decoded (peers send manifests, and a replica trusts none): a standard field is at most
``MAX_FIELD_LENGTH`` characters, user metadata at most ``MAX_METADATA_BYTES`` in all (names
plus values, UTF-8, as S3 counts its 2 KiB), names are lower-case tokens, and no value has
a control character or a lone surrogate (an undecodable byte), so what is given back is
always a valid header.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from node.errors import InvalidRequest, MetadataTooLarge

MAX_FIELD_LENGTH = 1024  # characters of one standard field
MAX_METADATA_BYTES = 2048  # UTF-8 bytes of all user metadata names and values together

# RFC 9110 token characters, lower-case only: the name after ``X-Ringstore-Meta-``.
_METADATA_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True)
class Representation:
    """The representation fields of one file version; ``""`` means not given.

    ``metadata`` holds the user's pairs sorted by name (names lower-case), so equal
    metadata compares and encodes equal.
    """

    content_encoding: str = ""
    content_disposition: str = ""
    cache_control: str = ""
    content_language: str = ""
    expires: str = ""
    metadata: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    @classmethod
    def build(
        cls,
        *,
        content_encoding: str = "",
        content_disposition: str = "",
        cache_control: str = "",
        content_language: str = "",
        expires: str = "",
        metadata: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    ) -> Representation:
        """A checked record; raises InvalidRequest (MetadataTooLarge past the bound)."""
        pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
        representation = cls(
            content_encoding,
            content_disposition,
            cache_control,
            content_language,
            expires,
            tuple(sorted(pairs)),
        )
        check_representation(representation)
        return representation

    @property
    def standard(self) -> dict[str, str]:
        """The standard fields that were given, by field name (``content_encoding``...)."""
        return {
            f.name: value
            for f in fields(self)
            if f.name != "metadata" and (value := getattr(self, f.name))
        }


NO_REPRESENTATION = Representation()


def check_representation(representation: Representation) -> None:
    """Raise InvalidRequest naming what is wrong, MetadataTooLarge past the metadata bound."""
    for name, value in representation.standard.items():
        if len(value) > MAX_FIELD_LENGTH:
            raise InvalidRequest(f"{name} is longer than {MAX_FIELD_LENGTH} characters")
        _check_text(name, value)
    names: set[str] = set()
    total = 0
    for name, value in representation.metadata:
        if not _METADATA_NAME.fullmatch(name):
            raise InvalidRequest(f"metadata name {name!r} is not a lower-case token")
        if name in names:
            raise InvalidRequest(f"metadata name {name!r} is given twice")
        names.add(name)
        _check_text(f"metadata {name!r}", value)
        total += len(name.encode()) + len(value.encode())
        if total > MAX_METADATA_BYTES:
            raise MetadataTooLarge(
                f"user metadata is at most {MAX_METADATA_BYTES} bytes (names and values)"
            )


def _check_text(what: str, value: str) -> None:
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise InvalidRequest(f"{what} has a control character or an undecodable byte")
