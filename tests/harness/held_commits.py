"""A real ``ringstore peer`` process whose manifest log or chunk volumes can be stopped in
the middle of a group commit, so that a test's SIGKILL lands inside one deterministically.

Run as ``python -m tests.harness.held_commits peer ARGS...`` (``hold_commits`` makes a
``PeerProcess`` do so). While the file ``HOLD`` (``HOLD_CHUNKS``) exists in the peer's data
directory, the next batch the manifest log (the chunk volumes) appends is written only
halfway, the file removed, ``HELD`` written (JSON: the names or chunk ids in the batch, its
offset and size, the bytes written) and the writing thread stopped until the process is
killed: the state a crash in the middle of an append leaves, with the batch's writes never
acknowledged.
"""

from __future__ import annotations

import errno
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from node.disk import chunk_volumes
from node.disk.durable import write_atomically
from node.disk.manifest_log import FRAME, LogRecord, SegmentIO
from node.model.digests import Buffer
from node.process.supervisor import PeerProcess

HOLD = "hold-commits"
HOLD_CHUNKS = "hold-chunk-commits"
HELD = "commit-held"
MODULE = "tests.harness.held_commits"


def hold_commits(peer: PeerProcess) -> None:
    """Run ``peer`` through this module (its next starts)."""
    command = peer._command  # as NetnsPeerProcess wraps it
    command[command.index("node")] = MODULE


def names_in(batch: bytes) -> list[str]:
    names, at = [], 0
    while at < len(batch):
        _, size, _ = FRAME.unpack_from(batch, at)
        payload = batch[at + FRAME.size : at + FRAME.size + size]
        names.append(msgspec.msgpack.decode(payload, type=LogRecord).name)
        at += FRAME.size + size
    return names


def chunk_ids_in(batch: bytes) -> list[str]:
    ids, at = [], 0
    while at < len(batch):
        _, size, _ = chunk_volumes.FRAME.unpack_from(batch, at)
        head = batch[at + chunk_volumes.FRAME.size : at + chunk_volumes.FRAME.size + size]
        ids.append(chunk_volumes.HEAD.unpack_from(head)[1].rstrip(b"\x00").decode())
        at += chunk_volumes.FRAME.size + size
    return ids


def stall() -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # a stuck disk: the test kills the process
        time.sleep(0.05)
    raise OSError(errno.EIO, "held commit never killed")


def main() -> None:
    data_dir = Path(sys.argv[sys.argv.index("--data-dir") + 1])
    write = SegmentIO.write
    write_chunks = chunk_volumes._writev

    def held_write(self: SegmentIO, fd: int, data: bytes, offset: int) -> None:
        hold = data_dir / HOLD
        if offset == 0 or not hold.exists():  # offset 0: a new segment's header
            write(self, fd, data, offset)
            return
        hold.unlink()
        half = len(data) // 2
        write(self, fd, data[:half], offset)
        report = {"names": names_in(data), "offset": offset, "size": len(data), "written": half}
        write_atomically(data_dir / HELD, json.dumps(report).encode())
        stall()

    def held_chunk_write(fd: int, pieces: Sequence[Buffer], offset: int) -> None:
        hold = data_dir / HOLD_CHUNKS
        if offset == 0 or not hold.exists():  # offset 0: a new volume's header
            write_chunks(fd, pieces, offset)
            return
        hold.unlink()
        data = b"".join(pieces)
        half = len(data) // 2
        write_chunks(fd, [data[:half]], offset)
        report = {"names": chunk_ids_in(data), "offset": offset, "size": len(data), "written": half}
        write_atomically(data_dir / HELD, json.dumps(report).encode())
        stall()

    SegmentIO.write = held_write  # type: ignore[method-assign]
    chunk_volumes._writev = held_chunk_write
    from node.process.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
