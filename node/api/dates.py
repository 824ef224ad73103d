"""Response dates: every answer is dated by this peer's clock, and none says its content
was modified after the answer itself was made.

``Last-Modified`` comes from a file version's hybrid-clock time, which may run ahead of
this peer's wall clock: by up to ``MAX_SKEW_MS`` when another member's clock runs fast
(``node.model.version`` has the policy). RFC 9110 (8.8.2.1) forbids a ``Last-Modified``
later than the message's ``Date``, and caches and sync tools misjudge one in the future, so
such a date is replaced by the ``Date``. One response hook does it for every route, so no
route can forget it; ``Date`` is set from the same reading of the clock the peer versions
with, so the two are compared on one clock.
"""

from __future__ import annotations

from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache

from aiohttp import hdrs, web

from node.api.keys import CLOCK
from node.model.version import system_wall_ms


def http_date(wall_ms: int) -> str:
    """``wall_ms`` as an HTTP date (RFC 9110 IMF-fixdate, whole seconds, rounded down)."""
    return _date_of(wall_ms // 1000)


# email.utils takes 6 µs to format a date and 8 µs to parse one (timeit). Every answer is
# dated, most in the same second as the one before; a Last-Modified is parsed again for
# every read of its file version (a cache of 1,024: hot files hit, others cost as before).
@lru_cache(maxsize=256)
def _date_of(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


@lru_cache(maxsize=1024)
def _seconds(date: str) -> float | None:
    try:
        return parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None


async def date_response(request: web.Request, response: web.StreamResponse) -> None:
    """Set ``Date`` from this peer's clock and bring a later ``Last-Modified`` down to it
    (an ``on_response_prepare`` hook: it runs just before the headers are sent)."""
    clock = request.app.get(CLOCK)
    now_ms = clock.wall_ms() if clock is not None else system_wall_ms()
    date = http_date(now_ms)
    response.headers[hdrs.DATE] = date
    modified = response.headers.get(hdrs.LAST_MODIFIED)
    if modified is not None:
        seconds = _seconds(modified)
        if seconds is not None and seconds > now_ms // 1000:
            response.headers[hdrs.LAST_MODIFIED] = date
