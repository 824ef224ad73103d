"""Every request's id, and one log line and one metrics sample per answered request.

``traced`` (the outermost middleware of every listener: public, S3, shared) gives each request
its id: the client's ``X-Request-Id`` when it is sane (``node.tracing.sane_request_id``),
else a new one; a peer call carries the id of the public request that caused it, so the
called peer adopts it. The id is kept on the request (``REQUEST_ID``) and, while the
request runs, in the ``node.tracing`` context (log lines, peer calls); ``request_id_header``
returns it in the answer's ``X-Request-Id``, and S3 answers give it as
``x-amz-request-id`` too.

``RequestLog`` is the servers' access logger (aiohttp calls it once an answer is sent whole,
when its size and duration are known): it counts the request in the peer's metrics
(``node.api.metrics``) and logs one line: at INFO for public requests, at DEBUG for peer
calls and probes (``/health``, ``/ready``, ``/metrics``), which would otherwise fill the
log. The line names the raw path without its query (a presigned URL's query holds
credentials), the status, the bytes and the seconds.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from node.api.errors import Handler
from node.api.keys import LISTENER, MEMBERSHIP, METRICS, REQUEST_ID
from node.api.paths import MONITORING
from node.cluster.protocol import PEER_PREFIX
from node.tracing import PEER, REQUEST_ID_HEADER, new_request_id, sane_request_id
from node.tracing import REQUEST_ID as CURRENT_ID

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the route label of a request no route took (404, 405)


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id, and run it with that id (and this peer) in context."""
    request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    request[REQUEST_ID] = request_id
    membership = request.app.get(MEMBERSHIP)
    id_token = CURRENT_ID.set(request_id)
    peer_token = PEER.set(membership.me.id if membership is not None else None)
    try:
        return await handler(request)
    finally:
        PEER.reset(peer_token)
        CURRENT_ID.reset(id_token)


async def request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer the app makes: the request's id."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def route_of(request: BaseRequest) -> str:
    """The template of the route that took ``request`` (``/files/{name}``), never its path."""
    if not isinstance(request, web.Request):
        return UNMATCHED
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


class SentFile(web.StreamResponse):
    """An answer whose body went out with sendfile(2), past aiohttp's writer and so past its
    byte count: ``file_bytes`` says how many (a chunk read's)."""

    def __init__(self, *, status: int) -> None:
        super().__init__(status=status)
        self.file_bytes = 0


def sent_bytes(response: web.StreamResponse) -> int:
    """Bytes of ``response`` sent: what aiohttp's writer counted (head and body), and what
    went out with sendfile(2), which that count misses."""
    written = response.body_length
    if isinstance(response, SentFile):
        return written + response.file_bytes
    return written


class RequestLog(AbstractAccessLogger):
    """The access logger of a peer's servers: a metrics sample and a line per answer."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        request_id = request.get(REQUEST_ID)
        if request_id is None or not isinstance(request, web.Request):
            return  # it never reached the app (malformed): node.process.connections logs it
        app = request.app
        route = route_of(request)
        received = getattr(request.content, "total_bytes", 0)
        sent = sent_bytes(response)
        listener = app.get(LISTENER, "public")
        metrics = app.get(METRICS)
        if metrics is not None:
            metrics.observe(listener, route, request.method, response.status, time, received, sent)
        quiet = request.path.startswith(PEER_PREFIX) or request.path in MONITORING
        level = logging.DEBUG if quiet else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        membership = app.get(MEMBERSHIP)
        self.logger.log(
            level,
            "%s %s %s %d: %d bytes in, %d out, %.3fs",
            listener,
            request.method,
            request.raw_path.split("?", 1)[0],
            response.status,
            received,
            sent,
            time,
            extra={
                "request_id": request_id,
                "peer": membership.me.id if membership is not None else None,
                "size": sent if request.method in ("GET", "HEAD") else received,
                "duration": round(time, 6),
            },
        )
