"""TLS between in-process peers (certificates from trustme): curl, the client, and refusals.

The cluster's peers hold certificates of one CA. What must hold: files go in and out over
HTTPS with curl and the client library given that CA; plain HTTP to the port is refused; a
caller presenting a certificate of another CA fails the handshake while one presenting none
is served; and a peer certified by another CA is refused both ways, so it never becomes a
member that is up and never holds a chunk.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from click.testing import CliRunner, Result

from client import AsyncClient, Client, PeerUnreachable
from node.config import PeerConfig
from node.process.cli import main
from node.process.tls import TlsFiles, client_context, server_context
from ring import Member
from tests.harness import LocalCluster, LocalPeer, eventually
from tests.harness.access import ADMIN

# Python 3.10's asyncio sslproto warns "unclosed transport" for connections whose handshake
# failed although they are closed (python/cpython#90476, fixed by 3.11's new sslproto).
# Refused handshakes are what these tests make, so on 3.10 only that warning is ignored.
# (Its transports also warn when the client closed the connection, not the server.)
SSLPROTO_310 = (
    [
        pytest.mark.filterwarnings(
            "ignore:Exception ignored in.*_SSLProtocolTransport.__del__"
            ":pytest.PytestUnraisableExceptionWarning"
        ),
        pytest.mark.filterwarnings("ignore:unclosed transport <asyncio.sslproto:ResourceWarning"),
    ]
    if sys.version_info < (3, 11)
    else []
)
pytestmark = SSLPROTO_310

CURL = "/usr/bin/curl"
HAVE_CURL = Path(CURL).exists()
needs_curl = pytest.mark.skipif(not HAVE_CURL, reason="curl is not installed")


def write_tls_files(
    ca: trustme.CA, directory: Path, name: str, names: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> TlsFiles:
    """A certificate for ``names`` signed by ``ca``, written as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*names)
    files = TlsFiles(directory / f"{name}.pem", directory / f"{name}-key.pem", directory / "ca.pem")
    files.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


def overrides(files: TlsFiles) -> dict[str, Path]:
    return {"tls_cert": files.cert, "tls_key": files.key, "tls_ca": files.ca}


@pytest.fixture
def cluster_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(cluster_ca: trustme.CA, tmp_path: Path) -> TlsFiles:
    return write_tls_files(cluster_ca, tmp_path / "tls", "peer")


@pytest.fixture
async def tls_cluster(
    tmp_path: Path, tls_files: TlsFiles, loop_guard: None
) -> AsyncIterator[LocalCluster]:
    """Five in-process peers serving HTTPS, all with one certificate of the cluster CA."""
    local = LocalCluster(tmp_path / "peers", block_size=4096, **overrides(tls_files))
    try:
        await local.start(5)
        yield local
    finally:
        await local.stop()


def curl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CURL, "-sS", "--fail-with-body", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_contexts_verify_as_documented(tls_files: TlsFiles) -> None:
    server = server_context(tls_files)
    assert server.verify_mode == ssl.CERT_OPTIONAL
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    for client in (client_context(tls_files.ca), client_context(tls_files.ca, tls_files)):
        assert client.verify_mode == ssl.CERT_REQUIRED
        assert client.check_hostname
        assert client.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_half_given_tls_set_up_is_an_error() -> None:
    with pytest.raises(ValueError, match="missing --tls-key, --tls-ca"):
        PeerConfig(data_dir=Path("d"), tls_cert=Path("cert.pem"))
    assert PeerConfig(data_dir=Path("d"), port=1).url == "http://127.0.0.1:1"
    files = {"tls_cert": Path("c"), "tls_key": Path("k"), "tls_ca": Path("a")}
    assert PeerConfig(data_dir=Path("d"), port=1, **files).url == "https://127.0.0.1:1"


@needs_curl
async def test_put_and_get_with_curl_and_the_cluster_ca(
    tls_cluster: LocalCluster, tls_files: TlsFiles, tmp_path: Path
) -> None:
    urls = tls_cluster.urls
    assert all(url.startswith("https://") for url in urls)
    source = tmp_path / "source"
    source.write_bytes(bytes(range(256)) * 300)
    ca = ("--cacert", str(tls_files.ca), "-u", ":".join(ADMIN))
    put = await asyncio.to_thread(curl, *ca, "-T", str(source), f"{urls[1]}/files/tls/a")
    assert put.returncode == 0, put.stderr
    got = await asyncio.to_thread(curl, *ca, f"{urls[3]}/files/tls/a")
    assert got.returncode == 0, got.stderr
    assert got.stdout == source.read_bytes()
    # Without the CA, curl does not trust the peer (60: peer certificate cannot be verified).
    untrusted = await asyncio.to_thread(curl, f"{urls[3]}/files/tls/a")
    assert untrusted.returncode == 60, untrusted.stderr


async def test_put_and_get_with_the_client_library_and_the_ca(
    tls_cluster: LocalCluster, tls_files: TlsFiles
) -> None:
    async with AsyncClient(tls_cluster.urls, cafile=tls_files.ca) as store:
        await store.put("tls/async", b"over https" * 1000)
        assert await store.get("tls/async") == b"over https" * 1000

    def blocking() -> bytes:
        with Client(tls_cluster.urls[2], cafile=str(tls_files.ca)) as store:
            store.put("tls/sync", b"blocking, over https")
            return store.get("tls/async")

    assert await asyncio.to_thread(blocking) == b"over https" * 1000
    # Without the CA the system's trusted CAs do not vouch for the cluster's peers.
    async with AsyncClient(tls_cluster.urls[0], attempts=1) as untrusting:
        with pytest.raises(PeerUnreachable, match="TLS certificate is not trusted"):
            await untrusting.get("tls/async")


