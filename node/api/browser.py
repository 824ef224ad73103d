"""What a browser's console session cookie stands for, and the CSRF checks that come with it.

A request with no ``Authorization`` header and the session cookie (``cookie_name``) of a
live session on this peer (``node.access.sessions``) acts as that session's access key, with
the key's grants as they are now (a revoked key's sessions end). A cookie of no live session
is ignored: the request is anonymous, so the console's script sees 401 and logs in again.

A cookie is sent by the browser on its own, so a state change must prove it comes from a
console page (cross-site request forgery, OWASP CSRF Prevention Cheat Sheet): the cookie is
``SameSite=Strict`` (no other site's request carries it), and every request with a method
other than GET and HEAD must also come from a page of this origin (``forms.same_origin``:
Fetch Metadata, Origin) and carry the session's CSRF token in ``X-CSRF-Token``. A form
upload (``POST /files/NS/``) may carry it as the form field ``csrf_token`` before its file
instead (``form_guard``, the forms module's hook), so that a plain HTML form works too.
The console's own routes under ``/ui/`` check their forms themselves.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from node.access.guard import ANONYMOUS, Principal
from node.api import forms
from node.api.keys import CSRF_CHECKED, GATEKEEPER, MEMBERSHIP, SESSION, SESSIONS
from node.errors import Forbidden

SESSION_COOKIE = "ringstore_session"  # and the peer's id: cookie_name
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
CONSOLE = "/ui/"  # the console's own routes: they check their forms themselves
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_name(request: web.Request) -> str:
    """The name of this peer's session cookie: a browser sends a host's cookies to all its
    ports (RFC 6265 §8.5), so peers on one host (``ringstore up``) name theirs apart, and a
    login on one does not end another's."""
    return f"{SESSION_COOKIE}_{request.app[MEMBERSHIP].me.id[:8]}"


def has_session_cookie(request: web.Request) -> bool:
    return bool(request.cookies) and cookie_name(request) in request.cookies


async def session_principal(request: web.Request) -> Principal:
    """The principal of the request's session cookie (ANONYMOUS when it names no live
    session or the key was revoked), with the CSRF checks of a state change done.

    Raises Forbidden for a state change from another origin or without the CSRF token;
    Unavailable when the key cannot be looked up.
    """
    sessions = request.app.get(SESSIONS)
    token = request.cookies.get(cookie_name(request))
    if sessions is None or not token:
        return ANONYMOUS
    session = sessions.get(token)
    if session is None:
        return ANONYMOUS
    principal = await request.app[GATEKEEPER].holder_of(session.access_key)
    if principal is None:  # revoked since the login
        sessions.close_key(session.access_key)
        return ANONYMOUS
    request[SESSION] = session
    if request.method not in SAFE_METHODS and not request.path.startswith(CONSOLE):
        forms.same_origin(request)
        request[CSRF_CHECKED] = session.checks(request.headers.get(CSRF_HEADER))
        if not request[CSRF_CHECKED] and not _form_upload(request):
            raise Forbidden(f"a change made with a console session needs its {CSRF_HEADER}")
    return principal


def _form_upload(request: web.Request) -> bool:
    return request.method == "POST" and request.path.startswith("/files/")


async def form_guard(request: web.Request, fields: Mapping[str, str]) -> None:
    """``forms.FORM_GUARD``: a form sent with a session cookie carries the session's CSRF
    token (the header, or the field ``csrf_token`` before the file); raises Forbidden."""
    session = request.get(SESSION)
    if session is None or request.get(CSRF_CHECKED):
        return
    if not session.checks(fields.get(CSRF_FIELD)):
        raise Forbidden(f"a form sent with a console session needs its {CSRF_FIELD} field")
