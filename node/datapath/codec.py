"""Erasure coding of one stripe at a time (Reed-Solomon over GF(2^8)).

Two systematic codes, named by a file's layout (``Layout.codec``) for good: zfec's
(files written before ISA-L, and by clusters where some member lacks it) and ISA-L's
Cauchy code (``node.datapath.isal``), ~30x faster. Both release the GIL, so callers run
these functions in a worker thread (``asyncio.to_thread``) and the event loop keeps
serving. Block digests come from ``node.model.digests``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import zfec

from node.datapath import isal
from node.errors import CorruptData
from node.model.digests import Buffer, block_digest
from node.model.layout import ISAL_CAUCHY, ZFEC


@lru_cache(maxsize=32)
def _encoder(k: int, n: int) -> zfec.Encoder:
    return zfec.Encoder(k, n)


@lru_cache(maxsize=32)
def _decoder(k: int, n: int) -> zfec.Decoder:
    return zfec.Decoder(k, n)


def default_codec() -> str:
    """The codec new files are written with where every member reads it: ISA-L's where
    this peer has it."""
    return ISAL_CAUCHY if isal.available() else ZFEC


def encode_stripe(
    blocks: Sequence[Buffer], m: int, codec: str = ZFEC
) -> tuple[list[Buffer], bytes]:
    """Return all k+m blocks of a stripe and their concatenated digests."""
    k = len(blocks)
    out: list[Buffer] = list(blocks)
    if m and codec == ISAL_CAUCHY:
        out.extend(isal.encode(blocks, m))
    elif m:
        out.extend(_encoder(k, k + m).encode(tuple(blocks), tuple(range(k, k + m))))
    return out, b"".join(block_digest(b) for b in out)


def decode_stripe(blocks: Mapping[int, Buffer], k: int, m: int, codec: str = ZFEC) -> list[Buffer]:
    """Rebuild the k data blocks of a stripe from any k of its blocks.

    Raises CorruptData if fewer than k blocks are given.
    """
    if all(i in blocks for i in range(k)):
        return [blocks[i] for i in range(k)]
    if len(blocks) < k:
        raise CorruptData(f"only {len(blocks)} of the {k} blocks needed to decode a stripe")
    if codec == ISAL_CAUCHY:
        return isal.decode(blocks, k, m)
    nums = tuple(sorted(blocks)[:k])
    decoded: list[Buffer] = _decoder(k, k + m).decode(tuple(blocks[i] for i in nums), nums)
    return decoded
