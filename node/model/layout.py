"""Striping: how a file of a given size maps onto k equal data chunks (pure arithmetic).

A stripe is k blocks of ``block_size`` bytes, block *i* going to data chunk *i*; parity chunks
hold the m erasure-coded blocks of every stripe. Full stripes come first. The remaining
``r`` bytes (``0 < r < k * block_size``) form one short stripe cut into k contiguous blocks of
``ceil(r / k)`` bytes, zero-padded by at most k-1 bytes. So every chunk has exactly the same
length, and a file smaller than a stripe is simply cut into k contiguous equal parts.

``Layout`` itself is plain arithmetic (tests use tiny blocks). What a peer accepts from
elsewhere (a manifest, a chunk's owner headers, a pull order, ``--block-size``) is bounded by
``check_block_size`` and ``check_layout``:

- block size ``MIN_BLOCK_SIZE`` (512 B) .. ``MAX_BLOCK_SIZE`` (64 MiB): a block of 0 bytes
  never ends a stripe, and a tiny one makes a sidecar (16 bytes per block) bigger than its
  chunk;
- ``k >= 1``, ``m >= 0`` and ``k + m <= MAX_CHUNKS`` (256, what both codecs can code);
- a codec of ``CODECS``: the Reed-Solomon code its parity chunks were computed with
  (``node.datapath.codec``). Both are systematic (data chunks are the file's bytes), so only
  parity and what is rebuilt from it depend on it; a file keeps its codec for good.
- ``0 <= size <= MAX_SIZE`` (what msgpack carries as a signed 64-bit integer).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_K = 5
DEFAULT_M = 2
DEFAULT_BLOCK_SIZE = 512 << 10  # (docs/architecture.md, "512 KiB blocks")
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 64 << 20
MAX_CHUNKS = 256  # data plus parity chunks of one file: zfec's limit, and GF(2^8)'s
# Codecs (node.datapath.codec): zfec's Vandermonde-derived code, which files written before
# ISA-L keep, and ISA-L's Cauchy matrix (gf_gen_cauchy1_matrix), ~30x faster.
ZFEC = "zfec"
ISAL_CAUCHY = "isa-l-cauchy"
CODECS = (ZFEC, ISAL_CAUCHY)
MAX_SIZE = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Layout:
    """The striping of one file version."""

    size: int
    k: int = DEFAULT_K
    m: int = DEFAULT_M
    block_size: int = DEFAULT_BLOCK_SIZE
    codec: str = ZFEC

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

    def blocks_covering(self, stripe: int, start: int, end: int) -> range:
        """The data blocks of ``stripe`` holding file bytes ``[start, end)`` (a stripe's
        bytes lie in its blocks in order, ``block_length`` each; its padding in none)."""
        first = self.stripe_start(stripe)
        lo = max(start, first) - first
        hi = min(end, first + self.stripe_data_length(stripe)) - first
        if hi <= lo:
            return range(0)
        length = self.block_length(stripe)
        return range(lo // length, (hi - 1) // length + 1)


def check_block_size(block_size: int) -> int:
    """Return ``block_size`` if a peer accepts it; raise ValueError saying why otherwise."""
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise ValueError(f"block size must be an integer, not {block_size!r}")
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(
            f"block size must be {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE} bytes, not {block_size}"
        )
    return block_size


def check_layout(layout: Layout) -> Layout:
    """Return ``layout`` if a peer accepts it from elsewhere; raise ValueError otherwise."""
    if not 0 <= layout.size <= MAX_SIZE:
        raise ValueError(f"size must be 0..{MAX_SIZE}, not {layout.size}")
    if layout.k < 1 or layout.m < 0 or layout.n > MAX_CHUNKS:
        raise ValueError(
            f"k >= 1 data and m >= 0 parity chunks, {MAX_CHUNKS} in all at most "
            f"(k={layout.k}, m={layout.m})"
        )
    check_block_size(layout.block_size)
    if layout.codec not in CODECS:
        raise ValueError(f"unknown codec {layout.codec!r}")
    return layout
