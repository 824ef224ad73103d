"""The ``ringstore`` command: ``peer`` and ``up`` run the store; the client adds file commands."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from node.config import PeerConfig
from node.model.layout import DEFAULT_BLOCK_SIZE, DEFAULT_K, DEFAULT_M


@click.group()
@click.version_option(package_name="ringstore")
def main() -> None:
    """ringstore: a peer-to-peer file store on a consistent-hash ring."""


def _setup_logging(level: str, tag: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"%(asctime)s %(levelname)-7s [{tag}] %(name)s: %(message)s",
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where this peer keeps its id, members, chunks and manifests.",
)
@click.option("--join", multiple=True, metavar="URL", help="A peer to join (repeatable).")
@click.option("--weight", default=1, show_default=True, type=click.IntRange(1, 1000))
@click.option("--parity", default=DEFAULT_M, show_default=True, type=click.IntRange(0, 10))
@click.option("--block-size", default=DEFAULT_BLOCK_SIZE, show_default=True, type=click.IntRange(1))
@click.option("--heartbeat-interval", default=1.0, show_default=True, type=click.FloatRange(0.05))
@click.option("--peer-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--stall-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--delete-grace", default=30.0, show_default=True, type=click.FloatRange(0))
@click.option(
    "--discovery",
    type=click.Choice(["zeroconf", "none"]),
    default="zeroconf",
    show_default=True,
    help="Find peers with mDNS on the serving address, or only through --join.",
)
@click.option("--cluster", default="ringstore", show_default=True, help="mDNS cluster name.")
@click.option("--interface", metavar="ADDR", help="Address for mDNS (default: --host).")
@click.option("--service-type", default="_ringstore._tcp.local.", hidden=True)
@click.option(
    "--rebalance-rate",
    default=50.0,
    show_default=True,
    type=click.FloatRange(0),
    help="MB/s this peer moves after a join (0: unthrottled).",
)
@click.option(
    "--rebalance-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds between full passes that resume unfinished moves.",
)
@click.option(
    "--repair-after",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a holder may be down before its chunks are rebuilt elsewhere.",
)
@click.option(
    "--repair-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds between sweeps for chunks needing repair.",
)
@click.option(
    "--scrub-rate", default=20.0, show_default=True, type=click.FloatRange(0), help="MB/s."
)
@click.option("--scrub-interval", default=3600.0, show_default=True, type=click.FloatRange(0))
@click.option(
    "--gc-grace",
    default=600.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds before an unreferenced chunk is garbage.",
)
@click.option(
    "--orphan-grace",
    default=86400.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds before a chunk no manifest knows is garbage.",
)
@click.option("--max-bytes", type=click.IntRange(0), help="Chunk bytes this peer may hold.")
@click.option("--log-level", default="info", show_default=True)
def peer(
    host: str,
    port: int,
    data_dir: Path,
    join: tuple[str, ...],
    weight: int,
    parity: int,
    block_size: int,
    heartbeat_interval: float,
    peer_timeout: float,
    stall_timeout: float,
    delete_grace: float,
    discovery: str,
    cluster: str,
    interface: str | None,
    service_type: str,
    rebalance_rate: float,
    rebalance_interval: float,
    repair_after: float,
    repair_interval: float,
    scrub_rate: float,
    scrub_interval: float,
    gc_grace: float,
    orphan_grace: float,
    max_bytes: int | None,
    log_level: str,
) -> None:
    """Run one peer."""
    from node.process.serve import serve

    _setup_logging(log_level, f"{host}:{port}")
    config = PeerConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        join=join,
        weight=weight,
        k=DEFAULT_K,
        m=parity,
        block_size=block_size,
        heartbeat_interval=heartbeat_interval,
        peer_timeout=peer_timeout,
        stall_timeout=stall_timeout,
        delete_grace=delete_grace,
        discovery=discovery,
        cluster=cluster,
        interface=interface,
        service_type=service_type,
        rebalance_rate=rebalance_rate * 1e6,
        rebalance_interval=rebalance_interval,
        repair_after=repair_after,
        repair_interval=repair_interval,
        scrub_rate=scrub_rate * 1e6,
        scrub_interval=scrub_interval,
        gc_grace=gc_grace,
        orphan_grace=orphan_grace,
        max_bytes=max_bytes,
    )
    asyncio.run(serve(config))


@main.command()
@click.option("-n", "--peers", "count", default=7, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--data-dir", default=Path("data"), show_default=True, type=click.Path(path_type=Path)
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--discovery", type=click.Choice(["zeroconf", "none"]), default="zeroconf", show_default=True
)
@click.option("--service-type", default=None, hidden=True)
@click.option("--log-level", default="info", show_default=True)
def up(
    count: int,
    data_dir: Path,
    port: int,
    host: str,
    discovery: str,
    service_type: str | None,
    log_level: str,
) -> None:
    """Start N peers on this machine and supervise them until Ctrl-C."""
    from node.process.supervisor import Supervisor

    _setup_logging(log_level, "up")
    supervisor = Supervisor(count, data_dir, port, host, log_level, discovery, service_type)
    raise SystemExit(asyncio.run(supervisor.run()))


# The file commands (put, get, ls, rm, stat, status) belong to the client package.
from client.cli import register  # noqa: E402

register(main)
