"""Digests of blocks and chunks: what every layer checks stored bytes against.

Block digests are xxh3-128 (``DIGEST_SIZE`` bytes): the data path is CPU-bound and xxh3 costs
~1/15 of sha256 (~22 vs ~1.5 GB/s on one core here, FACTS.md) while catching any accidental
corruption. A chunk's digest is blake2b-128 over its block digests, so a chunk is checked
block by block while it streams and as a whole when it is copied.
"""

from __future__ import annotations

import hashlib

import xxhash

Buffer = bytes | bytearray | memoryview
DIGEST_SIZE = 16


def block_digest(block: Buffer) -> bytes:
    """The xxh3-128 digest of one block (16 bytes)."""
    return xxhash.xxh3_128_digest(block)


def chunk_digest(block_digests: bytes) -> bytes:
    """The digest of a whole chunk: blake2b-128 over its concatenated block digests."""
    return hashlib.blake2b(block_digests, digest_size=DIGEST_SIZE).digest()


class BlockDigests:
    """Digests a chunk block by block as its bytes stream past, without buffering.

    A chunk's blocks are ``block_size`` bytes each but the last, which may be shorter.
    """

    def __init__(self, block_size: int) -> None:
        self._block_size = block_size
        self._current = xxhash.xxh3_128()
        self._filled = 0
        self._digests = bytearray()

    def __repr__(self) -> str:
        blocks = len(self._digests) // DIGEST_SIZE
        return (
            f"BlockDigests(block_size={self._block_size}, blocks={blocks}, filled={self._filled})"
        )

    def update(self, piece: Buffer) -> None:
        view = memoryview(piece)
        while view:
            take = min(len(view), self._block_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._block_size:
                self._digests += self._current.digest()
                self._current.reset()
                self._filled = 0

    def digests(self) -> bytes:
        """The block digests so far, the short last block included."""
        tail = self._current.digest() if self._filled else b""
        return bytes(self._digests) + tail


ETAG_HASHES = ("md5", "xxh3")
"""How a file's etag is computed (``--etag``): the MD5 of its content, as S3 defines a
single-part object's ETag (clients such as rclone compare it with their own MD5), or xxh3-128,
~30x cheaper. An xxh3 etag is written ``xxh3-<32 hex digits>``: never 32 bare hex digits, so no
S3 client mistakes it for an MD5 (S3's own non-MD5 ETags, of multipart objects, carry a ``-``
the same way)."""


class ContentHash:
    """The running hash of a file's content that makes its etag (``kind``: one of
    ``ETAG_HASHES``). ``update`` may run in a worker thread (hashlib releases the GIL for
    pieces over 2 KiB), one call at a time, in content order."""

    def __init__(self, kind: str) -> None:
        if kind not in ETAG_HASHES:
            raise ValueError(f"etag hash is one of {ETAG_HASHES}, not {kind!r}")
        self.kind = kind
        self._hash = hashlib.md5(usedforsecurity=False) if kind == "md5" else xxhash.xxh3_128()

    def __repr__(self) -> str:
        return f"ContentHash({self.kind!r})"

    @property
    def costly(self) -> bool:
        """Whether hashing a stripe takes long enough (MD5: ~1.4 ms per MiB here) to move it
        off the event loop; xxh3 takes ~0.05 ms per MiB."""
        return self.kind == "md5"

    def update(self, piece: Buffer) -> None:
        self._hash.update(piece)

    def digest(self) -> bytes:
        """The hash of the content so far, as bytes (an MD5's 16: a Content-MD5 is checked
        against it, so that the body is hashed once)."""
        return self._hash.digest()

    def etag(self) -> str:
        if self.kind == "md5":
            return self._hash.hexdigest()
        return f"xxh3-{self._hash.hexdigest()}"
