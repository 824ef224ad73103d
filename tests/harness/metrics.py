"""Reading a peer's ``/metrics`` (Prometheus text) in tests and benchmarks."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


async def scrape(http: aiohttp.ClientSession, url: str) -> list[Sample]:
    """Every sample the peer at ``url`` exposes (``http`` must carry the admin key)."""
    async with http.get(f"{url}/metrics") as answer:
        assert answer.status == 200, await answer.text()
        assert answer.content_type == "text/plain"
        text = await answer.text()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
