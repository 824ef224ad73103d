"""A data directory belongs to one peer process at a time (``lock_data_dir``)."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.disk.data_dir import LOCK_FILE, lock_data_dir
from node.errors import StartRefused

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("held", flush=True)
sys.stdin.read()  # until the test closes it
"""


def test_the_lock_is_exclusive_names_its_holder_and_goes_with_its_descriptor(
    tmp_path: Path,
) -> None:
    fd = lock_data_dir(tmp_path)
    try:
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            StartRefused, match=f"in use by another process \\(pid {os.getpid()}\\)"
        ):
            lock_data_dir(tmp_path)
    finally:
        os.close(fd)
    os.close(lock_data_dir(tmp_path))  # released: taken again


def test_a_lock_another_process_holds_is_refused_until_that_process_ends(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / LOCK_FILE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"  # (the per-test timeout bounds it)
        with pytest.raises(StartRefused, match=f"pid {holder.pid}"):
            lock_data_dir(tmp_path)
    finally:
        holder.kill()  # as kill -9 would end it: the kernel drops its lock
        holder.communicate(timeout=10)
    fd = lock_data_dir(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    os.close(fd)


def test_a_file_system_without_locks_warns_and_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    fd = lock_data_dir(tmp_path)
    try:
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert "cannot lock" in caplog.text
    finally:
        os.close(fd)
