"""How errors become answers: statuses of the limits' errors, 5xx answers to public routes
that name no peer, and raw answers that are whole HTTP/1.1 messages with the JSON body."""

from __future__ import annotations

import json

import pytest

from node.api.errors import raw_error_response, response_for
from node.errors import (
    InsufficientStorage,
    Overloaded,
    PeerUnavailable,
    RequestTimeout,
    TooLarge,
    Unavailable,
)


@pytest.mark.parametrize(
    "error",
    [
        PeerUnavailable("http://10.1.2.3:8000", "connection refused"),
        Unavailable("reading from https://10.1.2.3:8001 failed: reset"),
        InsufficientStorage("peer http://[::1]:8002/internal/chunks/x is full"),
    ],
)
def test_5xx_answers_to_public_routes_name_no_peer(error: Exception) -> None:
    assert isinstance(error, Unavailable | InsufficientStorage)
    public = response_for(error, public=True)
    assert public.status >= 500
    assert isinstance(public.body, bytes)
    assert b"http" not in public.body
    internal = response_for(error, public=False)  # a peer caller gets the whole message
    assert isinstance(internal.body, bytes)
    assert b"http" in internal.body


def test_overloaded_answers_say_when_to_retry() -> None:
    response = response_for(Overloaded("busy", retry_after=3), public=True)
    assert (response.status, response.headers["Retry-After"]) == (503, "3")


@pytest.mark.parametrize(
    ("error", "status"), [(TooLarge("big"), 413), (RequestTimeout("slow"), 408)]
)
def test_limit_errors_have_their_statuses(error: Exception, status: int) -> None:
    assert isinstance(error, TooLarge | RequestTimeout)
    assert response_for(error, public=True).status == status


def test_a_raw_answer_is_a_whole_http_message_with_the_json_body() -> None:
    raw = raw_error_response(503, "overloaded", "busy", {"Retry-After": "1"})
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Length"] == str(len(body))
    assert headers["Connection"] == "close"
    assert headers["Retry-After"] == "1"
    assert headers["Server"] == "ringstore"
    assert json.loads(body) == {"error": {"code": "overloaded", "message": "busy"}}
