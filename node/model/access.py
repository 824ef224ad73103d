"""Access keys, grants and namespaces: the records of who may do what, and the rules.

A file's **namespace** is the first ``/``-separated segment of its name (``photos/2026/a.jpg``
is in ``photos``); an S3 bucket maps onto it, so a namespace made from now on follows S3's
bucket-name rules (``validate_namespace``; AWS, "Bucket naming rules", general purpose
buckets). Namespaces adopted from data written before access keys keep whatever name they
had (``NamespaceRecord.adopted``).

An **access key** is an id (20 characters, upper-case letters and digits, like AWS's) and a
secret (40 characters of base64url from ``secrets``: 240 bits), with ``Grants``: namespaces
it may read (GET, HEAD, list), namespaces it may write (PUT, DELETE), whether it may create
namespaces, and admin (everything, keys and namespaces included). ``"*"`` grants every
namespace. The secret is kept only sealed (``seal_secret``): AES-256-GCM under a key derived
with HKDF-SHA256 (RFC 5869) from the cluster secret, with the access key id as associated
data, because S3's Signature V4 needs the secret itself, not a hash of it.

Both records live on the ring as manifests of reserved names (``key_record_name``,
``namespace_record_name``) that no file name can take: they start with ``/``, and a file
name never has an empty first segment (``node.model.names``).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable
from typing import Annotated, Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.model.identity import ClusterIdentity, key_id

ALL = "*"
KEY_RECORDS = "/keys/"
NAMESPACE_RECORDS = "/namespaces/"
ACCESS_KEY = re.compile(r"RS[A-Z2-7]{18}")
SECRET_CHARS = 40
MAX_GRANTS = 1000  # namespaces named in one key's grants
MAX_KEY_NAME = 128
_NONCE_BYTES = 12
_SEAL_INFO = b"ringstore access-key secrets v1"
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

Action = Literal["read", "write", "create", "admin"]


class InvalidNamespace(ValueError):
    """A namespace name that breaks the bucket-name rules; the message says which."""


def validate_namespace(name: str) -> str:
    """Return ``name`` if it is a valid new namespace (an S3 bucket name); else raise
    InvalidNamespace saying why.

    3-63 characters of lower-case letters, digits, ``-`` and ``.``, beginning and ending
    with a letter or digit, no ``..``, not shaped like an IPv4 address, not starting with
    ``xn--`` or ``sthree-`` nor ending with ``-s3alias`` or ``--ol-s3`` (AWS's reserved
    forms).
    """
    if not _NAMESPACE.fullmatch(name):
        raise InvalidNamespace(
            f"a namespace is 3-63 lower-case letters, digits, '-' and '.', starting and "
            f"ending with a letter or digit; {name[:80]!r} is not"
        )
    if ".." in name:
        raise InvalidNamespace(f"a namespace has no '..': {name!r}")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        raise InvalidNamespace(f"a namespace is not an IP address: {name!r}")
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        raise InvalidNamespace(f"{name!r} uses a prefix or suffix S3 reserves")
    return name


def namespace_of(name: str) -> str:
    """The namespace of a file name: its first segment."""
    return name.split("/", 1)[0]


def key_record_name(access_key: str) -> str:
    return KEY_RECORDS + access_key


def namespace_record_name(namespace: str) -> str:
    return NAMESPACE_RECORDS + namespace


def new_access_key() -> str:
    """A fresh access key id: ``RS`` and 18 base32 characters (90 random bits)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "RS" + "".join(secrets.choice(alphabet) for _ in range(18))


def new_secret() -> str:
    """A fresh secret key: 40 base64url characters (240 random bits)."""
    return secrets.token_urlsafe(30)


def same_secret(given: str, stored: str) -> bool:
    """Constant-time comparison of two secrets (``hmac.compare_digest``)."""
    return hmac.compare_digest(given.encode(), stored.encode())


