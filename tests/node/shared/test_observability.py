"""Metrics and request ids on the shared seven-peer cluster (all in this one process).

Each peer has a registry of its own, so a scrape of one peer shows only its own requests
even though seven peers share the process; counters are read back with
prometheus-client's own parser. Request ids are followed from the answer into the log
records of the peers that stored the file's chunks.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from prometheus_client.samples import Sample

from node.config import DEFAULT_BUFFER_MEMORY
from node.process.logs import ContextFilter
from ring import ring_balance
from tests.harness import LocalCluster, eventually, get_manifest, put_file
from tests.harness.metrics import scrape, value
from tests.node.shared.test_inline_files import served

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCS = Path(__file__).resolve().parents[3] / "docs"
FILES_ROUTE = "/files/{name}"
CHUNK_ROUTE = "/internal/chunks/{chunk_id}"


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    return {"s3_port": 0}


@pytest_asyncio.fixture(loop_scope="module")
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    """A session without credentials, on the module's loop."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def total(http: aiohttp.ClientSession, cluster: LocalCluster, name: str) -> float:
    return sum([value(await scrape(http, peer.url), name) for peer in cluster.peers])


async def test_requests_are_counted_by_route_on_the_peer_that_served_them(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    first, other = cluster[0].url, cluster[1].url
    before, other_before = await scrape(http, first), await scrape(http, other)
    writes_before = await total(http, cluster, "ringstore_chunk_writes_total")
    reads_before = await total(http, cluster, "ringstore_chunk_reads_total")
    read_bytes_before = await total(http, cluster, "ringstore_chunk_read_bytes_total")
    data = payload(30_000, 1)
    await put_file(http, first, "metrics/counted-file", data)
    async with http.get(f"{first}/files/metrics/counted-file") as answer:
        assert await answer.read() == data

    after, other_after = await scrape(http, first), await scrape(http, other)
    put = {"listener": "public", "route": FILES_ROUTE, "method": "PUT"}
    get = {**put, "method": "GET"}
    requests = "ringstore_http_requests_total"
    assert value(after, requests, **put, status="201") == value(before, requests, **put) + 1
    assert value(after, requests, **get, status="200") == value(before, requests, **get) + 1
    assert value(other_after, requests, **put) == value(other_before, requests, **put)
    received = "ringstore_http_received_bytes_total"
    assert value(after, received, **put) - value(before, received, **put) == len(data)
    sent = "ringstore_http_sent_bytes_total"
    assert value(after, sent, **get) - value(before, sent, **get) > len(data)  # and the head
    latency = "ringstore_http_request_duration_seconds_count"
    assert value(after, latency, **put) == value(before, latency, **put) + 1
    # One chunk to each of k+m holders, at least k of them read back (the sum over peers).
    await eventually(
        lambda: _at_least(http, cluster, "ringstore_chunk_writes_total", writes_before + 7),
        what="7 chunk writes counted",
    )
    assert await total(http, cluster, "ringstore_chunk_reads_total") >= reads_before + 5
    # Its chunks came as frames of channels, past aiohttp's count: counted all the same.
    chunk_bytes = await total(http, cluster, "ringstore_chunk_read_bytes_total")
    assert chunk_bytes - read_bytes_before >= len(data)
    routes = {s.labels.get("route") for s in after if "route" in s.labels}
    assert not any("counted-file" in route for route in routes if route)  # templates only
    # A chunk larger than a frame (1 MiB and a byte) is a request, counted by its template;
    # each of the seven peers holds one of its chunks.
    await put_file(http, first, "metrics/large-file", payload((5 << 20) + 5, 2))
    other_after = await scrape(http, other)
    assert CHUNK_ROUTE in {s.labels.get("route") for s in other_after if "route" in s.labels}


async def _at_least(
    http: aiohttp.ClientSession, cluster: LocalCluster, name: str, expected: float
) -> bool:
    return await total(http, cluster, name) >= expected


async def test_scrape_time_figures_come_from_the_components(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    samples = await scrape(http, cluster[2].url)
    peer = cluster[2]
    assert value(samples, "ringstore_members", state="up") == 7
    assert value(samples, "ringstore_members", state="down") == 0
    assert value(samples, "ringstore_ring_members") == 7
    assert value(samples, "ringstore_disk_total_bytes") > value(
        samples, "ringstore_disk_free_bytes"
    )
    assert value(samples, "ringstore_chunk_store_chunks") == peer.chunks.chunk_count
    assert value(samples, "ringstore_scrub_passes_total") == peer.scrubber.stats.passes
    assert value(samples, "ringstore_repair_failures_total") == peer.repairer.stats.failures
    assert value(samples, "ringstore_open_connections", listener="public") >= 1
    assert value(samples, "ringstore_open_connections", listener="s3") >= 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "ringstore_block_buffer_budget_bytes") == DEFAULT_BUFFER_MEMORY
    assert 0 <= value(samples, "ringstore_block_buffer_bytes") <= DEFAULT_BUFFER_MEMORY
    hedge = peer.replicas.hedge
    assert value(samples, "ringstore_manifest_hedged_reads_total") == hedge.hedged
    assert value(samples, "ringstore_manifest_hedge_delay_seconds") == hedge.seconds
    names = {s.name for s in samples}
    for name in (
        "ringstore_event_loop_lag_seconds",
        "ringstore_degraded_writes_total",
        "ringstore_quota_bytes",
        "ringstore_rebalance_moved_bytes_total",
        "ringstore_anti_entropy_passes_total",
        "ringstore_packs_written_total",
        "ringstore_manifest_log_live_bytes",
        "ringstore_gc_removed_bytes_total",
        "ringstore_requests_in_progress",
        "ringstore_decoded_stripes_total",
        "ringstore_block_buffer_bytes",
        "ringstore_block_buffer_refused_total",
        "ringstore_block_buffer_admitted_bytes",
        "ringstore_admission_waits_total",
        "ringstore_admission_refused_total",
        "ringstore_deletions_pending",
        "ringstore_deletions_pending_chunks",
        "ringstore_scrub_pass_chunks",
        "ringstore_scrub_pass_checked_chunks",
    ):
        assert name in names
    reasons = {s.labels["reason"] for s in samples if s.name == "ringstore_decoded_reads_total"}
    assert reasons == {"absent", "down", "unreachable", "not_found", "corrupt", "slow", "failed"}


async def test_manifest_batches_count_the_requests_and_the_calls_they_carried(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    def counts(samples: list[Sample]) -> tuple[float, float]:
        batches = value(samples, "ringstore_manifest_batches_total")
        calls = value(samples, "ringstore_manifest_batched_calls_total")
        assert calls >= batches
        return batches, calls

    batches, calls = counts(await scrape(http, cluster[2].url))
    await put_file(http, cluster[2].url, "metrics/batched", payload(1000, 3))
    batches_after, calls_after = counts(await scrape(http, cluster[2].url))
    # At least the 2 replicas of its manifest that are not the coordinator itself.
    assert batches_after >= batches + 1
    assert calls_after >= calls + 2


async def test_ring_evenness_is_each_members_share_against_its_weight(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    samples = await scrape(http, cluster[3].url)
    expected = ring_balance(cluster[3].membership.ring)  # computed here, from the ring itself
    shares = {
        s.labels["member"]: s.value for s in samples if s.name == "ringstore_ring_token_share"
    }
    ratios = {
        s.labels["member"]: s.value for s in samples if s.name == "ringstore_ring_token_share_ratio"
    }
    assert set(shares) == set(ratios) == {peer.id for peer in cluster.peers}
    assert sum(shares.values()) == pytest.approx(1.0)
    for member in expected.members:
        assert shares[member.id] == pytest.approx(member.share)
        assert ratios[member.id] == pytest.approx(member.share * 7)  # equal weights: 1/7 fair
    assert value(samples, "ringstore_ring_token_share_ratio_max") == max(ratios.values())
    assert value(samples, "ringstore_ring_token_share_ratio_min") == min(ratios.values())
    assert value(samples, "ringstore_ring_token_share_ratio_cv") == pytest.approx(expected.cv)
    assert 0 < expected.cv < 0.1  # the default vnodes keep 7 equal members within a few %


async def test_metrics_need_a_key_unless_opened(
    cluster: LocalCluster, anonymous: aiohttp.ClientSession
) -> None:
    async with anonymous.get(f"{cluster[0].url}/metrics") as answer:
        assert answer.status == 401
        assert (await answer.json())["error"]["code"] == "unauthenticated"


async def test_a_request_id_reaches_the_logs_of_every_holder(
    cluster: LocalCluster, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())  # as the process's own handler has
    caplog.set_level(logging.INFO, logger="node.api.public")
    caplog.set_level(logging.DEBUG, logger="node.datapath.holder")
    caplog.set_level(logging.DEBUG, logger="node.access")  # (last: the handler's level)
    headers = {"X-Request-Id": "trace-put-0001"}
    async with http.put(
        f"{cluster[3].url}/files/metrics/traced", data=payload(20_000, 2), headers=headers
    ) as answer:
        assert answer.status == 201
        assert answer.headers["X-Request-Id"] == "trace-put-0001"
    manifest = await get_manifest(http, cluster[3].url, "metrics/traced")
    holders = {chunk["holder"] for chunk in manifest["chunks"]}
    assert len(holders) == 7

    def traced() -> set[str]:
        """Holders that logged the PUT's chunk: the route's access log, or, for the
        coordinator's own chunk (written without HTTP), the holder's own line."""
        over_http = served(caplog, "trace-put-0001", CHUNK_ROUTE.split("{", maxsplit=1)[0])
        return over_http | {
            record.peer  # type: ignore[attr-defined]
            for record in caplog.records
            if getattr(record, "request_id", None) == "trace-put-0001"
            and record.name == "node.datapath.holder"
            and "stored chunk" in record.msg
        }

    await eventually(lambda: traced() >= holders, what="every holder's log of the PUT")
    coordinator = [
        r
        for r in caplog.records
        if r.name == "node.api.public" and getattr(r, "request_id", None) == "trace-put-0001"
    ]
    assert coordinator, "the coordinator's own PUT line carries the id"
    assert coordinator[0].peer == cluster[3].id  # type: ignore[attr-defined]


@pytest.mark.parametrize("sent", ["has space", "x" * 200, "semi;colon", ""])
async def test_unsafe_request_ids_are_replaced(
    cluster: LocalCluster, anonymous: aiohttp.ClientSession, sent: str
) -> None:
    async with anonymous.get(f"{cluster[0].url}/health", headers={"X-Request-Id": sent}) as ok:
        assert ok.status == 200
        assert re.fullmatch(r"[0-9A-F]{16}", ok.headers["X-Request-Id"])


async def test_s3_answers_carry_the_same_request_id(
    cluster: LocalCluster, anonymous: aiohttp.ClientSession, http: aiohttp.ClientSession
) -> None:
    before = await scrape(http, cluster[0].url)
    s3 = {"listener": "s3", "method": "GET"}
    async with anonymous.get(cluster[0].s3_url + "/") as answer:  # anonymous: refused
        assert answer.status == 403
        assert answer.headers["x-amz-request-id"] == answer.headers["X-Request-Id"]
        assert f"<RequestId>{answer.headers['X-Request-Id']}</RequestId>" in await answer.text()
    headers = {"X-Request-Id": "s3-trace-7"}
    async with anonymous.get(cluster[0].s3_url + "/", headers=headers) as answer:
        assert answer.headers["x-amz-request-id"] == "s3-trace-7"
    after = await scrape(http, cluster[0].url)
    requests = "ringstore_http_requests_total"
    assert value(after, requests, **s3, status="403") == value(before, requests, **s3) + 2


def _metric_names(text: str) -> Iterator[str]:
    yield from re.findall(r"\b(?:ringstore|process)_[a-z_]+", text)


async def test_the_docs_alerts_and_dashboard_use_metrics_a_peer_exposes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    samples = await scrape(http, cluster[0].url)
    exposed = {s.name for s in samples}
    alerts = yaml.safe_load((DOCS / "alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert {"RingstorePeerDown", "RingstoreDegradedFiles", "RingstoreDiskNearlyFull"} <= {
        rule["alert"] for rule in rules
    }
    assert "RingstoreRepairFailing" in {rule["alert"] for rule in rules}
    dashboard = json.loads((DOCS / "grafana" / "ringstore.json").read_text())
    expressions = [rule["expr"] for rule in rules] + [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    used = {name for expr in expressions for name in _metric_names(expr)}
    assert used, "the docs query some metrics"
    assert used <= exposed, f"not exposed: {sorted(used - exposed)}"
