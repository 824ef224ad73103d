"""``aws-chunked`` request bodies, decoded and verified as they stream, sans I/O.

S3's SDKs send an upload as ``aws-chunked`` (``Content-Encoding: aws-chunked``) when they
sign each chunk (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``, optionally ``-TRAILER``) or when
they send a checksum after the body (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``, what boto3
sends over HTTPS). Following AWS's "Transferring Payload in Multiple Chunks" and "Signature
calculations for trailing headers":

    <hex size>[;chunk-signature=<sig>]\\r\\n <size bytes> \\r\\n   ... repeated, then
    0[;chunk-signature=<sig>]\\r\\n [<name>:<value>\\r\\n ...] \\r\\n

Chunk *n*'s signature is an HMAC (the request's signing key) over
``AWS4-HMAC-SHA256-PAYLOAD``, the request time, the scope, chunk *n-1*'s signature (the
request's own for the first), the empty string's SHA-256 and the chunk's SHA-256; the
trailer's over ``AWS4-HMAC-SHA256-TRAILER``, ..., the last chunk signature and the SHA-256
of the trailer lines. ``ChunkedBody.feed`` takes bytes as they arrive and returns the
decoded data; data is handed on before its chunk's signature is known, so a bad signature
(or checksum, or a body cut short) is raised before the body *ends*, and the upload it
feeds is aborted before its commit, as for every other body check here. Chunk data is
hashed in place, 64 KiB or so at a time (tens of microseconds each).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from node.api.s3.sigv4 import EMPTY_SHA256
from node.errors import BadDigest, BadSignature, IncompleteBody, InvalidRequest
from node.model.digests import Buffer

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
SERVED = frozenset({SIGNED, SIGNED_TRAILER, UNSIGNED_TRAILER})
MAX_LINE = 4096  # bytes of a chunk header or trailer line
MAX_TRAILER = 16 << 10  # bytes of trailer lines in all
TRAILER_SIGNATURE = "x-amz-trailer-signature"


def _checksums() -> Any:
    """awscrt's checksums module, imported when first asked for (``CRCS``, ``load_crc``)."""
    from awscrt import checksums

    return checksums


def _crc32c(data: Buffer, previous: int) -> int:
    return int(_checksums().crc32c(data, previous))


def _crc64nvme(data: Buffer, previous: int) -> int:
    return int(_checksums().crc64nvme(data, previous))


# The CRCs S3 clients send in x-amz-checksum-* ("Checking object integrity", Amazon S3 User
# Guide): each a running function of (data, previous) and its size in bytes. CRC32C and
# CRC64NVME come from awscrt, AWS's own C runtime, which botocore uses for them too; it is
# imported by the first request that sends one, as loading it costs every peer ~5 MiB of
# memory (RSS) whether or not its S3 clients ever send such a checksum.
CRCS: dict[str, tuple[Callable[[Buffer, int], int], int]] = {
    "crc32": (zlib.crc32, 4),
    "crc32c": (_crc32c, 4),
    "crc64nvme": (_crc64nvme, 8),
}
_CHECKSUMS = (*CRCS, "sha1", "sha256")
_FROM_AWSCRT = frozenset({"crc32c", "crc64nvme"})


async def load_crc(name: str | None) -> None:
    """Import what the checksum ``name`` needs in a worker thread, the first time: importing
    awscrt takes ~44 ms, which would stall the event loop at the peer's first CRC32C or
    CRC64NVME. Call before a ``Checksum(name)`` is updated on the loop."""
    if name in _FROM_AWSCRT and "awscrt.checksums" not in sys.modules:
        await asyncio.to_thread(_checksums)


