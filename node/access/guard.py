"""Checking who a public request comes from and whether its key may do what it asks.

Credentials arrive as HTTP Basic (RFC 7617): ``Authorization: Basic base64(id:secret)``,
or (the S3 frontend) as a signature made with the key's secret, which the frontend checks
with a function of the secret (``Gatekeeper.signed``); either way the lookup, the penalty
and the log line are this module's.
The secret is compared in constant time with the key's own (``hmac.compare_digest``). A
request without credentials is anonymous: it may read namespaces marked public-read and
nothing else; one with wrong credentials is refused (``Unauthenticated``, 401) and costs
its source address a penalty (``Penalty``) that delays that address's next attempts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from node.access.store import AccessStore
from node.errors import AccessDenied, BadSignature, Unauthenticated, UnknownAccessKey
from node.model.access import Action, Grants, same_secret

log = logging.getLogger(__name__)

REALM = 'Basic realm="ringstore", charset="UTF-8"'  # the WWW-Authenticate challenge
MAX_CREDENTIALS = 1024  # characters of an Authorization header worth decoding
_MAX_EXPONENT = 64  # failures counted per address at most


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: an access key and its grants, or nobody (anonymous)."""

    access_key: str | None
    grants: Grants = field(default_factory=Grants)

    @property
    def anonymous(self) -> bool:
        return self.access_key is None


ANONYMOUS = Principal(None)


class Penalty:
    """A delay for addresses that recently failed to authenticate.

    Each failure adds one to the address's count, which halves every ``half_life`` seconds;
    an address at count c waits ``base * 2**(c-1)`` seconds (at most ``ceiling``) before
    its credentials are checked. The real key owner behind the same address is slowed by at
    most ``ceiling``, never locked out. At most ``max_addresses`` are remembered.
    """

    def __init__(
        self,
        base: float = 0.05,
        ceiling: float = 2.0,
        half_life: float = 30.0,
        max_addresses: int = 10_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base, self._ceiling, self._half_life = base, ceiling, half_life
        self._max = max_addresses
        self._now = now
        self._failures: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"Penalty(addresses={len(self._failures)}, ceiling={self._ceiling}s)"

    def _count(self, address: str) -> float:
        count, at = self._failures.get(address, (0.0, 0.0))
        return float(count * 0.5 ** ((self._now() - at) / self._half_life)) if count else 0.0

    def delay(self, address: str) -> float:
        """Seconds ``address`` waits before its next check."""
        count = self._count(address)
        if count < 1:
            return 0.0
        # bounded exponent: 2.0 ** 1024 overflows, and any count past 64 is the ceiling anyway
        return float(min(self._ceiling, self._base * 2 ** min(count - 1, _MAX_EXPONENT)))

    def failed(self, address: str) -> None:
        count = min(self._count(address) + 1, _MAX_EXPONENT + 1)  # a burst decays soon
        self._failures[address] = (count, self._now())
        self._failures.move_to_end(address)
        while len(self._failures) > self._max:
            self._failures.popitem(last=False)


def parse_basic(header: str) -> tuple[str, str]:
    """``(access key, secret)`` of a Basic ``Authorization`` header; raises Unauthenticated
    for any other scheme or a malformed value."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or len(value) > MAX_CREDENTIALS:
        raise Unauthenticated("credentials must be HTTP Basic: access key and secret key")
    try:
        decoded = base64.b64decode(value.strip().encode("ascii"), validate=True)
        access_key, sep, secret = decoded.decode("utf-8").partition(":")
    except (binascii.Error, UnicodeError, ValueError):
        raise Unauthenticated("malformed Basic credentials") from None
    if not sep:
        raise Unauthenticated("malformed Basic credentials")
    return access_key, secret


class Gatekeeper:
    """Turns a request's credentials into a Principal and checks its grants."""

    def __init__(self, store: AccessStore, penalty: Penalty | None = None) -> None:
        self.store = store
        self.penalty = penalty or Penalty()

    def __repr__(self) -> str:
        return f"Gatekeeper({self.store!r}, {self.penalty!r})"

    async def principal(self, authorization: str | None, address: str) -> Principal:
        """Who sent a request with this ``Authorization`` header from ``address``.

        Raises Unauthenticated for credentials that are malformed, of an unknown or revoked
        key, or with the wrong secret (after the address's penalty, which grows); Unavailable
        when the key cannot be looked up.
        """
        if authorization is None:
            return ANONYMOUS
        return await self.credentials(authorization, None, address)

    async def login(self, access_key: str, secret: str, address: str) -> Principal:
        """Who holds ``access_key`` with ``secret`` (the web console's login form), with the
        same penalty and errors as ``principal``."""
        return await self.credentials(access_key, secret, address)

    async def credentials(self, user: str, secret: str | None, address: str) -> Principal:
        """Check an access key and secret: ``user`` is a Basic ``Authorization`` header when
        ``secret`` is None, else the access key. Raises as ``principal``."""
        delay = self.penalty.delay(address)
        if delay:
            await asyncio.sleep(delay)
        try:
            access_key, secret = parse_basic(user) if secret is None else (user, secret)
            known = await self.store.key(access_key)
            if known is None or not same_secret(secret, known.secret):
                raise Unauthenticated("unknown access key or wrong secret")
        except Unauthenticated as exc:
            self.penalty.failed(address)
            log.info("refused credentials from %s: %s", address, exc.message)
            raise
        return Principal(known.record.access_key, known.record.grants)

    async def holder_of(self, access_key: str) -> Principal | None:
        """The principal of ``access_key`` with its grants as they are now (a console
        session stands for it), or None when it was revoked or never existed. Raises
        Unavailable when the key cannot be looked up."""
        known = await self.store.key(access_key)
        return None if known is None else Principal(known.record.access_key, known.record.grants)

    async def signed(
        self, access_key: str, proves: Callable[[str], bool], address: str
    ) -> Principal:
        """Who sent a request signed as ``access_key`` from ``address``: ``proves(secret)``
        says whether the request's signature is the one that key's secret gives (it must
        compare in constant time).

        Raises UnknownAccessKey (unknown or revoked) or BadSignature (both Unauthenticated,
        after the address's penalty, which grows); Unavailable when the key cannot be
        looked up.
        """
        delay = self.penalty.delay(address)
        if delay:
            await asyncio.sleep(delay)
        try:
            known = await self.store.key(access_key)
            if known is None:
                raise UnknownAccessKey("The AWS Access Key Id you provided does not exist.")
            if not proves(known.secret):
                raise BadSignature(
                    "The request signature we calculated does not match the signature you "
                    "provided. Check your key and signing method."
                )
        except Unauthenticated as exc:
            self.penalty.failed(address)
            log.info("refused a signed request from %s: %s", address, exc.code)
            raise
        return Principal(known.record.access_key, known.record.grants)

    async def require(self, principal: Principal, action: Action, namespace: str = "") -> None:
        """Raise unless ``principal`` may do ``action`` (on ``namespace``): Unauthenticated
        for an anonymous request that needs a key, AccessDenied for a key without the grant.
        Anyone may read a public-read namespace."""
        if principal.grants.allows(action, namespace):
            return
        if action == "read" and namespace:
            record = await self.store.namespace(namespace)
            if record is not None and record.public_read:
                return
        if principal.anonymous:
            raise Unauthenticated("this request needs an access key")
        what = f"{action} on namespace {namespace!r}" if namespace else action
        raise AccessDenied(f"access key {principal.access_key} may not {what}")
