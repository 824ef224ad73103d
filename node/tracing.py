"""Request ids and the peer a piece of work runs for, carried through asyncio by context.

Every public request gets an id (``node.api.access_log``): the client's ``X-Request-Id``
when it is sane, else a new one. The id is kept in ``REQUEST_ID`` (a ``ContextVar``) while
the request runs; asyncio copies the context into every task the request starts, so each
peer call it causes sends the same id (``node.cluster.transport``), the called peer adopts
it for its own work and logs, and one search over every peer's log finds the request's
whole path. ``PEER`` names the peer whose work is running, so that logs of several
in-process peers (tests) still say which peer wrote each line.

Ids are at most ``MAX_ID`` characters of ``[A-Za-z0-9._:-]`` (``sane_request_id``): what
a client sends ends up in log lines and headers, so it must not be able to forge lines
(newlines) or grow them without bound. Shared by every room; imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import secrets
from collections.abc import Coroutine, Iterable
from typing import Any

REQUEST_ID_HEADER = "X-Request-Id"
MAX_ID = 128  # characters of a request id at most
_SANE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_ID}}}")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ringstore_request_id", default=None
)
PEER: contextvars.ContextVar[str | None] = contextvars.ContextVar("ringstore_peer", default=None)


def new_request_id() -> str:
    """A fresh id: 16 upper-case hex digits (64 random bits), the form of S3's request ids."""
    return secrets.token_hex(8).upper()


def sane_request_id(value: str | None) -> str | None:
    """``value`` if it may serve as a request id (see the module's rule), else None."""
    if value is not None and _SANE.fullmatch(value):
        return value
    return None


def start_for_peer(
    peer_id: str, jobs: Iterable[Coroutine[Any, Any, Any]]
) -> list[asyncio.Task[Any]]:
    """Start ``jobs`` as tasks whose context names ``peer_id`` (``PEER``), without touching
    the caller's context (several in-process peers may start from one test task)."""
    context = contextvars.copy_context()
    context.run(PEER.set, peer_id)
    return [context.run(asyncio.ensure_future, job) for job in jobs]
