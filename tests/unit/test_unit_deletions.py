"""The pending-deletion journal: what was added and not done comes back after a restart."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from node.disk import deletions
from node.disk.deletions import LOG_FILE, DeletionLog, PendingDeletion


def test_pending_deletions_survive_a_restart_and_done_ones_do_not(tmp_path: Path) -> None:
    journal = DeletionLog(tmp_path)
    assert journal.open() == []
    first = journal.add("ns/a", {("peer-1", "c1"), ("peer-2", "c2")}, due=100.0)
    second = journal.add("ns/b", [("peer-3", "c3")], due=50.0)
    journal.done(first)
    journal.close()
    again = DeletionLog(tmp_path)
    pending = again.open()
    assert [(p.name, p.due, p.chunks) for p in pending] == [
        ("ns/b", 50.0, frozenset({("peer-3", "c3")}))
    ]
    third = again.add("ns/c", [("peer-1", "c9")], due=10.0)
    assert third.id > second.id  # ids never repeat across restarts
    again.close()
    # Compacted at open: only what was pending then, plus what came after.
    assert len(reopened(tmp_path)) == 2


def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    journal = DeletionLog(tmp_path)
    journal.open()
    journal.add("ns/a", [("peer-1", "c1")], due=1.0)
    journal.add("ns/b", [("peer-1", "c2")], due=2.0)
    journal.close()
    log = tmp_path / LOG_FILE
    log.write_bytes(log.read_bytes()[:-3])  # a crash in the middle of the last append
    assert [p.name for p in reopened(tmp_path)] == ["ns/a"]
    log.write_bytes(b"\xc1garbage")  # not msgpack at all: nothing pending, no crash
    assert reopened(tmp_path) == []


def test_a_full_disk_leaves_the_journal_uncompacted_and_the_peer_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compacting at open writes a new file: with no room (a full disk, where a peer most
    needs its deletions to go on) it is kept as it is; a peer failed to start there."""
    journal = DeletionLog(tmp_path)
    journal.open()
    done = journal.add("ns/a", [("peer-1", "c1")], due=1.0)
    journal.add("ns/b", [("peer-1", "c2")], due=2.0)
    journal.done(done)
    journal.close()
    before = (tmp_path / LOG_FILE).read_bytes()

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(deletions, "write_atomically", full)
    again = DeletionLog(tmp_path)
    assert [p.name for p in again.open()] == ["ns/b"]
    again.close()
    assert (tmp_path / LOG_FILE).read_bytes() == before
    # A torn last record (what a full disk's short write leaves): cut off, not written
    # after, where compaction cannot drop it (records after it were lost at the next open).
    (tmp_path / LOG_FILE).write_bytes(before + b"\x93\x01")
    third = DeletionLog(tmp_path)
    third.open()
    third.add("ns/new", [("peer-1", "c3")], due=3.0)
    third.close()
    monkeypatch.undo()
    assert [p.name for p in reopened(tmp_path)] == ["ns/b", "ns/new"]


def reopened(data_dir: Path) -> list[PendingDeletion]:
    journal = DeletionLog(data_dir)
    try:
        return journal.open()
    finally:
        journal.close()
