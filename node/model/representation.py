"""Representation metadata: what a client said about the bytes it stored, kept with them.

A file version is stored as the bytes it was sent; how to read them (``Content-Encoding``),
how to present them (``Content-Disposition``, ``Content-Language``), how long to cache them
(``Cache-Control``, ``Expires``) and the user's own ``name: value`` pairs (sent as
``X-Ringstore-Meta-<name>``) travel in the manifest and are given back on every read. So
does the checksum a client sent and had checked (S3's ``x-amz-checksum-<algorithm>``:
``Checksum``), given back when asked for.

Every value is checked the same way when a client sends it and when a manifest carrying it
is decoded (peers send manifests, and a replica trusts none): a standard field is at most
``MAX_FIELD_LENGTH`` characters, user metadata at most ``MAX_METADATA_BYTES`` in all (names
plus values, UTF-8, as S3 counts its 2 KiB), names are lower-case tokens, and no value has
a control character or a lone surrogate (an undecodable byte), so what is given back is
always a valid header.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from node.errors import InvalidRequest, MetadataTooLarge
from node.model.names import has_control

MAX_FIELD_LENGTH = 1024  # characters of one standard field
MAX_METADATA_BYTES = 2048  # UTF-8 bytes of all user metadata names and values together

# RFC 9110 token characters, lower-case only: the name after ``X-Ringstore-Meta-``.
_METADATA_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")


# Bytes of each checksum S3 clients send ("Checking object integrity", Amazon S3 user guide)
CHECKSUM_SIZES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}


@dataclass(frozen=True)
class Checksum:
    """The checksum of a file's bytes a client sent and had checked: ``algorithm`` one of
    ``CHECKSUM_SIZES`` (S3's ``x-amz-checksum-<algorithm>``), ``value`` the base64 of its
    big-endian digest, as S3 shows it (``check_checksum`` checks both)."""

    algorithm: str
    value: str


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
    checksum: Checksum | None = None

    def __bool__(self) -> bool:
        # Most manifests have none and share NO_REPRESENTATION: told by identity, where the
        # walk over the fields was ~7% of replaying a manifest log (cProfile, 100,000 names).
        return self is not NO_REPRESENTATION and any(getattr(self, f.name) for f in fields(self))

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
        """The standard header fields that were given, by field name
        (``content_encoding``...): neither user metadata nor the checksum."""
        return {
            f.name: value
            for f in fields(self)
            if f.name not in ("metadata", "checksum") and (value := getattr(self, f.name))
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
    if representation.checksum is not None:
        check_checksum(representation.checksum)


def check_checksum(checksum: Checksum) -> None:
    """Raise InvalidRequest unless ``checksum`` names a known algorithm and its value is
    the canonical base64 of a digest of that algorithm's size."""
    size = CHECKSUM_SIZES.get(checksum.algorithm)
    if size is None:
        raise InvalidRequest(f"no checksum algorithm {checksum.algorithm[:40]!r}")
    try:
        digest = base64.b64decode(checksum.value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidRequest(f"the {checksum.algorithm} checksum is not base64") from None
    if len(digest) != size or base64.b64encode(digest).decode() != checksum.value:
        raise InvalidRequest(f"the {checksum.algorithm} checksum is not {size} bytes in base64")


def _check_text(what: str, value: str) -> None:
    if has_control(value):
        raise InvalidRequest(f"{what} has a control character or an undecodable byte")
