"""Proof of membership on every peer-to-peer call: HMAC-SHA256 signatures of requests and
answers, and MACs of channel frames, keyed with the cluster secret.

A request carries two headers::

    X-Ringstore-Auth: v1 <key id> <unix seconds> <nonce> <signature>
    X-Ringstore-Content-SHA256: <hex SHA-256 of the body> | UNSIGNED-PAYLOAD

``signature`` is the hex HMAC-SHA256 (RFC 2104) under the secret named by ``key id``
(``node.model.identity.key_id``) of the *canonical request*, the lines::

    ringstore-request-v1
    <method>
    <the receiver's address, as in the Host header (RFC 9110, 7.2)>
    <raw path and query, exactly as sent>
    <unix seconds>
    <nonce: 32 hex digits, fresh per request>
    <content digest, as in its header>
    <every other X-Ringstore-* header as "lowercase-name:value", sorted>

The shape follows AWS Signature Version 4 (a canonical request; a payload-hash header that
may say UNSIGNED-PAYLOAD for a streamed body) without its date-scoped key derivation. Chunk
uploads stream (a chunk is never buffered to be signed); their bytes are checked against
the block digests in the manifest instead, and TLS protects them on the wire.

Lines are joined with ``\n``; no field can hold one (aiohttp refuses newlines in header
values and the path is sent raw, percent-encoded). A receiver checks the signature before
it reads the body, then refuses a request whose timestamp is more than ``WINDOW`` seconds
from its own clock or whose nonce it has seen within the window (a replay), and only then
reads the body and
compares it with the signed digest. Every *answer* to an authenticated request but a
streamed chunk carries ``X-Ringstore-Auth: v1 <key id> <signature>`` over the lines
``ringstore-answer-v1``, the request's nonce, the status and the body's SHA-256 (errors
and empty answers included), so a process that is not a member cannot answer in a member's
place: gossip answers are how members are learned, and a forged "not found" or "deleted"
could mislead a quorum. The nonces seen are each receiver's own, so a call must also name
its receiver: every call but gossip signs the receiver's id (``X-Ringstore-Peer``), which
the receiver compares with its own (``node.api.peer``, ``node.process.wiring``); the Host
line alone did not stop a replay to another peer, whose Host header can be set to match.

A *channel* (``node.cluster.channel``) is one authenticated request (a WebSocket upgrade)
followed by many binary frames each way. Every frame carries the key id of its sender's
secret and a MAC keyed with that secret and the upgrade request's nonce (so a frame of one
channel is worthless on another) that binds the frame's version, kind, sequence number and
body (``FrameKeys``): version 2, AES-GMAC under a key of the channel, the receiver's salt
and the direction (``FrameGmac``); version 1, of the release before, HMAC-SHA256
(``FrameHmac``). A frame
cannot be altered, moved to another channel, or turned from a call into an answer, and
the receiver refuses a sequence number out of order (a replay within the channel).
"""

from __future__ import annotations

import abc
import collections
import hashlib
import hmac
import logging
import re
import secrets
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.errors import Unauthenticated
from node.model.identity import ClusterIdentity, key_id
from node.model.version import MAX_SKEW_MS

log = logging.getLogger(__name__)

AUTH_HEADER = "X-Ringstore-Auth"
CONTENT_HEADER = "X-Ringstore-Content-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
SIGNED_PREFIX = "x-ringstore-"
# Seconds a signed request stays valid either side of the receiver's clock: the clock
# policy's hard limit (node.model.version), past which members neither follow nor hear each
# other. NTP does far better; nonces are remembered this long.
WINDOW = MAX_SKEW_MS / 1000
# Nonces remembered at most (about 100 MB): 16,000 signed requests a second over the window.
# Past it requests are refused rather than old nonces forgotten, which would allow replays.
MAX_NONCES = 1_000_000
# Seconds between two warnings about refused requests (a flood must not flood the log).
WARN_EVERY = 1.0

