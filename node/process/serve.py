"""Running one peer process until SIGTERM or SIGINT, then stopping it cleanly."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import signal

from aiohttp import web

from node.api.keys import MEMBERSHIP
from node.config import PeerConfig
from node.errors import StartRefused
from node.process.connections import PeerRunner, unbindable
from node.process.event_loop import running
from node.process.memory import collect_less, limit_arenas, settle_collector
from node.process.parent import named_parent, stop_with_parent
from node.process.tls import TlsFiles, server_context
from node.process.wiring import create_app

log = logging.getLogger(__name__)


async def serve(config: PeerConfig) -> None:
    """Serve ``config`` until the process is asked to stop.

    Raises SystemExit with the reason when the peer must not start (StartRefused).
    """
    collect_less()
    limit_arenas()  # before the worker threads start (node.process.memory)
    parent = named_parent()  # (before any thread: it changes the environment)
    files = TlsFiles.of(config)
    tls = server_context(files) if files is not None else None  # bad files: fail before binding
    config = _open_files_for(config)
    app = create_app(config)
    runner = PeerRunner(app, handle_signals=False)
    try:
        await runner.setup()
    except StartRefused as exc:
        await runner.cleanup()
        raise SystemExit(f"ringstore peer: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if parent is not None:  # started by ``ringstore up``: a SIGTERM once it is gone
        stop_with_parent(parent, stop.set)
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:  # EADDRINUSE, EACCES: the operator's to fix, no traceback
            raise SystemExit(f"ringstore peer: cannot serve: {unbindable(exc)}") from None
        me, loop_kind = app[MEMBERSHIP].me.id, running()
        log.info("peer %s listening on %s (event loop: %s)", me, config.url, loop_kind)
        settle_collector()
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


FILES_RESERVE = 256
"""Open files kept for what is not a connection or a peer call: stores, logs, mDNS."""

MIN_CONNECTIONS = 16
"""The fewest connections per port ``fitted_to`` leaves a peer."""

MIN_REQUESTS = 4
"""The fewest public requests at once ``fitted_to`` leaves a peer."""


def _open_files_for(config: PeerConfig) -> PeerConfig:
    """Raise this process's limit on open files to what ``config`` may need, if the hard
    limit allows; else return ``config`` fitted to the limit (``fitted_to``), with a
    warning. Past the limit the kernel refuses ``accept`` (EMFILE) and the event loop
    resets the newcomer unheard and unlogged, and a peer call's ``connect`` fails, counted
    against a healthy peer; held under it, the peer closes idle connections for newcomers
    or answers 503, and says so."""
    needed = descriptors_needed(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.debug("cannot raise the open-file limit: %s", exc)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return config
    fitted = fitted_to(config, soft)
    log.warning(
        "the open-file limit is %d, and --max-connections %d with --max-requests %d may "
        "need %d: holding them to %d and %d%s (raise the limit with ulimit -n)",
        soft,
        config.max_connections,
        config.max_requests,
        needed,
        fitted.max_connections,
        fitted.max_requests,
        "" if descriptors_needed(fitted) <= soft else ", and even those may not fit",
    )
    return fitted


def fitted_to(config: PeerConfig, limit: int) -> PeerConfig:
    """``config`` with ``max_connections`` (each port's) and ``max_requests`` lowered by one
    factor, so that what they may need (``descriptors_needed``) fits an open-file ``limit``;
    never below ``MIN_CONNECTIONS`` and ``MIN_REQUESTS`` (nor above what was asked)."""
    ports, calls = _ports(config), config.k + config.m
    wanted = ports * config.max_connections + config.max_requests * calls
    spare = max(0, limit - FILES_RESERVE)
    if wanted <= spare:
        return config
    share = spare / wanted
    connections = max(int(config.max_connections * share), MIN_CONNECTIONS)
    requests = max(int(config.max_requests * share), MIN_REQUESTS)
    return dataclasses.replace(
        config,
        max_connections=min(config.max_connections, connections),
        max_requests=min(config.max_requests, requests),
    )


def _ports(config: PeerConfig) -> int:
    """The ports a peer serves, each with its own connections."""
    return 1 + (config.s3_port is not None) + (config.shared_port is not None)


def descriptors_needed(config: PeerConfig) -> int:
    """Open files a peer may need at its limits: every connection of each port it serves
    (``--max-connections`` each), one peer call per chunk of every public request it
    coordinates, and some for stores, logs and mDNS."""
    calls = config.max_requests * (config.k + config.m)
    return _ports(config) * config.max_connections + calls + FILES_RESERVE
