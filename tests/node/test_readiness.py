"""``/health`` and ``/ready`` of real in-process peers: open to anyone, and ``/ready`` says
503 with its reasons while a peer has not joined, sees no other member up, or cannot write
its data directory. ``--metrics-auth public`` opens ``/metrics`` as well."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import LocalCluster, eventually
from tests.harness.ports import free_port


async def ready(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{url}/ready") as answer:
        body: dict[str, Any] = await answer.json()
        return answer.status, body


async def is_ready(session: aiohttp.ClientSession, url: str) -> bool:
    return (await ready(session, url))[0] == 200


async def not_ready_for(session: aiohttp.ClientSession, url: str, reason: str) -> bool:
    status, body = await ready(session, url)
    return status == 503 and any(r.startswith(reason) for r in body.get("reasons", []))


async def test_a_lone_peer_is_healthy_and_ready_without_credentials(
    tmp_path: Path, anonymous: aiohttp.ClientSession
) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        await cluster.start(1, admin_key=False)
        async with anonymous.get(f"{cluster[0].url}/health") as answer:
            assert answer.status == 200
            assert (await answer.json())["status"] == "ok"
        status, body = await ready(anonymous, cluster[0].url)
        assert (status, body["status"], body["members"]) == (200, "ready", 1)
        assert answer.headers["X-Request-Id"]
    finally:
        await cluster.stop()


async def test_not_ready_before_joining_nor_while_every_other_member_is_down(
    tmp_path: Path, anonymous: aiohttp.ClientSession
) -> None:
    lone = LocalCluster(tmp_path / "lone")
    try:
        # Its one seed does not answer: the peer knows no ring but its own.
        lost = await lone.add_peer(join=(f"http://127.0.0.1:{free_port()}",))
        status, body = await ready(anonymous, lost.url)
        assert status == 503
        assert body["status"] == "not ready"
        assert body["reasons"] == ["not joined: no member has answered at the join addresses yet"]
    finally:
        await lone.stop()
    pair = LocalCluster(tmp_path / "pair")
    try:
        await pair.start(2, admin_key=False)
        await eventually(lambda: is_ready(anonymous, pair[1].url), what="the joined peer ready")
        await pair[0].stop()
        await eventually(
            lambda: not_ready_for(anonymous, pair[1].url, "not joined: none of the 1 other"),
            what="the peer left alone to say it is not ready",
        )
    finally:
        await pair.stop()


async def test_not_ready_while_the_data_directory_takes_no_writes(
    tmp_path: Path, anonymous: aiohttp.ClientSession
) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        await cluster.start(1, admin_key=False)
        peer = cluster[0]
        assert await is_ready(anonymous, peer.url)
        # A file where the directory chunks arrive in was: no write there succeeds, for
        # root too (chmod would not stop root, and tests may run as root).
        incoming = peer.data_dir / "incoming"
        incoming.rename(peer.data_dir / "incoming.away")
        incoming.write_bytes(b"")
        await eventually(
            lambda: not_ready_for(anonymous, peer.url, "disk not writable: the data directory"),
            what="the peer to see its disk unwritable",
        )
        incoming.unlink()
        (peer.data_dir / "incoming.away").rename(incoming)
        await eventually(lambda: is_ready(anonymous, peer.url), what="ready again")
    finally:
        await cluster.stop()


async def test_metrics_auth_public_opens_metrics_to_anyone(
    tmp_path: Path, anonymous: aiohttp.ClientSession
) -> None:
    cluster = LocalCluster(tmp_path, metrics_auth="public")
    try:
        await cluster.start(1, admin_key=False)
        async with anonymous.get(f"{cluster[0].url}/metrics") as answer:
            assert answer.status == 200
            assert "ringstore_members" in await answer.text()
    finally:
        await cluster.stop()