_UNLISTED = {AUTH_HEADER.lower(), CONTENT_HEADER.lower()}  # the digest has its own line
_REQUEST = re.compile(r"v1 ([0-9a-f]{16}) (\d{1,12}) ([0-9a-f]{32}) ([0-9a-f]{64})")
_ANSWER = re.compile(r"v1 ([0-9a-f]{16}) ([0-9a-f]{64})")
_DIGEST = re.compile(r"[0-9a-f]{64}|" + UNSIGNED)
# A channel frame's head (FrameKeys): version, kind, sequence number, key id, then the MAC.
_KEYED = struct.Struct(">BBQ")  # version, kind, sequence number
_KEYED_HEAD = _KEYED.size + 8  # and the sender's key id: the head before the MAC
_SIGNED_HEAD = _KEYED.size  # bytes of the head version 1's MAC covers
_Key = TypeVar("_Key")  # a keyed MAC state of some frame version
_GMAC_IV = struct.Struct(">B3xQ")  # version 2's GCM IV: kind, 3 zero bytes, sequence number
SALT_SIZE = 16  # bytes of randomness a channel's receiver adds to its version 2 keys


def content_digest(body: bytes) -> str:
    """The content digest of a body read whole: hex SHA-256."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Request:
    """What is signed of a request: method, receiver's address (``host``, as in the Host
    header), raw path with query, and headers (only the ``X-Ringstore-*`` ones count)."""

    method: str
    host: str
    path_qs: str
    headers: Mapping[str, str]

    def canonical(self, ts: str, nonce: str, digest: str) -> bytes:
        """The canonical request (module docstring), as bytes."""
        signed = sorted(
            f"{name.lower()}:{value}"
            for name, value in self.headers.items()
            if name.lower().startswith(SIGNED_PREFIX) and name.lower() not in _UNLISTED
        )
        lines = ["ringstore-request-v1", self.method, self.host, self.path_qs, ts, nonce, digest]
        return "\n".join([*lines, *signed]).encode()


def _answer(nonce: str, status: int, body: bytes) -> bytes:
    """The signed lines of an answer (module docstring)."""
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

    def sign(self, request: Request, digest: str) -> tuple[str, dict[str, str]]:
        """The nonce and the two auth headers for ``request`` with a body of ``digest``
        (``content_digest(body)``, or UNSIGNED for a streamed chunk)."""
        ts, nonce = str(int(self._now())), secrets.token_hex(16)
        if not self.enforced:
            return nonce, {}
        mac = _mac(self._secret, request.canonical(ts, nonce, digest))
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

    def frame_keys(
        self, nonce: str, version: int, salt: bytes = b"", *, receiver: bool = False
    ) -> FrameKeys:
        """Seals and opens the frames of ``version`` of the channel opened by the request
        ``nonce``, for its caller or its ``receiver``; version 2 takes the receiver's
        ``salt`` (``SALT_SIZE`` random bytes, its first message). Raises ValueError for a
        version that is neither 1 nor 2, a salt of another size, or no nonce where frames
        are checked (``enforced``)."""
        if version == FrameHmac.VERSION:
            return FrameHmac(self._secret, self._keys, nonce, self.enforced)
        if version == FrameGmac.VERSION:
            return FrameGmac(self._secret, self._keys, nonce, self.enforced, salt, receiver)
        raise ValueError(f"no channel frames of version {version}")

    # --- the receiver's side --------------------------------------------------------------

    def check_request(self, request: Request) -> tuple[str, str]:
        """Check a request's signature, freshness and nonce, from its headers alone: before
        its body is read and before any work is done on it.

        Returns its nonce and the body digest it declares (to give ``check_body``). Raises
        Unauthenticated saying why (never with a secret or a signature in the message).
        """
        if not self.enforced:
            return "", UNSIGNED
        match = _REQUEST.fullmatch(request.headers.get(AUTH_HEADER, ""))
        if match is None:
            raise Unauthenticated(f"no valid {AUTH_HEADER} header")
        kid, ts, nonce, mac = match.groups()
        secret = self._keys.get(kid)
        if secret is None:
            raise Unauthenticated(f"key {kid} is not a key of this cluster")
        digest = request.headers.get(CONTENT_HEADER, "")
        if not _DIGEST.fullmatch(digest):
            raise Unauthenticated(f"no valid {CONTENT_HEADER} header")
        if not hmac.compare_digest(mac, _mac(secret, request.canonical(ts, nonce, digest))):
            raise Unauthenticated("the signature does not match (wrong secret or altered request)")
        skew = int(ts) - self._now()
        if abs(skew) > WINDOW:
            raise Unauthenticated(
                f"the request is dated {skew:+.0f}s from this peer's clock (limit {WINDOW:.0f}s):"
                " a replay, or clocks out of step"
            )
        self._remember(nonce)
        return nonce, digest

    def check_body(self, digest: str, body: bytes | None) -> None:
        """Check a body read whole (None: a streamed one, the only kind that may be
        UNSIGNED-PAYLOAD) against the digest its signed request declared."""
        if not self.enforced:
            return
        if digest == UNSIGNED:
            if body is not None:
                raise Unauthenticated("a body read whole must be signed, not UNSIGNED-PAYLOAD")
        elif body is not None and not hmac.compare_digest(digest, content_digest(body)):
            raise Unauthenticated("the body does not match its signed digest")

    def sign_answer(self, nonce: str, status: int, body: bytes) -> str:
        """The auth header of an answer to request ``nonce``."""
        if not self.enforced:
            return ""
        return f"v1 {self._key_id} {_mac(self._secret, _answer(nonce, status, body))}"

    def _remember(self, nonce: str) -> None:
        # Monotonic: a wall clock stepped forward then back must not forget nonces early.
        now, expiry = time.monotonic(), self._expiry
        while expiry and expiry[0][0] < now:
            self._seen.discard(expiry.popleft()[1])
        if nonce in self._seen:
            raise Unauthenticated("a replayed request (its nonce was seen before)")
        if len(expiry) >= MAX_NONCES:
            raise Unauthenticated(f"more than {MAX_NONCES} requests within {2 * WINDOW:.0f}s")
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


class FrameKeys(abc.ABC):
    """The frame MACs of one channel (module docstring): ``seal`` this peer's frames with
    its signing secret, ``open`` the other side's under any accepted secret. A frame is
    ``head`` (version, kind, sequence number, key id, MAC) then its body; the versions
    differ in the MAC (``FrameHmac``, ``FrameGmac``), chosen by the channel's subprotocol.
    """

    VERSION: ClassVar[int]
    HEAD: ClassVar[struct.Struct]  # >BBQ8s then the MAC's bytes

    def __init__(
        self, secret: bytes, accepted: Mapping[str, bytes], nonce: str, enforced: bool
    ) -> None:
        if enforced and not nonce:
            raise ValueError("a channel's frame keys need its upgrade's nonce")
        self.enforced = enforced
        self._kid = bytes.fromhex(key_id(secret))
        self._no_mac = bytes(self.HEAD.size - _KEYED_HEAD)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(v{self.VERSION}, signs with {self._kid.hex()}, "
            f"enforced={self.enforced})"
        )

    def seal(self, kind: int, seq: int, body: bytes) -> bytes:
        """The frame of ``body``: its head, then the body."""
        mac = self._mac(kind, seq, body) if self.enforced else self._no_mac
        return self.HEAD.pack(self.VERSION, kind, seq, self._kid, mac) + body

    def open(self, frame: bytes) -> tuple[int, int, memoryview]:
        """A frame's kind, sequence number and body; raises Unauthenticated unless a member
        sealed it for this channel (never saying more of the secret than its key id)."""
        head = self.HEAD
        if len(frame) < head.size:
            raise Unauthenticated(f"a frame of {len(frame)} bytes is shorter than its head")
        version, kind, seq, kid, mac = head.unpack_from(frame)
        if version != self.VERSION:
            raise Unauthenticated(f"frame version {version} is not {self.VERSION}")
        body = memoryview(frame)[head.size :]
        if self.enforced and not self._matches(kid, mac, frame, kind, seq, body):
            raise Unauthenticated("a frame's MAC does not match (wrong secret or altered)")
        return kind, seq, body

    @abc.abstractmethod
    def _mac(self, kind: int, seq: int, body: bytes) -> bytes:
        """The MAC of a frame this peer sends."""

    @abc.abstractmethod
    def _matches(
        self, kid: bytes, mac: bytes, frame: bytes, kind: int, seq: int, body: memoryview
    ) -> bool:
        """Whether ``mac`` is the frame's under the accepted secret ``kid``; raises
        Unauthenticated if ``kid`` names none."""


class FrameHmac(FrameKeys):
    """Version 1: ``HMAC-SHA256(secret, "ringstore-frame-v1\n" nonce "\n" version kind
    sequence body)`` (RFC 2104), the same key both ways. ~0.59 ms per MiB of body here
    (FACTS.md: SHA-256 ~1.5-1.7 GB/s on one core)."""

    VERSION = 1
    HEAD = struct.Struct(">BBQ8s32s")

    def __init__(
        self, secret: bytes, accepted: Mapping[str, bytes], nonce: str, enforced: bool
    ) -> None:
        super().__init__(secret, accepted, nonce, enforced)
        label = f"ringstore-frame-v1\n{nonce}\n".encode()
        self._sealing = hmac.new(secret, label, hashlib.sha256)
        # One keyed state per accepted secret, copied per frame (no rekeying each time).
        self._opening = {
            bytes.fromhex(kid): hmac.new(key, label, hashlib.sha256)
            for kid, key in accepted.items()
        }

    def _mac(self, kind: int, seq: int, body: bytes) -> bytes:
        state = self._sealing.copy()
        state.update(_KEYED.pack(self.VERSION, kind, seq))
        state.update(body)
        return state.digest()

    def _matches(
        self, kid: bytes, mac: bytes, frame: bytes, kind: int, seq: int, body: memoryview
    ) -> bool:
        keyed = _accepted(self._opening, kid).copy()
        keyed.update(memoryview(frame)[:_SIGNED_HEAD])
        keyed.update(body)
        return hmac.compare_digest(mac, keyed.digest())


class FrameGmac(FrameKeys):
    """Version 2: the 16-byte tag of AES-256-GCM with no plaintext and the body as
    associated data (GMAC, NIST SP 800-38D), under a key of the channel and the direction,
    ``HKDF-SHA256(secret, info="ringstore-frame-v2\n" nonce "\n" salt "\n"
    caller|receiver)`` (RFC 5869), and the 96-bit IV ``kind, 3 zero bytes, sequence
    number``.

    Both ends make the keys fresh: the caller's nonce is new per upgrade, and the receiver's
    ``salt`` (hex in the label) is ``SALT_SIZE`` random bytes it sends as its first message
    (``node.cluster.channel``). So no key seals one IV twice: within a channel the caller
    numbers its frames 1, 2, 3... once and the receiver answers each number once, and an
    upgrade replayed to a receiver that forgot its nonce (restarted within the window, or
    its clock stepped back) gets a new salt, new keys both ways, and no recorded frame
    opens under them. (A repeated IV under one key gives the key's GHASH subkey away and
    lets frames be forged: Joux, "Authentication failures in NIST version of GCM", 2006;
    SP 800-38D section 8.) The version is in the key's label,
    the kind and number in the IV: none can be changed without the tag failing. ~0.05 ms
    per MiB of body here, a twelfth of version 1's HMAC-SHA256 (AES-NI and PCLMULQDQ through
    OpenSSL), and fewer Python steps per frame (a 4 KiB body: 1.0 against 5.1 µs)."""

    VERSION = 2
    HEAD = struct.Struct(">BBQ8s16s")

    def __init__(
        self,
        secret: bytes,
        accepted: Mapping[str, bytes],
        nonce: str,
        enforced: bool,
        salt: bytes,
        receiver: bool,
    ) -> None:
        super().__init__(secret, accepted, nonce, enforced)
        if len(salt) != SALT_SIZE:
            raise ValueError(f"a receiver's salt is {SALT_SIZE} bytes, not {len(salt)}")
        sender, other = ("receiver", "caller") if receiver else ("caller", "receiver")
        label = f"ringstore-frame-v2\n{nonce}\n{salt.hex()}\n"
        self._sealing = _gmac_key(secret, label + sender)
        self._opening = {
            bytes.fromhex(kid): _gmac_key(key, label + other) for kid, key in accepted.items()
        }

    def _mac(self, kind: int, seq: int, body: bytes) -> bytes:
        return self._sealing.encrypt(_GMAC_IV.pack(kind, seq), b"", body)

    def _matches(
        self, kid: bytes, mac: bytes, frame: bytes, kind: int, seq: int, body: memoryview
    ) -> bool:
        try:
            _accepted(self._opening, kid).decrypt(_GMAC_IV.pack(kind, seq), mac, body)
        except InvalidTag:
            return False
        return True


def _accepted(keys: Mapping[bytes, _Key], kid: bytes) -> _Key:
    try:
        return keys[kid]
    except KeyError:
        raise Unauthenticated(f"key {kid.hex()} is not a key of this cluster") from None


def _gmac_key(secret: bytes, info: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode())
    return AESGCM(derived.derive(secret))
