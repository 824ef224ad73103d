"""Access control on the public API: who sent a request, and the keys and namespaces routes.

The ``identified`` middleware resolves every public request's credentials to a Principal
(``node.access.guard``) before its route runs; ``/health`` and ``/ready`` need none and the peer API
(``/internal/``) has its own. Routes then ask ``require`` for the grant they need.

Routes (JSON in and out; every one but listing namespaces needs an admin key)::

    GET    /keys                      the live keys, without secrets
    POST   /keys                      {"name", "read": [ns], "write": [ns], "create", "admin"}
                                      -> 201 {"access_key", "secret_key", ...}: shown once
    DELETE /keys/{access_key}         revoke -> 204
    PUT    /keys/{access_key}/grants  {"read": [ns], "write": [ns], "create", "admin"}
                                      -> 200 the key (no secret) with these grants instead
    GET    /namespaces                the namespaces this key may read (admin: all)
    PUT    /namespaces/{ns}           {"public_read": bool} -> 201 (admin or a create grant)
    DELETE /namespaces/{ns}           remove an empty namespace -> 204
"""

from __future__ import annotations

import asyncio
import random

import msgspec
from aiohttp import hdrs, web

from node.access.guard import ANONYMOUS, Principal
from node.api.browser import has_session_cookie, session_principal
from node.api.errors import Handler
from node.api.input import json_body, one_header
from node.api.keys import ACCESS, GATEKEEPER, PRINCIPAL, SESSIONS, principal_of
from node.api.paths import PROBES
from node.cluster.protocol import PEER_PREFIX
from node.errors import (
    InvalidNamespace,
    NamespaceExists,
    NamespaceNotFound,
    Unauthenticated,
    WriteContended,
)
from node.model import access
from node.model.access import Action, Grants

# How often an admin key's first write into a new namespace tries to make it when the
# commit is WriteContended (racing first writes split the namespace record's replicas so
# that none of them won), a little apart each time.
IMPLICIT_CREATE_TRIES = 4
_JITTER = random.Random()


class KeyOrder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str = ""
    read: list[str] = []
    write: list[str] = []
    create: bool = False
    admin: bool = False


class GrantOrder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    read: list[str] = []
    write: list[str] = []
    create: bool = False
    admin: bool = False


class NamespaceOrder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    public_read: bool = False


def add_routes(app: web.Application) -> None:
    app.router.add_get("/keys", list_keys)
    app.router.add_post("/keys", create_key)
    app.router.add_delete("/keys/{access_key}", revoke_key)
    app.router.add_put("/keys/{access_key}/grants", grant)
    app.router.add_get("/namespaces", list_namespaces)
    app.router.add_put("/namespaces/{namespace}", create_namespace)
    app.router.add_delete("/namespaces/{namespace}", remove_namespace)


@web.middleware
async def identified(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Set the request's Principal from its credentials (Basic, else a console session's
    cookie: ``node.api.browser``); raises Unauthenticated for bad ones, Forbidden for a
    session's state change without its CSRF token."""
    if request.path.startswith(PEER_PREFIX) or request.path in PROBES:
        request[PRINCIPAL] = ANONYMOUS
        return await handler(request)
    authorization = one_header(request, hdrs.AUTHORIZATION)
    if authorization is None and has_session_cookie(request):  # the web console
        request[PRINCIPAL] = await session_principal(request)
        return await handler(request)
    request[PRINCIPAL] = await request.app[GATEKEEPER].principal(
        authorization, request.remote or "?"
    )
    return await handler(request)


async def require(request: web.Request, action: Action, namespace: str = "") -> Principal:
    """The request's principal, if it may do ``action`` (on ``namespace``); raises
    Unauthenticated (anonymous) or AccessDenied (no grant) otherwise."""
    principal = principal_of(request)
    await request.app[GATEKEEPER].require(principal, action, namespace)
    return principal


