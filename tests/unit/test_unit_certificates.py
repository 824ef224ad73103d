"""The local CA of ``ringstore up --tls``: what it makes, with which modes, and reuse."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from node.process.certificates import ensure_certificates
from node.process.tls import client_context, server_context


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_ca_and_one_certificate_per_peer_with_private_keys(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    files = ensure_certificates(directory, "127.0.0.1", 3)
    assert [f.cert.name for f in files] == ["peer-0.pem", "peer-1.pem", "peer-2.pem"]
    assert mode(directory) == 0o700
    assert mode(directory / "ca.pem") == 0o644
    assert mode(directory / "ca-key.pem") == 0o600
    assert all(mode(f.key) == 0o600 for f in files)
    assert not list(directory.glob("*.partial"))

    ca = load(directory / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for peer in files:
        cert = load(peer.cert)
        cert.verify_directly_issued_by(ca)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 360 <= lifetime.days <= 370
        # Python's own checks accept them (strict X.509 where the version has it).
        server_context(peer)
        client_context(peer.ca, peer)


def test_a_later_call_reuses_what_is_there_and_adds_what_is_missing(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    first = ensure_certificates(directory, "127.0.0.1", 2)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    more = ensure_certificates(directory, "127.0.0.1", 4)
    assert more[:2] == first
    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.name in before} == before
    assert more[3].cert.exists()


def test_a_certificate_for_another_host_or_key_is_issued_again(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    (peer,) = ensure_certificates(directory, "127.0.0.1", 1)
    ca_before = (directory / "ca.pem").read_bytes()
    ensure_certificates(directory, "127.0.0.2", 1)
    san = load(peer.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.2")]
    assert (directory / "ca.pem").read_bytes() == ca_before

    peer.key.unlink()  # as if a start-up had been cut short between the key and the cert
    ensure_certificates(directory, "127.0.0.2", 1)
    server_context(peer)  # key and certificate match again


def test_contexts_built_from_the_files_complete_a_handshake(tmp_path: Path) -> None:
    """Peer 0 calls peer 1, in memory: the server's and the client's checks both pass."""
    a, b = ensure_certificates(tmp_path / "tls", "127.0.0.1", 2)
    client, server = End(), End()
    calling = client_context(a.ca, a).wrap_bio(client.incoming, client.outgoing, False, "127.0.0.1")
    serving = server_context(b).wrap_bio(server.incoming, server.outgoing, server_side=True)
    pending = [(calling, client, server), (serving, server, client)]
    for _ in range(10):
        for this, own, other in list(pending):
            try:
                this.do_handshake()
                pending.remove((this, own, other))
            except ssl.SSLWantReadError:
                pass
            other.incoming.write(own.outgoing.read())
        if not pending:
            break
    assert not pending, "the handshake did not finish"
    assert serving.getpeercert()  # the client's certificate was checked and kept
    assert calling.version() in ("TLSv1.2", "TLSv1.3")


class End:
    """One end of an in-memory connection: what it has received and what it sends."""

    def __init__(self) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
