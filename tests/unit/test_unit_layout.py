"""Striping arithmetic: equal chunks, at most k-1 bytes of padding, stripes that tile the file."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from node.model.layout import DEFAULT_BLOCK_SIZE, DEFAULT_K, DEFAULT_M, Layout

fast = settings(max_examples=150, deadline=None)


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    k = draw(st.integers(1, 8), label="k")
    m = draw(st.integers(0, 4), label="m")
    block_size = draw(st.integers(1, 64), label="block_size")
    size = draw(st.integers(0, 4 * k * block_size + k), label="size")
    return Layout(size, k, m, block_size)


def data_range(layout: Layout, stripe: int) -> tuple[int, int]:
    start = layout.stripe_start(stripe)
    return start, start + layout.stripe_data_length(stripe)


@fast
@given(layout=layouts())
def test_stripes_tile_the_file_in_order(layout: Layout) -> None:
    position = 0
    for stripe in range(layout.stripes):
        start, end = data_range(layout, stripe)
        assert start == position
        assert end > start  # no empty stripe
        position = end
    assert position == layout.size
    assert sum(layout.stripe_data_length(s) for s in range(layout.stripes)) == layout.size


@fast
@given(layout=layouts())
def test_full_stripes_come_first_then_at_most_one_short_one(layout: Layout) -> None:
    for stripe in range(layout.full_stripes):
        assert layout.block_length(stripe) == layout.block_size
        assert layout.stripe_data_length(stripe) == layout.stripe_size
    assert layout.stripes - layout.full_stripes in (0, 1)
    if layout.stripes > layout.full_stripes:
        last = layout.stripes - 1
        assert 0 < layout.block_length(last) == layout.tail_block <= layout.block_size
        assert 0 < layout.stripe_data_length(last) < layout.stripe_size
    else:
        assert layout.tail_block == 0


@fast
@given(layout=layouts())
def test_every_chunk_is_the_sum_of_its_blocks(layout: Layout) -> None:
    offset = 0
    for stripe in range(layout.stripes):
        assert layout.chunk_offset(stripe) == offset
        offset += layout.block_length(stripe)
    assert offset == layout.chunk_size


@fast
@given(layout=layouts())
def test_padding_is_at_most_k_minus_1_bytes_per_file(layout: Layout) -> None:
    padding = layout.k * layout.chunk_size - layout.size
    assert 0 <= padding <= layout.k - 1
    tail_bytes = layout.size - layout.full_stripes * layout.stripe_size
    assert padding == layout.k * layout.tail_block - tail_bytes
    for stripe in range(layout.stripes):
        stripe_padding = layout.k * layout.block_length(stripe) - layout.stripe_data_length(stripe)
        assert 0 <= stripe_padding <= layout.k - 1


@fast
@given(layout=layouts(), data=st.data())
def test_stripes_covering_is_exactly_the_stripes_a_range_touches(
    layout: Layout, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, layout.size), label="start")
    end = data.draw(st.integers(start, layout.size), label="end")
    covering = layout.stripes_covering(start, end)
    touched = [
        stripe
        for stripe in range(layout.stripes)
        if max(start, data_range(layout, stripe)[0]) < min(end, data_range(layout, stripe)[1])
    ]
    assert list(covering) == touched
    assert covering.step == 1


@fast
@given(layout=layouts(), data=st.data())
def test_blocks_covering_is_exactly_the_blocks_a_range_touches(
    layout: Layout, data: st.DataObject
) -> None:
    """Checked against the bytes themselves: block i of a stripe holds its bytes
    ``[i * length, (i + 1) * length)``, clipped to the stripe's data (padding is no one's)."""
    start = data.draw(st.integers(0, layout.size), label="start")
    end = data.draw(st.integers(start, layout.size), label="end")
    for stripe in range(layout.stripes):
        first, past = data_range(layout, stripe)
        length = layout.block_length(stripe)
        touched = [
            index
            for index in range(layout.k)
            if max(start, first + index * length) < min(end, past, first + (index + 1) * length)
        ]
        covering = layout.blocks_covering(stripe, start, end)
        assert list(covering) == touched
        assert covering.step == 1


@fast
@given(layout=layouts(), data=st.data())
def test_a_lone_block_is_the_one_block_a_range_touches(layout: Layout, data: st.DataObject) -> None:
    """``lone_block`` names ``(stripe, block)`` exactly where a range's bytes lie in one
    block (the reads that need no reader), and None where they lie in more or in none."""
    start = data.draw(st.integers(0, layout.size), label="start")
    end = data.draw(st.integers(start, layout.size), label="end")
    touched = [
        (stripe, index)
        for stripe in layout.stripes_covering(start, end)
        for index in layout.blocks_covering(stripe, start, end)
    ]
    assert layout.lone_block(start, end) == (touched[0] if len(touched) == 1 else None)


@fast
@given(layout=layouts(), size=st.integers(0, 10_000))
def test_the_derived_figures_follow_a_changed_size(layout: Layout, size: int) -> None:
    """Worked out once when a layout is made, they are worked out again for a copy made
    with ``dataclasses.replace``, and two layouts are equal by their fields alone."""
    changed = dataclasses.replace(layout, size=size)
    fresh = Layout(size, layout.k, layout.m, layout.block_size)
    assert (changed.stripe_size, changed.full_stripes, changed.tail_block) == (
        fresh.stripe_size,
        fresh.full_stripes,
        fresh.tail_block,
    )
    assert changed == fresh
    assert hash(changed) == hash(fresh)
    assert changed.chunk_size * layout.k >= size  # (a block of each stripe on each chunk)


@fast
@given(layout=layouts())
def test_the_whole_file_is_covered_by_all_stripes(layout: Layout) -> None:
    assert layout.stripes_covering(0, layout.size) == range(layout.stripes)


@fast
@given(
    k=st.integers(1, 8),
    block_size=st.integers(1, 64),
    data=st.data(),
)
def test_a_file_smaller_than_a_stripe_is_k_contiguous_equal_parts(
    k: int, block_size: int, data: st.DataObject
) -> None:
    assume(k * block_size > 1)
    size = data.draw(st.integers(1, k * block_size - 1), label="size")
    layout = Layout(size, k, 2, block_size)
    assert layout.full_stripes == 0
    assert layout.stripes == 1
    assert layout.chunk_size == layout.block_length(0) == -(-size // k)
    assert layout.stripe_start(0) == 0
    assert layout.stripe_data_length(0) == size


def test_an_empty_file_has_no_stripes_and_empty_chunks() -> None:
    layout = Layout(0, 5, 2, 16)
    assert (layout.stripes, layout.full_stripes, layout.tail_block, layout.chunk_size) == (
        0,
        0,
        0,
        0,
    )
    assert layout.stripes_covering(0, 0) == range(0)


@pytest.mark.parametrize(
    ("size", "k", "block_size", "stripes", "chunk_size", "tail_block"),
    [
        (1, 5, 4, 1, 1, 1),
        (5, 5, 4, 1, 1, 1),
        (6, 5, 4, 1, 2, 2),
        (20, 5, 4, 1, 4, 0),  # exactly one full stripe
        (21, 5, 4, 2, 5, 1),
        (43, 5, 4, 3, 9, 1),
        (41, 1, 8, 6, 41, 1),
    ],
)
def test_known_layouts(
    size: int, k: int, block_size: int, stripes: int, chunk_size: int, tail_block: int
) -> None:
    layout = Layout(size, k, 2, block_size)
    assert layout.stripes == stripes
    assert layout.chunk_size == chunk_size
    assert layout.tail_block == tail_block


def test_defaults_and_derived_counts() -> None:
    layout = Layout(10)
    assert (layout.k, layout.m, layout.block_size) == (DEFAULT_K, DEFAULT_M, DEFAULT_BLOCK_SIZE)
    assert layout.n == DEFAULT_K + DEFAULT_M
    assert layout.stripe_size == DEFAULT_K * DEFAULT_BLOCK_SIZE


def test_empty_and_reversed_ranges_cover_no_stripe() -> None:
    layout = Layout(100, 3, 2, 8)
    assert layout.stripes_covering(5, 5) == range(0)
    assert layout.stripes_covering(9, 4) == range(0)


@pytest.mark.parametrize(
    ("size", "k", "m", "block_size"),
    [(-1, 5, 2, 8), (10, 0, 2, 8), (10, 5, -1, 8), (10, 5, 2, 0)],
)
def test_invalid_layouts_are_refused(size: int, k: int, m: int, block_size: int) -> None:
    with pytest.raises(ValueError, match="invalid layout"):
        Layout(size, k, m, block_size)
