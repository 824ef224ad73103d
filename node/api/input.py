"""Reading request input: streamed bodies and query parameters, with domain errors.

A body is read only by ``body_pieces``, which bounds it twice: in size (``limit``: a body
past it is cut off with TooLarge) and in time (``stall``: a client that sends nothing for
that long, or that keeps the peer waiting longer in all than ``stall`` plus a second per
``--client-min-rate`` bytes sent, is cut off with RequestTimeout, 408). ``100 Continue``
goes out at the first read, so a request refused before its body is wanted (too large, a
busy peer, bad credentials) is answered without the client sending a byte of it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec
from aiohttp import StreamReader, hdrs, web
from aiohttp.http import HttpVersion11

from node.api.keys import CONFIG
from node.api.numbers import decimal
from node.errors import (
    IncompleteBody,
    InvalidRequest,
    RequestTimeout,
    TooLarge,
    UnsupportedMediaType,
)

T = TypeVar("T")
MAX_JSON = 64 << 10  # bytes of a JSON request body
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def defer_continue(request: web.Request) -> None:
    """The routes' Expect handler: send nothing yet (``body_pieces`` sends 100 Continue)."""


CONTINUED = web.RequestKey("continued", bool)  # 100 Continue went out: the body may come


def expects_continue(request: web.BaseRequest) -> bool:
    """Whether the client waits for ``100 Continue`` before it sends the body."""
    expect = request.headers.get(hdrs.EXPECT, "")
    return request.version >= HttpVersion11 and expect.lower() == "100-continue"


async def _send_continue(request: web.Request) -> None:
    if expects_continue(request) and not request.get(CONTINUED):
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # the answer proper has not started
        request[CONTINUED] = True


class _Stalled(asyncio.TimeoutError):
    """Set on a body a client stopped sending, or sends too slowly. A TimeoutError, because
    that is what ends aiohttp's reading of the rest of a body after the answer
    ("lingering") quietly."""


class _StallWatch:
    """Fails a body's pending read once it has waited ``timeout`` seconds for the client,
    or once the time spent waiting for the client in all passes ``timeout`` plus a second
    per ``min_rate`` bytes received (0: no rate), as Apache's ``mod_reqtimeout`` bounds a
    body (``RequestReadTimeout body=20,MinRate=500``): a body that trickles a byte now and
    then held its request slot, and its share of the peer's buffer memory, for as long as
    the client liked.

    One timer per body, re-armed only when it fires (not per read: a read is a few µs, a
    task or timer per read would cost more than the read). Time the consumer spends on the
    pieces (a slow holder's backpressure) does not count: only waiting for the client.
    """

    def __init__(self, content: StreamReader, timeout: float, min_rate: float) -> None:
        self._content = content
        self._timeout = timeout
        self._min_rate = min_rate
        self._loop = asyncio.get_running_loop()
        self._fed_before = content.total_bytes  # (what a read before this watch took)
        self._waiting_since: float | None = None
        self.waited = 0.0  # seconds spent waiting for the client, reads in flight aside
        self.received = 0  # bytes
        self.reason = ""  # why the body was failed
        self._timer = self._loop.call_later(timeout, self._check)

    async def read(self) -> bytes:
        self._waiting_since = since = self._loop.time()
        deadline = since + self._allowance()
        if deadline < self._timer.when():  # (near the rate only: sooner than the next look)
            self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._check)
        try:
            piece = await self._content.readany()
        finally:
            self._waiting_since = None
            self.waited += self._loop.time() - since
        self.received += len(piece)
        return piece

    def _allowance(self) -> float:
        """Seconds of waiting for the client the body may still take in all."""
        if not self._min_rate:
            return math.inf
        return self._timeout + self.received / self._min_rate - self.waited

    def _check(self) -> None:
        """Fail the read waiting, if it has waited past either limit; else look again when
        it could (with none waiting, a stall timeout from now: only a read that waits for
        the client is judged, and one that starts looks sooner if it must). A read whose
        bytes have arrived waits for the loop, not the client (its task runs later in this
        step, or after other work on a busy loop): it is not judged, and nothing is once
        the body's end is here."""
        since, now = self._waiting_since, self._loop.time()
        if self._content.is_eof():  # the body is all here: nothing left to judge
            return
        if since is None or self._content.total_bytes - self._fed_before > self.received:
            self._timer = self._loop.call_at(now + self._timeout, self._check)
            return
        waiting = now - since
        if waiting >= self._timeout:
            self.reason = f"sent no byte of the body for {self._timeout:g}s"
        elif waiting >= self._allowance():
            self.reason = (
                f"sent the body slower than {self._min_rate:g} bytes/s (after "
                f"{self.waited + waiting:.1f}s waiting for it)"
            )
        if self.reason:
            self._content.set_exception(_Stalled())
            return
        self._timer = self._loop.call_at(since + min(self._timeout, self._allowance()), self._check)

    def stop(self) -> None:
        self._timer.cancel()


