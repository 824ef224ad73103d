"""Limits as data: refusal logging and request slots."""

from __future__ import annotations

import logging

import pytest

from node.api.limits import Refusals, RequestLimit
from node.errors import Overloaded


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_log_one_line_per_period_with_the_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    refusals = Refusals(logging.getLogger("test.refusals"), every=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for _ in range(1000):
            refusals.note("refused a thing")
        clock.now = 10.0
        refusals.note("refused a thing")
    assert refusals.count == 1001
    assert [r.getMessage() for r in caplog.records] == [
        "refused a thing",
        "refused a thing (999 more since the last such line)",
    ]


def test_request_slots_are_given_back_and_refused_past_the_limit() -> None:
    limit = RequestLimit(2)
    with limit.slot(), limit.slot():
        assert limit.active == 2
        with pytest.raises(Overloaded) as refused, limit.slot():
            pass
        assert refused.value.retry_after >= 1
    assert limit.active == 0
    with pytest.raises(RuntimeError), limit.slot():
        raise RuntimeError("a failed request gives its slot back too")
    assert limit.active == 0
    assert limit.refusals.count == 1
