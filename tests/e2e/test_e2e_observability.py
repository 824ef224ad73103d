"""Real peer processes with ``--log-format json``: every line is one JSON object, and one
request's id shows in the logs of each peer it touched; the probes and /metrics answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ProcessCluster, eventually
from tests.harness.access import ADMIN_HEADERS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_json_logs_follow_one_request_across_peers(
    tmp_path: Path, http: aiohttp.ClientSession, anonymous: aiohttp.ClientSession
) -> None:
    # Inline files: the manifest (and the file in it) goes to both peers' replicas.
    cluster = ProcessCluster(
        tmp_path, 2, "--log-format=json", "--log-level=debug", "--inline-max=65536"
    )
    try:
        await cluster.start(http)
        first, second = cluster.peers
        async with anonymous.get(f"{first.url}/ready") as answer:
            assert answer.status == 200, await answer.text()
        headers = {"X-Request-Id": "e2e-json-0001"}
        async with http.put(
            f"{first.url}/files/logs/one", data=b"x" * 1000, headers=headers
        ) as answer:
            assert answer.status == 201, await answer.text()
            assert answer.headers["X-Request-Id"] == "e2e-json-0001"

        def traced(peer_log: Path) -> list[dict[str, Any]]:
            return [r for r in json_lines(peer_log) if r.get("request_id") == "e2e-json-0001"]

        await eventually(lambda: bool(traced(second.log_path)), what="the other peer's line")
        mine = traced(first.log_path)
        put = [r for r in mine if r["logger"] == "node.api.public"]
        assert len(put) == 1
        assert (put[0]["name"], put[0]["size"]) == ("logs/one", 1000)
        assert {"time", "level", "peer", "event", "duration"} <= put[0].keys()
        theirs = traced(second.log_path)
        assert {r["peer"] for r in theirs} == {await peer_id(http, second.url)}
        async with anonymous.get(f"{first.url}/metrics") as answer:
            assert answer.status == 401
        async with http.get(f"{first.url}/metrics") as answer:
            families = {f.name for f in text_string_to_metric_families(await answer.text())}
        assert {"ringstore_http_requests", "process_resident_memory_bytes"} <= families
    finally:
        await cluster.stop()
    for peer in cluster.peers:  # every line parsed, to the last one written at shutdown
        assert json_lines(peer.log_path)


async def peer_id(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/health", headers=ADMIN_HEADERS) as answer:
        body: dict[str, Any] = await answer.json()
        return str(body["id"])
