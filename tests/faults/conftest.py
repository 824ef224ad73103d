"""Fixtures of the process-level fault suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.harness import ProcessCluster
from tests.harness.local import INLINE

BLOCK = 4096  # small blocks: small files still span several stripes


@pytest.fixture
async def seven(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[ProcessCluster]:
    """Seven peer processes with small blocks, stopped by the test that used them."""
    async with started(tmp_path, http, f"--block-size={BLOCK}") as cluster:
        yield cluster


@pytest.fixture
async def seven_inline(
    tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[ProcessCluster]:
    """``seven`` with a real peer's ``--inline-max`` (files up to 16 KiB in manifests)."""
    inline = f"--inline-max={INLINE['inline_max']}"
    async with started(tmp_path, http, f"--block-size={BLOCK}", inline) as cluster:
        yield cluster


@asynccontextmanager
async def started(
    root: Path, http: aiohttp.ClientSession, *args: str
) -> AsyncIterator[ProcessCluster]:
    cluster = ProcessCluster(root, 7, *args)
    try:
        await cluster.start(http)
        yield cluster
    finally:
        await cluster.stop()
