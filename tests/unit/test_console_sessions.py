"""Console sessions (node.access.sessions): they expire, are bounded in number, end at
logout and with their key, and never show their tokens."""

from __future__ import annotations

from node.access.sessions import Sessions


def test_sessions_expire_and_are_bounded() -> None:
    now = [1000.0]
    sessions = Sessions(ttl=60.0, max_sessions=3, now=lambda: now[0])
    first = sessions.open("AK1")
    assert sessions.get(first.token) == first
    assert first.checks(first.csrf_token)
    assert not first.checks("x")
    assert not first.checks(None)
    assert first.token not in repr(first)
    assert first.csrf_token not in repr(first)
    now[0] += 59.0
    assert sessions.get(first.token) is not None
    now[0] += 1.0
    assert sessions.get(first.token) is None  # expired, and forgotten
    assert len(sessions) == 0
    made = [sessions.open(f"AK{i}") for i in range(5)]
    assert len(sessions) == 3  # the oldest dropped
    assert sessions.get(made[0].token) is None
    assert sessions.get(made[4].token) is not None
    sessions.close(made[4].token)
    assert sessions.get(made[4].token) is None
    sessions.close_key("AK3")
    assert len(sessions) == 1
    now[0] += 61.0
    sessions.open("AK9")  # expired ones go as new ones come
    assert len(sessions) == 1
