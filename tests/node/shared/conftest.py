"""Modules whose tests share one in-process cluster per module, on the module's event loop.

Starting seven peers per test costs more than most such tests themselves, so here ``cluster``
is seven peers (4 KiB blocks) started once per module, and ``http`` a session on the
module's loop. A module that needs other settings for its peers overrides
``shared_overrides``. Every test must use names of its own and leave the peers as it found them.
A loop watchdog runs for the whole module and fails the test during which the loop was
blocked. Modules here mark themselves ``pytest.mark.asyncio(loop_scope="module")``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.harness import LocalCluster
from tests.harness.access import ADMIN_HEADERS
from tests.harness.fuzzing import CASES
from tests.harness.watchdog import LoopWatchdog

BLOCK = 4096  # the shared cluster's block size: one stripe is 5 blocks


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def watchdog() -> AsyncIterator[LoopWatchdog]:
    """One loop watchdog for the module's loop (the shared cluster runs on it)."""
    async with LoopWatchdog(1.0) as dog:
        yield dog


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def no_stall(watchdog: LoopWatchdog) -> AsyncIterator[None]:
    """Fail the test during which the loop was blocked (the stall names the code)."""
    before = len(watchdog.stalls)
    yield
    assert len(watchdog.stalls) == before, "\n".join(watchdog.stalls[before:])


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    """Settings of the module's peers on top of the harness's; a module may override it."""
    return {}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    watchdog: LoopWatchdog,
    shared_overrides: dict[str, Any],
) -> AsyncIterator[LocalCluster]:
    """Seven peers with small blocks, shared by the module."""
    overrides = {"block_size": BLOCK, **shared_overrides}
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), **overrides)
    try:
        await local.start(7)
        yield local
    finally:
        await local.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A session that sends the harness's admin key with every request."""
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, headers=ADMIN_HEADERS) as session:
        yield session


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many cases the fuzz suites ran (``tests.harness.fuzzing.CASES``)."""
    if CASES:
        counts = ", ".join(f"{count} {kind}" for kind, count in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases run: {counts}")
