"""The delay before a hedged read: the 95th percentile of recent calls, within bounds."""

from __future__ import annotations

import pytest

from node.datapath.hedging import CEILING, FLOOR, INITIAL, RECOMPUTE_EVERY, WINDOW, HedgeDelay


def test_the_delay_starts_at_its_initial_value_until_enough_calls_are_timed() -> None:
    hedge = HedgeDelay()
    for _ in range(RECOMPUTE_EVERY - 1):
        hedge.observe(0.2)
    assert hedge.seconds == INITIAL
    hedge.observe(0.2)
    assert hedge.seconds == pytest.approx(0.2)


def test_the_delay_is_the_95th_percentile_of_the_recent_calls() -> None:
    hedge = HedgeDelay()
    for i in range(WINDOW):  # 10 ms ... 265 ms: 95% of them take at most ~253 ms
        hedge.observe(0.010 + i / 1000)
    assert hedge.seconds == pytest.approx(0.010 + int(0.95 * WINDOW) / 1000)


def test_old_calls_leave_the_window() -> None:
    hedge = HedgeDelay()
    for _ in range(WINDOW):
        hedge.observe(0.5)
    for _ in range(WINDOW):
        hedge.observe(0.02)
    assert hedge.seconds == pytest.approx(0.02)


@pytest.mark.parametrize(("took", "expected"), [(0.0001, FLOOR), (30.0, CEILING)])
def test_the_delay_stays_within_its_bounds(took: float, expected: float) -> None:
    hedge = HedgeDelay()
    for _ in range(RECOMPUTE_EVERY):
        hedge.observe(took)
    assert hedge.seconds == expected
