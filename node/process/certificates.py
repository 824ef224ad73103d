"""A local certificate authority for ``ringstore up --tls``: one CA, one certificate per peer.

Everything lives in one directory (``DATA/tls``, mode 0700)::

    ca.pem              the CA certificate: give it to curl (--cacert) and clients
    ca-key.pem          the CA's private key (0600): signs certificates for later peers
    peer-<i>.pem        peer i's certificate, signed by the CA
    peer-<i>-key.pem    peer i's private key (0600)

Keys are ECDSA P-256. The CA is marked CA:true and may sign only certificates; a peer
certificate carries its serving address as an IP SAN (DNS SAN for a host name) and
``localhost``, and may serve and call (server and client auth). A later ``up`` reuses what
is there; a peer certificate is issued again only when it is missing, expires within a
month, or does not name the serving host. Writing happens in a thread (``asyncio.to_thread``
by the caller): this module does blocking file I/O.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.process.tls import TlsFiles

VALIDITY = datetime.timedelta(days=365)
CA_VALIDITY = datetime.timedelta(days=10 * 365)
RENEW_BEFORE = datetime.timedelta(days=30)
# Clocks of the machines a certificate is checked on may run a little behind ours.
BACKDATE = datetime.timedelta(hours=1)


def ensure_certificates(directory: Path, host: str, count: int) -> list[TlsFiles]:
    """TLS files for peers ``0..count-1`` serving on ``host``, made or reused in ``directory``.

    Raises OSError when the directory cannot be written, ValueError for unreadable PEM files.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    if ca_path.exists() and ca_key_path.exists():
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_path} is not an EC private key")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _ca_certificate(ca_key)
        _write_key(ca_key_path, ca_key)
        _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    files = []
    for index in range(count):
        peer = TlsFiles(
            directory / f"peer-{index}.pem", directory / f"peer-{index}-key.pem", ca_path
        )
        if not _usable(peer, ca, host):
            key = ec.generate_private_key(ec.SECP256R1())
            _write_key(peer.key, key)
            cert = _peer_certificate(key, host, ca, ca_key)
            _write(peer.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        files.append(peer)
    return files


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ringstore local CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _peer_certificate(
    key: ec.EllipticCurvePrivateKey,
    host: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _names(host: str) -> list[x509.GeneralName]:
    """The SANs of a peer serving on ``host``: its address (or name), and ``localhost``."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.insert(0, x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        if host != "localhost":
            names.insert(0, x509.DNSName(host))
    return names


def _usable(peer: TlsFiles, ca: x509.Certificate, host: str) -> bool:
    """Whether ``peer``'s files exist, its certificate was issued by ``ca``, names ``host``
    and stays valid for a while yet."""
    if not (peer.cert.exists() and peer.key.exists()):
        return False
    cert = x509.load_pem_x509_certificate(peer.cert.read_bytes())
    key = serialization.load_pem_private_key(peer.key.read_bytes(), password=None)
    if key.public_key() != cert.public_key():  # a write cut short between key and cert
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    soon = datetime.datetime.now(datetime.timezone.utc) + RENEW_BEFORE
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return cert.not_valid_after_utc > soon and _names(host)[0] in list(san)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole with ``mode`` from its creation on (a key is never readable by
    others, not even for a moment), through a temporary file renamed into place."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(partial, mode)  # the umask may have taken bits away (0644 for ca.pem)
    partial.replace(path)
