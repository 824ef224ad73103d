"""What a peer's data directory holds besides its stores: its id, and the space left.

Layout under the data directory (the stores document their own parts)::

    peer-id          this peer's UUID, created on first start, never changed
    members.msgpack  the member list (``node.cluster.membership``)
    chunks/ incoming/ manifests/   the stores
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from node.disk.durable import write_atomically

PEER_ID_FILE = "peer-id"


def load_peer_id(data_dir: Path) -> str:
    """The peer's stable id, created on first start (blocking).

    Raises SystemExit when the file exists but holds no UUID: guessing would make this peer
    a new member and orphan every chunk it holds.
    """
    path = data_dir / PEER_ID_FILE
    try:
        return str(uuid.UUID(path.read_text().strip()))
    except FileNotFoundError:
        peer_id = str(uuid.uuid4())
        write_atomically(path, f"{peer_id}\n".encode())
        return peer_id
    except ValueError:
        raise SystemExit(f"{path} does not hold a peer id; fix or remove it") from None


def disk_usage(data_dir: Path) -> tuple[int, int]:
    """Total size and free bytes of the data directory's file system (one statvfs call)."""
    usage = shutil.disk_usage(data_dir)
    return usage.total, usage.free
