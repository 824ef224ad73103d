"""Access keys and namespaces over a cluster's life: its first key, a peer that was down,
files from before access keys, and keys made with the cluster secret.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.credentials import Credentials
from node.api.keys import ACCESS
from node.disk.data_dir import ADOPTED_FILE, CREDENTIALS_FILE, PENDING_KEY_FILE
from node.model.access import Grants, key_record_name, new_access_key, new_secret
from node.process.admin import create_key_as_cluster
from node.process.identity import token_for
from tests.harness import LocalCluster, LocalPeer, eventually


def basic(access_key: str, secret: str) -> dict[str, str]:
    return {"Authorization": Credentials(access_key, secret).authorization}


async def status_of(
    session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], **kw: Any
) -> int:
    async with session.request(method, url, headers=headers, **kw) as response:
        await response.read()
        return response.status


async def test_a_new_cluster_makes_its_admin_key_and_awscli_can_read_it(tmp_path: Path) -> None:
    """A peer started alone makes a cluster and its admin key (DATA/credentials, 0600); the
    key is stored once a second peer joins, and botocore reads the file as [default]."""
    botocore_session = pytest.importorskip("botocore.session")
    first = LocalPeer(tmp_path / "first", ())
    second: LocalPeer | None = None
    try:
        await first.start()
        credentials = tmp_path / "first" / CREDENTIALS_FILE
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert (tmp_path / "first" / PENDING_KEY_FILE).exists()  # one peer: no quorum yet
        token, _ = token_for(tmp_path / "first", [first.url], create=False)
        second = LocalPeer(tmp_path / "second", (), join_token=token)
        await second.start()
        await eventually(
            lambda: not (tmp_path / "first" / PENDING_KEY_FILE).exists(),
            20.0,
            "the admin key to be stored",
        )
        aws = botocore_session.Session()
        aws.set_config_variable("credentials_file", str(credentials))
        aws.set_config_variable("config_file", str(tmp_path / "no-aws-config"))
        found = aws.get_credentials()
        assert found is not None
        assert found.method == "shared-credentials-file"
        headers = basic(found.access_key, found.secret_key)
        async with aiohttp.ClientSession() as http:
            for peer in (first, second):  # (two peers store keys, not yet files: k is 5)
                assert await status_of(http, "GET", f"{peer.url}/keys", headers) == 200
                assert await status_of(http, "GET", f"{peer.url}/keys", {}) == 401
    finally:
        for peer in (first, second):
            if peer is not None:
                await peer.stop()


async def test_a_peer_down_while_a_key_is_made_learns_it_when_back(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        await cluster.start(7)
        absent = cluster[3]
        # a key whose record this peer is a replica of
        while (
            absent.id
            not in cluster[0]
            .membership.replicas(key_record_name(access_key := new_access_key()))
            .members
        ):
            pass
        await absent.stop()
        await cluster.wait_down(absent)
        secret = new_secret()
        assert cluster[0].app is not None
        store = cluster[0].app[ACCESS]
        await store.create_key("made-while-down", Grants.of(read=["*"]), (access_key, secret))
        await absent.start()
        await cluster.wait_converged()
        url = f"{absent.url}/files?prefix=anything/"
        assert await status_of(http, "GET", url, basic(access_key, secret)) == 200
        name = key_record_name(access_key)

        async def repaired() -> bool:
            # Each quorum read repairs the replicas among the first to answer that lag; the
            # returned peer is among them sooner or later (or the rebalancer hands the
            # handoff's copy back first).
            await absent.replicas.read(name)
            return name in absent.manifests.names()

        await eventually(repaired, 20.0, "the returned peer's replica", interval=0.1)
    finally:
        await cluster.stop()


async def test_files_from_before_access_keys_keep_their_namespaces(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        await cluster.start(5)
        # every peer's own first adoption done (it found nothing to adopt), so that its
        # marker, removed below, is not written after the removal
        await eventually(
            lambda: all((p.data_dir / ADOPTED_FILE).exists() for p in cluster.peers),
            20.0,
            "every peer's first adoption",
        )
        old = ["Legacy_Files/report.txt", "xy/b.txt", "photos/2025/a.jpg", "top-level.txt"]
        old.append(f"{'n' * 1015}/x")  # a first segment too long for a namespace record
        for name in old:  # stored as the previous release did: no namespace records
            await cluster[1].coordinator.put(name, _once(name.encode()), None, "text/plain")
        for peer in cluster.peers:  # as on the first start of this release
            (peer.data_dir / ADOPTED_FILE).unlink()
            await peer.restart()
        await cluster.wait_converged()
        wanted = {"Legacy_Files", "xy", "photos", "top-level.txt"}  # (not the long one)

        async def adopted() -> bool:
            async with http.get(f"{cluster[2].url}/namespaces") as response:
                listed = (await response.json())["namespaces"]
            return {ns["name"] for ns in listed if ns["adopted"]} == wanted

        await eventually(adopted, 20.0, "the old namespaces to be adopted")
        async with http.post(f"{cluster[0].url}/keys", json={"read": ["Legacy_Files"]}) as made:
            key = await made.json()
        reader = basic(key["access_key"], key["secret_key"])
        async with aiohttp.ClientSession() as plain:
            url = f"{cluster[4].url}/files/Legacy_Files/report.txt"
            async with plain.get(url, headers=reader) as response:
                assert response.status == 200
                assert await response.read() == b"Legacy_Files/report.txt"
            assert await status_of(plain, "GET", f"{cluster[4].url}/files/xy/b.txt", reader) == 403
            url = f"{cluster[0].url}/files/top-level.txt"
            assert await status_of(plain, "GET", url, {}) == 401
        async with http.get(f"{cluster[0].url}/files/top-level.txt") as response:
            assert await response.read() == b"top-level.txt"
    finally:
        await cluster.stop()


async def test_whoever_holds_the_cluster_secret_can_make_an_admin_key(
    tmp_path: Path,
) -> None:
    """The way back in for a cluster from before access keys, or with its admin keys lost."""
    cluster = LocalCluster(tmp_path)
    try:
        await cluster.start(3)
        made = await create_key_as_cluster(
            cluster[1].data_dir, cluster.urls, "rescue", Grants(admin=True), patience=10.0
        )
        async with aiohttp.ClientSession() as plain:
            headers = basic(made.access_key, made.secret_key)
            assert await status_of(plain, "GET", f"{cluster[2].url}/keys", headers) == 200
            other = tmp_path / "not-a-member"
            other.mkdir()
            with pytest.raises(Exception, match="no cluster secret"):
                await create_key_as_cluster(other, cluster.urls, "x", Grants(admin=True))
    finally:
        await cluster.stop()


async def _once(data: bytes) -> Any:
    yield data
