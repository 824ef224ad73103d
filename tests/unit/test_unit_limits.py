"""Limits as data: refusal logging, request slots, descriptors, and errors before the app.

What aiohttp raises before the app is mapped to a status and a message that repeats none of
the request's bytes (``describe``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    ContentLengthError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)

from node.api.limits import Refusals, RequestLimit
from node.config import PeerConfig
from node.errors import Overloaded
from node.process.connections import MAX_HEADER_LINE, MAX_HEADERS, MAX_URL, describe
from node.process.serve import MIN_CONNECTIONS, MIN_REQUESTS, descriptors_needed, fitted_to

ECHO = "<script>alert(1)</script>"


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


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (LineTooLong(ECHO.encode(), MAX_URL), 414, "uri_too_long"),
        (LineTooLong(ECHO.encode(), MAX_HEADER_LINE), 431, "header_too_large"),
        (BadHttpMessage("Too many headers received"), 431, "header_too_large"),
        (BadHttpMethod(ECHO), 400, "bad_request"),
        (BadStatusLine(ECHO), 400, "bad_request"),
        (InvalidURLError(f"Invalid URL:\n\n  {ECHO!r}"), 400, "bad_request"),
        (InvalidHeader(ECHO), 400, "bad_request"),
        (TransferEncodingError(ECHO), 400, "bad_request"),
        (ContentLengthError(ECHO), 400, "bad_request"),
        (BadHttpMessage(f"Invalid header value char:\n\n  {ECHO!r}\n  ^"), 400, "bad_request"),
        (BadHttpMessage(ECHO), 400, "bad_request"),
    ],
)
def test_errors_before_the_app_get_a_status_and_repeat_no_input(
    exc: BaseException, status: int, code: str
) -> None:
    got_status, got_code, message = describe(400, exc)
    assert (got_status, got_code) == (status, code)
    assert "script" not in message


def test_the_parser_s_own_words_are_kept() -> None:
    _, _, message = describe(400, BadHttpMessage("Invalid header value char:\n\n  b'x'\n  ^"))
    assert message == "malformed request: Invalid header value char"
    assert describe(400, BadHttpMessage("Too many headers received"))[2].endswith(
        f"{MAX_HEADERS} headers"
    )


def test_an_exception_the_app_let_through_is_an_internal_error() -> None:
    assert describe(500, RuntimeError(ECHO)) == (
        500,
        "internal",
        "internal error; see the peer's log",
    )


def test_the_descriptors_a_peer_may_need_grow_with_its_limits(tmp_path: Path) -> None:
    small = PeerConfig(data_dir=tmp_path, max_connections=10, max_requests=1)
    big = PeerConfig(data_dir=tmp_path, max_connections=1000, max_requests=100)
    assert descriptors_needed(small) < descriptors_needed(big)
    assert descriptors_needed(big) >= 1000 + 100 * 7
    three_ports = PeerConfig(
        data_dir=tmp_path, max_connections=1000, max_requests=100, s3_port=9000, shared_port=10000
    )
    assert descriptors_needed(three_ports) >= 3 * 1000 + 100 * 7  # each port its connections


def test_connections_and_requests_are_fitted_to_an_open_file_limit(tmp_path: Path) -> None:
    config = PeerConfig(data_dir=tmp_path, max_connections=1024, max_requests=64)
    assert fitted_to(config, descriptors_needed(config)) == config  # it all fits
    for limit in (1500, 1024, 512, 400):
        fitted = fitted_to(config, limit)
        assert descriptors_needed(fitted) <= limit, limit  # connections, calls and the rest
        assert fitted.max_connections < 1024
        assert fitted.max_requests < 64
        share = fitted.max_connections / 1024  # lowered together, by one factor
        assert abs(fitted.max_requests / 64 - share) < 0.05, limit
    floor = fitted_to(config, 256)  # nothing to spare: the floors, which may not fit
    assert (floor.max_connections, floor.max_requests) == (MIN_CONNECTIONS, MIN_REQUESTS)
    modest = PeerConfig(data_dir=tmp_path, max_connections=8, max_requests=2)
    assert fitted_to(modest, 256) == modest  # never more than asked
    three_ports = PeerConfig(data_dir=tmp_path, s3_port=9000, shared_port=10000)
    assert descriptors_needed(fitted_to(three_ports, 2048)) <= 2048
