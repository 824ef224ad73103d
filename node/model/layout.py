"""Striping: how a file of a given size maps onto k equal data chunks (pure arithmetic).

A stripe is k blocks of ``block_size`` bytes, block *i* going to data chunk *i*; parity chunks
hold the m erasure-coded blocks of every stripe. Full stripes come first. The remaining
``r`` bytes (``0 < r < k * block_size``) form one short stripe cut into k contiguous blocks of
``ceil(r / k)`` bytes, zero-padded by at most k-1 bytes. So every chunk has exactly the same
length, and a file smaller than a stripe is simply cut into k contiguous equal parts.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_K = 5
DEFAULT_M = 2
DEFAULT_BLOCK_SIZE = 1 << 20


@dataclass(frozen=True)
class Layout:
    """The striping of one file version."""

    size: int
    k: int = DEFAULT_K
    m: int = DEFAULT_M
    block_size: int = DEFAULT_BLOCK_SIZE

    def __post_init__(self) -> None:
        if self.size < 0 or self.k < 1 or self.m < 0 or self.block_size < 1:
            raise ValueError(f"invalid layout {self!r}")

    @property
    def n(self) -> int:
        """Chunks in all: data plus parity."""
        return self.k + self.m

    @property
    def stripe_size(self) -> int:
        """File bytes in one full stripe."""
        return self.k * self.block_size

    @property
    def full_stripes(self) -> int:
        return self.size // self.stripe_size

    @property
    def tail_block(self) -> int:
        """Length of each block of the short last stripe (0 when there is none)."""
        rest = self.size - self.full_stripes * self.stripe_size
        return -(-rest // self.k)

    @property
    def stripes(self) -> int:
        return self.full_stripes + (1 if self.tail_block else 0)

    @property
    def chunk_size(self) -> int:
        """Bytes in every chunk, data or parity."""
        return self.full_stripes * self.block_size + self.tail_block

    def block_length(self, stripe: int) -> int:
        """Length of each block of ``stripe``."""
        return self.block_size if stripe < self.full_stripes else self.tail_block

    def stripe_start(self, stripe: int) -> int:
        """File offset of the first byte of ``stripe``."""
        return stripe * self.stripe_size

    def stripe_data_length(self, stripe: int) -> int:
        """File bytes in ``stripe`` (without padding)."""
        return min(self.stripe_size, self.size - self.stripe_start(stripe))

    def chunk_offset(self, stripe: int) -> int:
        """Offset of ``stripe``'s block inside every chunk."""
        return stripe * self.block_size

    def stripes_covering(self, start: int, end: int) -> range:
        """The stripes holding file bytes ``[start, end)``."""
        if end <= start:
            return range(0)
        return range(start // self.stripe_size, (end - 1) // self.stripe_size + 1)