async def test_plain_http_to_the_tls_port_is_refused(
    tls_cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    plain = tls_cluster.urls[0].replace("https://", "http://")
    with pytest.raises(aiohttp.ClientError):
        async with http.get(f"{plain}/health") as response:
            await response.read()
    async with AsyncClient(plain, attempts=1) as store:
        with pytest.raises(PeerUnreachable):
            await store.get("anything")
    if HAVE_CURL:
        refused = await asyncio.to_thread(curl, f"{plain}/health")
        assert refused.returncode != 0
        assert refused.stdout == b""


async def test_client_certificates_are_optional_but_must_be_the_clusters(
    tls_cluster: LocalCluster, tls_files: TlsFiles, tmp_path: Path
) -> None:
    stranger = write_tls_files(trustme.CA(), tmp_path / "stranger", "stranger")
    # A caller that trusts the cluster CA but presents another CA's certificate.
    presenting_foreign = TlsFiles(stranger.cert, stranger.key, tls_files.ca)
    contexts: dict[str, ssl.SSLContext] = {
        "none": client_context(tls_files.ca),
        "the cluster's": client_context(tls_files.ca, tls_files),
        "a foreign one": client_context(tls_files.ca, presenting_foreign),
    }

    async def health(context: ssl.SSLContext) -> int:
        connector = aiohttp.TCPConnector(ssl=context, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{tls_cluster.urls[0]}/health") as response,
        ):
            await response.read()
            return response.status

    assert await health(contexts["none"]) == 200
    assert await health(contexts["the cluster's"]) == 200
    with pytest.raises(aiohttp.ClientError):
        await health(contexts["a foreign one"])


async def test_a_peer_certified_by_another_ca_is_refused_both_ways(
    tls_cluster: LocalCluster, tls_files: TlsFiles, tmp_path: Path
) -> None:
    stranger = write_tls_files(trustme.CA(), tmp_path / "stranger", "stranger")
    # The rogue trusts the cluster CA and joins through peer 0, but its certificate is not
    # the cluster's: peers refuse its calls, and it fails their checks as a server.
    rogue = await tls_cluster.add_peer(
        tls_cert=stranger.cert, tls_key=stranger.key, tls_ca=tls_files.ca
    )
    legit = await tls_cluster.add_peer()  # a newcomer with the cluster's certificate
    members = [p for p in tls_cluster.peers if p is not rogue]
    for peer in members:  # as an mDNS announcement would: anyone can announce
        peer.membership.learn(Member(rogue.id, rogue.url, 1))

    def refused_everywhere() -> bool:
        return all(p.membership.liveness(rogue.id).failures >= 3 for p in members)

    await eventually(refused_everywhere, 20, "every peer to fail to reach the rogue")
    await eventually(
        lambda: all(legit.id in p.membership.up_ids() for p in members),
        20,
        "the legitimate newcomer to be up everywhere",
    )
    assert all(rogue.id not in p.membership.up_ids() for p in members)
    assert rogue.membership.up_ids() == {rogue.id}  # it never heard back from anyone

    async with AsyncClient(tls_cluster.urls[0], cafile=tls_files.ca) as store:
        for index in range(12):
            await store.put(f"spread/{index}", bytes([index]) * 50_000)
        for index in range(12):
            assert await store.get(f"spread/{index}") == bytes([index]) * 50_000
    assert rogue.chunk_files() == []
    assert all(rogue.id not in p.membership.up_ids() for p in members)


async def test_a_certificate_for_another_address_is_refused(
    cluster_ca: trustme.CA, tmp_path: Path, loop_guard: None
) -> None:
    """Hostname checking is on: the CA's signature alone is not enough."""
    elsewhere = write_tls_files(cluster_ca, tmp_path / "tls", "elsewhere", ("10.9.8.7",))
    peer = LocalPeer(tmp_path / "peer", (), **overrides(elsewhere))
    await peer.start()
    try:
        connector = aiohttp.TCPConnector(ssl=client_context(elsewhere.ca))
        async with aiohttp.ClientSession(connector=connector) as session:
            mismatch = "IP address mismatch"
            with pytest.raises(aiohttp.ClientConnectorCertificateError, match=mismatch):
                await session.get(f"{peer.url}/health")
    finally:
        await peer.stop()


async def test_the_cli_takes_the_ca_from_cacert_or_the_environment(
    tls_cluster: LocalCluster, tls_files: TlsFiles, tmp_path: Path
) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"through the command line, over https")
    peer = ("--peer", tls_cluster.urls[1])

    def run(*args: str, **env: str | None) -> Result:
        runner = CliRunner(env={"RINGSTORE_PEERS": None, "RINGSTORE_CA_BUNDLE": None, **env})
        return runner.invoke(main, list(args))

    put = await asyncio.to_thread(
        run, "put", "-q", str(source), "cli/notes", *peer, "--cacert", str(tls_files.ca)
    )
    assert put.exit_code == 0, put.output
    got = await asyncio.to_thread(
        run, "get", "cli/notes", "-", *peer, RINGSTORE_CA_BUNDLE=str(tls_files.ca)
    )
    assert got.exit_code == 0, got.output
    assert got.stdout_bytes == source.read_bytes()

    untrusted = await asyncio.to_thread(run, "ls", *peer)
    assert untrusted.exit_code == 1
    assert "TLS certificate is not trusted" in untrusted.stderr
    not_a_ca = await asyncio.to_thread(run, "ls", *peer, "--cacert", str(source))
    assert not_a_ca.exit_code == 2
    assert "not a PEM CA bundle" in not_a_ca.stderr
