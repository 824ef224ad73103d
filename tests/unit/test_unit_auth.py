"""Request and answer signatures (node.cluster.auth) and cluster identities, without a network."""

from __future__ import annotations

import pytest

from node.cluster import auth as auth_module
from node.cluster.auth import UNSIGNED, Authenticator, Request, content_digest
from node.errors import Unauthenticated
from node.model.identity import ClusterIdentity, join_token, key_id, parse_join_token

NOW = 1_800_000_000.0
BODY = b"a msgpack body"
HOST = "127.0.0.1:8000"


def authenticator(identity: ClusterIdentity, at: float = NOW) -> Authenticator:
    return Authenticator(identity, now=lambda: at)


def signed(
    signer: Authenticator, body: bytes = BODY, headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    sent = {"X-Ringstore-Peer": "p1", **(headers or {})}
    request = Request("PUT", HOST, "/internal/manifests?expect=1", sent)
    nonce, auth = signer.sign(request, content_digest(body))
    return nonce, {**sent, **auth}


def check(
    receiver: Authenticator,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    host: str = HOST,
) -> str:
    """What a receiving peer does: the signed headers first, then the body; the nonce."""
    nonce, digest = receiver.check_request(Request(method, host, path, headers))
    receiver.check_body(digest, body)
    return nonce


def test_a_signed_request_passes_once() -> None:
    identity = ClusterIdentity.create()
    sender, receiver = authenticator(identity), authenticator(identity)
    nonce, headers = signed(sender)
    assert check(receiver, "PUT", "/internal/manifests?expect=1", headers, BODY) == nonce
    with pytest.raises(Unauthenticated, match="replayed"):
        check(receiver, "PUT", "/internal/manifests?expect=1", headers, BODY)


@pytest.mark.parametrize(
    "change",
    [
        "method",
        "receiver",
        "path",
        "query",
        "body",
        "peer header",
        "new header",
        "timestamp",
        "key id",
    ],
)
def test_any_change_breaks_the_signature(change: str) -> None:
    identity = ClusterIdentity.create()
    _, headers = signed(authenticator(identity))
    method, path, body, host = "PUT", "/internal/manifests?expect=1", BODY, HOST
    if change == "method":
        method = "POST"
    elif change == "receiver":  # a replay to another peer
        host = "127.0.0.1:8001"
    elif change == "path":
        path = "/internal/manifestz?expect=1"
    elif change == "query":
        path = "/internal/manifests?expect=2"
    elif change == "body":
        body = b"another body"
    elif change == "peer header":
        headers["X-Ringstore-Peer"] = "p2"
    elif change == "new header":
        headers["X-Ringstore-Name"] = "added"
    elif change == "timestamp":
        parts = headers["X-Ringstore-Auth"].split()
        parts[2] = str(int(parts[2]) + 1)
        headers["X-Ringstore-Auth"] = " ".join(parts)
    elif change == "key id":
        parts = headers["X-Ringstore-Auth"].split()
        parts[1] = "0" * 16
        headers["X-Ringstore-Auth"] = " ".join(parts)
    with pytest.raises(Unauthenticated):
        check(authenticator(identity), method, path, headers, body, host)


def test_a_foreign_secret_and_a_missing_header_are_refused() -> None:
    _, headers = signed(authenticator(ClusterIdentity.create()))
    ours = authenticator(ClusterIdentity.create())
    with pytest.raises(Unauthenticated, match="not a key of this cluster"):
        check(ours, "PUT", "/internal/manifests?expect=1", headers, BODY)
    with pytest.raises(Unauthenticated, match="no valid"):
        check(ours, "PUT", "/internal/manifests?expect=1", {}, BODY)


@pytest.mark.parametrize("skew", [-31, 31, -3600, 10**9])
def test_a_request_outside_the_window_is_refused(skew: float) -> None:
    identity = ClusterIdentity.create()
    _, headers = signed(authenticator(identity, NOW + skew))
    with pytest.raises(Unauthenticated, match="dated"):
        check(authenticator(identity), "PUT", "/internal/manifests?expect=1", headers, BODY)


def test_unsigned_payload_only_for_streams() -> None:
    identity = ClusterIdentity.create()
    sender, receiver = authenticator(identity), authenticator(identity)
    _, headers = sender.sign(Request("PUT", HOST, "/internal/chunks/c-1", {}), UNSIGNED)
    check(receiver, "PUT", "/internal/chunks/c-1", headers, None)
    _, headers = sender.sign(Request("POST", HOST, "/internal/gossip", {}), UNSIGNED)
    with pytest.raises(Unauthenticated, match="must be signed"):
        check(receiver, "POST", "/internal/gossip", headers, b"{}")


def test_answers_are_bound_to_their_request() -> None:
    identity = ClusterIdentity.create()
    ours = authenticator(identity)
    header = ours.sign_answer("n1", 200, b"answer")
    ours.check_answer("n1", 200, b"answer", header)
    for nonce, status, body in [("n2", 200, b"answer"), ("n1", 201, b"answer"), ("n1", 200, b"x")]:
        with pytest.raises(Unauthenticated):
            ours.check_answer(nonce, status, body, header)
    with pytest.raises(Unauthenticated):
        ours.check_answer("n1", 200, b"answer", None)
    forged = authenticator(ClusterIdentity.create()).sign_answer("n1", 200, b"answer")
    with pytest.raises(Unauthenticated):
        ours.check_answer("n1", 200, b"answer", forged)


def test_rotation_accepts_every_listed_secret_and_signs_with_the_first() -> None:
    old = ClusterIdentity.create()
    new_secret = ClusterIdentity.create().signing_secret
    both_old_first = ClusterIdentity(old.cluster_id, [old.signing_secret, new_secret])
    both_new_first = ClusterIdentity(old.cluster_id, [new_secret, old.signing_secret])
    only_new = ClusterIdentity(old.cluster_id, [new_secret])
    path = "/internal/manifests?expect=1"
    for signer, receiver, ok in [
        (old, both_new_first, True),  # step 1 peers still sign with the old secret
        (both_new_first, both_old_first, True),  # step 2 peers sign with the new one
        (both_new_first, old, False),  # which is why step 1 must finish everywhere first
        (only_new, both_new_first, True),
        (old, only_new, False),  # step 3: the old secret is refused
    ]:
        _, headers = signed(authenticator(signer))
        if ok:
            check(authenticator(receiver), "PUT", path, headers, BODY)
        else:
            with pytest.raises(Unauthenticated):
                check(authenticator(receiver), "PUT", path, headers, BODY)


def test_the_nonce_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "MAX_NONCES", 5)
    identity = ClusterIdentity.create()
    receiver = authenticator(identity)
    sent = [signed(authenticator(identity))[1] for _ in range(6)]
    for headers in sent[:5]:
        check(receiver, "PUT", "/internal/manifests?expect=1", headers, BODY)
    # Full: refused, rather than forgetting a nonce still inside the window.
    with pytest.raises(Unauthenticated, match="more than 5 requests"):
        check(receiver, "PUT", "/internal/manifests?expect=1", sent[5], BODY)
    with pytest.raises(Unauthenticated, match="replayed"):
        check(receiver, "PUT", "/internal/manifests?expect=1", sent[0], BODY)


def test_identity_files_and_tokens_round_trip_and_never_show_the_secret() -> None:
    identity = ClusterIdentity.create()
    assert ClusterIdentity.from_json(identity.to_json()) == identity
    token = join_token(identity, ["http://10.0.0.1:8000", "https://h:1"])
    assert parse_join_token(f"  {token}\n") == (identity, ["http://10.0.0.1:8000", "https://h:1"])
    assert identity.signing_secret.hex() not in repr(identity)
    assert key_id(identity.signing_secret) in repr(identity)
    assert len(identity.signing_secret) == 32


@pytest.mark.parametrize(
    "token",
    ["", "rsjoin1.", "rsjoin1.!!!", "rsjoin2.abc", "rsjoin1." + "A" * 20_000, "rsjoin1.kA"],
)
def test_a_damaged_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match=r"token|member"):
        parse_join_token(token)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b'{"cluster_id": "xyz", "secrets": ["AAAA"]}',
        b'{"cluster_id": "0123456789abcdef", "secrets": []}',
    ],
)
def test_a_damaged_secret_file_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"secret|cluster id"):
        ClusterIdentity.from_json(data)
