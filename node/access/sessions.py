"""Web console sessions: a random token that stands for an access key, on one peer.

A browser that logged in to the console (``node.api.console``) holds a session token in an
HttpOnly cookie instead of the key's secret. ``Sessions`` keeps them in this peer's memory
only: a session is valid on the peer that issued it, until it expires (``ttl`` seconds
after login, whatever its use), the user logs out, or the peer restarts. At most
``max_sessions`` are kept (the oldest is dropped first), so logins cannot fill memory.

Each session has a second random value, its CSRF token: pages carry it and send it back
with every state change (a header, or a form field before a form's file), which a page
of another site cannot read (OWASP's synchronizer token pattern). Tokens are
``secrets.token_urlsafe(32)`` (256 bits) and compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

TTL = 8 * 3600.0  # seconds a session lasts after its login
MAX_SESSIONS = 10_000  # sessions one peer keeps at most (oldest dropped first)


@dataclass(frozen=True)
class Session:
    """One login: ``token`` (the cookie) stands for ``access_key`` until ``expires``
    (monotonic seconds); ``csrf_token`` must come back with every state change."""

    token: str
    access_key: str
    csrf_token: str
    expires: float

    def __repr__(self) -> str:  # never the tokens: they are secrets
        return f"Session(access_key={self.access_key!r}, expires={self.expires:.0f})"

    def checks(self, csrf_token: str | None) -> bool:
        """Whether ``csrf_token`` is this session's (constant time)."""
        return csrf_token is not None and hmac.compare_digest(
            csrf_token.encode("utf-8", "surrogatepass"), self.csrf_token.encode()
        )


class Sessions:
    """This peer's live console sessions, bounded in number and time."""

    def __init__(
        self,
        ttl: float = TTL,
        max_sessions: int = MAX_SESSIONS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._max = max_sessions
        self._now = now
        self._by_token: OrderedDict[str, Session] = OrderedDict()

    def __repr__(self) -> str:
        return f"Sessions(live={len(self._by_token)}, ttl={self.ttl:.0f}s, max={self._max})"

    def __len__(self) -> int:
        return len(self._by_token)

    def open(self, access_key: str) -> Session:
        """A new session for ``access_key``; drops the oldest past ``max_sessions``."""
        session = Session(
            secrets.token_urlsafe(32), access_key, secrets.token_urlsafe(32), self._now() + self.ttl
        )
        self._by_token[session.token] = session
        while self._by_token:  # sessions expire in the order they were opened
            oldest = next(iter(self._by_token.values()))
            if oldest.expires > self._now():
                break
            self._by_token.popitem(last=False)
        while len(self._by_token) > self._max:
            self._by_token.popitem(last=False)
        return session

    def get(self, token: str) -> Session | None:
        """The live session of ``token``, or None (unknown, expired: then forgotten)."""
        session = self._by_token.get(token)
        if session is None:
            return None
        if session.expires <= self._now():
            del self._by_token[token]
            return None
        return session

    def close(self, token: str) -> None:
        """End the session of ``token`` (logout); nothing if there is none."""
        self._by_token.pop(token, None)

    def close_key(self, access_key: str) -> None:
        """End every session of ``access_key`` (it was revoked)."""
        for token in [t for t, s in self._by_token.items() if s.access_key == access_key]:
            del self._by_token[token]
