"""Files through the public API, with the test failing on any unexpected answer."""

from __future__ import annotations

import io
from typing import Any

import aiohttp


async def put_file(
    session: aiohttp.ClientSession, url: str, name: str, data: bytes
) -> dict[str, Any]:
    """PUT ``data`` as ``name`` through ``url``; fail the test unless it is a 201. (Over 1
    MiB from a BytesIO: aiohttp warns of raw bytes that large.)"""
    body = io.BytesIO(data) if len(data) > 1 << 20 else data
    async with session.put(f"{url}/files/{name}", data=body) as response:
        assert response.status == 201, f"PUT {name}: {response.status} {await response.text()}"
        reply: dict[str, Any] = await response.json()
        return reply


async def get_file(session: aiohttp.ClientSession, url: str, name: str) -> bytes:
    """GET ``name`` through ``url``; fail the test unless it is a 200."""
    async with session.get(f"{url}/files/{name}") as response:
        assert response.status == 200, f"GET {name}: {response.status} {await response.text()}"
        return await response.read()


async def get_manifest(session: aiohttp.ClientSession, url: str, name: str) -> dict[str, Any]:
    """``GET /manifests/{name}`` through ``url``; fail the test unless it is a 200."""
    async with session.get(f"{url}/manifests/{name}") as response:
        assert response.status == 200, f"manifest {name}: {response.status}"
        manifest: dict[str, Any] = await response.json()
        return manifest


async def check_files(
    session: aiohttp.ClientSession, urls: list[str], files: dict[str, bytes]
) -> None:
    """Read every file back, rotating over ``urls``; fail on any status or byte difference."""
    for i, (name, data) in enumerate(sorted(files.items())):
        got = await get_file(session, urls[i % len(urls)], name)
        assert got == data, f"{name}: {len(got)} bytes read differ from the {len(data)} written"


async def fully_redundant(session: aiohttp.ClientSession, url: str, names: list[str]) -> bool:
    """Every file's manifest has all k+m chunks of its layout, each on a member seen up."""
    async with session.get(f"{url}/cluster") as response:
        view = await response.json()
    up = {p["id"] for p in view["peers"] if p["state"] == "up"}
    for name in names:
        manifest = await get_manifest(session, url, name)
        holders = [c["holder"] for c in manifest["chunks"]]
        if len(holders) != manifest["k"] + manifest["m"] or not set(holders) <= up:
            return False
    return True


async def all_see_all_up(session: aiohttp.ClientSession, urls: list[str]) -> bool:
    """Every peer at ``urls`` answers ``/cluster`` and sees at least that many members up
    (False, not an error, while one does not answer yet: no connection, or an error status
    such as a 503 while it cannot read the session's access key from the ring yet)."""
    for url in urls:
        try:
            async with session.get(f"{url}/cluster") as response:
                if response.status != 200:
                    return False
                view = await response.json()
        except aiohttp.ClientError:
            return False
        if sum(p["state"] == "up" for p in view["peers"]) < len(urls):
            return False
    return True
