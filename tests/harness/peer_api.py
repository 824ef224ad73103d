"""Calling a peer's ``/internal/`` API from a test, signed as a member (or anyone) would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from yarl import URL

from node.cluster.auth import Authenticator, Request, content_digest
from node.cluster.protocol import PEER_HEADER
from node.cluster.transport import HttpTransport
from tests.harness.local import LocalPeer


@asynccontextmanager
async def internal(
    http: aiohttp.ClientSession,
    peer: LocalPeer,
    method: str,
    path: str,
    *,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    auth: Authenticator | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Make one peer-API call to ``peer``, signed with ``auth`` (default: the peer's own
    authenticator, i.e. as a fellow member) and meant for it (unless ``headers`` name
    another ``PEER_HEADER``); yields the response."""
    url = URL(f"{peer.url}{path}")
    if params:
        url = url.with_query(dict(params))
    sent = {PEER_HEADER: peer.id, **(headers or {})}
    request = Request(method, url.host_port_subcomponent or "", url.raw_path_qs, sent)
    _, signed = (auth or peer.auth).sign(request, content_digest(data or b""))
    async with http.request(method, url, data=data, headers={**sent, **signed}) as response:
        yield response


@asynccontextmanager
async def peer_transport(auth: Authenticator, timeout: float = 5.0) -> AsyncIterator[HttpTransport]:
    """The transport a peer signing with ``auth`` makes its calls with, on a session of its
    own; closed after (its channels with it)."""
    async with aiohttp.ClientSession() as session:
        transport = HttpTransport(session, timeout, auth)
        try:
            yield transport
        finally:
            await transport.close()
