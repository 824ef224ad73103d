"""Numbers in client input: ASCII digits, bounded before conversion, short error messages."""

from __future__ import annotations

import pytest

from node.api.numbers import MAX_INT, decimal, shown


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("7", 7), ("007", 7), (str(MAX_INT), MAX_INT), ("0" * 5000 + "12", 12)],
)
def test_ascii_decimals_within_the_bound(text: str, value: int) -> None:
    assert decimal(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "-1", "+1", "1_000", " 1", "1 ", "0x10", "1.0", "\u0661", "\u00b2", "1e3"],
)
def test_anything_but_ascii_digits_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        decimal(text)


@pytest.mark.parametrize("text", [str(MAX_INT + 1), "9" * 20, "9" * 5000])
def test_numbers_past_the_bound_are_refused_without_conversion(text: str) -> None:
    with pytest.raises(ValueError, match="larger than") as caught:
        decimal(text)
    assert len(str(caught.value)) < 100


def test_a_smaller_bound_can_be_given() -> None:
    assert decimal("100", high=100) == 100
    with pytest.raises(ValueError, match="larger than 100"):
        decimal("101", high=100)


def test_shown_cuts_long_input() -> None:
    assert shown("abc") == "'abc'"
    assert shown("x" * 1000) == repr("x" * 40) + "..."