async def body_pieces(
    request: web.Request, stall: float, limit: int | None = None, *, min_rate: float
) -> AsyncIterator[bytes]:
    """Yield the body as it arrives (Content-Length or chunked), without re-joining buffers.

    Raises IncompleteBody when the client cuts the body off, RequestTimeout when it sends
    nothing for ``stall`` seconds or keeps the peer waiting, in all, longer than ``stall``
    plus a second per ``min_rate`` bytes received (``_StallWatch``; 0: no rate), TooLarge
    as soon as it passes ``limit`` bytes.
    """
    await _send_continue(request)
    watch = _StallWatch(request.content, stall, min_rate)
    try:
        while True:
            try:
                piece = await watch.read()
            except _Stalled:
                raise RequestTimeout(
                    f"the client {watch.reason} ({watch.received} bytes received)"
                ) from None
            except Exception as exc:  # aiohttp raises several unrelated types for a cut body
                raise IncompleteBody(f"the request body was cut off: {exc!r}") from exc
            if not piece:
                return
            if limit is not None and watch.received > limit:
                raise TooLarge(f"the body is larger than the limit of {limit} bytes")
            yield piece
    finally:
        watch.stop()


def one_header(request: web.BaseRequest, name: str) -> str | None:
    """The value of header ``name``, or None; raises InvalidRequest when it is sent twice (a
    field that is no list, such as ``Authorization``: RFC 9110 5.3; which one a proxy or
    client meant cannot be known, so neither is taken)."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"the {name} header is sent {len(values)} times; send it once")
    return values[0] if values else None


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``[low, high]``; raises InvalidRequest otherwise."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = decimal(text)
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be an integer: {exc}") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return value


async def small_body(request: web.Request, limit: int) -> bytes:
    """The whole body of a request whose body is a small document (JSON, XML, a form), of
    at most ``limit`` bytes, however many pieces it arrives in. Bounded in size and time as
    ``body_pieces`` bounds it (the peer's ``--client-timeout`` without a byte, and its
    ``--client-min-rate``): raises TooLarge, RequestTimeout, IncompleteBody."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the body is larger than the limit of {limit} bytes")
    config = request.app[CONFIG]
    body = body_pieces(request, config.client_timeout, limit, min_rate=config.client_min_rate)
    return b"".join([piece async for piece in body])


async def json_body(request: web.Request, kind: type[T]) -> T:
    """The request's JSON body decoded as ``kind`` (an empty body: ``kind()``), at most
    ``MAX_JSON`` bytes. Raises InvalidRequest naming what is wrong, UnsupportedMediaType for
    a body that is not JSON or has a Content-Encoding, and what ``small_body`` raises."""
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
        # bodies reach routes undecoded (node.process.wiring); JSON is taken as plain text
        raise UnsupportedMediaType("send a JSON body without Content-Encoding")
    data = await small_body(request, MAX_JSON)
    if not data.strip():
        data = b"{}"
    elif request.content_type not in ("application/json", "application/octet-stream"):
        raise UnsupportedMediaType(f"send JSON (application/json), not {request.content_type}")
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
