"""Fixtures shared by the suite: HTTP sessions, in-process clusters, a blocking-call guard."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import LocalCluster

SLOW_CALLBACK = 1.0  # seconds one loop step may take before the test fails (wall time: generous)


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "took" in message and "seconds" in message:
            self.records.append(message)


@pytest.fixture
async def loop_guard() -> AsyncIterator[None]:
    """Fail a test whose event loop was blocked by one step for longer than SLOW_CALLBACK.

    asyncio's debug mode times every callback; a disk write or a big hash on the loop shows
    up here instead of as a mysteriously slow cluster.
    """
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, f"the event loop was blocked: {handler.records}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.fixture
async def cluster(tmp_path: Path, loop_guard: None) -> AsyncIterator[LocalCluster]:
    """Seven in-process peers with small blocks, so small files span several stripes."""
    local = LocalCluster(tmp_path, block_size=4096)
    try:
        await local.start(7)
        yield local
    finally:
        await local.stop()
