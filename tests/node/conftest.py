"""Fixtures shared by the tests of ``tests/node``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness import LocalCluster


@pytest.fixture
async def two_peers(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """Two in-process peers of a fresh cluster: one to call, one to be called."""
    local = LocalCluster(tmp_path)
    try:
        await local.start(2)
        yield local
    finally:
        await local.stop()
