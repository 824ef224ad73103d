"""Conditional requests on the public API (RFC 9110, section 13), between HTTP and the model.

``node.model.preconditions`` parses and evaluates; this module reads the fields from a
request and turns a read's verdict into a response: ``304 Not Modified`` with the
validators and no body, or PreconditionFailed (412, through the error middleware). Writes
pass their condition to the coordinator, where the manifest replicas check it at the commit.
Routes call these after their access checks, and only once the unconditional answer would
be a success (13.2.1): a GET of a missing file is a 404 whatever its preconditions say.
"""

from __future__ import annotations

import time

from aiohttp import hdrs, web

from node.errors import PreconditionFailed
from node.model.manifest import Manifest
from node.model.preconditions import Outcome, Preconditions, parse_preconditions, representation

# What a 304 carries of a 200's headers (RFC 9110, 15.4.5): the fields a cache updates.
_NOT_MODIFIED_FIELDS = (
    hdrs.ETAG,
    hdrs.LAST_MODIFIED,
    hdrs.CACHE_CONTROL,
    hdrs.EXPIRES,
    hdrs.CONTENT_LOCATION,
    hdrs.VARY,
)


def preconditions(request: web.Request) -> Preconditions:
    """The request's precondition fields; raises InvalidRequest for a malformed If-Match
    or If-None-Match (or one too long)."""
    return parse_preconditions(request.headers.items(), time.time())


def write_condition(request: web.Request) -> Preconditions | None:
    """What a PUT or DELETE is conditional on (None: nothing); raises as ``preconditions``."""
    return preconditions(request).for_write()


def answer_read(
    conditions: Preconditions, manifest: Manifest, headers: dict[str, str]
) -> web.Response | None:
    """The answer a GET or HEAD of ``manifest`` gets instead of the file: a 304 with the
    validators among ``headers`` (the 200's), or None to go ahead. Raises
    PreconditionFailed when If-Match or If-Unmodified-Since does not hold."""
    outcome = conditions.evaluate(representation(manifest), safe=True)
    if outcome is Outcome.FAILED:
        raise PreconditionFailed(
            f"{manifest.name!r}: {conditions.describe()} does not hold for its current version"
        )
    if outcome is Outcome.NOT_MODIFIED:
        kept = {field: headers[field] for field in _NOT_MODIFIED_FIELDS if field in headers}
        return web.Response(status=304, headers=kept)
    return None


def wanted_range(request: web.Request, conditions: Preconditions, manifest: Manifest) -> str | None:
    """The Range header to honour: none when If-Range does not match the current version
    (13.1.5: the whole file is sent then)."""
    wanted = request.headers.get(hdrs.RANGE)
    current = representation(manifest)
    if wanted is None or current is None or not conditions.range_applies(current):
        return None
    return wanted
