"""Erasure coding and block digests for one stripe at a time.

zfec does Reed-Solomon over GF(2^8) and releases the GIL, so callers run these functions in
a worker thread (``asyncio.to_thread``) and the event loop keeps serving. Block digests are
xxh3-128: the data path is CPU-bound and xxh3 costs ~1/15 of sha256 while catching any
accidental corruption; names and ids use blake2b where collisions could be engineered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import xxhash
import zfec

from node.errors import CorruptData

Buffer = bytes | bytearray | memoryview


def block_digest(block: Buffer) -> bytes:
    return xxhash.xxh3_128_digest(block)


class BlockDigests:
    """Digests a chunk block by block as its bytes stream past, without buffering.

    A chunk's blocks are ``block_size`` bytes each but the last, which may be shorter.
    """

    def __init__(self, block_size: int) -> None:
        self._block_size = block_size
        self._current = xxhash.xxh3_128()
        self._filled = 0
        self._digests = bytearray()

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


@lru_cache(maxsize=32)
def _encoder(k: int, n: int) -> zfec.Encoder:
    return zfec.Encoder(k, n)


@lru_cache(maxsize=32)
def _decoder(k: int, n: int) -> zfec.Decoder:
    return zfec.Decoder(k, n)


def encode_stripe(blocks: Sequence[Buffer], m: int) -> tuple[list[Buffer], bytes]:
    """Return all k+m blocks of a stripe and their concatenated digests."""
    k = len(blocks)
    out: list[Buffer] = list(blocks)
    if m:
        out.extend(_encoder(k, k + m).encode(tuple(blocks), tuple(range(k, k + m))))
    return out, b"".join(block_digest(b) for b in out)


def decode_stripe(blocks: Mapping[int, Buffer], k: int, m: int) -> list[Buffer]:
    """Rebuild the k data blocks of a stripe from any k of its blocks.

    Raises CorruptData if fewer than k blocks are given.
    """
    if all(i in blocks for i in range(k)):
        return [blocks[i] for i in range(k)]
    if len(blocks) < k:
        raise CorruptData(f"only {len(blocks)} of the {k} blocks needed to decode a stripe")
    nums = tuple(sorted(blocks)[:k])
    decoded: list[Buffer] = _decoder(k, k + m).decode(tuple(blocks[i] for i in nums), nums)
    return decoded