@dataclass
class ChunkChain:
    """What a signed aws-chunked body's signatures are checked with: the request's signing
    key, time and scope, and the last signature seen (the request's own, to begin)."""

    key: bytes
    timestamp: str  # YYYYMMDDTHHMMSSZ
    scope: str
    previous: str = field(repr=False)

    def __repr__(self) -> str:  # never the key or a signature
        return f"ChunkChain({self.scope})"

    def _sign(self, kind: str, digest: str) -> str:
        parts = [kind, self.timestamp, self.scope, self.previous]
        if kind == "AWS4-HMAC-SHA256-PAYLOAD":
            parts.append(EMPTY_SHA256)
        text = "\n".join([*parts, digest])
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def check_chunk(self, given: str, chunk_sha256: str) -> None:
        self._check(given, self._sign("AWS4-HMAC-SHA256-PAYLOAD", chunk_sha256), "a chunk")

    def check_trailer(self, given: str, trailer_sha256: str) -> None:
        self._check(given, self._sign("AWS4-HMAC-SHA256-TRAILER", trailer_sha256), "the trailer")

    def _check(self, given: str, expected: str, what: str) -> None:
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode()):
            raise BadSignature(f"the signature of {what} of the body does not match")
        self.previous = expected


class _State(Enum):
    HEADER = "header"
    DATA = "data"
    DATA_END = "data end"
    TRAILER = "trailer"
    DONE = "done"


