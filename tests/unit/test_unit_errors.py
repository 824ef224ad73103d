"""How errors become answers: statuses of the limits' errors, 5xx answers to public routes
that name no peer, and raw answers that are whole HTTP/1.1 messages with the JSON body."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web

from node.api.errors import close_after_error, raw_error_response, response_for
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


@pytest.mark.parametrize(
    ("path", "status", "closes"),
    [
        ("/files/a/b", 503, True),
        ("/internal/manifests", 503, False),
        ("/files/a/b", 408, True),
        ("/internal/manifests", 408, True),
        ("/files/a/b", 404, False),
    ],
)
async def test_a_public_503_and_every_408_close_their_connection(
    path: str, status: int, closes: bool
) -> None:
    """Behind an address several peers share, a client's retry after a 503 must be able to
    reach another peer: a new connection (a peer call keeps its own). A 408 closes in any
    case, and says so (RFC 9110 section 15.5.9). (A real server on 127.0.0.1, two requests
    with one keep-alive client: they share a connection only when the first was kept.)"""
    connections: set[tuple[str, int]] = set()  # the client's addresses: one per connection

    async def unavailable(request: web.Request) -> web.Response:
        assert request.transport is not None
        connections.add(request.transport.get_extra_info("peername"))
        return web.json_response({"error": {"code": "refused", "message": "no"}}, status=status)

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        close_after_error(request, response)

    app = web.Application()
    app.router.add_get(path, unavailable)
    app.on_response_prepare.append(hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as client:
            for _ in range(2):
                async with client.get(f"http://127.0.0.1:{port}{path}") as answer:
                    assert answer.status == status
                    assert (answer.headers.get("Connection") == "close") == closes
                    await answer.read()
        assert len(connections) == (2 if closes else 1)
    finally:
        await runner.cleanup()
