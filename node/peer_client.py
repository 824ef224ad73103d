"""Calls from one peer to another over the peer-to-peer API (``/internal/...``).

One pooled aiohttp session serves every call. Transport failures and error statuses become
the domain exceptions of ``node.errors`` here, so the coordinator never sees aiohttp errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgpack

from node.codec import Buffer
from node.errors import (
    ChunkNotFound,
    CorruptData,
    InsufficientStorage,
    PeerUnavailable,
    RingstoreError,
)
from node.manifest import Manifest
from node.version import Version

MSGPACK = "application/msgpack"
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True)
class ManifestWrite:
    """A replica's answer to a manifest write."""

    stored: bool
    current: Version
    replaced: Manifest | None


class PeerClient:
    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)

    async def _check(self, url: str, response: aiohttp.ClientResponse) -> None:
        if response.status < 400:
            return
        try:
            error = (await response.json())["error"]
            code, message = error["code"], error["message"]
        except (aiohttp.ClientError, ValueError, KeyError, TypeError):
            code, message = "", response.reason or ""
        if response.status == 404:
            raise ChunkNotFound(message)
        if response.status == 507:
            raise InsufficientStorage(message)
        raise PeerUnavailable(url, f"HTTP {response.status} {code}: {message}")

    @asynccontextmanager
    async def _request(
        self, method: str, url: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            async with self._session.request(
                method, url, timeout=self._timeout, **kwargs
            ) as response:
                await self._check(url, response)
                yield response
        except RingstoreError:
            raise
        except TRANSPORT_ERRORS as exc:
            raise PeerUnavailable(url, str(exc) or type(exc).__name__) from exc

    async def put_chunk(
        self, base: str, chunk_id: str, body: AsyncIterable[Buffer], size: int | None
    ) -> int:
        """Stream a chunk to a peer; return the size it stored."""
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:  # a known length avoids chunked encoding (cheaper on both ends)
            headers["Content-Length"] = str(size)
        async with self._request(
            "PUT", f"{base}/internal/chunks/{chunk_id}", data=body, headers=headers
        ) as response:
            stored: int = (await response.json())["size"]
            return stored

    @asynccontextmanager
    async def open_chunk(
        self, base: str, chunk_id: str, offset: int, length: int
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """Open bytes ``[offset, offset+length)`` of a chunk as a stream."""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"} if length else {}
        async with self._request(
            "GET", f"{base}/internal/chunks/{chunk_id}", headers=headers
        ) as response:
            yield response.content

    async def delete_chunk(self, base: str, chunk_id: str) -> None:
        async with self._request("DELETE", f"{base}/internal/chunks/{chunk_id}"):
            pass

    async def get_manifest(self, base: str, name: str) -> Manifest | None:
        try:
            async with self._request(
                "GET", f"{base}/internal/manifests", params={"name": name}
            ) as response:
                return Manifest.from_bytes(await response.read())
        except ChunkNotFound:
            return None

    async def put_manifest(self, base: str, manifest: Manifest) -> ManifestWrite:
        async with self._request(
            "PUT",
            f"{base}/internal/manifests",
            data=manifest.to_bytes(),
            headers={"Content-Type": MSGPACK},
        ) as response:
            reply = await _unpack(response)
            replaced = reply["replaced"]
            return ManifestWrite(
                reply["stored"],
                Version.from_wire(reply["current"]),
                Manifest.from_bytes(replaced) if replaced is not None else None,
            )

    async def list_manifests(
        self, base: str, prefix: str, start_after: str, limit: int
    ) -> tuple[list[Manifest], bool]:
        params = {"prefix": prefix, "start_after": start_after, "limit": str(limit)}
        async with self._request(
            "GET", f"{base}/internal/manifests/list", params=params
        ) as response:
            reply = await _unpack(response)
            return [Manifest.from_bytes(m) for m in reply["manifests"]], reply["truncated"]

    async def exchange(self, base: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send this peer's gossip to another and return its answer."""
        async with self._request(
            "POST",
            f"{base}/internal/gossip",
            data=msgpack.packb(payload),
            headers={"Content-Type": MSGPACK},
        ) as response:
            return await _unpack(response)


async def _unpack(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        reply: dict[str, Any] = msgpack.unpackb(await response.read(), raw=False)
    except ValueError as exc:
        raise CorruptData(f"undecodable reply from {response.url}: {exc}") from exc
    return reply
