"""``ringstore up`` as a test runs it: a real supervisor process and its peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def ringstore_up(
    data: Path, base: int, peers: int, *flags: str, until: str
) -> AsyncIterator[str]:
    """``ringstore up -n PEERS --port BASE --data-dir DATA --discovery none FLAGS``, started;
    yields what it printed up to the first line holding ``until`` (each line within 60 s),
    and stops it with SIGTERM by its pid afterwards (it must exit 0 within 30 s)."""
    command = [
        sys.executable, "-m", "node", "up", "-n", str(peers), "--port", str(base),
        "--data-dir", str(data), "--discovery", "none", *flags,
    ]  # fmt: skip
    up = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        assert up.stdout is not None
        printed = ""
        while until not in printed:
            line = (await asyncio.wait_for(up.stdout.readline(), 60)).decode()
            assert line, f"ringstore up exited early:\n{printed}"
            printed += line
        yield printed
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 30) == 0
