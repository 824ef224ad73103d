"""Free ports on 127.0.0.1 for peers the tests start (one place for every test and bench)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick; a race with other processes is
    possible but harmless: a peer that cannot bind fails its start loudly)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on now.

    Each port stays bound until all are picked: picked one by one and released at once,
    the kernel may hand out the same port twice (seen: two peers of one ProcessCluster given
    one port, the second failed to start and the cluster never converged).
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# ``ringstore up`` serves S3 on its ports + 1000 (node.process.supervisor.S3_PORT_OFFSET)
# and, with --files-shared, the files API on its port + 2000 (SHARED_PORT_OFFSET)
UP_OFFSETS = (0, 1000, 2000)


def free_port_block(count: int, offsets: tuple[int, ...] = UP_OFFSETS) -> int:
    """A base port with ``count`` consecutive free ports after it, and after base + each
    of ``offsets`` (for ``ringstore up``: its peers' ports, and their S3 ports).

    All below the kernel's ephemeral range: there, the outgoing connections of peers that
    started first (their channels, gossip) may take a port before the peer it was meant for
    binds it (seen: ``ringstore up``'s fourth peer refused its port, "address in use")."""
    ceiling = _ephemeral_low() - max(offsets) - count
    start = 10000 + os.getpid() % 1000 * 20 % max(1, ceiling - 10000)
    for base in [*range(start, ceiling, 37), *range(10000, start, 37)]:
        sockets: list[socket.socket] = []
        try:
            for port in (b + i for b in (base + o for o in offsets) for i in range(count)):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports")


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
