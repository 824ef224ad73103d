"""Acting as the cluster itself: what whoever holds the cluster secret can do without a key.

An access key is normally made with an admin key (``POST /keys``). The first one cannot be:
``ringstore up`` and ``ringstore key create --data-dir DIR`` (on a machine holding the
cluster's secret file: a lost admin key, or a cluster from before access keys) sign a
peer-API call with the cluster secret instead (``POST /internal/keys``, ``node.cluster.auth``),
exactly as a peer would. Holding the secret already makes one a member, so this grants
nothing new. Like every peer call but gossip, the call names the peer it is meant for (its
id, from the peer's ``/health``): a copy replayed to another peer within the signature's
window would otherwise have made a second key there, and answered its secret.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from node.cluster.auth import Authenticator
from node.cluster.protocol import KeyCreated, KeyOrder
from node.cluster.transport import Address, HttpTransport
from node.disk.data_dir import load_identity
from node.errors import PeerUnavailable, RingstoreError, StartRefused
from node.model.access import Grants
from node.process.tls import client_context

PEER_TIMEOUT = 10.0
HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=PEER_TIMEOUT)


async def create_key_as_cluster(
    data_dir: Path,
    urls: list[str],
    name: str,
    grants: Grants,
    patience: float = 0.0,
    cafile: Path | None = None,
) -> KeyCreated:
    """Create an access key through the first of ``urls`` that can, signing with the
    cluster secret of ``data_dir`` (a peer's or ``ringstore up``'s). Tries again for up to
    ``patience`` seconds while no peer can (a cluster still starting).

    Raises StartRefused when ``data_dir`` holds no cluster secret, RingstoreError (the last
    peer's) when no peer created the key.
    """
    try:
        identity = await asyncio.to_thread(load_identity, data_dir)
    except ValueError as exc:
        raise StartRefused(str(exc)) from None
    if identity is None:
        raise StartRefused(f"{data_dir} holds no cluster secret (cluster-secret.json)")
    ssl = client_context(cafile) if cafile is not None else True
    deadline = time.monotonic() + patience
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl)) as session:
        transport = HttpTransport(session, PEER_TIMEOUT, Authenticator(identity))
        while True:
            failure: RingstoreError | None = None
            for url in urls:
                try:
                    to = Address(url, await _peer_id(session, url))
                    return await transport.create_key(to, KeyOrder(name, grants))
                except RingstoreError as exc:
                    failure = exc
            assert failure is not None, "no URL to ask"
            if time.monotonic() >= deadline:
                raise failure
            await asyncio.sleep(0.5)


async def _peer_id(session: aiohttp.ClientSession, url: str) -> str:
    """The id of the peer at ``url``, from its ``GET /health`` (no key needed). Raises
    PeerUnavailable when it cannot say."""
    try:
        async with session.get(f"{url}/health", timeout=HEALTH_TIMEOUT) as response:
            response.raise_for_status()
            found = (await response.json()).get("id")
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError) as exc:
        raise PeerUnavailable(url, f"no peer id from /health: {exc}") from exc
    if not isinstance(found, str) or not found:
        raise PeerUnavailable(url, "its /health names no peer id")
    return found
