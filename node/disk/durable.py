"""Writing small files so that a crash leaves either the old content or the new, never a mix.

Blocking: call from a worker thread, or at start-up before the peer serves.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: Path, data: bytes, mode: int = 0o644, sync_directory: bool = True
) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync of the directory.

    The file is created with ``mode`` (less the umask), so a secret is never readable by
    others, not even before a chmod. Without ``sync_directory`` the rename is not yet
    durable: the caller fsyncs the directory itself (after a rename of its own there).
    """
    temp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if sync_directory:
        fsync_dir(path.parent)


def cut_torn_tail(
    fd: int, start: int, end: int, what: str, sync: Callable[[int], None] = os.fdatasync
) -> None:
    """Cut bytes ``[start, end)`` off the end of the newest file of an append-only store
    (``what`` names it in the warning logged): a write torn by a crash, never acknowledged
    (acknowledged only after its sync). The cut is synced with ``sync``."""
    log.warning(
        "%s: torn tail of %d bytes at %d (a write never acknowledged) truncated",
        what,
        end - start,
        start,
    )
    os.ftruncate(fd, start)
    sync(fd)
