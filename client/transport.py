"""Requests with failover: one pooled aiohttp session, a list of peers, bounded retries.

Any peer can serve any request. A request goes to the current peer; when that peer cannot be
reached (refused, reset, timed out) or answers 503, the request is tried again on the next
peer after a short exponential backoff, up to ``RetryPolicy.attempts`` tries in all, and the
next peer becomes the current one for later requests. An upload is tried again only while its
body can be sent whole again (see ``client.body``). Every other error answer is turned into
an exception by ``client.errors`` and raised at once.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from client.body import PIECE, RequestBody
from client.credentials import Credentials
from client.errors import (
    PeerUnreachable,
    RingstoreError,
    Unavailable,
    UnexpectedResponse,
    error_from_exception,
    error_from_response,
)

TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)
"""What aiohttp raises when a peer fails to answer (as opposed to answering with an error)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is tried on the next peer."""

    attempts: int
    """Tries in all, each on the next peer (1 = never retry)."""
    backoff: float = 0.05
    """Pause before the first retry, in seconds; doubled for each further retry."""
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number ``attempt`` (0 is the first try: no wait)."""
        if attempt <= 0:
            return 0.0
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


def peer_url(url: str) -> str:
    """Check and normalise a peer's base URL (``http(s)://host[:port]``); raise ValueError.

    A user name or password in it is refused without being shown (credentials go in
    ``credentials``; in a URL they would be shown in every error naming the peer), as are
    a path, query or fragment (every request's own path would be put after them)."""
    try:
        parsed = URL(url.strip().rstrip("/"))
    except ValueError:
        parsed = URL()
    if parsed.user is not None or parsed.password is not None:
        raise ValueError("a peer URL holds no user name or password: give an access key")
    extra = parsed.path not in ("", "/") or parsed.query_string or parsed.fragment
    if parsed.scheme not in ("http", "https") or not parsed.host or extra:
        raise ValueError(f"a peer URL looks like http://host:port, not {url!r}")
    return str(parsed)


class PeerList:
    """The peers a client may ask, in order, and which one it asks first."""

    def __init__(self, urls: Sequence[str]) -> None:
        normalised = list(dict.fromkeys(peer_url(u) for u in urls))
        if not normalised:
            raise ValueError("a client needs at least one peer URL")
        self.urls: tuple[str, ...] = tuple(normalised)
        self._current = 0

    def __repr__(self) -> str:
        return f"PeerList({list(self.urls)}, current={self.current!r})"

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def current(self) -> str:
        """The peer the next request goes to."""
        return self.urls[self._current]

    def failed(self, url: str) -> None:
        """Note that ``url`` failed: if it is the current peer, move on to the next one."""
        if url == self.current:
            self._current = (self._current + 1) % len(self.urls)


