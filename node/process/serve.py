"""Running one peer process until SIGTERM or SIGINT, then stopping it cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from node.api.keys import MEMBERSHIP
from node.config import PeerConfig
from node.errors import StartRefused
from node.process.tls import TlsFiles, server_context
from node.process.wiring import create_app

log = logging.getLogger(__name__)


async def serve(config: PeerConfig) -> None:
    """Serve ``config`` until the process is asked to stop.

    Raises SystemExit with the reason when the peer must not start (StartRefused).
    """
    files = TlsFiles.of(config)
    tls = server_context(files) if files is not None else None  # bad files: fail before binding
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    try:
        await runner.setup()
    except StartRefused as exc:
        await runner.cleanup()
        raise SystemExit(f"ringstore peer: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True, ssl_context=tls)
        await site.start()
        log.info("peer %s listening on %s", app[MEMBERSHIP].me.id, config.url)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
