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


def test_one_key_s_logins_cannot_push_out_another_key_s_sessions() -> None:
    """An attack logged in 10,050 times with a read-only key and so ended an admin's
    session: the cap was one for all keys. Each key now drops its own oldest first."""
    sessions = Sessions(max_sessions=10, max_per_key=3)
    admin = sessions.open("ADMIN")
    made = [sessions.open("READER") for _ in range(50)]
    assert sessions.get(admin.token) == admin
    assert len(sessions) == 4
    assert [sessions.get(s.token) is not None for s in made[-4:]] == [False, True, True, True]
    sessions.close_key("READER")
    assert len(sessions) == 1
    for session in made:
        sessions.close(session.token)  # gone already: nothing happens
    assert sessions.get(admin.token) == admin
