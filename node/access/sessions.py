"""Web console sessions: a random token that stands for an access key, on one peer.

A browser that logged in to the console (``node.api.console``) holds a session token in an
HttpOnly cookie instead of the key's secret. ``Sessions`` keeps them in this peer's memory
only: a session is valid on the peer that issued it, until it expires (``ttl`` seconds
after login, whatever its use), the user logs out, or the peer restarts. At most
``max_sessions`` are kept (the oldest is dropped first), so logins cannot fill memory, and
at most ``max_per_key`` of one key (its oldest dropped first), so one key's logins cannot
push out other keys' sessions.

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
MAX_PER_KEY = 100  # sessions of one access key kept at most (its oldest dropped first)


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
        max_per_key: int = MAX_PER_KEY,
    ) -> None:
        self.ttl = ttl
        self._max = max_sessions
        self._max_per_key = max_per_key
        self._now = now
        self._by_token: OrderedDict[str, Session] = OrderedDict()
        # access key -> its sessions' tokens, oldest first (values unused)
        self._by_key: dict[str, OrderedDict[str, None]] = {}

    def __repr__(self) -> str:
        return f"Sessions(live={len(self._by_token)}, ttl={self.ttl:.0f}s, max={self._max})"

    def __len__(self) -> int:
        return len(self._by_token)

    def open(self, access_key: str) -> Session:
        """A new session for ``access_key``; drops the key's oldest past ``max_per_key``,
        then the oldest of all past ``max_sessions``."""
        session = Session(
            secrets.token_urlsafe(32), access_key, secrets.token_urlsafe(32), self._now() + self.ttl
        )
        self._by_token[session.token] = session
        own = self._by_key.setdefault(access_key, OrderedDict())
        own[session.token] = None
        while len(own) > self._max_per_key:
            self._drop(next(iter(own)))
        while self._by_token:  # sessions expire in the order they were opened
            oldest = next(iter(self._by_token.values()))
            if oldest.expires > self._now():
                break
            self._drop(oldest.token)
        while len(self._by_token) > self._max:
            self._drop(next(iter(self._by_token)))
        return session

    def _drop(self, token: str) -> None:
        session = self._by_token.pop(token, None)
        if session is None:
            return
        own = self._by_key[session.access_key]
        del own[token]
        if not own:
            del self._by_key[session.access_key]

    def get(self, token: str) -> Session | None:
        """The live session of ``token``, or None (unknown, expired: then forgotten)."""
        session = self._by_token.get(token)
        if session is None:
            return None
        if session.expires <= self._now():
            self._drop(token)
            return None
        return session

    def close(self, token: str) -> None:
        """End the session of ``token`` (logout); nothing if there is none."""
        self._drop(token)

    def close_key(self, access_key: str) -> None:
        """End every session of ``access_key`` (it was revoked)."""
        for token in list(self._by_key.get(access_key, ())):
            self._drop(token)
