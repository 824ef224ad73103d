"""The console's routes: login and logout, the page shells, static files, the ring drawing.

Pages are small server-rendered shells (the nav, who is logged in, the session's CSRF token
in a ``<meta>``) whose content a static ES module draws from the public JSON API; no page
holds an inline script or style, so every answer here carries a Content-Security-Policy
that allows only this origin's files (``CSP``). A page asked for without a live session
redirects to the login form.

Login (``POST /ui/login``, a form with ``access_key`` and ``secret_key``) checks the key as
Basic credentials are checked (``Gatekeeper.login``: the same growing delay after failures)
and sets the session cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
other site's request carries it), ``Path=/``, ``Secure`` when the peer serves TLS, and
``Max-Age`` the session's lifetime. Neither the secret nor a token is ever in a URL.
"""

from __future__ import annotations

import asyncio
import html
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import hdrs, web

from node.access.guard import Principal
from node.api import forms
from node.api.access import require_key
from node.api.browser import CSRF_FIELD, CSRF_HEADER, cookie_name, has_session_cookie
from node.api.errors import Handler
from node.api.input import small_body
from node.api.keys import CONFIG, GATEKEEPER, MEMBERSHIP, SESSION, SESSIONS, principal_of
from node.errors import Forbidden, InvalidRequest, Unauthenticated, UnsupportedMediaType
from ring import Member, Ring
from ring.drawing import DEFAULT_BINS, newcomer_shares, sectors

log = logging.getLogger(__name__)

ROOT = "/ui/"
LOGIN = ROOT + "login"
STATIC = Path(__file__).parent / "static"
ASSETS = frozenset(path.name for path in STATIC.iterdir() if path.suffix in (".js", ".css"))
MAX_LOGIN_BYTES = 4096  # a login form: an access key and a secret
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
# title and nav entry of each page (the module draws it); keys: admin keys only
PAGES = {"cluster": "Cluster", "files": "Files", "file": "File", "upload": "Upload", "keys": "Keys"}
NAV = ("cluster", "files", "upload", "keys")
PATHS = {"cluster": ROOT, "files": ROOT + "files", "file": ROOT + "file"}
PATHS |= {"upload": ROOT + "upload", "keys": ROOT + "keys"}
NEWCOMER = "newcomer"  # the id of the hypothetical member in the ring drawing


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui", to_console)
    for page, path in PATHS.items():
        app.router.add_get(path, _page_handler(page))
    app.router.add_get(LOGIN, login_form)
    app.router.add_post(LOGIN, login)
    app.router.add_post(ROOT + "logout", logout)
    app.router.add_get(ROOT + "ring", get_ring)
    app.router.add_get(ROOT + "static/{asset}", get_asset)
    app.on_response_prepare.append(_console_headers)


async def _console_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The console's answers: only this origin's scripts and styles, never framed, no
    referrer to other sites (not ``no-referrer``: a form then carries ``Origin: null``,
    which ``same_origin`` refuses); and no Basic challenge to the console's scripts (a
    browser would show its own login dialog over the page): they log in through the form."""
    if request.path.startswith(ROOT):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault(hdrs.CACHE_CONTROL, "no-store")
    if response.status == 401 and (CSRF_HEADER in request.headers or has_session_cookie(request)):
        response.headers.popall(hdrs.WWW_AUTHENTICATE, None)


async def to_console(request: web.Request) -> web.Response:
    return _redirect(ROOT)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={hdrs.LOCATION: location})


def _page_handler(page: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        session = request.get(SESSION)
        if session is None:
            return _redirect(LOGIN)
        principal = principal_of(request)
        return _html(_shell(page, principal, session.csrf_token))

    return handler


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _shell(page: str, principal: Principal, csrf_token: str) -> str:
    """The page ``page`` for ``principal``: nav, logout form, the module that draws it."""
    admin = principal.grants.admin
    links = "".join(
        f'<a href="{PATHS[name]}"{" aria-current=page" if name == page else ""}>{PAGES[name]}</a>'
        for name in NAV
        if name != "keys" or admin
    )
    token = html.escape(csrf_token)
    who = html.escape(principal.access_key or "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{token}">
<title>{PAGES[page]} · ringstore</title>
<link rel="stylesheet" href="{ROOT}static/console.css"><link rel="icon" href="data:,">
<script type="module" src="{ROOT}static/console.js"></script>
</head><body data-page="{page}" data-admin="{"yes" if admin else "no"}">
<header><strong>ringstore</strong><nav>{links}</nav>
<form method="post" action="{ROOT}logout" class="logout"><span id="who">{who}</span>
<input type="hidden" name="{CSRF_FIELD}" value="{token}">
<button type="submit" id="logout">Log out</button></form></header>
<main id="main"><p class="muted">Loading…</p></main>
</body></html>
"""


def _login_page(message: str = "") -> str:
    error = f'<p class="error" id="login-error">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · ringstore</title>
