"""Fixtures shared by the tests of ``tests/node``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.cluster.transport import Address, HttpTransport
from tests.harness import LocalCluster
from tests.harness.peer_api import peer_transport


@pytest.fixture
async def two_peers(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """Two in-process peers of a fresh cluster: one to call, one to be called."""
    local = LocalCluster(tmp_path)
    try:
        await local.start(2)
        yield local
    finally:
        await local.stop()


@pytest.fixture
async def caller(two_peers: LocalCluster) -> AsyncIterator[tuple[HttpTransport, Address]]:
    """The first of ``two_peers``' transport (on a session of its own), and the second's
    address."""
    target = two_peers[1]
    async with peer_transport(two_peers[0].auth) as transport:
        yield transport, Address(target.url, target.id)
