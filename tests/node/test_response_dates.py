"""The response hook that dates every answer by the peer's clock and never lets a
``Last-Modified`` run past the answer's ``Date`` (RFC 9110, 8.8.2.1), on a bare app.

Skewed peers in a real cluster: ``tests/node/test_clock_skew.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.api.dates import date_response, http_date
from node.api.keys import CLOCK
from node.model.version import HybridClock

NOW = 1_764_450_000_123  # what the peer's clock reads


async def dated(request: web.Request) -> web.Response:
    modified = request.query.get("modified")
    return web.Response(text="x", headers={"Last-Modified": modified} if modified else {})


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app[CLOCK] = HybridClock("me", lambda: NOW)
    app.on_response_prepare.append(date_response)
    app.router.add_get("/", dated)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("modified", "sent"),
    [
        (http_date(NOW + 3_600_000), http_date(NOW)),  # an hour ahead: dated now
        (http_date(NOW + 1_000), http_date(NOW)),  # one second ahead: dated now
        (http_date(NOW), http_date(NOW)),  # within this second: as it is
        (http_date(NOW - 86_400_000), http_date(NOW - 86_400_000)),  # in the past: as it is
        ("not a date", "not a date"),  # not ours to judge: left alone
    ],
)
async def test_last_modified_is_never_after_the_date(
    client: TestClient[web.Request, web.Application], modified: str, sent: str
) -> None:
    async with client.get("/", params={"modified": modified}) as response:
        assert response.headers["Date"] == http_date(NOW)  # by the peer's clock
        assert response.headers["Last-Modified"] == sent


async def test_an_answer_without_last_modified_gets_only_a_date(
    client: TestClient[web.Request, web.Application],
) -> None:
    async with client.get("/") as response:
        assert response.headers["Date"] == "Sat, 29 Nov 2025 21:00:00 GMT"
        assert "Last-Modified" not in response.headers