def require_key(request: web.Request) -> Principal:
    """The request's principal if it holds any valid key; raises Unauthenticated."""
    principal = principal_of(request)
    if principal.anonymous:
        raise Unauthenticated("this request needs an access key")
    return principal


async def list_keys(request: web.Request) -> web.Response:
    await require(request, "admin")
    keys = await request.app[ACCESS].keys()
    return web.json_response({"keys": [key.to_json() for key in keys]})


async def create_key(request: web.Request) -> web.Response:
    await require(request, "admin")
    order = await json_body(request, KeyOrder)
    grants = _grants(order)
    record, secret = await request.app[ACCESS].create_key(order.name, grants)
    return web.json_response({**record.to_json(), "secret_key": secret}, status=201)


def _grants(order: KeyOrder | GrantOrder) -> Grants:
    if isinstance(order, KeyOrder) and len(order.name) > access.MAX_KEY_NAME:
        raise InvalidNamespace(f"a key name is at most {access.MAX_KEY_NAME} characters")
    try:
        return Grants.of(order.read, order.write, order.create, order.admin)
    except access.InvalidNamespace as exc:
        raise InvalidNamespace(str(exc)) from None


async def revoke_key(request: web.Request) -> web.Response:
    await require(request, "admin")
    access_key = request.match_info["access_key"]
    await request.app[ACCESS].revoke_key(access_key)
    sessions = request.app.get(SESSIONS)  # none on --shared-port (no console there)
    if sessions is not None:
        sessions.close_key(access_key)  # other peers': at their next lookup
    return web.Response(status=204)


async def grant(request: web.Request) -> web.Response:
    """Replace a key's grants (admin); raises AccessKeyNotFound, InvalidNamespace."""
    await require(request, "admin")
    grants = _grants(await json_body(request, GrantOrder))
    record = await request.app[ACCESS].set_grants(request.match_info["access_key"], grants)
    return web.json_response(record.to_json())


async def list_namespaces(request: web.Request) -> web.Response:
    principal = require_key(request)
    store = request.app[ACCESS]
    shown = [
        record.to_json()
        for record in await store.namespaces()
        if record.public_read or principal.grants.allows("read", record.name)
    ]
    return web.json_response({"namespaces": shown})


async def create_namespace(request: web.Request) -> web.Response:
    await require(request, "create")
    order = await json_body(request, NamespaceOrder)
    record = await request.app[ACCESS].create_namespace(
        request.match_info["namespace"], public_read=order.public_read
    )
    return web.json_response(record.to_json(), status=201)


async def remove_namespace(request: web.Request) -> web.Response:
    await require(request, "admin")
    await request.app[ACCESS].remove_namespace(request.match_info["namespace"])
    return web.Response(status=204)


async def writable_namespace(request: web.Request, name: str) -> None:
    """Check that the request may write file ``name`` and that its namespace exists; an
    admin key's first write into a namespace that does not exist creates it.

    Raises Unauthenticated, AccessDenied, NamespaceNotFound, InvalidNamespace, and for
    the create NamespaceNotEmpty (files left from a removed namespace of that name) or
    Unavailable (tried again up to ``IMPLICIT_CREATE_TRIES`` times when racing creates
    split the record's replicas: WriteContended).
    """
    namespace = access.namespace_of(name)
    principal = await require(request, "write", namespace)
    store = request.app[ACCESS]
    if await store.namespace(namespace) is not None:
        return
    if not principal.grants.admin:
        raise NamespaceNotFound(
            f"no namespace {namespace!r}: create it first (`ringstore ns create {namespace}`)"
        )
    for attempt in range(1, IMPLICIT_CREATE_TRIES + 1):
        try:
            await store.create_namespace(namespace)
            return
        except NamespaceExists:  # another writer created it meanwhile
            return
        except WriteContended:  # racing first writes split the replicas: none won
            if attempt == IMPLICIT_CREATE_TRIES:
                raise
        await asyncio.sleep(_JITTER.uniform(0.0, 0.02 * 2**attempt))  # apart from the others
