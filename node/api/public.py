"""The public HTTP API: files, listings, manifests and the cluster view.

Routes parse and validate input, call the coordinator, and shape responses; errors are the
middleware's job. Names come from the raw request path so nothing normalises them before
validation.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web

from node.api import forms
from node.api.access import require, require_key, writable_namespace
from node.api.conditions import write_condition
from node.api.input import body_pieces, defer_continue, query_int
from node.api.integrity import by_etag, expected_digests, verified
from node.api.keys import (
    ACCESS,
    ANTI_ENTROPY,
    AUTH,
    CONFIG,
    COORDINATOR,
    DISCOVERY,
    GOSSIP,
    MEMBERSHIP,
    PACKER,
    REPAIRER,
    SCRUBBER,
    principal_of,
)
from node.api.metrics import balance_of
from node.api.representation import content_type_of, representation_of
from node.api.sending import answer_file, file_headers
from node.cluster.membership import usage
from node.datapath.coordinator import Coordinator
from node.errors import InvalidName, TooLarge
from node.model.access import ALL, namespace_of
from node.model.folders import Item, check_delimiter, name_of
from node.model.manifest import Manifest
from node.model.names import RESERVED, name_from_raw_path, validate_name
from node.model.version import MAX_OFFSET_MS, ClockOffset
from ring import Ring

log = logging.getLogger(__name__)

FILES = "/files/"
MANIFESTS = "/manifests/"
MAX_LIST = 1000  # entries per listing page at most (the client's MAX_PAGE_SIZE agrees)
# A name in a route: any characters, a newline included (``.`` is not one), so that every
# name reaches validation (400), not a 404 for want of a route.
NAME = r"{name:[\s\S]*}"


def add_routes(app: web.Application) -> None:
    app.router.add_put(FILES + NAME, put_file, expect_handler=defer_continue)
    app.router.add_post(FILES + NAME, post_form, expect_handler=defer_continue)
    app.router.add_get(FILES + NAME, get_file)  # HEAD too
    app.router.add_delete(FILES + NAME, delete_file)
    app.router.add_get("/files", list_files)
    app.router.add_get(MANIFESTS + NAME, get_manifest)
    app.router.add_get("/cluster", get_cluster)
    app.router.add_get("/scrub", get_scrub)


def _name(request: web.Request, prefix: str) -> str:
    raw_path = request.raw_path.split("?", 1)[0]
    return name_from_raw_path(raw_path[len(prefix) :])


async def put_file(request: web.Request) -> web.Response:
    name = _name(request, FILES)
    if "/" not in name:
        raise InvalidName(f"a file name is NAMESPACE/NAME, e.g. photos/{name}")
    await writable_namespace(request, name)
    condition = write_condition(request)
    started = time.monotonic()
    config = request.app[CONFIG]
    size = request.content_length
    if size is not None and size > config.max_file_size:
        raise TooLarge(f"a file may be at most {config.max_file_size} bytes; this one is {size}")
    content_type = content_type_of(request.headers.get(hdrs.CONTENT_TYPE))
    representation = representation_of(request.headers)
    body = body_pieces(
        request, config.client_timeout, config.max_file_size, min_rate=config.client_min_rate
    )
    content_md5, digests = by_etag(expected_digests(request.headers), config.etag)
    if digests:  # hashed only when asked for
        body = verified(body, digests)
    manifest = await request.app[COORDINATOR].put(
        name,
        body,
        size,
        content_type,
        condition,
        representation=representation,
        content_md5=content_md5,
    )
    return _stored("PUT", manifest, started)


async def post_form(request: web.Request) -> web.Response:
    """``POST /files/{namespace}/[{folder}/]`` with a ``multipart/form-data`` body: store its
    file part (``node.api.forms``) as it arrives, under the path and the form's ``name``
    field, or a new UUID (uuid4) when it has none. Access, conditions and body bounds are
    those of a PUT. Answers 201 with PUT's JSON and the part's ``filename``; raises
    UnsupportedMediaType (not a form), InvalidRequest (a malformed form, no file part, two,
    a bad name), TooLarge, Forbidden (a browser page of another origin) and what PUT raises.
    """
    raw = request.raw_path.split("?", 1)[0][len(FILES) :]
    if not raw.endswith("/"):
        raise InvalidName("a form is sent to /files/NAMESPACE/ (or a folder in it, ending in /)")
    folder = name_from_raw_path(raw[:-1]) + "/"
    forms.same_origin(request)
    await require(request, "write", namespace_of(folder))  # before a byte of the body is read
    config = request.app[CONFIG]
    limit = config.max_file_size + forms.OVERHEAD
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"a file may be at most {config.max_file_size} bytes")
    condition = write_condition(request)
    started = time.monotonic()
    body = body_pieces(request, config.client_timeout, limit, min_rate=config.client_min_rate)
    form = forms.FormUpload(body, forms.boundary_of(request), config.max_file_size)
    part = await form.open()
    guard = request.app.get(forms.FORM_GUARD)
    if guard is not None:
        await guard(request, form.fields)
    name = validate_name(folder + (form.fields.get("name") or str(uuid.uuid4())))
    await writable_namespace(request, name)
    manifest = await request.app[COORDINATOR].put(
        name, form.file_pieces(), None, part.content_type, condition
    )
    return _stored("POST", manifest, started, filename=part.filename)


def _stored(method: str, manifest: Manifest, started: float, **extra: object) -> web.Response:
    """The answer to a write that stored ``manifest`` (201), logged."""
    took = time.monotonic() - started
    log.info(
        "%s %r %d bytes as %s in %.3fs%s",
        method,
        manifest.name,
        manifest.size,
        manifest.version,
        took,
        " (degraded)" if manifest.degraded else "",
        extra={"file": manifest.name, "size": manifest.size, "duration": round(took, 6)},
    )
    return web.json_response(
        {
            "name": manifest.name,
            "size": manifest.size,
            "version": str(manifest.version),
            "etag": manifest.etag,
            "content_type": manifest.content_type,
            "chunks": len(manifest.chunks),
            "degraded": manifest.degraded,
            "inline": manifest.stored_inline,
            **extra,
        },
        status=201,
        headers={
            hdrs.ETAG: f'"{manifest.etag}"',
            hdrs.LOCATION: FILES + quote(manifest.name, safe="/"),
        },
    )


async def get_file(request: web.Request) -> web.StreamResponse:
    name = _name(request, FILES)
    await require(request, "read", namespace_of(name))
    coordinator = request.app[COORDINATOR]
    manifest = await coordinator.stat(name)
    headers = {**file_headers(manifest), "X-Ringstore-Version": str(manifest.version)}
    return await answer_file(request, coordinator, manifest, headers)


async def delete_file(request: web.Request) -> web.Response:
    name = _name(request, FILES)
    await require(request, "write", namespace_of(name))
    tombstone = await request.app[COORDINATOR].delete(name, write_condition(request))
    log.info("DELETE %r as %s", name, tombstone.version, extra={"file": name})
    return web.Response(status=204)


async def list_files(request: web.Request) -> web.Response:
    """A page of live files with ``prefix`` after ``start_after``; with a ``delimiter``,
    names below the prefix roll up at it into ``prefixes`` (folders, ``node.model.folders``),
    each counting as one entry toward ``limit``, and ``next`` continues after the whole
    folder."""
    prefix = request.query.get("prefix", "")
    start_after = request.query.get("start_after", "")
    limit = query_int(request, "limit", MAX_LIST, 1, MAX_LIST)
    delimiter = check_delimiter(request.query.get("delimiter", ""))
    if prefix.startswith(RESERVED):
        raise InvalidName(f"no file name starts with {RESERVED!r}")  # cluster records
    page = _lister(request.app[COORDINATOR], prefix, delimiter)
    if "/" in prefix:  # one namespace: checked once
        await require(request, "read", namespace_of(prefix))
        items, next_after = await page(prefix, start_after, limit)
    else:  # names of several namespaces: only those the key may read
        items, next_after = await _list_readable(request, prefix, start_after, limit, page)
    return web.json_response(
        {
            "files": [item.summary() for item in items if not isinstance(item, str)],
            "prefixes": [item for item in items if isinstance(item, str)],
            "next": next_after or None,
        }
    )


# (scope, start_after, limit) -> items in order and what to continue after ("" when done)
Lister = Callable[[str, str, int], Awaitable[tuple[list[Item], str]]]


def _lister(coordinator: Coordinator, prefix: str, delimiter: str) -> Lister:
    """How a listing of ``prefix`` gets a page of the names with a scope (the prefix, or a
    namespace below it): flat, or rolled up at ``delimiter`` below ``prefix``."""

    async def page(scope: str, after: str, size: int) -> tuple[list[Item], str]:
        if delimiter:
            return await coordinator.list_folder(prefix, delimiter, after, size, scope)
        files, following = await coordinator.list(scope, after, size)
        return list(files), following

    return page


async def _list_readable(
    request: web.Request, prefix: str, start_after: str, limit: int, page: Lister
) -> tuple[list[Item], str]:
    """A page of the items ``page`` lists with ``prefix`` in the namespaces the request may
    read (its grants, or public-read ones), and what to continue after.

    Only those namespaces are ever listed, so neither the page nor its continuation names
    a file, folder or namespace of another. Each is a contiguous block of names (``NS/``...),
    and the blocks in ``NS/`` order are in name order; a folder that spans several blocks
    (rolled up inside namespace names) is shown once, since each block continues after the
    last item shown. Names of one segment (adopted from before namespaces) show only to
    keys that read every namespace.
    """
    grants = principal_of(request).grants
    if grants.admin or ALL in grants.read:
        return await page(prefix, start_after, limit)
    public = {r.name for r in await request.app[ACCESS].namespaces() if r.public_read}
    blocks = sorted(ns + "/" for ns in grants.read | public if ns.startswith(prefix))
    found: list[Item] = []
    after = start_after
    for index, block in enumerate(blocks):
        if after > block and not after.startswith(block):
            continue  # the whole block is before start_after (or the last item shown)
        while True:
            got, following = await page(block, after, limit - len(found))
            found.extend(got)
            if len(found) == limit:
                more = bool(following) or index + 1 < len(blocks)
                return found, name_of(found[-1]) if more else ""
            if not following:
                break
            after = following
        if found:
            after = max(after, name_of(found[-1]))
    return found, ""


async def get_manifest(request: web.Request) -> web.Response:
    name = _name(request, MANIFESTS)
    await require(request, "read", namespace_of(name))
    manifest = await request.app[COORDINATOR].stat(name)
    return web.json_response(manifest.to_json())


async def get_cluster(request: web.Request) -> web.Response:
    require_key(request)
    membership = request.app[MEMBERSHIP]
    config = request.app[CONFIG]
    own = request.app[GOSSIP].own_figures()
    ring = membership.ring
    balance = balance_of(ring) if len(ring) else None
    now = time.monotonic()
    peers: list[dict[str, Any]] = []
    for member in membership.members():
        live = membership.liveness(member.id)
        me = member.id == membership.me.id
        figures = own if me else live.figures
        clock = ClockOffset(0, 0) if me else live.clock  # None: not measured (yet)
        share = balance.share(member.id) if balance is not None else None
        used, capacity = usage(figures)
        peers.append(
            {
                "id": member.id,
                "url": member.url,
                "s3_url": figures.s3_url or None,
                "state": live.state,
                "clock_offset_ms": None if clock is None else clock.offset_ms,
                "skewed": clock is not None and clock.skewed,
                "weight": member.weight,
                "zone": member.zone,
                "used_bytes": figures.used_bytes,
                "chunks": figures.chunks,
                "rebalance": figures.rebalance,
                "disk_total_bytes": figures.disk_total_bytes,
                "disk_free_bytes": figures.disk_free_bytes,
                "max_bytes": figures.max_bytes,
                "capacity_bytes": capacity,
                "fill": round(used / capacity, 4) if capacity else None,
                "repair_queued": figures.repair_queued,
                "scrub": {
                    "pass_chunks": figures.scrub_pass_chunks,
                    "pass_checked": figures.scrub_pass_checked,
                },
                "deletions_pending": figures.deletions_pending,
                "figures_age_s": 0.0 if me else _age(now, live.heard_at),
                "token_share": None if share is None else round(share.share, 6),
                "fair_share": None if share is None else round(share.fair, 6),
            }
        )
    return web.json_response(
        {
            "self": membership.me.id,
            "cluster": request.app[AUTH].cluster_id,
            "discovery": _discovery(request.app),
            "ring": {
                "digest": ring.digest,
                "vnodes": ring.vnodes,
                "members": len(ring),
                "evenness": _evenness(ring, config.k + config.m),
                "balance": None
                if balance is None
                else {
                    "max_ratio": round(balance.max_ratio, 4),
                    "min_ratio": round(balance.min_ratio, 4),
                    "cv": round(balance.cv, 4),
                },
            },
            "max_clock_offset_ms": MAX_OFFSET_MS,
            "peers": peers,
        }
    )


def _age(now: float, heard_at: float) -> float | None:
    """Seconds since a member's figures arrived (None: none yet)."""
    return round(now - heard_at, 1) if heard_at else None


def _discovery(app: web.Application) -> dict[str, object] | None:
    """What mDNS found: peers of this cluster, and records of others set aside."""
    discovery = app.get(DISCOVERY)
    if discovery is None:
        return None
    found, ignored = len(discovery.learned), len(discovery.ignored)
    return {"state": discovery.state, "found": found, "ignored": ignored}


@lru_cache(maxsize=4)
def _evenness(ring: Ring, n: int) -> float:
    """Placement-set evenness, computed once per ring (it walks every ring point)."""
    return round(ring.evenness(n), 4)


async def get_scrub(request: web.Request) -> web.Response:
    """This peer's scrub, garbage collection and repair figures."""
    require_key(request)
    return web.json_response(
        {
            "scrub": request.app[SCRUBBER].stats.to_json(),
            "repair": request.app[REPAIRER].stats.to_json(),
            "anti_entropy": request.app[ANTI_ENTROPY].stats.to_json(),
            "packs": request.app[PACKER].stats.to_json(),
        }
    )
