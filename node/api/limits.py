"""How many public requests a peer serves at once, and refusals logged without a flood.

``RequestLimit`` counts the public requests in progress (its ``middleware`` takes a slot
for each); past ``--max-requests``, a request is refused at once with
Overloaded (503 with ``Retry-After``) before anything of it is read. Peer calls
(``/internal/``) take no slot: a peer's coordinators need its holders to finish their own
public requests, so counting those calls would let public clients starve the cluster of the
very calls that drain them (each coordinator's calls are bounded by its own limit).
``/health``, ``/ready`` and ``/metrics`` take none either: they answer from memory (or
one small disk probe), and must answer under load.

``Refusals`` logs refusals of one kind at WARNING at most once every ``every`` seconds, with
how many went unlogged: an attack must not turn into a log flood.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web
from aiohttp.typedefs import Middleware

from node.api.errors import Handler
from node.api.paths import MONITORING
from node.cluster.protocol import PEER_PREFIX
from node.errors import Overloaded

log = logging.getLogger(__name__)

RETRY_AFTER = 1  # seconds a refused client is told to wait


class Refusals:
    """Counts refusals of one kind; logs at most one line every ``every`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        every: float = 10.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count = 0
        self._log = logger
        self._every = every
        self._level = level
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0

    def __repr__(self) -> str:
        return f"Refusals(count={self.count}, unlogged={self._unlogged})"

    def note(self, what: str) -> None:
        """Count one refusal; log ``what`` unless a line was logged within ``every`` s."""
        self.count += 1
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self._every:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last such line)" if self._unlogged else ""
        self._log.log(self._level, "%s%s", what, more)
        self._logged_at, self._unlogged = now, 0


class RequestLimit:
    """Slots for public requests in progress: at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.refusals = Refusals(log)

    def __repr__(self) -> str:
        return f"RequestLimit({self.active}/{self.limit}, refused={self.refusals.count})"

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot while the block runs; raises Overloaded when none is free."""
        if self.active >= self.limit:
            self.refusals.note(f"refused requests: {self.limit} in progress (--max-requests)")
            raise Overloaded(
                f"this peer is serving its limit of {self.limit} requests; retry shortly",
                RETRY_AFTER,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def middleware(self) -> Middleware:
        """The app middleware that serves each counted request in a slot (503 when none is
        free); it must run inside the error middleware, which turns Overloaded into the 503."""

        @web.middleware
        async def limit_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not counted(request):
                return await handler(request)
            with self.slot():
                return await handler(request)

        return limit_requests


def counted(request: web.Request) -> bool:
    """Whether ``request`` takes a slot: public routes do, peer calls and probes do not."""
    return not (request.path.startswith(PEER_PREFIX) or request.path in MONITORING)
