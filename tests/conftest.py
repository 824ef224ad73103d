"""Fixtures shared by the suite: HTTP sessions, in-process clusters, a blocked-loop guard."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.credentials import ACCESS_KEY_ENV, SECRET_KEY_ENV
from tests.harness import LocalCluster
from tests.harness.access import ADMIN, ADMIN_HEADERS
from tests.harness.watchdog import LoopWatchdog

SLOW_STEP = 1.0  # seconds one loop step may block before the test fails (wall time: generous)


@pytest.fixture
async def loop_guard() -> AsyncIterator[None]:
    """Fail a test whose event loop was blocked by one step for longer than SLOW_STEP, and
    show where: a disk write, a big hash or a ring build on the loop shows up here instead
    of as a mysteriously slow cluster."""
    async with LoopWatchdog(SLOW_STEP) as watchdog:
        yield
    assert not watchdog.stalls, "\n".join(watchdog.stalls)


# Clients a test makes (library and CLI) use the harness's admin key unless told otherwise.
os.environ[ACCESS_KEY_ENV], os.environ[SECRET_KEY_ENV] = ADMIN


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A session that sends the harness's admin key (Basic) with every request."""
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, headers=ADMIN_HEADERS) as session:
        yield session


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    """A session without credentials."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    """Settings the ``cluster`` fixture's peers get on top of the harness's FAST ones; a
    module that needs others (hang detection, quick repair) overrides this fixture."""
    return {}


@pytest.fixture
async def cluster(
    tmp_path: Path, loop_guard: None, cluster_overrides: dict[str, Any]
) -> AsyncIterator[LocalCluster]:
    """Seven in-process peers with small blocks, so small files span several stripes."""
    local = LocalCluster(tmp_path, **{"block_size": 4096, **cluster_overrides})
    try:
        await local.start(7)
        yield local
    finally:
        await local.stop()
