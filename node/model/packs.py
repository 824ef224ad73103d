"""Packs: cold small files stored together, erasure-coded as one file.

A small file is kept inside its manifest (``--inline-max``): three replicas of its bytes,
about 3.2 times its size on disk. Once it has not changed for ``--pack-after`` seconds, the
primary of its name gathers it with other such files into a *pack*: a file of reserved name
``/packs/<random>/<version>``, cut into k + m chunks as any other (5 + 2: 1.4 times its
size), of block size ``PACK_BLOCK_SIZE`` so that one member's read is one small block. Each
member's manifest is then rewritten, same version, next revision, to name its bytes in the
pack (a ``Segment`` with an ``offset``, manifest schema 2): Facebook's f4 keeps warm blobs
erasure-coded in the same way (Muralidhar et al., "f4: Facebook's Warm BLOB Storage
System", OSDI 2014), and Haystack packs needles into volumes (Beaver et al., OSDI 2010).

A pack's bytes are its members' bytes in order, then its directory, then the directory's
length: ``[members][directory][uint64 little-endian length]``. The directory is the msgpack
array of ``[name, version, offset, size, revision]`` per member (``PackEntry``; the revision
its manifest was rewritten at), so a pack can be checked against what points into it
without any other record.

A member rewritten again (overwritten, deleted) leaves its bytes in the pack: packs are
never retired by a member (``Manifest.segment_refs`` leaves them out), but by their own
checks (``node.upkeep.packer``).
"""

from __future__ import annotations

import functools
import re
import secrets
import struct
from collections.abc import Sequence

import msgspec

from node.model.version import Version

PACKS = "/packs/"
PACK_BLOCK_SIZE = 16 << 10  # a 4 KiB member lies in one or two 16 KiB blocks
PACK_BYTES = 4 << 20  # members' bytes gathered before a pack is written
MAX_MEMBERS = 2048  # members per pack, however small
PACK_NAMES_CACHED = 4096  # pack names whose form is remembered (8 M members' packs)
_LENGTH = struct.Struct("<Q")
LENGTH_BYTES = _LENGTH.size  # a pack's last bytes: its directory's length
_TOKEN = re.compile(r"[0-9a-f]{16}")


class PackEntry(msgspec.Struct, frozen=True, array_like=True):
    """One member of a pack: its name and version, where its bytes start in the pack, how
    many there are, and the revision its manifest was rewritten at to name the pack."""

    name: str
    version: Version
    offset: int
    size: int
    revision: int


def pack_name(version: Version) -> str:
    """A new pack's stored name: ``/packs/<64 random bits, hex>/<version>``, ``version`` a
    reading of its writer's clock (which names the writer; the pack's own version is a
    later one). The random part keeps it new even where a restarted peer's clock reads a
    moment again: a pack written under a taken name would replace another."""
    return f"{PACKS}{secrets.token_hex(8)}/{version}"


def is_pack_name(name: str) -> bool:
    """Whether ``name`` has the form ``pack_name`` gives (checked on every manifest an
    anti-entropy walk reads, and every segment decoded: most names fail the first test;
    a packed file's GET asks ~5 times of its pack's, hence the cache)."""
    return name.startswith(PACKS) and _has_pack_form(name)


@functools.lru_cache(maxsize=PACK_NAMES_CACHED)
def _has_pack_form(name: str) -> bool:
    token, slash, version = name[len(PACKS) :].partition("/")
    if not slash or not _TOKEN.fullmatch(token):
        return False
    try:
        Version.parse(version)
    except ValueError:
        return False
    return True


def pack_trailer(entries: Sequence[PackEntry]) -> bytes:
    """The directory and its length, which end a pack whose members are ``entries``."""
    directory = msgspec.msgpack.encode(list(entries))
    return directory + _LENGTH.pack(len(directory))


def trailer_length(last: bytes) -> int:
    """Bytes of a pack's trailer (its directory and the directory's length), from the pack's
    last ``LENGTH_BYTES`` bytes; raises ValueError if there are not that many."""
    if len(last) < LENGTH_BYTES:
        raise ValueError("a pack ends with its directory's length")
    (length,) = _LENGTH.unpack_from(last, len(last) - LENGTH_BYTES)
    return int(length) + LENGTH_BYTES


def read_directory(pack: bytes) -> list[PackEntry]:
    """The directory at the end of ``pack`` (a pack's bytes, or its last ones from its
    trailer on); raises ValueError if there is none."""
    start = len(pack) - trailer_length(pack)
    if start < 0:
        raise ValueError(f"{len(pack)} bytes cannot hold a {len(pack) - start}-byte directory")
    try:
        return msgspec.msgpack.decode(pack[start : len(pack) - LENGTH_BYTES], type=list[PackEntry])
    except msgspec.DecodeError as exc:
        raise ValueError(f"undecodable pack directory: {exc}") from exc
