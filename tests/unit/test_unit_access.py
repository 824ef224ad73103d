"""The access rules without a cluster: namespace names, grants, sealed secrets, Basic
credentials, the failure penalty, and cluster records kept out of file listings."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import pytest

from node.access.guard import Penalty, parse_basic
from node.disk.manifest_store import ManifestStore
from node.errors import Unauthenticated
from node.model import access
from node.model.access import (
    AccessKey,
    Grants,
    InvalidNamespace,
    new_access_key,
    new_secret,
    open_secret,
    seal_secret,
    validate_namespace,
)
from node.model.identity import ClusterIdentity
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.version import Version


@pytest.mark.parametrize("name", ["abc", "photos", "my-bucket.2026", "a" * 63, "0-9", "x.y-z"])
def test_bucket_names_are_namespaces(name: str) -> None:
    assert validate_namespace(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "ab",  # too short
        "a" * 64,  # too long
        "Photos",  # upper case
        "my_bucket",  # underscore
        "-abc",
        "abc-",
        ".abc",
        "a..b",
        "192.168.1.1",  # shaped like an IP address
        "xn--abc",
        "sthree-abc",
        "abc-s3alias",
        "abc--ol-s3",
        "ünï",
        "a b c",
        "",
    ],
)
def test_names_breaking_the_bucket_rules_are_refused(name: str) -> None:
    with pytest.raises(InvalidNamespace):
        validate_namespace(name)


def test_grants_allow_what_they_name_and_admin_everything() -> None:
    reader = Grants.of(read=["alpha"])
    assert reader.allows("read", "alpha")
    assert not reader.allows("read", "beta")
    assert not reader.allows("write", "alpha")
    assert not reader.allows("create")
    assert not reader.allows("admin")
    everything = Grants.of(read=["*"], write=["*"])
    assert everything.allows("read", "anything")
    assert everything.allows("write", "anything")
    assert not everything.allows("admin")
    admin = Grants(admin=True)
    assert all(admin.allows(a, "x") for a in ("read", "write", "create", "admin"))
    assert Grants.of(create=True).allows("create")
    with pytest.raises(InvalidNamespace):
        Grants.of(read=["a/b"])
    with pytest.raises(InvalidNamespace):
        Grants.of(write=[""])


def _record(identity: ClusterIdentity, access_key: str, secret: str) -> AccessKey:
    sealed, sealed_with = seal_secret(identity, access_key, secret)
    return AccessKey(
        access_key=access_key,
        name="k",
        created_ms=1,
        grants=Grants(),
        sealed_secret=sealed,
        sealed_with=sealed_with,
    )


def test_secrets_are_stored_sealed_and_open_only_under_the_cluster_secret() -> None:
    identity = ClusterIdentity.create()
    access_key, secret = new_access_key(), new_secret()
    assert access.ACCESS_KEY.fullmatch(access_key)
    assert len(secret) == access.SECRET_CHARS
    record = _record(identity, access_key, secret)
    stored = access.encode_record(record)
    assert secret.encode() not in stored
    assert open_secret(identity, access.decode_key(stored)) == secret
    # tampering: another key's id, flipped bytes, a foreign cluster
    swapped = msgspec.structs.replace(record, access_key=new_access_key())
    with pytest.raises(ValueError, match="does not open"):
        open_secret(identity, swapped)
    flipped = bytearray(record.sealed_secret)
    flipped[-1] ^= 1
    with pytest.raises(ValueError, match="does not open"):
        open_secret(identity, msgspec.structs.replace(record, sealed_secret=bytes(flipped)))
    with pytest.raises(ValueError, match="no longer held"):
        open_secret(ClusterIdentity.create(), record)


def test_a_rotation_keeps_keys_openable_until_the_old_secret_is_dropped() -> None:
    old = ClusterIdentity.create()
    rotated = ClusterIdentity(old.cluster_id, [b"n" * 32, old.signing_secret])
    record = _record(old, "RSAAAAAAAAAAAAAAAAAA", "s3cret")
    assert open_secret(rotated, record) == "s3cret"
    resealed = _record(rotated, "RSAAAAAAAAAAAAAAAAAA", "s3cret")
    dropped = ClusterIdentity(old.cluster_id, [b"n" * 32])
    assert open_secret(dropped, resealed) == "s3cret"


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_credentials_parse_and_malformed_ones_are_refused() -> None:
    assert parse_basic(_basic("RSAB:se:cret")) == ("RSAB", "se:cret")
    assert parse_basic("basic " + _basic("a:b")[6:]) == ("a", "b")
    for bad in ("Bearer x", "Basic", "Basic !!!", _basic("no-colon"), "Basic " + "A" * 2000):
        with pytest.raises(Unauthenticated):
            parse_basic(bad)


def test_failures_slow_their_address_down_and_are_forgotten() -> None:
    now = [0.0]
    penalty = Penalty(base=0.1, ceiling=1.0, half_life=10.0, now=lambda: now[0])
    assert penalty.delay("a") == 0.0
    penalty.failed("a")
    assert penalty.delay("a") == pytest.approx(0.1)
    for _ in range(20):
        penalty.failed("a")
    assert penalty.delay("a") == 1.0  # a ceiling, never a lock-out
    assert penalty.delay("b") == 0.0  # another address is not slowed
    now[0] = 200.0
    assert penalty.delay("a") == 0.0


async def test_cluster_records_stay_out_of_file_listings(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    await store.open()
    version = Version(1, 0, "p")
    for name in ("-dash/x", ".dot/x", "/keys/RSA", "/namespaces/abc", "0zero/x", "abc/x"):
        await store.put(Manifest(name, version, Layout(0, 1, 0), inline=b"r"))
    files, more = store.list("", "", 10)
    assert [m.name for m in files] == ["-dash/x", ".dot/x", "0zero/x", "abc/x"]
    assert not more
    page, more = store.list("", "", 2)
    assert [m.name for m in page] == ["-dash/x", ".dot/x"]
    assert more
    page, more = store.list("", ".dot/x", 1)
    assert [m.name for m in page] == ["0zero/x"]
    records, _ = store.list("/keys/", "", 10)
    assert [(m.name, m.inline) for m in records] == [("/keys/RSA", b"r")]


def test_a_flood_of_failures_never_overflows_the_delay() -> None:
    """Past ~1024 failures ``2 ** count`` overflows a float: the delay must stay the ceiling
    (an OverflowError there is a 500 for every keyed request from that address)."""
    penalty = Penalty(base=0.05, ceiling=2.0, now=lambda: 0.0)
    for _ in range(1100):
        penalty.failed("a")
    assert penalty.delay("a") == 2.0
