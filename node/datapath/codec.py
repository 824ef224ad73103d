"""Erasure coding of one stripe at a time (Reed-Solomon over GF(2^8), zfec).

zfec releases the GIL, so callers run these functions in a worker thread
(``asyncio.to_thread``) and the event loop keeps serving. Block digests come from
``node.model.digests``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import zfec

from node.errors import CorruptData
from node.model.digests import Buffer, block_digest


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
