"""What a peer's data directory holds besides its stores: its id, and the space left.

Layout under the data directory (the stores document their own parts)::

    peer-id          this peer's UUID, created on first start, never changed
    lock             flock(2)ed by the peer process using the directory; its pid inside
    cluster-secret.json   the cluster's id and secrets (``node.model.identity``), mode 0600
    members.msgpack  the member list (``node.cluster.membership``)
    credentials      the admin access key made with the cluster (AWS shared-credentials
                     INI, ``[default]``), mode 0600; admin-key.pending while it is not yet
                     stored on the ring
    namespaces.adopted   present once the namespaces of files written before access keys
                     were made
    pending-deletes.log  chunks to delete later, kept across restarts (``node.disk.deletions``)
    chunks/ incoming/ manifests/   the stores
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import fcntl
import io
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from node.disk.durable import write_atomically
from node.errors import StartRefused
from node.model.identity import ClusterIdentity

log = logging.getLogger(__name__)

PEER_ID_FILE = "peer-id"
LOCK_FILE = "lock"
IDENTITY_FILE = "cluster-secret.json"
RETIRED_FILE = "retired-secrets.json"  # key ids a rotation retired (node.process.identity)
MEMBERS_FILE = "members.msgpack"
CREDENTIALS_FILE = "credentials"
PENDING_KEY_FILE = "admin-key.pending"
ADOPTED_FILE = "namespaces.adopted"  # namespaces of older files were made (once)


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory, private to its owner (0700: it holds the cluster secret).
    Raises StartRefused saying why the file system refused (read-only, full, no access)."""
    with _refused_by_the_disk(data_dir):
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(data_dir.stat().st_mode) & 0o077:
            log.warning("%s was readable by others; making it private (0700)", data_dir)
            data_dir.chmod(0o700)


@contextlib.contextmanager
def _refused_by_the_disk(data_dir: Path) -> Iterator[None]:
    """OSError as StartRefused: the operator's to fix (a read-only or full file system, a
    directory of another user), said in one line, not a traceback."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename else ""
        raise StartRefused(f"cannot use {data_dir} as a data directory: {reason}{where}") from None


def lock_data_dir(data_dir: Path) -> int:
    """Take ``data_dir``'s exclusive lock (``flock(2)`` on ``lock``, which then holds this
    pid) for as long as the returned descriptor is open; the kernel releases it when the
    process ends, however it ends. Blocking: at start, before the stores open.

    Raises StartRefused when another process holds it: a second peer on one directory would
    empty ``incoming/`` under the first one's writes and cut back the tail of the manifest
    log it is appending to.
    """
    with _refused_by_the_disk(data_dir):
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StartRefused(
            f"{data_dir} is in use by another process (pid {holder}); stop it first, "
            "or give this one a data directory of its own"
        ) from None
    except OSError as exc:  # a file system without flock (some NFS and FUSE mounts)
        log.warning("cannot lock %s (%s): make sure no other peer uses it", data_dir, exc)
    except BaseException:
        os.close(fd)
        raise
    try:
        with _refused_by_the_disk(data_dir):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except StartRefused:
        os.close(fd)
        raise
    return fd


def is_fresh(data_dir: Path) -> bool:
    """True when ``data_dir`` has never been a peer's (no peer id yet)."""
    return not (data_dir / PEER_ID_FILE).exists()


def load_identity(path: Path) -> ClusterIdentity | None:
    """The identity in secret file ``path`` (a data directory: its copy), or None if absent.

    Raises ValueError naming the file when it is unreadable, not private (group or others
    may read it) or damaged; the message never holds the secret.
    """
    if path.is_dir():
        path = path / IDENTITY_FILE
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ValueError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        return ClusterIdentity.from_json(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def save_identity(path: Path, identity: ClusterIdentity) -> None:
    """Write ``identity`` to secret file ``path`` (a data directory: its copy), mode 0600."""
    if path.is_dir():
        path = path / IDENTITY_FILE
    write_atomically(path, identity.to_json(), mode=0o600)


def load_peer_id(data_dir: Path) -> str:
    """The peer's stable id, created on first start (blocking).

    Raises StartRefused when the file exists but holds no UUID: guessing would make this peer
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
        raise StartRefused(f"{path} does not hold a peer id; fix or remove it") from None


PROBE_FILE = "incoming/ready-probe"  # written and removed by ``WriteProbe``
PROBE_EVERY = 1.0  # seconds a probe's verdict is reused
PROBE_TIMEOUT = 5.0  # seconds a probe may take before the disk counts as not writable


def probe_write(data_dir: Path) -> None:
    """Write, fsync and remove a small file where chunks are received (blocking); raises
    OSError when the data directory does not take writes (read-only, full, gone)."""
    path = data_dir / PROBE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"ringstore readiness probe\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()


class WriteProbe:
    """Whether the data directory takes writes, probed at most once per ``every`` seconds.

    One probe runs at a time, in a worker thread; a disk that hangs (a dead network mount)
    is reported after ``timeout`` seconds while the thread stays stuck, and later checks wait
    on that same probe instead of starting more threads.
    """

    def __init__(
        self, data_dir: Path, every: float = PROBE_EVERY, timeout: float = PROBE_TIMEOUT
    ) -> None:
        self._data_dir = data_dir
        self._every = every
        self._timeout = timeout
        self._running: asyncio.Future[None] | None = None
        self._checked_at = float("-inf")
        self._problem: str | None = None

    def __repr__(self) -> str:
        return f"WriteProbe({self._data_dir}, problem={self._problem!r})"

    async def problem(self) -> str | None:
        """None when the last probe wrote, else what went wrong (for ``/ready``)."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._checked_at < self._every:
            return self._problem
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(probe_write, self._data_dir))
            self._running.add_done_callback(_retrieved)  # its error may come after timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self._timeout)
            self._problem = None
        except asyncio.TimeoutError:
            self._problem = f"a write to the data directory took over {self._timeout:g}s"
        except OSError as exc:
            self._problem = f"the data directory takes no writes: {exc.strerror or exc}"
        self._checked_at = loop.time()
        return self._problem


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def disk_usage(data_dir: Path) -> tuple[int, int]:
    """Total size and free bytes of the data directory's file system (one statvfs call)."""
    usage = shutil.disk_usage(data_dir)
    return usage.total, usage.free


def save_credentials(path: Path, access_key: str, secret: str) -> None:
    """Write an access key to ``path`` as the ``[default]`` profile of an AWS shared
    credentials file (awscli, boto3 and ringstore read it), mode 0600."""
    ini = configparser.ConfigParser()
    ini["default"] = {"aws_access_key_id": access_key, "aws_secret_access_key": secret}
    text = io.StringIO()
    ini.write(text)
    write_atomically(path, text.getvalue().encode(), mode=0o600)


def load_credentials(path: Path) -> tuple[str, str] | None:
    """``(access key, secret)`` of the ``[default]`` profile in ``path``, or None when the
    file or the profile is absent. Raises ValueError for a file that is not INI."""
    ini = configparser.ConfigParser()
    try:
        ini.read_string(path.read_text())
    except FileNotFoundError:
        return None
    except configparser.Error as exc:
        raise ValueError(f"{path} is not a credentials file: {exc.message}") from None
    if not ini.has_option("default", "aws_access_key_id"):
        return None
    section = ini["default"]
    access_key, secret = section["aws_access_key_id"], section.get("aws_secret_access_key", "")
    if not (access_key and secret):
        raise ValueError(f"{path}: [default] needs both aws_access_key_id and its secret")
    return access_key, secret
