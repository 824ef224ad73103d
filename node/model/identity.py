"""A cluster's identity: its id and its secrets, and the join token that carries them.

A cluster id names a cluster in mDNS announcements and in logs; it is public. A secret is
32 random bytes (256 bits, ``secrets.token_bytes``) that every member holds and no one else:
peers prove they know it on every peer-to-peer call (``node.cluster.auth``). An identity
holds one or more secrets: the first signs, every one is accepted, so a cluster can move to a
new secret with rolling restarts (docs/security.md). Each secret has a public *key id*
(a keyed-hash fingerprint) that names it in signatures and logs without revealing it.

Formats (stable; a secret file and the data directory's copy are the same JSON)::

    secret file   {"cluster_id": "<16 hex>", "secrets": ["<base64url of 32 bytes>", ...]}
    join token    "rsjoin1." + base64url(msgpack [cluster_id, [secret bytes...], [url...]])

Both are secrets themselves: whoever holds one is a member.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Sequence

import msgspec

SECRET_BYTES = 32
CLUSTER_ID = re.compile(r"[0-9a-f]{16}")
TOKEN_PREFIX = "rsjoin1."
# A token is typed and pasted; this bounds what a decoder accepts (a few secrets and URLs).
MAX_TOKEN_CHARS = 16_384
MAX_SECRETS = 4


class _IdentityFile(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    cluster_id: str
    secrets: list[str]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(secret: bytes) -> str:
    """The public name of a secret: 16 hex digits of a BLAKE2b keyed hash (RFC 7693) of a
    fixed label. Knowing it tells nothing of the secret."""
    return hashlib.blake2b(b"ringstore key id", key=secret, digest_size=8).hexdigest()


class ClusterIdentity:
    """A cluster id and its secrets (the first signs; all are accepted).

    Raises ValueError on construction when the id is not 16 hex digits, there is no secret or
    more than ``MAX_SECRETS``, or a secret is not ``SECRET_BYTES`` long. ``repr`` shows key
    ids only, so an identity can be logged.
    """

    __slots__ = ("cluster_id", "secrets")

    def __init__(self, cluster_id: str, secrets: Sequence[bytes]) -> None:
        if not CLUSTER_ID.fullmatch(cluster_id):
            raise ValueError(f"a cluster id is 16 hex digits, not {cluster_id!r}")
        if not 1 <= len(secrets) <= MAX_SECRETS:
            raise ValueError(f"an identity holds 1 to {MAX_SECRETS} secrets, not {len(secrets)}")
        if any(len(s) != SECRET_BYTES for s in secrets):
            raise ValueError(f"a cluster secret is {SECRET_BYTES} bytes")
        self.cluster_id = cluster_id
        self.secrets = tuple(bytes(s) for s in secrets)

    @classmethod
    def create(cls) -> ClusterIdentity:
        """A new cluster: a random id and one fresh secret."""
        return cls(secrets.token_hex(8), [secrets.token_bytes(SECRET_BYTES)])

    def __repr__(self) -> str:
        return f"ClusterIdentity({self.cluster_id}, keys={list(self.by_key_id)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClusterIdentity):
            return NotImplemented
        return (self.cluster_id, self.secrets) == (other.cluster_id, other.secrets)

    def __hash__(self) -> int:
        return hash((self.cluster_id, self.secrets))

    @property
    def signing_secret(self) -> bytes:
        return self.secrets[0]

    @property
    def by_key_id(self) -> dict[str, bytes]:
        """Every accepted secret by its key id."""
        return {key_id(s): s for s in self.secrets}

    def to_json(self) -> bytes:
        """The secret file's bytes."""
        record = _IdentityFile(self.cluster_id, [_b64(s) for s in self.secrets])
        return msgspec.json.format(msgspec.json.encode(record)) + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> ClusterIdentity:
        """Parse a secret file; raises ValueError naming what is wrong (never the secret)."""
        try:
            record = msgspec.json.decode(data, type=_IdentityFile)
            return cls(record.cluster_id, [_unb64(s) for s in record.secrets])
        except (msgspec.DecodeError, binascii.Error) as exc:
            raise ValueError(f"not a ringstore secret file: {exc}") from None


def join_token(identity: ClusterIdentity, urls: Sequence[str]) -> str:
    """A join token for ``identity`` naming members at ``urls`` (at least one)."""
    if not urls:
        raise ValueError("a join token names at least one member's URL")
    packed = msgspec.msgpack.encode([identity.cluster_id, list(identity.secrets), list(urls)])
    return TOKEN_PREFIX + _b64(packed)


def parse_join_token(token: str) -> tuple[ClusterIdentity, list[str]]:
    """The identity and member URLs in a join token; raises ValueError if it is not one."""
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"a join token starts with {TOKEN_PREFIX!r} (see `ringstore token`)")
    try:
        cluster_id, keys, urls = msgspec.msgpack.decode(
            _unb64(token[len(TOKEN_PREFIX) :]), type=tuple[str, list[bytes], list[str]]
        )
    except (msgspec.DecodeError, binascii.Error, ValueError) as exc:
        raise ValueError(f"damaged join token: {exc}") from None
    if not urls:
        raise ValueError("the join token names no member")
    return ClusterIdentity(cluster_id, keys), urls