class Transport:
    """Sends requests to the cluster with failover over one pooled keep-alive session.

    The session is created on first use, in the running event loop; use a transport from
    that loop only. ``aclose`` closes it. ``tls`` is the context HTTPS peers are checked
    with (default: the system's trusted CAs).
    """

    def __init__(
        self,
        peers: PeerList,
        retry: RetryPolicy,
        timeout: aiohttp.ClientTimeout,
        tls: ssl.SSLContext | None = None,
        credentials: Credentials | None = None,
    ):
        self.peers = peers
        self.credentials = credentials
        self.retry = retry
        self._timeout = timeout
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._session else "idle"
        return f"Transport({self.peers!r}, {self.retry}, {state})"

    def _session_for_request(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else True),
                timeout=self._timeout,
                auto_decompress=False,
                read_bufsize=PIECE // 4,
                raise_for_status=False,
                headers=self._auth(),
            )
        return self._session

    def _auth(self) -> dict[str, str]:
        """Headers every request carries: the access key, if there is one."""
        if self.credentials is None:
            return {}
        return {"Authorization": self.credentials.authorization}

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: RequestBody | None = None,
        implied_code: Mapping[int, str] | None = None,
    ) -> tuple[str, aiohttp.ClientResponse]:
        """Send a request and return (peer URL, response) for the first answer below 400.

        ``path`` is already percent-encoded. ``implied_code`` maps a status to the error code
        a body-less answer (to HEAD) stands for. The caller must release the response.
        Raises the mapped RingstoreError for an error answer, PeerUnreachable or Unavailable
        when every try failed, or the error a body's source raised.
        """
        session = self._session_for_request()
        failures: list[RingstoreError] = []
        for attempt in range(self.retry.attempts):
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt))
            peer = self.peers.current
            url = URL(peer + path, encoded=True)
            try:
                request = session.request(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    data=body.pieces() if body is not None else None,
                )
                response = await (request if body is None else self._watched(request, body))
            except TRANSPORT_ERRORS as exc:
                if body is not None and body.failure is not None:
                    raise body.failure from exc
                failure: RingstoreError = error_from_exception(exc, peer=peer)
            else:
                if body is not None and body.failure is not None:
                    response.release()
                    raise body.failure
                if response.status < 400:
                    return peer, response
                failure = await self._error(response, peer, implied_code or {})
                if not isinstance(failure, Unavailable):
                    raise failure
            failures.append(failure)
            self.peers.failed(peer)
            if body is not None and not body.can_send:
                failure.message += (
                    "; not retried on another peer: the upload's body is a one-shot stream"
                    " (an iterator or a pipe) that was already partly sent"
                )
                raise failure
        raise _exhausted(method, path, failures)

    async def _watched(
        self, request: Awaitable[aiohttp.ClientResponse], body: RequestBody
    ) -> aiohttp.ClientResponse:
        """``request``'s response, or asyncio.TimeoutError once the peer has taken no piece
        of ``body`` for the read timeout: aiohttp bounds the wait for an answer
        (``sock_read``), not a write, which blocks for good once a peer that stopped
        reading (hung, SIGSTOPped) has filled the socket's buffers."""
        limit = self._timeout.sock_read
        task = asyncio.ensure_future(request)
        if not limit:
            return await task
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=limit / 4)
                if done:
                    return task.result()
                handed = body.handed_at
                if handed is not None and time.monotonic() - handed > limit:
                    break
        except asyncio.CancelledError:  # the caller's: the request goes with it
            task.cancel()
            await asyncio.wait({task})
            _release(task)
            raise
        task.cancel()
        await asyncio.wait({task})  # (``wait`` raises nothing: a cancellation of ours stays ours)
        _release(task)
        raise asyncio.TimeoutError(f"the peer took no bytes of the body for {limit}s")

    async def _error(
        self, response: aiohttp.ClientResponse, peer: str, implied_code: Mapping[int, str]
    ) -> RingstoreError:
        try:
            body = await response.read()
        except TRANSPORT_ERRORS as exc:
            return error_from_exception(exc, peer=peer)
        finally:
            response.release()
        return error_from_response(
            response.status,
            body,
            peer=peer,
            implied_code=implied_code.get(response.status),
            content_range=response.headers.get("Content-Range"),
        )

    async def json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        document: Any = None,
    ) -> Any:
        """Send a request (with ``document`` as its JSON body, if given) that answers JSON
        and return the decoded JSON; an answer without a body (204) is None.

        Raises like ``send``, and UnexpectedResponse if the answer is not JSON.
        """
        tries = 0
        while True:
            if document is None:
                peer, response = await self.send(method, path, params=params)
            else:
                data = json.dumps(document).encode()
                async with await RequestBody.prepare(data, None) as body:
                    headers = {"Content-Type": "application/json"}
                    peer, response = await self.send(
                        method, path, params=params, headers=headers, body=body
                    )
            if response.status == 204:
                response.release()
                return None
            try:
                return await read_json(response, peer, f"{method} {path}")
            except PeerUnreachable:
                # Cut off after the headers: ask again, like any unanswered read.
                tries += 1
                self.peers.failed(peer)
                if tries >= self.retry.attempts:
                    raise

    async def aclose(self) -> None:
        """Close the session and its pooled connections; later requests raise RuntimeError."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _release(task: asyncio.Future[aiohttp.ClientResponse]) -> None:
    """Release the response of a request given up on, had it come after all."""
    if task.done() and not task.cancelled() and task.exception() is None:
        task.result().release()


async def read_json(response: aiohttp.ClientResponse, peer: str, what: str) -> Any:
    """Read and release a JSON answer; raises PeerUnreachable or UnexpectedResponse."""
    try:
        async with response:
            return await response.json(content_type=None)
    except TRANSPORT_ERRORS as exc:
        raise error_from_exception(exc, peer=peer) from exc
    except ValueError as exc:
        raise UnexpectedResponse(
            f"{what}: the answer is not JSON: {exc}", status=response.status, peer=peer
        ) from exc


def _exhausted(method: str, path: str, failures: list[RingstoreError]) -> RingstoreError:
    """The error to raise when every try failed: the last failure, naming all of them."""
    last = failures[-1]
    if len(failures) > 1:
        tried = "; ".join(dict.fromkeys(str(f) for f in failures))
        last.message = f"{method} {path} failed after {len(failures)} tries: {tried}"
    return last