<link rel="stylesheet" href="{ROOT}static/console.css"><link rel="icon" href="data:,">
</head><body class="login">
<main><h1>ringstore</h1>{error}
<form method="post" action="{LOGIN}" id="login">
<label>Access key <input name="access_key" id="access_key" autocomplete="username" required
 maxlength="128"></label>
<label>Secret key <input name="secret_key" id="secret_key" type="password" required
 autocomplete="current-password" maxlength="256"></label>
<button type="submit">Log in</button></form>
<p class="muted">A login holds on this peer only (until it expires or you log out).</p>
</main></body></html>
"""


async def login_form(request: web.Request) -> web.Response:
    if request.get(SESSION) is not None:
        return _redirect(ROOT)
    return _html(_login_page())


async def _form_fields(request: web.Request) -> dict[str, str]:
    """An urlencoded form of at most MAX_LOGIN_BYTES; raises UnsupportedMediaType,
    TooLarge, InvalidRequest."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("send the form (application/x-www-form-urlencoded)")
    data = await small_body(request, MAX_LOGIN_BYTES)
    try:
        return dict(parse_qsl(data.decode("utf-8"), max_num_fields=8))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("a malformed form") from None


async def login(request: web.Request) -> web.Response:
    """Check the form's key and open a session (303 to the console), or show the form
    again with 401. The same delay after failures as wrong Basic credentials."""
    forms.same_origin(request)  # no other site logs a browser in (login CSRF)
    fields = await _form_fields(request)
    access_key, secret = fields.get("access_key", ""), fields.get("secret_key", "")
    address = request.remote or "?"
    try:
        principal = await request.app[GATEKEEPER].login(access_key, secret, address)
    except Unauthenticated:
        return _html(_login_page("Unknown access key or wrong secret."), status=401)
    if principal.access_key is None:  # never: a key's principal has its key
        raise Unauthenticated("no access key")
    sessions = request.app[SESSIONS]
    session = sessions.open(principal.access_key)
    log.info("console login of %s from %s", principal.access_key, address)
    response = _redirect(ROOT)
    response.set_cookie(
        cookie_name(request),
        session.token,
        max_age=int(sessions.ttl),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.app[CONFIG].tls,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """End the session (its CSRF token as the form field ``csrf_token`` or the header)
    and forget the cookie; 303 to the login form."""
    forms.same_origin(request)
    session = request.get(SESSION)
    if session is not None:
        given = request.headers.get(CSRF_HEADER)
        if given is None:
            given = (await _form_fields(request)).get(CSRF_FIELD)
        if not session.checks(given):
            raise Forbidden(f"logging out needs the session's {CSRF_FIELD}")
        request.app[SESSIONS].close(session.token)
        log.info("console logout of %s", session.access_key)
    response = _redirect(LOGIN)
    response.del_cookie(cookie_name(request), path="/", samesite="Strict", httponly=True)
    return response


async def get_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise web.HTTPNotFound(text="no such console file")
    kind = "text/javascript" if name.endswith(".js") else "text/css"
    data = await asyncio.to_thread((STATIC / name).read_bytes)
    return web.Response(
        body=data,
        content_type=kind,
        charset="utf-8",
        headers={hdrs.CACHE_CONTROL: "no-cache"},
    )


async def get_ring(request: web.Request) -> web.Response:
    """The ring drawing's data (any key): ``{"bins", "n", "members": [{id, url, zone,
    weight, share, share_after}], "sectors": [[start, end, member index]], "newcomer":
    {"weight", "share", "shares": [fraction of each bin]}}``; shares are of placement
    sets of ``n`` = k+m members (``Ring.ownership``), before and after the newcomer."""
    require_key(request)
    config = request.app[CONFIG]
    ring = request.app[MEMBERSHIP].ring
    drawing = await asyncio.to_thread(_drawing, ring, config.k + config.m)
    return web.json_response(drawing)


@lru_cache(maxsize=4)
def _drawing(ring: Ring, n: int) -> dict[str, Any]:
    """What ``get_ring`` shows of ``ring``, computed once per ring (it walks every point)."""
    if not len(ring):
        return {"bins": DEFAULT_BINS, "n": n, "members": [], "sectors": [], "newcomer": None}
    weights = sorted(member.weight for member in ring.members)
    newcomer = Member(NEWCOMER, "", weights[len(weights) // 2])
    grown = Ring([*ring.members, newcomer], ring.vnodes)
    before, after = ring.ownership(n), grown.ownership(n)
    index = {member.id: i for i, member in enumerate(ring.members)}
    return {
        "bins": DEFAULT_BINS,
        "n": n,
        "members": [
            {
                "id": member.id,
                "url": member.url,
                "zone": member.zone,
                "weight": member.weight,
                "share": round(before[member.id], 4),
                "share_after": round(after[member.id], 4),
            }
            for member in ring.members
        ],
        "sectors": [[s.start, s.end, index[s.member]] for s in sectors(ring)],
        "newcomer": {
            "weight": newcomer.weight,
            "share": round(after[NEWCOMER], 4),
            "shares": [round(x, 3) for x in newcomer_shares(ring, newcomer)],
        },
    }
