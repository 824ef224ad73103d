"""The HTTP server of one peer: its connections, their limits and timeouts, and the answers
to errors found before a request reaches the app.

aiohttp serves an app with a ``web.Server`` that makes one ``RequestHandler`` (an asyncio
protocol) per connection, and offers no public hook for what follows. So ``PeerRunner`` (an
``AppRunner``) serves the app with a ``PeerServer`` whose connections are
``PeerConnection`` s: a subclass of aiohttp's ``RequestHandler``, written against aiohttp
3.14, that overrides its ``handle_error``, asyncio's protocol callbacks and one private
method, ``_process_keepalive`` (its idle timer: it clears ``_keepalive_handle`` as aiohttp
does), reads private attributes: ``_waiter`` (set while the connection waits for a
request; its result is set once a head is parsed), ``_current_request`` (the request whose
handler runs) and ``_messages`` (requests parsed and queued, with ``_ErrInfo`` for a parse
error: ``PeerConnection._parse``), and sets ``_lingering_time``
(``close_after_answer``) and, while the server stops, ``_close`` and ``_force_close`` around
a read; of asyncio it sets
a socket transport's ``max_size`` (bytes one receive takes). The tests in
``tests/node/test_limits_connections.py`` hold every behaviour below to real sockets.

* **Requests as served.** ``PeerServer`` wraps its request factory (``web.Server``'s
  public ``request_factory``: ``_served``): a target in absolute form is served as its
  path, and an HTTP version other than 1.0 and 1.1 answered 505 in HTTP/1.1.
* **Errors in a body.** A body found malformed while its handler reads it (a bad chunk
  size) fails that read: 400, and the connection closes.
* **Errors before the app.** A malformed request line or header, a bad Transfer-Encoding, a
  request target past 8 KiB (414), a header past 8 KiB, more than 100 headers or a head
  past 64 KiB (431), an ``Expect`` other than ``100-continue`` (417): answered with the
  JSON error body of ``node.api.errors``, never aiohttp's plain text that echoes the input,
  and logged at INFO (one line every 10 s at most), never with a traceback.
* **Timeouts.** A request head must arrive whole within ``--header-timeout`` of its first
  byte (of the connection's start, for a new connection): else 408 and close, so slow
  heads (slowloris) cannot hold connections. A keep-alive connection waits
  ``--idle-timeout`` for its next request (aiohttp's keep-alive timer); once a head has
  begun to arrive, only the head timeout applies, so a head slower than the idle timeout
  but within the head timeout is served, and a slower one still gets its 408. A client
  that takes nothing of an answer for ``--send-timeout`` is dropped. Bodies have
  ``--client-timeout`` (``node.api.input``).
* **Connections.** At most ``--max-connections`` are open. A new one past the limit takes
  the place of the connection that has waited longest for a request (those that served a
  member's call last); when every connection has a request in progress, the newcomer is
  answered 503 with ``Retry-After`` and closed. Idle or slow clients cannot exhaust the
  peer's descriptors, and peers keep their pooled connections while public ones go first.
* **Nothing inflated.** Bodies are never decompressed here (a zip bomb stays small).
* **Stopping.** The listening sockets close first; a connection waiting for a request
  closes; one with a request in progress closes once it is answered, within
  ``SHUTDOWN_GRACE`` (5 s), after which the request is cut. Its body still comes in
  meanwhile: aiohttp's own shutdown drops what arrives on a connection it closes, so an
  upload under way at a SIGTERM starved and was cut at the grace.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast

from aiohttp import HttpVersion, HttpVersion10, HttpVersion11, hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from node.api.access_log import RequestLog
from node.api.errors import error_response, http_error_response, raw_error_response
from node.api.input import CONTINUED, expects_continue
from node.api.keys import CONFIG, LISTENER, METRICS
from node.api.limits import RETRY_AFTER, Refusals
from node.api.peer import NONCE
from node.config import PeerConfig

log = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("node.access")  # one line per answer (node.api.access_log)

MAX_URL = 8192  # bytes of a request target (414 past it)
MAX_HEADER_LINE = 8190  # bytes of one header, name and value (431 past it; aiohttp's default)
MAX_HEADERS = 100  # headers of one request (431 past it)
MAX_HEAD = 64 << 10  # bytes of a whole request head (431 past it)
SERVED_VERSIONS = (HttpVersion10, HttpVersion11)
ASKED_VERSION = web.RequestKey("asked_version", HttpVersion)  # one not served (505)
LINGER = 2.0  # seconds a connection cut off with an answer stays open, taking nothing in
# seconds a stopping peer gives the requests under way on each of its ports before it cuts
# them (its files port and its S3 port alike; clients retry a cut request)
SHUTDOWN_GRACE = 5.0
# A connection whose handler does not read its body (a request waiting its turn, a slow
# holder) holds what aiohttp buffered before it stopped reading: twice READ_BUFFER, plus one
# receive of RECEIVE_SIZE. The defaults (aiohttp's 256 KiB, asyncio's 256 KiB) held 768 KiB;
# these hold 128 KiB (TLS: asyncio's SSL layer keeps its own 256 KiB buffer, so ~320 KiB).
# 200 PUTs of 1 MiB at once, peak RSS (bench/memory.py): 212-215 MiB, 152 with 64 KiB
# receives, 138-140 with both; one 256 MiB PUT (bench/throughput.py, alternated): 133-150
# MB/s for all three (noise).
READ_BUFFER = 32 << 10
RECEIVE_SIZE = 64 << 10
HEAD = b"HEAD "
# aiohttp's LineTooLong says which limit was passed, not which line, so MAX_URL and
# MAX_HEADER_LINE must differ (tests/unit/test_unit_limits.py tells 414 from 431).

AppHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]
_REASON = re.compile(r"[A-Za-z][A-Za-z '_-]{0,60}\.?")  # a parser's own words, not input
_MESSAGES: tuple[tuple[type[BaseException], str], ...] = (
    (BadHttpMethod, "malformed request line or method (not HTTP/1.1?)"),
    (BadStatusLine, "malformed request line"),
    (InvalidURLError, "malformed request target"),
    (InvalidHeader, "malformed header"),
    (TransferEncodingError, "malformed Transfer-Encoding or chunked body"),
    (ContentEncodingError, "malformed Content-Encoding"),
)


def describe(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """The status, code and message that answer an error aiohttp found before the app
    (``status`` is aiohttp's choice: 400 for every parser error). Nothing of the request's
    own bytes is repeated."""
    if isinstance(exc, LineTooLong):
        if exc.args[1:2] == (MAX_URL,):
            return 414, "uri_too_long", f"the request target is longer than {MAX_URL} bytes"
        return 431, "header_too_large", f"a header is longer than {MAX_HEADER_LINE} bytes"
    if isinstance(exc, BadHttpMessage) and "too many headers" in exc.message.lower():
        return 431, "header_too_large", f"a request may have at most {MAX_HEADERS} headers"
    for cls, message in _MESSAGES:
        if isinstance(exc, cls):
            return 400, "bad_request", message
    if isinstance(exc, BadHttpMessage):
        reason = exc.message.split(":", 1)[0].strip()
        detail = f": {reason}" if _REASON.fullmatch(reason) else ""
        return 400, "bad_request", f"malformed request{detail}"
    if status >= 500:
        return 500, "internal", "internal error; see the peer's log"
    phrase = HTTPStatus(status).phrase
    return status, phrase.lower().replace(" ", "_"), phrase


class PeerConnection(RequestHandler):
    """One client connection: aiohttp's request handler with this peer's limits."""

    def __init__(
        self,
        server: PeerServer,
        config: PeerConfig,
        *,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        super().__init__(server, loop=loop, **kwargs)
        self.member = False  # a member's call was served on it: reclaimed last
        self.last_active = loop.time()
        self._event_loop = loop
        self._server = server
        self._config = config
        self._admitted = False
        self._ending = False  # answered and closing (``_end``)
        self._head_bytes = 0  # of the request head being received
        self._head_start = b""  # its first bytes: is it a HEAD (answered without a body)?
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self.stopping = False  # the server stops: the request in progress may end, no other
        self._dropping = False  # stopping, it dropped a read: it reads nothing more

    def __repr__(self) -> str:
        state = "waiting" if self.waiting else "busy" if self.connected else "closed"
        return f"PeerConnection({self.peername}, {state}, member={self.member})"

    @property
    def waiting(self) -> bool:
        """Whether it waits for a request: idle, or receiving a request's head; also before
        aiohttp's request loop first ran (no wait yet, no request parsed: under uvloop the
        first bytes of a connection arrive then, and went uncounted by the head timeout)."""
        waiter = self._waiter
        if waiter is None:  # a request's handler runs, or the loop has not started yet
            return self._request_count == 0
        return not waiter.done()

    @property
    def _under_way(self) -> bool:
        """Whether a request's head has been parsed and its answer is not yet done: from
        the head (aiohttp's wait for a request has its result) through its handler (the
        wait is over), not while the connection waits for a head (or that wait was
        cancelled: the connection closed idle)."""
        waiter = self._waiter
        if waiter is None:
            return self._request_count > 0
        return waiter.done() and not waiter.cancelled()

    # asyncio's protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._server.admit(self):
            message = "this peer has as many connections open as it may; retry shortly"
            headers = {"Retry-After": str(RETRY_AFTER)}
            stream = cast(asyncio.Transport, transport)
            stream.write(raw_error_response(503, "overloaded", message, headers))
            stream.close()
            return
        self._admitted = True
        if hasattr(transport, "max_size"):  # a socket transport (TLS's has no such knob)
            cast(Any, transport).max_size = RECEIVE_SIZE
        super().connection_made(transport)
        self._head_timer = self._event_loop.call_later(
            self._config.header_timeout, self._head_timed_out
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        self._server.forget(self)
        for timer in (self._head_timer, self._send_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        if self._admitted:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.last_active = self._event_loop.time()
        if self.stopping and (self._close or self._force_close):
            # aiohttp's shutdown closes every connection, and a closed one drops what
            # arrives: an upload under way would starve until the grace ran out. Its body
            # is still read; the connection closes once it is answered, as aiohttp's does.
            # A connection with no request under way takes none; once it dropped a read it
            # takes nothing more, so no body can come through with a piece missing.
            if self._dropping or not self._under_way:
                self._dropping = True
                return
            closing = self._close, self._force_close
            self._close = self._force_close = False
            try:
                self._parse(data)
            finally:
                self._close, self._force_close = closing
            return
        if self.waiting:  # these bytes begin or continue a request head
            if not self._head_bytes:
                self._head_start = b""
            if len(self._head_start) < len(HEAD):
                self._head_start = (self._head_start + data)[: len(HEAD)]
            end = data.find(b"\r\n\r\n")  # (one split across two reads counts whole)
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > MAX_HEAD:
                self._server.malformed.note(f"refused request heads past {MAX_HEAD} bytes")
                message = f"the request head is longer than {MAX_HEAD} bytes"
                self._end(431, "header_too_large", message)
                return
            if self._head_timer is None:
                self._head_timer = self._event_loop.call_later(
                    self._config.header_timeout, self._head_timed_out
                )
        self._parse(data)
        if not self.waiting:  # the head is complete (or the connection is closing)
            self._head_bytes = 0  # (its start stays known for handle_error)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

    def _parse(self, data: bytes) -> None:
        """aiohttp's parsing of ``data``; where it finds the body of the request being
        answered malformed (a bad chunk), that request's body fails (its handler answers
        400) and the connection closes after it. aiohttp's C parser only queues a 400 for
        after the request (its body reader is told nothing), so the handler waited for
        the rest of the body until ``--client-timeout`` and answered 408 (an attack)."""
        queued = len(self._messages)
        super().data_received(data)
        request = self._current_request
        if request is None or len(self._messages) <= queued:
            return
        error = self._messages[-1][0]
        if isinstance(error, _ErrInfo) and not request.content.is_eof():
            self._messages.pop()
            request.content.set_exception(BadHttpMessage("a malformed body (its framing)"))
            self.close_after_answer()

    def _process_keepalive(self) -> None:
        # aiohttp's idle timer would close a connection still receiving a head, with no
        # answer: the head timer governs it (and answers 408). aiohttp arms a new idle timer
        # after the answer, as none is pending then.
        if self._head_bytes:
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._send_timer = self._event_loop.call_later(
            self._config.send_timeout, self._send_timed_out
        )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    # aiohttp's hook for errors before the app (and for exceptions the app let through)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: an answer is already half sent
            raise ConnectionError("cannot answer an error after an answer was started")
        status, code, text = describe(status, exc)
        if status >= 500:
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
        else:
            kind = type(exc).__name__ if exc is not None else status
            self._server.malformed.note(f"refused malformed requests ({kind}: {text})")
        # A request that failed to parse is "UNKNOWN" to aiohttp, which would send a body
        # where a HEAD's answer has none.
        response = error_response(status, code, text, head=self._head_start == HEAD)
        response.force_close()
        return response

    # what the timers and the server do to a connection

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.waiting:
            return
        if not self._head_bytes:  # it never asked for anything: no answer is due
            self.force_close()
            return
        timeout = self._config.header_timeout
        self._server.slow.note(f"closed connections whose request head took over {timeout:g}s")
        self._end(408, "request_timeout", f"the request head did not arrive within {timeout:g}s")

    def _send_timed_out(self) -> None:
        self._send_timer = None
        timeout = self._config.send_timeout
        self._server.slow.note(f"dropped clients that took no answer for {timeout:g}s")
        if self.transport is not None:
            self.transport.abort()  # close() would wait for the client to read

    def close_after_answer(self) -> None:
        """Close once the answer in progress is sent, reading nothing more of its request's
        body (aiohttp would read on for up to its lingering time)."""
        self._lingering_time = 0.0  # aiohttp's RequestHandler: no lingering read
        self.close()

    @property
    def reclaimable(self) -> bool:
        """Whether a newcomer may take its place: it waits for a request, or is ending."""
        return self.waiting or self._ending

    def reclaim(self) -> None:
        """Close this connection now to make room for a new one."""
        if self._head_bytes and not self._ending and self.transport is not None:
            message = "this peer needed the connection; retry shortly"
            self.transport.write(raw_error_response(503, "overloaded", message))
        self.force_close()

    def _end(self, status: int, code: str, message: str) -> None:
        """Answer the request being received with an error, then close after ``LINGER``
        seconds: closed at once with the client's bytes still arriving, the connection would
        be reset, and a reset can destroy the answer before the client reads it."""
        transport = self.transport
        if transport is None:
            return
        transport.write(raw_error_response(status, code, message, head=self._head_start == HEAD))
        self._ending = True
        self.close()  # aiohttp takes no further request; what arrives is dropped
        if transport.can_write_eof():
            transport.write_eof()
        self._linger_timer = self._event_loop.call_later(LINGER, self.force_close)


class PeerServer(web.Server):
    """aiohttp's server with ``PeerConnection`` s: counts them and admits new ones."""

    def __init__(
        self,
        handler: AppHandler,
        *,
        config: PeerConfig,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        super().__init__(self._screened, loop=loop, **kwargs)
        self.request_factory = _served(self.request_factory)
        self._app_handler = handler
        self._config = config
        self._event_loop = loop
        self._connection_kwargs = {k: v for k, v in kwargs.items() if k != "request_factory"}
        self._open: set[PeerConnection] = set()
        self.refused = Refusals(log)  # connections refused past the limit
        self.reclaimed = Refusals(log, level=logging.INFO)  # closed to make room
        self.malformed = Refusals(log, level=logging.INFO)  # refused before the app
        self.slow = Refusals(log, level=logging.INFO)  # cut off by a header or send timeout

    def __repr__(self) -> str:
        limit = self._config.max_connections
        return f"PeerServer({len(self._open)}/{limit} open, refused={self.refused.count})"

    def __call__(self) -> PeerConnection:
        return PeerConnection(self, self._config, loop=self._event_loop, **self._connection_kwargs)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def waiting_connections(self) -> int:
        """Open connections without a request in progress (those a newcomer may replace)."""
        return sum(1 for c in self._open if c.waiting)

    def admit(self, connection: PeerConnection) -> bool:
        """Count a new connection in, closing the longest-waiting one at the limit; False
        when every open connection has a request in progress (refuse the new one)."""
        if len(self._open) >= self._config.max_connections:
            waiting = [c for c in self._open if c.reclaimable]
            if not waiting:
                self.refused.note(
                    f"refused connections: {len(self._open)} open, each serving a request "
                    "(--max-connections)"
                )
                return False
            oldest = min(waiting, key=lambda c: (c.member, c.last_active))
            self._open.discard(oldest)
            self.reclaimed.note(f"closed waiting connections to make room ({len(self._open)} open)")
            oldest.reclaim()
        self._open.add(connection)
        return True

    def forget(self, connection: PeerConnection) -> None:
        self._open.discard(connection)

    def pre_shutdown(self) -> None:
        """As aiohttp's (every connection closed once its request in progress is answered),
        but a request still receiving its body gets it (``PeerConnection.data_received``)."""
        for connection in self._open:
            connection.stopping = True
        super().pre_shutdown()

    def _refusal(self, request: BaseRequest) -> web.Response | None:
        """The answer to a request refused before routing, or None: an unknown Expect
        (aiohttp answers it in plain text before any middleware runs: 417), an HTTP version
        other than 1.0 and 1.1 (RFC 9110 section 15.6.6: 505, in HTTP/1.1: ``_served``; but a
        request line without one, which aiohttp reads as HTTP/0.9, is malformed: RFC 9112
        section 3, 400), a
        transfer coding other than chunked (aiohttp takes codings that end in chunked and
        undoes chunked only, so what it stored would still be coded: RFC 9112 section 6.1,
        501). The last two close the connection (their body is not read)."""
        expect = request.headers.get(hdrs.EXPECT, "")
        if expect and expect.strip().lower() != "100-continue":
            self.malformed.note("refused requests with an unknown Expect")
            return error_response(
                417, "expectation_failed", "the only Expect served is 100-continue"
            )
        if request.get(ASKED_VERSION) == HttpVersion(0, 9):  # a request line with no version
            self.malformed.note("refused request lines without an HTTP version")
            refused = error_response(
                400, "invalid_request", "a request line ends with its HTTP version (HTTP/1.1)"
            )
        elif request.get(ASKED_VERSION) is not None:
            self.malformed.note("refused requests of an HTTP version other than 1.0 and 1.1")
            refused = error_response(
                505, "http_version_not_supported", "this peer speaks HTTP/1.1 and HTTP/1.0"
            )
        elif (codings := request.headers.get(hdrs.TRANSFER_ENCODING)) is not None and [
            c.strip().lower() for c in codings.split(",")
        ] != ["chunked"]:
            self.malformed.note("refused requests with a transfer coding other than chunked")
            refused = error_response(
                501, "not_implemented", "the only transfer coding served is chunked"
            )
        else:
            return None
        refused.force_close()
        return refused

    async def _screened(self, request: BaseRequest) -> web.StreamResponse:
        """The app's handler, behind what must be decided before routing (``_refusal``)."""
        refused = self._refusal(request)
        if refused is not None:
            return refused
        try:
            response = await self._app_handler(request)
        except web.HTTPException as exc:  # raised outside the middlewares (none known)
            if exc.status < 400:
                raise
            response = http_error_response(exc)
        if request.body_exists and expects_continue(request) and not request.get(CONTINUED):
            # Answered before its body was asked for: the client may send it now or never
            # (RFC 9110 section 10.1.1). Reading on for it (aiohttp's "lingering") would
            # take the client's next request on this connection as body bytes: close.
            response.force_close()
            if isinstance(request.protocol, PeerConnection):
                request.protocol.close_after_answer()
        if request.get(NONCE) is not None and isinstance(request.protocol, PeerConnection):
            request.protocol.member = True
        return response


def _served(make: Callable[..., BaseRequest]) -> Callable[..., BaseRequest]:
    """A request factory (``web.Server``'s) that makes requests of messages as this peer
    serves them, before any request object exists (handlers, middlewares, the answer's
    hooks and the access log then see one request): a request target in absolute form
    (``GET http://host/files/x``: RFC 9112 section 3.2.2, which a server must accept) as
    its path and query, since handlers read names from the raw target (``http://`` was
    taken for ``/files/``); an HTTP version other than 1.0 and 1.1 as 1.1, the version
    asked kept as ``ASKED_VERSION`` for ``_refusal`` (aiohttp answers in the request's
    version: "HTTP/2.0 505")."""

    def served(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        asked = None
        if message.version not in SERVED_VERSIONS:
            asked, message = message.version, message._replace(version=HttpVersion11)
        if message.url.is_absolute():  # (aiohttp parsed the target; "*" is not absolute)
            relative = message.url.relative()
            message = message._replace(path=str(relative), url=relative)
        request = make(message, payload, protocol, writer, task)
        if asked is not None:
            request[ASKED_VERSION] = asked
        return request

    return served


def unbindable(exc: OSError, shared: bool = False) -> str:
    """What to tell the operator when a listening port cannot be bound (``exc``: the bind's
    error); ``shared``: the port was bound with SO_REUSEPORT (``--s3-reuse-port``,
    ``--shared-port``)."""
    if exc.errno != errno.EADDRINUSE:
        return str(exc)
    if shared:
        return (
            f"{exc}: another process holds it; peers share it only when each of them binds "
            "it with SO_REUSEPORT (--s3-reuse-port, --shared-port), as the same user"
        )
    return f"{exc}: another process holds it (stop it, or choose another port)"


class PeerRunner(web.AppRunner):
    """Runs a peer's app (``node.process.wiring.create_app``) on a ``PeerServer``, whose
    access logger (``RequestLog``) counts every answer in the app's metrics and logs it;
    stopping, it waits ``SHUTDOWN_GRACE`` for requests under way."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("shutdown_timeout", SHUTDOWN_GRACE)
        super().__init__(app, access_log=ACCESS_LOG, access_log_class=RequestLog, **kwargs)
        self._config = app[CONFIG]

    async def _make_server(self) -> web.Server:
        # AppRunner's own server runs the app's start-up and knows the app's handler and
        # request factory; this one serves them with this peer's limits.
        made = await super()._make_server()
        config = self._config
        server = PeerServer(
            made.request_handler,
            config=config,
            loop=asyncio.get_running_loop(),
            request_factory=made.request_factory,
            access_log=ACCESS_LOG,
            access_log_class=RequestLog,
            keepalive_timeout=config.idle_timeout,
            max_line_size=MAX_URL,
            max_field_size=MAX_HEADER_LINE,
            max_headers=MAX_HEADERS,
            auto_decompress=False,
            read_bufsize=READ_BUFFER,
        )
        metrics = self.app.get(METRICS)
        if metrics is not None:
            metrics.serving(self.app.get(LISTENER, "public"), lambda: server.open_connections)
        return server
