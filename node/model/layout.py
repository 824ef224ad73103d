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

from dataclasses import dataclass, field

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
    """The striping of one file version. The derived figures (``stripe_size``,
    ``full_stripes``, ``tail_block``) are worked out once, when it is made: a GET asks for
    them ~100 times per stripe it reads."""

    size: int
    k: int = DEFAULT_K
    m: int = DEFAULT_M
    block_size: int = DEFAULT_BLOCK_SIZE
    codec: str = ZFEC
    stripe_size: int = field(init=False, repr=False, compare=False)
    """File bytes in one full stripe."""
    full_stripes: int = field(init=False, repr=False, compare=False)
    tail_block: int = field(init=False, repr=False, compare=False)
    """Length of each block of the short last stripe (0 when there is none)."""

    def __post_init__(self) -> None:
        if self.size < 0 or self.k < 1 or self.m < 0 or self.block_size < 1:
            raise ValueError(f"invalid layout {self!r}")
        stripe_size = self.k * self.block_size
        full_stripes = self.size // stripe_size
        tail_block = -(-(self.size - full_stripes * stripe_size) // self.k)
        set_once = object.__setattr__  # (frozen: the derived figures are set here only)
        set_once(self, "stripe_size", stripe_size)
        set_once(self, "full_stripes", full_stripes)
        set_once(self, "tail_block", tail_block)

    @property
    def n(self) -> int:
        """Chunks in all: data plus parity."""
        return self.k + self.m

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

    def lone_block(self, start: int, end: int) -> tuple[int, int] | None:
        """``(stripe, data block)`` of the one block that holds all of file bytes ``[start,
        end)``; None where they lie in more than one, or there are none."""
        stripes = self.stripes_covering(start, end)
        if len(stripes) != 1:
            return None
        blocks = self.blocks_covering(stripes[0], start, end)
        return (stripes[0], blocks[0]) if len(blocks) == 1 else None


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
