"""Proof of membership on every peer-to-peer call: HMAC-SHA256 signatures of requests and
answers, keyed with the cluster secret.

A request carries two headers::

    X-Ringstore-Auth: v1 <key id> <unix seconds> <nonce> <signature>
    X-Ringstore-Content-SHA256: <hex SHA-256 of the body> | UNSIGNED-PAYLOAD

``signature`` is the hex HMAC-SHA256 (RFC 2104) under the secret named by ``key id``
(``node.model.identity.key_id``) of the *canonical request*, the lines::

    ringstore-request-v1
    <method>
    <raw path and query, exactly as sent>
    <unix seconds>
    <nonce: 32 hex digits, fresh per request>
    <content digest, as in its header>
    <every other X-Ringstore-* header as "lowercase-name:value", sorted>

The shape follows AWS Signature Version 4 (a canonical request; a payload-hash header that
may say UNSIGNED-PAYLOAD for a streamed body) without its date-scoped key derivation. Chunk
uploads stream (a chunk is never buffered to be signed); their bytes are checked against
the block digests in the manifest instead, and TLS protects them on the wire.

A receiver refuses a request whose timestamp is more than ``WINDOW`` seconds from its own
clock, and one whose nonce it has seen within the window (a replay). An *answer* whose body
is read whole carries ``X-Ringstore-Auth: v1 <key id> <signature>`` over
``ringstore-answer-v1``, the request's nonce, the status and the body's SHA-256, so a
process that is not a member cannot answer in a member's place (a gossip answer is how
members are learned).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping

from node.errors import Unauthenticated
from node.model.identity import ClusterIdentity, key_id

log = logging.getLogger(__name__)

AUTH_HEADER = "X-Ringstore-Auth"
CONTENT_HEADER = "X-Ringstore-Content-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
SIGNED_PREFIX = "x-ringstore-"
# Seconds a signed request stays valid either side of the receiver's clock. Members' clocks
# must agree this closely (NTP does far better); nonces are remembered this long.
WINDOW = 30.0
# Nonces remembered at most; past it the oldest go first (they still need a fresh timestamp).
MAX_NONCES = 1_000_000
# Seconds between two warnings about refused requests (a flood must not flood the log).
WARN_EVERY = 1.0

_UNLISTED = {AUTH_HEADER.lower(), CONTENT_HEADER.lower()}  # the digest has its own line
_REQUEST = re.compile(r"v1 ([0-9a-f]{16}) (\d{1,12}) ([0-9a-f]{32}) ([0-9a-f]{64})")
_ANSWER = re.compile(r"v1 ([0-9a-f]{16}) ([0-9a-f]{64})")
_DIGEST = re.compile(r"[0-9a-f]{64}|" + UNSIGNED)


def content_digest(body: bytes) -> str:
    """The content digest of a body read whole: hex SHA-256."""
    return hashlib.sha256(body).hexdigest()


def _canonical(
    method: str, path_qs: str, ts: str, nonce: str, digest: str, headers: Mapping[str, str]
) -> bytes:
    signed = sorted(
        f"{name.lower()}:{value}"
        for name, value in headers.items()
        if name.lower().startswith(SIGNED_PREFIX) and name.lower() not in _UNLISTED
    )
    return "\n".join(["ringstore-request-v1", method, path_qs, ts, nonce, digest, *signed]).encode()


def _answer(nonce: str, status: int, body: bytes) -> bytes:
    return f"ringstore-answer-v1\n{nonce}\n{status}\n{content_digest(body)}".encode()


def _mac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class Authenticator:
    """Signs this peer's calls and answers, and checks other peers' (one per peer).

    ``now`` is the wall clock in seconds (injected by tests). ``enforced=False`` signs and
    checks nothing (only to measure what authentication costs, side by side: never in use).
    State: the nonces seen within the window, and counts of refusals.
    """

    def __init__(
        self,
        identity: ClusterIdentity,
        now: Callable[[], float] = time.time,
        enforced: bool = True,
    ) -> None:
        self.cluster_id = identity.cluster_id
        self.enforced = enforced
        self._secret = identity.signing_secret
        self._key_id = key_id(self._secret)
        self._keys = identity.by_key_id
        self._now = now
        self._seen: set[str] = set()
        self._expiry: collections.deque[tuple[float, str]] = collections.deque()
        self.refused = 0
        self._warned_at = -WARN_EVERY
        self._unwarned = 0

    def __repr__(self) -> str:
        if not self.enforced:
            return f"Authenticator({self.cluster_id}, OFF)"
        return (
            f"Authenticator({self.cluster_id}, signs with {self._key_id}, "
            f"accepts {sorted(self._keys)}, "
            f"nonces={len(self._seen)}, refused={self.refused})"
        )

    # --- the caller's side ----------------------------------------------------------------

    def sign(
        self, method: str, path_qs: str, digest: str, headers: Mapping[str, str]
    ) -> tuple[str, dict[str, str]]:
        """The nonce and the two auth headers for a request (``headers``: those it sends)."""
        ts, nonce = str(int(self._now())), secrets.token_hex(16)
        if not self.enforced:
            return nonce, {}
        mac = _mac(self._secret, _canonical(method, path_qs, ts, nonce, digest, headers))
        auth = f"v1 {self._key_id} {ts} {nonce} {mac}"
        return nonce, {AUTH_HEADER: auth, CONTENT_HEADER: digest}

    def check_answer(self, nonce: str, status: int, body: bytes, header: str | None) -> None:
        """Raises Unauthenticated unless the answer to request ``nonce`` was signed by a
        member (holder of an accepted secret)."""
        if not self.enforced:
            return
        match = _ANSWER.fullmatch(header or "")
        secret = self._keys.get(match[1]) if match else None
        if match is None or secret is None:
            raise Unauthenticated("the answer carries no signature of this cluster")
        if not hmac.compare_digest(match[2], _mac(secret, _answer(nonce, status, body))):
            raise Unauthenticated("the answer's signature does not match")

    # --- the receiver's side --------------------------------------------------------------

    def check_request(
        self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[str, str]:
        """Check a request's signature, freshness and nonce before any work is done on it.

        ``body`` is the body read whole, or None for a streamed one (only then may the
        digest be UNSIGNED-PAYLOAD). Returns the request's nonce and key id. Raises
        Unauthenticated saying why (never with a secret or a signature in the message).
        """
        if not self.enforced:
            return "", ""
        match = _REQUEST.fullmatch(headers.get(AUTH_HEADER, ""))
        if match is None:
            raise Unauthenticated(f"no valid {AUTH_HEADER} header")
        kid, ts, nonce, mac = match.groups()
        secret = self._keys.get(kid)
        if secret is None:
            raise Unauthenticated(f"key {kid} is not a key of this cluster")
        digest = headers.get(CONTENT_HEADER, "")
        if not _DIGEST.fullmatch(digest):
            raise Unauthenticated(f"no valid {CONTENT_HEADER} header")
        expected = _mac(secret, _canonical(method, path_qs, ts, nonce, digest, headers))
        if not hmac.compare_digest(mac, expected):
            raise Unauthenticated("the signature does not match (wrong secret or altered request)")
        now = self._now()
        skew = int(ts) - now
        if abs(skew) > WINDOW:
            raise Unauthenticated(
                f"the request is dated {skew:+.0f}s from this peer's clock (limit {WINDOW:.0f}s):"
                " a replay, or clocks out of step"
            )
        if digest == UNSIGNED:
            if body is not None:
                raise Unauthenticated("a body read whole must be signed, not UNSIGNED-PAYLOAD")
        elif body is not None and not hmac.compare_digest(digest, content_digest(body)):
            raise Unauthenticated("the body does not match its signed digest")
        self._remember(nonce, now)
        return nonce, kid

    def sign_answer(self, nonce: str, status: int, body: bytes) -> str:
        """The auth header of an answer to request ``nonce``."""
        if not self.enforced:
            return ""
        return f"v1 {self._key_id} {_mac(self._secret, _answer(nonce, status, body))}"

    def _remember(self, nonce: str, now: float) -> None:
        expiry = self._expiry
        while expiry and (expiry[0][0] < now or len(expiry) >= MAX_NONCES):
            self._seen.discard(expiry.popleft()[1])
        if nonce in self._seen:
            raise Unauthenticated("a replayed request (its nonce was seen before)")
        self._seen.add(nonce)
        # A request is valid until its timestamp is WINDOW old, at most 2*WINDOW from now.
        expiry.append((now + 2 * WINDOW, nonce))

    def note_refusal(self, what: str, reason: str) -> None:
        """Count a refused request and log it at WARNING, at most once every WARN_EVERY s."""
        self.refused += 1
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY:
            self._unwarned += 1
            return
        more = f" ({self._unwarned} more refused since the last warning)" if self._unwarned else ""
        log.warning("refused %s: %s%s", what, reason, more)
        self._warned_at, self._unwarned = now, 0