class Checksum:
    """A running x-amz-checksum-<name> (a CRC of ``CRCS``, sha1 or sha256), base64 of its
    big-endian bytes as S3 shows it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._crc = 0
        self._hash = None if name in CRCS else hashlib.new(name)

    def update(self, data: bytes | memoryview) -> None:
        if self._hash is None:
            crc, _ = CRCS[self.name]
            self._crc = crc(data, self._crc)
        else:
            self._hash.update(data)

    def value(self) -> str:
        if self._hash is None:
            digest = self._crc.to_bytes(CRCS[self.name][1], "big")
        else:
            digest = self._hash.digest()
        return base64.b64encode(digest).decode()


def checksum_name(header: str) -> str | None:
    """``crc32c`` of ``x-amz-checksum-crc32c``, or None for a checksum not computed here."""
    name = header.lower().removeprefix("x-amz-checksum-")
    return name if name != header.lower() and name in _CHECKSUMS else None


class ChunkedBody:
    """Decodes one aws-chunked body: ``feed`` the bytes as they come, ``end`` once they
    stop. ``chain`` checks chunk signatures (None: unsigned chunks); ``trailer`` is the
    checksum header the client announced in ``x-amz-trailer`` (None: none); ``size`` the
    decoded length it announced (``x-amz-decoded-content-length``)."""

    def __init__(self, chain: ChunkChain | None, trailer: str | None, size: int) -> None:
        self._chain = chain
        self._size = size
        self._state = _State.HEADER
        self._line = bytearray()
        self._left = 0  # bytes of the current chunk still to come
        self._signature = ""  # the current chunk's, as sent
        self._chunk_hash = hashlib.sha256()
        self._decoded = 0
        self._trailer_lines: list[bytes] = []
        self._trailer_bytes = 0
        name = checksum_name(trailer) if trailer else None
        self._expected_trailer = trailer.lower() if trailer else None
        self._checksum = Checksum(name) if name else None
        self._checked: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"ChunkedBody({self._state.value}, {self._decoded}/{self._size} bytes)"

    @property
    def checksum(self) -> str | None:
        """The name of the checksum its trailer carries (``CRCS``, sha1, sha256), or None."""
        return self._checksum.name if self._checksum else None

    @property
    def size(self) -> int:
        """The decoded length announced (x-amz-decoded-content-length)."""
        return self._size

    @property
    def checked(self) -> tuple[str, str] | None:
        """``(name, base64 value)`` of the trailer's checksum once the body was decoded and
        found to match it; None before, or when the trailer carried none computed here."""
        return self._checked

    def feed(self, data: bytes) -> list[memoryview]:
        """The decoded bytes in ``data`` (views into it). Raises InvalidRequest for a
        malformed body, BadSignature for a chunk whose signature is wrong, IncompleteBody
        past the announced size."""
        out: list[memoryview] = []
        view = memoryview(data)
        while view:
            if self._state is _State.DATA:
                piece = view[: self._left]
                view = view[len(piece) :]
                self._left -= len(piece)
                self._decoded += len(piece)
                if self._decoded > self._size:
                    raise IncompleteBody("the body is longer than x-amz-decoded-content-length")
                if self._chain is not None:
                    self._chunk_hash.update(piece)
                if self._checksum is not None:
                    self._checksum.update(piece)
                out.append(piece)
                if not self._left:
                    self._state = _State.DATA_END
                continue
            if self._state is _State.DONE:
                raise InvalidRequest("bytes after the end of an aws-chunked body")
            view = self._take_line(view)
        return out

    def _take_line(self, view: memoryview) -> memoryview:
        """Add bytes of a header, a chunk's closing CRLF or a trailer line; act on a whole
        line."""
        end = bytes(view[: MAX_LINE + 2]).find(b"\n")
        taken = view if end < 0 else view[: end + 1]
        self._line += taken
        if len(self._line) > MAX_LINE:
            raise InvalidRequest("an aws-chunked header or trailer line is too long")
        if end < 0:
            return view[len(view) :]
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r\n"):
            raise InvalidRequest("aws-chunked lines end with CRLF")
        self._line_done(line[:-2])
        return view[end + 1 :]

    def _line_done(self, line: bytes) -> None:
        if self._state is _State.DATA_END:
            if line:
                raise InvalidRequest("an aws-chunked chunk is longer than its size says")
            self._chunk_ended()
        elif self._state is _State.HEADER:
            self._header(line)
        else:
            self._trailer_line(line)

    def _header(self, line: bytes) -> None:
        size_text, _, extensions = line.partition(b";")
        try:
            if not 1 <= len(size_text) <= 16:
                raise ValueError
            size = int(size_text, 16)
        except ValueError:
            raise InvalidRequest("malformed aws-chunked chunk size") from None
        signature = ""
        for extension in extensions.split(b";") if extensions else ():
            name, _, value = extension.partition(b"=")
            if name.strip() == b"chunk-signature":
                signature = value.strip().decode("ascii", "replace")
        if self._chain is not None and not signature:
            raise BadSignature("a chunk of a signed aws-chunked body has no signature")
        self._signature = signature
        self._left = size
        self._chunk_hash = hashlib.sha256()
        if size:
            self._state = _State.DATA
            return
        self._chunk_ended()  # the last, empty chunk: signed like the others
        self._state = _State.TRAILER

    def _chunk_ended(self) -> None:
        if self._chain is not None:
            self._chain.check_chunk(self._signature, self._chunk_hash.hexdigest())
        self._state = _State.HEADER

    def _trailer_line(self, line: bytes) -> None:
        if line:
            self._trailer_bytes += len(line)
            if self._trailer_bytes > MAX_TRAILER:
                raise InvalidRequest("the aws-chunked trailer is too long")
            self._trailer_lines.append(line)
            return
        self._state = _State.DONE
        self._check_trailer()

    def _check_trailer(self) -> None:
        fields: dict[str, str] = {}
        signed_part = b""
        for line in self._trailer_lines:
            name, sep, value = line.partition(b":")
            if not sep:
                raise InvalidRequest("malformed aws-chunked trailer line")
            key = name.strip().lower().decode("ascii", "replace")
            fields[key] = value.strip().decode("ascii", "replace")
            if key != TRAILER_SIGNATURE:
                signed_part += name.strip().lower() + b":" + value.strip() + b"\n"
        if self._chain is not None and self._trailer_lines:
            given = fields.get(TRAILER_SIGNATURE)
            if given is None:
                raise BadSignature("the trailer of a signed aws-chunked body is not signed")
            self._chain.check_trailer(given, hashlib.sha256(signed_part).hexdigest())
        if self._expected_trailer is not None and self._expected_trailer not in fields:
            raise IncompleteBody(f"the body's trailer lacks {self._expected_trailer}")
        if self._checksum is not None and self._expected_trailer is not None:
            given = fields[self._expected_trailer]
            if given != self._checksum.value():
                raise BadDigest(f"the body does not match its {self._expected_trailer}")
            self._checked = self._checksum.name, given

    def end(self) -> None:
        """The body stopped: raise IncompleteBody unless it was whole and as long as
        announced."""
        if self._state is not _State.DONE:
            raise IncompleteBody(f"the aws-chunked body was cut off ({self._state.value})")
        if self._decoded != self._size:
            raise IncompleteBody(
                f"the body ended after {self._decoded} of {self._size} bytes "
                "(x-amz-decoded-content-length)"
            )