NamespaceName = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class Grants(msgspec.Struct, frozen=True, kw_only=True):
    """What a key may do: ``read`` and ``write`` name namespaces (or ``"*"``), ``create``
    lets it make namespaces, ``admin`` lets it do everything."""

    read: Annotated[frozenset[NamespaceName], msgspec.Meta(max_length=MAX_GRANTS)] = frozenset()
    write: Annotated[frozenset[NamespaceName], msgspec.Meta(max_length=MAX_GRANTS)] = frozenset()
    create: bool = False
    admin: bool = False

    def allows(self, action: Action, namespace: str = "") -> bool:
        """Whether these grants allow ``action`` (on ``namespace`` for read and write)."""
        if self.admin:
            return True
        if action == "read":
            return namespace in self.read or ALL in self.read
        if action == "write":
            return namespace in self.write or ALL in self.write
        if action == "create":
            return self.create
        return False

    def to_json(self) -> dict[str, object]:
        return {
            "read": sorted(self.read),
            "write": sorted(self.write),
            "create": self.create,
            "admin": self.admin,
        }

    @classmethod
    def of(
        cls,
        read: Iterable[str] = (),
        write: Iterable[str] = (),
        create: bool = False,
        admin: bool = False,
    ) -> Grants:
        """Grants from names given by a person: each must be ``*`` or a namespace name the
        store accepts (adopted ones included). Raises InvalidNamespace."""
        read, write = frozenset(read), frozenset(write)
        for name in read | write:
            if name != ALL and (not 1 <= len(name) <= 255 or "/" in name):
                raise InvalidNamespace(f"not a namespace: {name[:80]!r}")
        if len(read) > MAX_GRANTS or len(write) > MAX_GRANTS:
            raise InvalidNamespace(f"a key names at most {MAX_GRANTS} namespaces per grant")
        return cls(read=read, write=write, create=create, admin=admin)


class AccessKey(msgspec.Struct, frozen=True, kw_only=True):
    """An access key as stored on the ring: the secret sealed under the cluster secret whose
    key id is ``sealed_with``. ``created_ms``: Unix time in milliseconds."""

    access_key: str
    name: Annotated[str, msgspec.Meta(max_length=MAX_KEY_NAME)]
    created_ms: int
    grants: Grants
    sealed_secret: Annotated[bytes, msgspec.Meta(max_length=256)]
    sealed_with: str

    def to_json(self) -> dict[str, object]:
        """What listings show: never the secret."""
        return {
            "access_key": self.access_key,
            "name": self.name,
            "created_ms": self.created_ms,
            "grants": self.grants.to_json(),
            "sealed_with": self.sealed_with,
        }


class NamespaceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A namespace: ``public_read`` lets anyone GET, HEAD and list it; ``adopted`` marks one
    that existed before access keys (its name may break the bucket rules)."""

    name: NamespaceName
    created_ms: int
    public_read: bool = False
    adopted: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "created_ms": self.created_ms,
            "public_read": self.public_read,
            "adopted": self.adopted,
        }


def encode_record(record: AccessKey | NamespaceRecord) -> bytes:
    return msgspec.msgpack.encode(record)


def decode_key(data: bytes) -> AccessKey:
    """Raises ValueError (msgspec.DecodeError) for bytes that are not a key record."""
    record = msgspec.msgpack.decode(data, type=AccessKey)
    if not ACCESS_KEY.fullmatch(record.access_key):
        raise ValueError(f"malformed access key id {record.access_key[:40]!r}")
    return record


def decode_namespace(data: bytes) -> NamespaceRecord:
    """Raises ValueError (msgspec.DecodeError) for bytes that are not a namespace record."""
    return msgspec.msgpack.decode(data, type=NamespaceRecord)


def _sealing_key(cluster_secret: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO)
    return hkdf.derive(cluster_secret)


def seal_secret(identity: ClusterIdentity, access_key: str, secret: str) -> tuple[bytes, str]:
    """``secret`` encrypted under the cluster's signing secret: ``(nonce + ciphertext, key
    id of the cluster secret used)``."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    box = AESGCM(_sealing_key(identity.signing_secret))
    sealed = nonce + box.encrypt(nonce, secret.encode(), access_key.encode())
    return sealed, key_id(identity.signing_secret)


def open_secret(identity: ClusterIdentity, record: AccessKey) -> str:
    """The plain secret of ``record``; raises ValueError when no secret of the identity
    sealed it (it was sealed under a secret since retired) or the record was tampered with."""
    cluster_secret = identity.by_key_id.get(record.sealed_with)
    if cluster_secret is None:
        raise ValueError(f"sealed under cluster key {record.sealed_with}, no longer held")
    box = AESGCM(_sealing_key(cluster_secret))
    nonce, ciphertext = record.sealed_secret[:_NONCE_BYTES], record.sealed_secret[_NONCE_BYTES:]
    try:
        return box.decrypt(nonce, ciphertext, record.access_key.encode()).decode()
    except (InvalidTag, UnicodeDecodeError):
        raise ValueError("the sealed secret does not open: tampered with or damaged") from None
