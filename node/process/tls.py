"""TLS for one peer: the server context of its port and the client context of its peer calls.

A TLS cluster has one CA. Every peer serves HTTPS with a certificate the CA signed and trusts
nothing but that CA, both ways:

- as a server (``server_context``) it asks callers for a certificate but does not require
  one (``CERT_OPTIONAL``): curl and the client library connect without one, while a caller
  presenting a certificate the CA did not sign fails the handshake;
- as a client of other peers (``client_context`` with ``own``) it checks the server's
  certificate against the CA and its address (hostname checking on: peer certificates carry
  the serving address as an IP SAN) and presents its own certificate.

So a peer with a certificate from another CA is refused by both sides and never becomes a
member that is up. Who may call the peer API at all is not TLS's question (see
docs/security.md). Both contexts use Python's modern defaults and refuse anything below
TLS 1.2. Building a context reads the files: call it at start-up, not on a hot path.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from node.config import PeerConfig

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class TlsFiles:
    """A peer's certificate and key, and the cluster CA it trusts (all PEM files)."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def of(cls, config: PeerConfig) -> TlsFiles | None:
        """The TLS files of ``config``, or None when it serves plain HTTP."""
        if config.tls_cert is None or config.tls_key is None or config.tls_ca is None:
            return None
        return cls(config.tls_cert, config.tls_key, config.tls_ca)

    def options(self) -> list[str]:
        """The ``ringstore peer`` options that give a peer these files."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-ca", str(self.ca)]


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The context a peer serves with: its certificate, client certificates optional but
    checked against the CA when given. Raises OSError or ssl.SSLError for unusable files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=files.ca)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(files.cert, files.key)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(ca: Path, own: TlsFiles | None = None) -> ssl.SSLContext:
    """A context that trusts only servers whose certificate ``ca`` signed for the address
    called, and presents ``own``'s certificate when given (a peer calling peers).
    Raises OSError or ssl.SSLError for unusable files."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = MINIMUM_VERSION
    if own is not None:
        context.load_cert_chain(own.cert, own.key)
    return context
