"""A holder's marks on the conditional writes it kept whose verdict has not come."""

from __future__ import annotations

import time

import pytest

from node.datapath.holder import ProvisionalWrites
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.version import Version


def manifest(name: str, wall: int, revision: int = 0) -> Manifest:
    return Manifest(name, Version(wall, 0, "p"), Layout(0, 5, 0), revision=revision)


def test_a_mark_holds_for_exactly_its_write_until_cleared() -> None:
    marks = ProvisionalWrites(window=60.0)
    write = manifest("f", 5)
    marks.mark("f", write.precedence)
    assert marks.holds(write)
    assert not marks.holds(manifest("f", 5, revision=1))  # another revision: not marked
    assert not marks.holds(manifest("f", 4))
    assert not marks.holds(manifest("g", 5))
    marks.mark("f", manifest("f", 6).precedence)  # a second offer, refused or not yet in
    marks.clear("f", manifest("f", 6).precedence)
    assert marks.holds(write)
    marks.clear("f", write.precedence)
    assert not marks.holds(write)
    assert len(marks) == 0


def test_a_verdict_that_never_comes_is_assumed_after_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    marks = ProvisionalWrites(window=30.0)
    write = manifest("f", 5)
    marks.mark("f", write.precedence)
    now[0] += 29.9
    assert marks.holds(write)
    now[0] += 0.2
    assert not marks.holds(write)
    assert len(marks) == 0


def test_marks_of_writes_whose_coordinator_died_do_not_pile_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    marks = ProvisionalWrites(window=30.0)
    for i in range(5000):  # never cleared, never read again
        marks.mark(f"name-{i}", manifest(f"name-{i}", 5).precedence)
        now[0] += 0.1  # 500 s in all: most expire on the way
    assert len(marks) <= 1024 + 300
