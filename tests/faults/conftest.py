"""Fixtures of the process-level fault suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import ProcessCluster

BLOCK = 4096  # small blocks: small files still span several stripes


@pytest.fixture
async def seven(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[ProcessCluster]:
    """Seven peer processes with small blocks, stopped by the test that used them."""
    cluster = ProcessCluster(tmp_path, 7, f"--block-size={BLOCK}")
    try:
        await cluster.start(http)
        yield cluster
    finally:
        await cluster.stop()
